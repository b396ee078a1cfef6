//! The forger: the two forgeries of issue 18 sent from the attacker's
//! namespace at the SBC's SIP address during a flood, to check that no
//! forged 2xx gets an address verified (SPEC §8).
//!
//! Each of [`FORGERS`] addresses (probe sources 198.51.100.200 and up)
//! sends, once per [`PERIOD`]:
//!
//! * a keepalive `OPTIONS sip:SBC` carrying `CSeq: 1 REGISTER`: Kamailio
//!   answers `200 Keepalive` to the sender, copying the CSeq;
//! * a forged `200 OK` whose first Via is the SBC and second Via names
//!   another of the forger's addresses (the next [`FORGERS`] probe
//!   sources): Kamailio relays it there statelessly. It is primed: 20 ms
//!   before it, that address sends a REGISTER with the same Call-ID and
//!   CSeq (as a spoofer could, choosing the Call-ID itself), which
//!   Kamailio answers 401.
//!
//! Both 2xx leave the SBC through the egress classifier towards addresses
//! the attacker really has, so the forger's sockets count them. The
//! addresses that ended up verified are read from `shieldctl verified`.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use shield::control::protocol::VerifiedReply;

use super::topology::{probe_source, Topology, PROBE_SOURCES, SBC_SIP_IP};

/// Addresses that send forgeries; as many again are named by the relayed
/// 200 OKs.
pub const FORGERS: usize = 20;
/// Each forger address sends both kinds once per period.
pub const PERIOD: Duration = Duration::from_secs(1);
/// The port forgeries come from (and keepalive answers return to).
const SEND_PORT: u16 = 5070;
/// The port the relayed 200 OKs are addressed to.
const RELAY_PORT: u16 = 5071;

const _: () = assert!(2 * FORGERS <= PROBE_SOURCES);

/// What the forger sent and got back during one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ForgeryReport {
    /// Addresses the forger owns: senders plus those the relayed 200 OKs name.
    pub addresses: u64,
    pub keepalives_sent: u64,
    pub relays_sent: u64,
    /// REGISTERs from the relayed 200 OKs' addresses, same Call-ID and CSeq.
    #[serde(default)]
    pub primers_sent: u64,
    /// 2xx answers that reached the forger's sockets: `200 Keepalive`s and
    /// relayed 200 OKs.
    pub keepalive_2xx: u64,
    pub relayed_2xx: u64,
    /// The forger's addresses `shieldctl verified` listed at the end (None:
    /// not read).
    #[serde(default)]
    pub verified: Option<u64>,
}

impl ForgeryReport {
    pub fn sent(&self) -> u64 {
        self.keepalives_sent + self.relays_sent + self.primers_sent
    }

    pub fn answered_2xx(&self) -> u64 {
        self.keepalive_2xx + self.relayed_2xx
    }

    /// Fills in how many of the forger's addresses `v` lists as verified.
    pub fn count_verified(&mut self, v: &VerifiedReply) {
        let ours: Vec<String> = addresses().iter().map(|a| a.to_string()).collect();
        let n = v
            .entries
            .iter()
            .map(|e| e.net.0.addr().to_string())
            .filter(|ip| ours.iter().any(|o| o == ip))
            .count();
        self.verified = Some(n as u64);
    }
}

/// Every address the forger uses.
pub fn addresses() -> Vec<Ipv4Addr> {
    (0..2 * FORGERS).map(probe_source).collect()
}

/// The forger, running on its own thread in the attacker's namespace.
pub struct Forger {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<ForgeryReport>>,
}

impl Forger {
    /// Starts sending; stops by itself after `duration`.
    pub fn start(topo: &Topology, duration: Duration) -> Forger {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = topo.attacker.spawn(move || run(&flag, duration));
        Forger { stop, thread }
    }

    /// Stops it (if still sending) and waits for its last answers.
    pub fn finish(self) -> Result<ForgeryReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow!("the forger's thread panicked"))?
    }
}

/// Sockets: per forger address, its sender and the socket its relayed 200
/// OK is addressed to.
struct Pair {
    tx: UdpSocket,
    relay_to: SocketAddrV4,
    rx: UdpSocket,
}

fn bind(ip: Ipv4Addr, port: u16) -> Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddrV4::new(ip, port))
        .with_context(|| format!("binding the forger's {ip}:{port}"))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The sending loop (in the attacker's namespace), then a second of
/// draining for late answers.
fn run(stop: &AtomicBool, duration: Duration) -> Result<ForgeryReport> {
    let pairs: Vec<Pair> = (0..FORGERS)
        .map(|i| {
            let relay_to = SocketAddrV4::new(probe_source(FORGERS + i), RELAY_PORT);
            Ok(Pair {
                tx: bind(probe_source(i), SEND_PORT)?,
                rx: bind(*relay_to.ip(), RELAY_PORT)?,
                relay_to,
            })
        })
        .collect::<Result<_>>()?;
    let mut r = ForgeryReport {
        addresses: 2 * FORGERS as u64,
        ..ForgeryReport::default()
    };
    let sbc = SocketAddrV4::new(SBC_SIP_IP, 5060);
    let t0 = Instant::now();
    let mut round = 0u64;
    // Bounded in time and in count: at most one round per period.
    let rounds = (duration.as_secs_f64() / PERIOD.as_secs_f64()).ceil() as u64;
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < duration && round < rounds {
        if t0.elapsed() >= PERIOD * round as u32 {
            for p in &pairs {
                let id = format!("{round}-{}", p.relay_to.ip());
                if p.rx.send_to(primer(p.relay_to, &id).as_bytes(), sbc).is_ok() {
                    r.primers_sent += 1;
                }
            }
            // Kamailio's 401 to each primer leaves before the forged 200.
            std::thread::sleep(Duration::from_millis(20));
            for (i, p) in pairs.iter().enumerate() {
                let from = SocketAddrV4::new(probe_source(i), SEND_PORT);
                let id = format!("{round}-{}", p.relay_to.ip());
                // A full socket buffer only loses a forgery; count what left.
                if p.tx.send_to(keepalive(from, &id).as_bytes(), sbc).is_ok() {
                    r.keepalives_sent += 1;
                }
                if p.tx.send_to(relay(p.relay_to, &id).as_bytes(), sbc).is_ok() {
                    r.relays_sent += 1;
                }
            }
            round += 1;
        }
        drain(&pairs, &mut r);
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        drain(&pairs, &mut r);
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(r)
}

/// Counts the 2xx waiting on every socket.
fn drain(pairs: &[Pair], r: &mut ForgeryReport) {
    let mut buf = [0u8; 4096];
    for p in pairs {
        while let Ok(n) = p.tx.recv(&mut buf) {
            r.keepalive_2xx += is_2xx(&buf[..n]) as u64;
        }
        while let Ok(n) = p.rx.recv(&mut buf) {
            r.relayed_2xx += is_2xx(&buf[..n]) as u64;
        }
    }
}

fn is_2xx(msg: &[u8]) -> bool {
    msg.starts_with(b"SIP/2.0 2")
}

/// Forgery 1: a keepalive OPTIONS whose CSeq says REGISTER.
fn keepalive(from: SocketAddrV4, id: &str) -> String {
    format!(
        "OPTIONS sip:{SBC_SIP_IP} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-ka-{id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ka@{from}>;tag=k{id}\r\nTo: <sip:{SBC_SIP_IP}>\r\n\
         Call-ID: keepalive-{id}@forger\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Forgery 2's primer: a REGISTER from `victim` with the Call-ID and CSeq
/// the forged 200 OK carries.
fn primer(victim: SocketAddrV4, id: &str) -> String {
    format!(
        "REGISTER sip:sbc.lab SIP/2.0\r\nVia: SIP/2.0/UDP {victim};branch=z9hG4bK-victim-{id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1000@sbc.lab>;tag=f{id}\r\nTo: <sip:1000@sbc.lab>\r\n\
         Call-ID: relay-{id}@forger\r\nCSeq: 1 REGISTER\r\nContact: <sip:1000@{victim}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Forgery 2: a 200 OK to a REGISTER whose first Via is the SBC and second
/// Via names `victim`.
fn relay(victim: SocketAddrV4, id: &str) -> String {
    format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {SBC_SIP_IP}:5060;branch=z9hG4bK-forged-{id}\r\n\
         Via: SIP/2.0/UDP {victim};branch=z9hG4bK-victim-{id}\r\n\
         From: <sip:1000@sbc.lab>;tag=f{id}\r\nTo: <sip:1000@sbc.lab>;tag=t{id}\r\n\
         Call-ID: relay-{id}@forger\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_forgers_addresses_and_forgeries_are_well_formed() {
        let v: VerifiedReply = serde_json::from_value(serde_json::json!({
            "total": 3,
            "entries": [
                {"net": "198.51.100.200/32", "how": "reply", "expires_in_secs": 3600},
                {"net": "198.51.100.239/32", "how": "reply", "expires_in_secs": 3600},
                {"net": "203.0.113.20/32", "how": "reply", "expires_in_secs": 3600}
            ],
            "unverified_per_second": 500,
            "budget_tokens": null,
            "under_pressure": false
        }))
        .expect("a verified reply");
        let mut r = ForgeryReport::default();
        r.count_verified(&v);
        assert_eq!(r.verified, Some(2));
        let victim = SocketAddrV4::new(probe_source(FORGERS), RELAY_PORT);
        let msg = relay(victim, "0-0");
        assert!(msg.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;"));
        assert!(msg.contains("Via: SIP/2.0/UDP 198.51.100.220:5071;"));
        let ka = keepalive(SocketAddrV4::new(probe_source(0), SEND_PORT), "0-0");
        assert!(
            ka.starts_with("OPTIONS sip:198.51.100.1 SIP/2.0")
                && ka.contains("CSeq: 1 REGISTER\r\n")
        );
    }
}
