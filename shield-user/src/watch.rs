//! `shieldctl watch`: the sampled dropped frames (shield-common's
//! `sample`), decoded for a person (source, SIP method, Request-URI user
//! masked, User-Agent, reason) and written to pcap files; and the pinned
//! sampling maps, opened by the watcher itself.
//!
//! Everything in a sample comes from the attacker's packet: the decoded
//! fields are kept as raw text here and escaped where they are shown.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{Array, Map, MapData, MapError, PerCpuArray, RingBuf};
use shield_common::{names, Reason, SampleConfig, SampleState, SAMPLE_CAP};

/// A sampled frame, decoded as far as it goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Decoded {
    pub source: Option<IpAddr>,
    pub source_port: Option<u16>,
    pub dest_port: Option<u16>,
    /// `udp`, `tcp`, or the IP protocol number.
    pub transport: Option<String>,
    /// The request's method, or `SIP/2.0 NNN` for a response.
    pub method: Option<String>,
    /// The Request-URI's user part, masked (`10**` for `1000`).
    pub ruri_user: Option<String>,
    pub user_agent: Option<String>,
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

/// Decodes Ethernet (two VLAN tags at most), IPv4 or IPv6 (no extension
/// headers: their payload is left undecoded), UDP or TCP, and the SIP
/// start line and User-Agent of a UDP payload.
pub fn decode(frame: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    let mut off = 12;
    let Some(mut ethertype) = be16(frame, off) else { return d };
    off += 2;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(t) = be16(frame, off + 2) else { return d };
        ethertype = t;
        off += 4;
    }
    let (proto, l4) = match ethertype {
        ETH_P_IPV4 => {
            let Some(ip) = frame.get(off..off + 20) else { return d };
            d.source = Some(IpAddr::from([ip[12], ip[13], ip[14], ip[15]]));
            let later_fragment = be16(ip, 6).unwrap_or(0) & 0x1fff != 0;
            if later_fragment {
                return d;
            }
            (ip[9], off + usize::from(ip[0] & 0x0f) * 4)
        }
        ETH_P_IPV6 => {
            let Some(ip) = frame.get(off..off + 40) else { return d };
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            d.source = Some(IpAddr::from(src));
            (ip[6], off + 40)
        }
        _ => return d,
    };
    d.transport = Some(match proto {
        17 => "udp".to_string(),
        6 => "tcp".to_string(),
        n => n.to_string(),
    });
    if proto != 17 && proto != 6 {
        return d;
    }
    d.source_port = be16(frame, l4);
    d.dest_port = be16(frame, l4 + 2);
    if proto == 17 {
        if let Some(payload) = frame.get(l4 + 8..) {
            decode_sip(payload, &mut d);
        }
    }
    d
}

/// The start line and the User-Agent header of a SIP message.
fn decode_sip(payload: &[u8], d: &mut Decoded) {
    let text = String::from_utf8_lossy(payload);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut words = first.split(' ');
    let (a, b) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if a == "SIP/2.0" {
        d.method = Some(format!("SIP/2.0 {b}"));
    } else if !a.is_empty() && a.len() <= 16 && a.bytes().all(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)) {
        d.method = Some(a.to_string());
        d.ruri_user = ruri_user(b).map(|u| mask(&u));
    } else {
        return;
    }
    for line in lines.take_while(|l| !l.is_empty()) {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("user-agent") {
                d.user_agent = Some(value.trim().to_string());
                break;
            }
        }
    }
}

/// The user part of a SIP/SIPS/TEL URI (`sip:1000@host` → `1000`).
fn ruri_user(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("sip:").or_else(|| uri.strip_prefix("sips:"));
    if let Some(rest) = rest {
        let (user, _) = rest.split_once('@')?;
        let user = user.split(';').next().unwrap_or(user).split(':').next().unwrap_or(user);
        return (!user.is_empty()).then(|| user.to_string());
    }
    let tel = uri.strip_prefix("tel:")?;
    Some(tel.split(';').next().unwrap_or(tel).to_string())
}

/// Keeps the first two characters of a user name or number (enough to tell
/// an extension scan from a toll-fraud prefix), hides the rest.
pub fn mask(user: &str) -> String {
    let n = user.chars().count();
    let shown: String = user.chars().take(2.min(n.saturating_sub(1))).collect();
    format!("{shown}{}", "*".repeat(n - shown.chars().count()))
}

/// The reason vocabulary's name of a sample's reason byte.
pub fn reason_name(reason: u8) -> &'static str {
    Reason::ALL.iter().find(|r| **r as u8 == reason).map_or("unknown", |r| r.as_str())
}

/// Failure of the watcher's own access to the kernel or its pcap file.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("opening the pinned map {path}: {source} (is shieldd running with this pin_path, and are you root?)")]
    Pin { path: PathBuf, source: MapError },
    #[error("{map}: {source}")]
    Map { map: &'static str, source: MapError },
    #[error("{path}: {source}")]
    Pcap { path: PathBuf, source: pcap_file::PcapError },
}

/// The sampling maps under a pin directory.
pub struct PinnedSampler {
    pub samples: RingBuf<MapData>,
    cfg: Array<MapData, SampleConfig>,
    state: PerCpuArray<MapData, SampleState>,
}

fn open(dir: &Path, name: &'static str) -> Result<Map, WatchError> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| WatchError::Pin { path: path.clone(), source })?;
    Map::from_map_data(data).map_err(|source| WatchError::Pin { path, source })
}

impl PinnedSampler {
    pub fn open(pin_dir: &Path) -> Result<PinnedSampler, WatchError> {
        let map = |name, source| WatchError::Map { map: name, source };
        Ok(PinnedSampler {
            samples: open(pin_dir, names::SAMPLES)?.try_into().map_err(|e| map(names::SAMPLES, e))?,
            cfg: open(pin_dir, names::SAMPLE_CFG)?.try_into().map_err(|e| map(names::SAMPLE_CFG, e))?,
            state: open(pin_dir, names::SAMPLE_STATE)?.try_into().map_err(|e| map(names::SAMPLE_STATE, e))?,
        })
    }

    /// Turns sampling on (`every` > 0) or off (0).
    pub fn set(&mut self, cfg: SampleConfig) -> Result<(), WatchError> {
        self.cfg.set(0, &cfg, 0).map_err(|source| WatchError::Map { map: names::SAMPLE_CFG, source })
    }

    /// Drops seen, sampled and lost, summed over CPUs.
    pub fn counters(&self) -> Result<SampleState, WatchError> {
        let per_cpu = self.state.get(&0, 0).map_err(|source| WatchError::Map { map: names::SAMPLE_STATE, source })?;
        let mut sum = SampleState::default();
        for s in per_cpu.iter() {
            sum.seen += s.seen;
            sum.sampled += s.sampled;
            sum.lost += s.lost;
        }
        Ok(sum)
    }
}

/// A pcap file of sampled frames (Ethernet link type). Unbuffered: a
/// reader sees every frame captured so far, and sampled rates are low.
pub struct PcapOut {
    path: PathBuf,
    writer: pcap_file::pcap::PcapWriter<std::fs::File>,
}

impl PcapOut {
    pub fn create(path: &Path) -> Result<PcapOut, WatchError> {
        let err = |source| WatchError::Pcap { path: path.to_path_buf(), source };
        let file = std::fs::File::create(path).map_err(|e| err(pcap_file::PcapError::IoError(e)))?;
        let header = pcap_file::pcap::PcapHeader { snaplen: SAMPLE_CAP, ..Default::default() };
        let writer = pcap_file::pcap::PcapWriter::with_header(file, header).map_err(err)?;
        Ok(PcapOut { path: path.to_path_buf(), writer })
    }

    /// Writes a frame captured at `since_epoch`, `orig_len` long on the wire.
    pub fn write(&mut self, since_epoch: Duration, orig_len: u32, data: &[u8]) -> Result<(), WatchError> {
        let err = |source| WatchError::Pcap { path: self.path.clone(), source };
        let packet = pcap_file::pcap::PcapPacket::new(since_epoch, orig_len, data);
        self.writer.write_packet(&packet).map(drop).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 203, 0, 113, 9, 198, 51, 100, 1];
        let total = (20 + 8 + payload.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x13, 0xc4, 0x13, 0xc4, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn decodes_a_request_behind_a_vlan_tag() {
        let d = decode(&udp4(b"INVITE sip:0044123456@198.51.100.1 SIP/2.0\r\nVia: x\r\nuser-agent :  friendly-scanner/1.0\r\n\r\n"));
        assert_eq!(d.source, Some("203.0.113.9".parse().unwrap()));
        assert_eq!((d.source_port, d.dest_port), (Some(5060), Some(5060)));
        assert_eq!(d.method.as_deref(), Some("INVITE"));
        assert_eq!(d.ruri_user.as_deref(), Some("00********"));
        assert_eq!(d.user_agent.as_deref(), Some("friendly-scanner/1.0"));
    }

    #[test]
    fn responses_junk_and_truncation() {
        assert_eq!(decode(&udp4(b"SIP/2.0 200 OK\r\n\r\n")).method.as_deref(), Some("SIP/2.0 200"));
        let junk = decode(&udp4(&[0xa5; 40]));
        assert_eq!((junk.method, junk.user_agent), (None, None));
        let f = udp4(b"REGISTER sip:1000@x SIP/2.0\r\n");
        for cut in 0..f.len() {
            decode(&f[..cut]);
        }
        assert_eq!(decode(&f[..10]), Decoded::default());
    }

    #[test]
    fn masks_keep_two_characters_at_most_and_never_all() {
        assert_eq!(mask("1000"), "10**");
        assert_eq!(mask("ab"), "a*");
        assert_eq!(mask("a"), "*");
        assert_eq!(ruri_user("sips:alice;x=y@h").as_deref(), Some("alice"));
        assert_eq!(ruri_user("tel:+4412;phone-context=x").as_deref(), Some("+4412"));
        assert_eq!(ruri_user("sip:host"), None);
    }
}
