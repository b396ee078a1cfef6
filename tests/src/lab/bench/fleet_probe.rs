//! Section 7, part 2: is each sampled decision enforced? For a random
//! sample of Range decisions, a few SIP packets from an address inside the
//! range (never its network address), from the network address itself,
//! and from a sample of Ip decisions, sent onto each SBC's `pub0`; plus
//! addresses no decision covers (the control). A UDP listener on the SBC's
//! SIP port (198.51.100.1:5060 and [2001:db8::1]:5060) counts what arrived
//! per source: a probe is blocked when none of its packets arrived. Both
//! bouncers drop before the socket (XDP; nftables' input hook), so the
//! listener is one yardstick for both; the XDP `drop`/`ban` counter and
//! the nftables rule counters are read as a cross-check.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::fleet_setup::{FleetOptions, NFT_SBC, SHIELDD_SBC};
use crate::gen::Rng;
use crate::crowdsec::{Decision, Scope};
use crate::daemon::Shieldd;
use crate::fleet::{Fleet, SBC_PUB_V4, SBC_PUB_V6};
use crate::lab::cpu::UdpCounters;
use crate::lab::csbouncer::CsBouncer;
use crate::lab::signals;
use crate::netns::Netns;

/// One row: a kind of probe and how each bouncer fared.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProbeRow {
    pub kind: String,
    pub probes: usize,
    /// Probes none of whose packets reached the SBC's socket.
    pub shieldd_blocked: usize,
    pub nft_blocked: usize,
    /// Probes some but not all of whose packets arrived.
    pub shieldd_partial: usize,
    pub nft_partial: usize,
    /// Probes whose decision's element was in the nftables bouncer's
    /// sets when probed (its blocked count is of these), and of those
    /// blocked.
    pub nft_loaded: usize,
    pub nft_loaded_blocked: usize,
    /// A few probed addresses with their decision, for the report.
    pub examples: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProbeResults {
    pub packets_per_probe: u32,
    pub rows: Vec<ProbeRow>,
    /// Packets sent to each SBC.
    pub sent: u64,
    /// Counted as `drop`/`ban` by shieldd's XDP program meanwhile.
    pub xdp_ban_drops: u64,
    /// Counted by the nftables bouncer's drop rules meanwhile.
    pub nft_rule_drops: u64,
    /// UDP receive-buffer errors on either SBC (should be 0).
    pub rcvbuf_errors: u64,
}

/// A probe: the address sent from and the decision it tests.
struct Probe {
    kind: usize,
    src: IpAddr,
    decision: String,
}

const KINDS: [&str; 7] = [
    "Range, IPv4 (/28): an address inside, not the network address",
    "Range, IPv6 (/64): an address inside, not the network address",
    "Range, IPv4 (/28): its network address",
    "Range, IPv6 (/64): its network address",
    "Ip, IPv4",
    "Ip, IPv6",
    "control: an address no decision covers (v4 and v6)",
];

/// A random address of `net` other than its network address.
pub fn inside(net: &IpNet, rng: &mut Rng) -> IpAddr {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    if host_bits == 0 {
        return net.network();
    }
    let span: u128 = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    let offset = 1 + r % span.max(1);
    match net {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + offset as u32)),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + offset)),
    }
}

/// `n` distinct random decisions matching `pick`.
fn sample<'a>(d: &'a [Decision], n: usize, rng: &mut Rng, pick: impl Fn(&Decision) -> bool) -> Vec<&'a Decision> {
    let mut pool: Vec<&Decision> = d.iter().filter(|x| pick(x)).collect();
    let n = n.min(pool.len());
    for i in 0..n {
        let j = i + rng.below(pool.len() - i);
        pool.swap(i, j);
    }
    pool.truncate(n);
    pool
}

fn probes(d: &[Decision], o: &FleetOptions) -> Result<Vec<Probe>> {
    let mut rng = Rng::new(o.seed);
    let is = |scope: Scope, v6: bool| move |x: &Decision| x.scope == scope && x.value.contains(':') == v6;
    let mut out = Vec::new();
    let half_r = o.range_probes / 2;
    for (k, v6) in [(0, false), (1, true)] {
        for x in sample(d, half_r, &mut rng, is(Scope::Range, v6)) {
            let net: IpNet = x.value.parse().with_context(|| x.value.clone())?;
            out.push(Probe { kind: k, src: inside(&net, &mut rng), decision: x.value.clone() });
        }
    }
    for (k, v6) in [(2, false), (3, true)] {
        for x in sample(d, (half_r / 5).max(1), &mut rng, is(Scope::Range, v6)) {
            let net: IpNet = x.value.parse().with_context(|| x.value.clone())?;
            out.push(Probe { kind: k, src: net.network(), decision: x.value.clone() });
        }
    }
    for (k, v6) in [(4, false), (5, true)] {
        for x in sample(d, o.ip_probes / 2, &mut rng, is(Scope::Ip, v6)) {
            out.push(Probe { kind: k, src: x.value.parse().with_context(|| x.value.clone())?, decision: x.value.clone() });
        }
    }
    for n in 0..50u32 {
        out.push(Probe { kind: 6, src: Ipv4Addr::new(203, 0, 113, 100 + n as u8).into(), decision: "none".into() });
        out.push(Probe { kind: 6, src: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x100 + n as u16).into(), decision: "none".into() });
    }
    Ok(out)
}

/// The nftables element a decision value becomes (a Range: its network
/// address, the bouncer's way).
fn element(value: &str) -> String {
    match value.parse::<IpNet>() {
        Ok(n) => n.network().to_string(),
        Err(_) => value.parse::<IpAddr>().map_or(value.to_string(), |a| a.to_string()),
    }
}

/// UDP sockets on the SBC's SIP port counting datagrams per source.
struct Listener {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<HashMap<IpAddr, u32>>>,
}

impl Listener {
    fn start(ns: &Netns) -> Result<Listener> {
        let socks = ns.run(|| -> Result<Vec<UdpSocket>> {
            [SocketAddr::from((SBC_PUB_V4, 5060)), SocketAddr::from((SBC_PUB_V6, 5060))]
                .into_iter()
                .map(|a| UdpSocket::bind(a).with_context(|| format!("binding {a}")))
                .collect()
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let threads = socks
            .into_iter()
            .map(|s| {
                let stop = stop.clone();
                std::thread::spawn(move || count(&s, &stop))
            })
            .collect();
        Ok(Listener { stop, threads })
    }

    fn finish(self) -> HashMap<IpAddr, u32> {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::SeqCst);
        let mut all = HashMap::new();
        for t in self.threads {
            all.extend(t.join().unwrap_or_default());
        }
        all
    }
}

fn count(s: &UdpSocket, stop: &AtomicBool) -> HashMap<IpAddr, u32> {
    let mut m = HashMap::new();
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((_, from)) = s.recv_from(&mut buf) {
            *m.entry(from.ip()).or_insert(0) += 1;
        }
    }
    m
}

/// Sends every probe to both SBCs and counts what arrived.
pub fn run(fleet: &Fleet, sd: &Shieldd, b: &CsBouncer, d: &[Decision], o: &FleetOptions) -> Result<ProbeResults> {
    let list = probes(d, o)?;
    let loaded = b.elements()?;
    let per = o.probe_packets.max(1);
    let xdp0 = sd.stats().map(|s| crate::daemon::packets(&s, "drop", "ban"))?;
    let nft0 = b.dropped()?;
    let udp0 = [UdpCounters::read(fleet.sbc(SHIELDD_SBC)), UdpCounters::read(fleet.sbc(NFT_SBC))];
    let listeners = [Listener::start(fleet.sbc(SHIELDD_SBC))?, Listener::start(fleet.sbc(NFT_SBC))?];
    for (n, p) in list.iter().enumerate() {
        if n % 100 == 0 {
            signals::check()?;
        }
        fleet.send_sip_from(SHIELDD_SBC, p.src, per)?;
        fleet.send_sip_from(NFT_SBC, p.src, per)?;
    }
    let [l0, l1] = listeners;
    let (got0, got1) = (l0.finish(), l1.finish());
    let udp1 = [UdpCounters::read(fleet.sbc(SHIELDD_SBC)), UdpCounters::read(fleet.sbc(NFT_SBC))];
    let mut rows: Vec<ProbeRow> = KINDS.iter().map(|k| ProbeRow { kind: (*k).into(), ..ProbeRow::default() }).collect();
    for p in &list {
        let row = &mut rows[p.kind];
        row.probes += 1;
        let at0 = got0.get(&p.src).copied().unwrap_or(0);
        let at1 = got1.get(&p.src).copied().unwrap_or(0);
        row.shieldd_blocked += usize::from(at0 == 0);
        row.nft_blocked += usize::from(at1 == 0);
        row.shieldd_partial += usize::from(at0 > 0 && at0 < per);
        row.nft_partial += usize::from(at1 > 0 && at1 < per);
        if loaded.contains(&element(&p.decision)) {
            row.nft_loaded += 1;
            row.nft_loaded_blocked += usize::from(at1 == 0);
        }
        if row.examples.len() < 2 {
            row.examples.push((p.src.to_string(), p.decision.clone()));
        }
    }
    Ok(ProbeResults {
        packets_per_probe: per,
        rows,
        sent: list.len() as u64 * u64::from(per),
        xdp_ban_drops: sd.stats().map(|s| crate::daemon::packets(&s, "drop", "ban"))? - xdp0,
        nft_rule_drops: b.dropped()? - nft0,
        rcvbuf_errors: (0..2).map(|i| udp1[i].since(&udp0[i]).rcvbuf_errors).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_is_in_the_range_and_never_its_network_address() {
        let mut rng = Rng::new(1);
        for s in ["100.64.0.16/28", "2001:db8:c:5::/64", "198.51.100.7/32"] {
            let net: IpNet = s.parse().unwrap();
            for _ in 0..1000 {
                let a = inside(&net, &mut rng);
                assert!(net.contains(&a), "{a} not in {net}");
                if net.prefix_len() < net.max_prefix_len() {
                    assert_ne!(a, net.network());
                }
            }
        }
    }
}
