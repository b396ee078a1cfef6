//! A fleet of SBCs sharing one CrowdSec LAPI, for the bouncer tests: one
//! `lapi` namespace, and per SBC `i` (0-based) an SBC namespace and an
//! attacker namespace. Everything is removed on drop.
//!
//! ```text
//!   attacker i                SBC i                          lapi
//!   att0 198.51.100.2/24 ---- pub0 198.51.100.1/24
//!        2001:db8::2/64            2001:db8::1/64
//!                             lapi0 192.0.2.(4i+2)/30 ---- sbc<i> 192.0.2.(4i+1)/30
//!                                                           LAPI on 0.0.0.0:8080
//! ```
//!
//! Addresses are documentation prefixes only: the SBC↔LAPI links are /30s
//! of 192.0.2.0/24 (TEST-NET-1, so at most 64 SBCs), the public side is
//! 198.51.100.0/24 and 2001:db8::/64 in every SBC (each pair is its own
//! namespace, so they do not clash; the same addresses as
//! [`crate::frames`] and [`crate::netns::Lab`]). Each SBC's default routes
//! (v4 and v6) point at its attacker, so replies to any spoofed source
//! leave by `pub0`.
//!
//! [`Fleet::send_sip_from`] writes complete Ethernet frames (SIP OPTIONS,
//! UDP to port 5060, valid checksums) with any source address onto `att0`
//! with an `AF_PACKET` socket: they arrive on SBC `i`'s `pub0`, where a
//! test attaches `shieldd`'s XDP program.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::crowdsec::Lapi;
use crate::daemon::{Shieldd, METRICS_PORT};
use crate::frames::{sip_request, Frame, SBC_V4, SBC_V6};
use crate::csum;
use crate::packet::{parse_mac, PacketSocket};
use crate::netns::{ip, veth, End, Netns};

/// The LAPI's port in the `lapi` namespace.
pub const LAPI_PORT: u16 = 8080;
/// The public interface of every SBC (XDP goes here).
pub const PUB_IF: &str = "pub0";
/// Its peer in the attacker's namespace.
pub const ATT_IF: &str = "att0";
/// The SBC's end of its link to the LAPI.
pub const LAPI_LINK_IF: &str = "lapi0";
pub const SBC_PUB_V4: Ipv4Addr = Ipv4Addr::new(SBC_V4[0], SBC_V4[1], SBC_V4[2], SBC_V4[3]);
pub const ATT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const SBC_PUB_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const ATT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The trunk every member allowlists.
pub const TRUNK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Most packets one [`Fleet::send_sip_from`] sends.
pub const MAX_SEND: u32 = 1_000_000;
/// Most SBCs (the /30s of 192.0.2.0/24).
pub const MAX_SBCS: usize = 64;

/// One SBC and its attacker.
pub struct Sbc {
    pub ns: Netns,
    pub attacker: Netns,
}

pub struct Fleet {
    pub lapi: Netns,
    pub sbcs: Vec<Sbc>,
}

/// The LAPI namespace's address on SBC `i`'s link (where SBC `i` reaches
/// the LAPI).
pub fn lapi_link_addr(i: usize) -> Ipv4Addr {
    assert!(i < MAX_SBCS, "at most {MAX_SBCS} SBCs");
    Ipv4Addr::new(192, 0, 2, (4 * i + 1) as u8)
}

/// SBC `i`'s address on its link to the LAPI.
pub fn sbc_link_addr(i: usize) -> Ipv4Addr {
    assert!(i < MAX_SBCS, "at most {MAX_SBCS} SBCs");
    Ipv4Addr::new(192, 0, 2, (4 * i + 2) as u8)
}

impl Fleet {
    /// The `lapi` namespace and `n` SBCs with their attackers, linked and up.
    pub fn new(n: usize) -> Fleet {
        assert!((1..=MAX_SBCS).contains(&n), "1 to {MAX_SBCS} SBCs");
        let lapi = Netns::new("lapi");
        let sbcs = (0..n)
            .map(|i| {
                let sbc = Sbc {
                    ns: Netns::new(&format!("sbc{i}")),
                    attacker: Netns::new(&format!("att{i}")),
                };
                link_to_lapi(&lapi, &sbc.ns, i);
                public_side(&sbc);
                sbc
            })
            .collect();
        Fleet { lapi, sbcs }
    }

    /// Starts a LAPI in the `lapi` namespace on 0.0.0.0:[`LAPI_PORT`].
    pub fn start_lapi(&self) -> Result<Lapi> {
        Lapi::start(
            &self.lapi,
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), LAPI_PORT),
        )
    }

    /// As [`Fleet::start_lapi`], serving `https://` with a certificate
    /// for every SBC's view of it, signed by a private CA ([`Lapi::ca`]).
    pub fn start_lapi_tls(&self) -> Result<Lapi> {
        let ips: Vec<IpAddr> = (0..self.sbcs.len()).map(|i| lapi_link_addr(i).into()).collect();
        Lapi::start_tls(
            &self.lapi,
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), LAPI_PORT),
            &ips,
        )
    }

    /// The LAPI's URL as SBC `i` reaches it: `http://192.0.2.(4i+1):8080/`.
    pub fn lapi_url(&self, i: usize) -> String {
        format!("http://{}:{LAPI_PORT}/", lapi_link_addr(i))
    }

    /// `lapi`'s URL as SBC `i` reaches it, `https://` if it serves TLS.
    pub fn lapi_url_of(&self, lapi: &Lapi, i: usize) -> String {
        format!("{}://{}:{LAPI_PORT}/", lapi.scheme(), lapi_link_addr(i))
    }

    /// SBC `i`'s namespace.
    pub fn sbc(&self, i: usize) -> &Netns {
        &self.sbcs[i].ns
    }

    /// Sends `count` SIP OPTIONS (UDP to 5060 of the SBC's public address
    /// of `src`'s family) from source `src`, port 5062, out of attacker
    /// `i`'s `att0`: they arrive on SBC `i`'s `pub0`. Returns once all are
    /// handed to the kernel.
    pub fn send_sip_from(&self, i: usize, src: IpAddr, count: u32) -> Result<()> {
        ensure!(
            count <= MAX_SEND,
            "send_sip_from: at most {MAX_SEND} packets"
        );
        let sbc = self.sbcs.get(i).with_context(|| format!("no SBC {i}"))?;
        let dst_mac = parse_mac(&sbc.ns.mac(PUB_IF))?;
        sbc.attacker.run(|| -> Result<()> {
            let sock = PacketSocket::open(ATT_IF)?;
            let frame = sip_frame(src, sock.mac(), dst_mac);
            for n in 0..count {
                sock.send(&frame)
                    .with_context(|| format!("sending packet {n} of {count} from {src}"))?;
            }
            Ok(())
        })
    }
}

/// A complete frame: SIP OPTIONS from `src`:5062 to the SBC's public
/// address (same family):5060, IPv4 header and UDP checksums filled in.
pub fn sip_frame(src: IpAddr, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let payload = sip_request("OPTIONS", None);
    let mut f = match src {
        IpAddr::V4(a) => Frame::udp4(a.octets(), 5060, &payload).build(),
        IpAddr::V6(a) => Frame::udp6(a.octets(), 5060, &payload).build(),
    };
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    match src {
        IpAddr::V4(_) => {
            // UDP checksum 0 (none) is valid over IPv4; the header's is not.
            let c = csum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        IpAddr::V6(a) => {
            let c = csum::udp6(&a.octets(), &SBC_V6, &f[54..]);
            f[60..62].copy_from_slice(&c.to_be_bytes());
        }
    }
    f
}

fn link_to_lapi(lapi: &Netns, sbc: &Netns, i: usize) {
    let peer = format!("sbc{i}");
    ip(&[
        "link",
        "add",
        LAPI_LINK_IF,
        "netns",
        &sbc.name,
        "type",
        "veth",
        "peer",
        "name",
        &peer,
        "netns",
        &lapi.name,
    ]);
    sbc.ip(&[
        "addr",
        "add",
        &format!("{}/30", sbc_link_addr(i)),
        "dev",
        LAPI_LINK_IF,
    ]);
    lapi.ip(&[
        "addr",
        "add",
        &format!("{}/30", lapi_link_addr(i)),
        "dev",
        &peer,
    ]);
    sbc.ip(&["link", "set", LAPI_LINK_IF, "up"]);
    lapi.ip(&["link", "set", &peer, "up"]);
}

fn public_side(sbc: &Sbc) {
    veth(
        End { ns: &sbc.ns, dev: PUB_IF, addr: SBC_PUB_V4 },
        End { ns: &sbc.attacker, dev: ATT_IF, addr: ATT_V4 },
    );
    for (ns, dev, v6) in [(&sbc.ns, PUB_IF, SBC_PUB_V6), (&sbc.attacker, ATT_IF, ATT_V6)] {
        ns.ip(&["-6", "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
    }
    let (a4, a6) = (ATT_V4.to_string(), ATT_V6.to_string());
    sbc.ns
        .ip(&["route", "add", "default", "via", &a4, "dev", PUB_IF]);
    sbc.ns
        .ip(&["-6", "route", "add", "default", "via", &a6, "dev", PUB_IF]);
}

/// The configuration of a fleet member `d` (the fleet test's and the fleet
/// demo's): XDP on [`PUB_IF`], [`TRUNK`] allowlisted, no rate limits (the
/// probes are short bursts), `[crowdsec]` at `url` with the bouncer key in
/// `d.dir/crowdsec.key`, pulling every `every`, pushing as `machine` (with
/// `d.dir/crowdsec.pass`) if given, and a Kamailio jail on
/// `d.dir/auth.log` that bans after 3 failures.
pub fn member_config(d: &Shieldd, url: &str, every: Duration, machine: Option<&str>) -> String {
    let dir = d.dir.display();
    let push = machine.map_or_else(String::new, |m| {
        format!("[crowdsec.push]\nmachine_id = \"{m}\"\npassword_file = \"{dir}/crowdsec.pass\"\n\n")
    });
    format!(
        "[shield]\ninterfaces = [\"{PUB_IF}\"]\npin_path = \"{pin}\"\nstate_dir = \"{state}\"\n\n\
         [control]\nsocket = \"{sock}\"\n\n[metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n\n\
         [limits]\npackets_per_second = 0\n\n[allow]\ncidrs = [\"{TRUNK}/32\"]\n\n\
         [crowdsec]\nlapi_url = \"{url}\"\napi_key_file = \"{dir}/crowdsec.key\"\nupdate_frequency = \"{every}s\"\n\n{push}\
         [[jail]]\nname = \"sip-auth\"\nlogpath = \"{dir}/auth.log\"\nfilter = \"kamailio\"\nmaxretry = 3\nbantime = \"10m\"\n",
        pin = d.pin.display(),
        state = d.state.display(),
        sock = d.socket.display(),
        every = every.as_secs(),
    )
}

/// A Kamailio auth-failure line from `ip`, as the members' jail counts it.
pub fn auth_failure(ip: IpAddr) -> String {
    format!("Nov 30 09:12:07 sbc /usr/sbin/kamailio[2215]: NOTICE: <script>: sipshield: auth failed for 100 from {ip}:5060\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_addresses_are_30s_of_test_net_1() {
        assert_eq!(lapi_link_addr(0), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(sbc_link_addr(0), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(lapi_link_addr(2), Ipv4Addr::new(192, 0, 2, 9));
        assert_eq!(sbc_link_addr(63), Ipv4Addr::new(192, 0, 2, 254));
    }

    #[test]
    fn v4_frame_header_checksum_verifies() {
        let f = sip_frame("198.51.100.50".parse().unwrap(), [2; 6], [4; 6]);
        assert_eq!(csum::checksum(&f[14..34]), 0);
        assert_eq!(&f[26..30], &[198, 51, 100, 50]);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 5060);
    }
}
