//! The lab's network: attacker, carrier and SBC namespaces, each outside
//! host joined to the SBC by its own veth pair (see the module docs of
//! [`crate::lab`] for the picture), built with [`crate::netns`]. Deleted on
//! drop.

use std::net::Ipv4Addr;

use crate::netns::{veth, End, Netns};

/// The SBC's public interface (towards the attacker / the internet).
pub const SBC_PUBLIC_IF: &str = "pub0";
/// The SBC's carrier interconnect (towards the trunk and the subscribers).
pub const SBC_CARRIER_IF: &str = "car0";
/// The outside hosts' interface name (in their own namespaces).
pub const HOST_IF: &str = "eth0";

pub const SBC_PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The SBC's one SIP address, which everybody - subscribers, the trunk and
/// the attacker - sends to. The carrier reaches it over its own link (the
/// SBC answers for all its addresses on every interface), so legitimate and
/// attack traffic share Kamailio's socket and workers, as on a real SBC.
pub const SBC_SIP_IP: Ipv4Addr = SBC_PUBLIC_IP;
pub const SBC_CARRIER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const CARRIER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The carrier's trunk: allowlisted in config/shield.toml (203.0.113.10/32),
/// trusted by address in Kamailio, in the nftables allow set.
pub const TRUNK_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Legitimate subscribers (phones that register), not allowlisted.
pub const SUBSCRIBERS: usize = 8;
/// The password-guessing attacker.
pub const BRUTE_FORCE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
/// The sipvicious scanner.
pub const SCANNER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
/// Flood sources: 198.51.100.100 and up.
pub const FLOOD_BASE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
pub const FLOOD_SOURCES: usize = 64;
/// Probe sources for the log-to-drop latency runs: 198.51.100.200 and up.
pub const PROBE_BASE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
pub const PROBE_SOURCES: usize = 40;

/// The `i`-th subscriber's address: 203.0.113.20 and up.
pub fn subscriber_ip(i: usize) -> Ipv4Addr {
    assert!(i < SUBSCRIBERS);
    Ipv4Addr::new(203, 0, 113, 20 + i as u8)
}

pub fn flood_source(i: usize) -> Ipv4Addr {
    assert!(i < FLOOD_SOURCES);
    Ipv4Addr::from(u32::from(FLOOD_BASE) + i as u32)
}

pub fn probe_source(i: usize) -> Ipv4Addr {
    assert!(i < PROBE_SOURCES);
    Ipv4Addr::from(u32::from(PROBE_BASE) + i as u32)
}

/// The three hosts. Field order is drop order: the SBC (where the daemons
/// run) goes first.
pub struct Topology {
    pub sbc: Netns,
    pub attacker: Netns,
    pub carrier: Netns,
}

impl Topology {
    /// Creates the namespaces, the veth pairs and every address above.
    pub fn new() -> Topology {
        crate::kernel::require_root();
        let t = Topology {
            sbc: Netns::new("sbc"),
            attacker: Netns::new("att"),
            carrier: Netns::new("car"),
        };
        t.join(&t.attacker, SBC_PUBLIC_IF, SBC_PUBLIC_IP, ATTACKER_IP);
        t.join(&t.carrier, SBC_CARRIER_IF, SBC_CARRIER_IP, CARRIER_IP);
        t.attacker.add_addrs(HOST_IF, &attacker_sources());
        t.carrier.add_addrs(HOST_IF, &carrier_sources());
        t.carrier.ip(&[
            "route",
            "add",
            &format!("{SBC_SIP_IP}/32"),
            "via",
            &SBC_CARRIER_IP.to_string(),
            "dev",
            HOST_IF,
        ]);
        t
    }

    /// One veth pair (see [`veth`]): `HOST_IF` in `host`, `sbc_if` in the
    /// SBC.
    fn join(&self, host: &Netns, sbc_if: &str, sbc_ip: Ipv4Addr, host_ip: Ipv4Addr) {
        veth(
            End {
                ns: host,
                dev: HOST_IF,
                addr: host_ip,
            },
            End {
                ns: &self.sbc,
                dev: sbc_if,
                addr: sbc_ip,
            },
        );
        // NAPI on the SBC's end, so it takes XDP frames from its peer (the
        // flood's in-kernel generator) whether or not an XDP program runs.
        let dev = sbc_if.to_string();
        self.sbc
            .run(move || super::xdpgen::enable_gro(&dev))
            .unwrap_or_else(|e| panic!("enabling GRO on {sbc_if}: {e}"));
    }

    /// Fills the neighbour tables both ways for every address, so the
    /// first packets of a run do not wait for ARP.
    pub fn warm_neighbours(&self) {
        let att = self.attacker.mac(HOST_IF);
        let car = self.carrier.mac(HOST_IF);
        let mut att_addrs = vec![ATTACKER_IP];
        att_addrs.extend(attacker_sources());
        for a in att_addrs {
            self.sbc.neighbour(a, &att, SBC_PUBLIC_IF);
        }
        let mut car_addrs = vec![CARRIER_IP];
        car_addrs.extend(carrier_sources());
        for a in car_addrs {
            self.sbc.neighbour(a, &car, SBC_CARRIER_IF);
        }
        self.attacker
            .neighbour(SBC_PUBLIC_IP, &self.sbc.mac(SBC_PUBLIC_IF), HOST_IF);
        self.carrier
            .neighbour(SBC_CARRIER_IP, &self.sbc.mac(SBC_CARRIER_IF), HOST_IF);
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new()
    }
}

/// The attacker's addresses besides its own: brute force, scanner, flood
/// and probe sources.
fn attacker_sources() -> Vec<Ipv4Addr> {
    let mut v = vec![BRUTE_FORCE_IP, SCANNER_IP];
    v.extend((0..FLOOD_SOURCES).map(flood_source));
    v.extend((0..PROBE_SOURCES).map(probe_source));
    v
}

/// The carrier's addresses besides its own: the trunk and the subscribers.
fn carrier_sources() -> Vec<Ipv4Addr> {
    let mut v = vec![TRUNK_IP];
    v.extend((0..SUBSCRIBERS).map(subscriber_ip));
    v
}

/// An interface's packet counters (`ip -s link`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

impl LinkStats {
    pub fn read(ns: &Netns, dev: &str) -> LinkStats {
        let out = std::process::Command::new("ip")
            .args(["-n", &ns.name, "-s", "-j", "link", "show", "dev", dev])
            .output()
            .expect("ip -s -j link show");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let s = &v[0]["stats64"];
        let n = |a: &str, b: &str| s[a][b].as_u64().unwrap_or(0);
        LinkStats {
            rx_packets: n("rx", "packets"),
            rx_dropped: n("rx", "dropped"),
            tx_packets: n("tx", "packets"),
            tx_dropped: n("tx", "dropped"),
        }
    }

    pub fn since(&self, earlier: &LinkStats) -> LinkStats {
        LinkStats {
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(earlier.rx_dropped),
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            tx_dropped: self.tx_dropped.saturating_sub(earlier.tx_dropped),
        }
    }
}
