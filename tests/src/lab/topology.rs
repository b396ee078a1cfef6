//! The lab's network: attacker, carrier and SBC namespaces, each outside
//! host joined to the SBC by its own veth pair (see the module docs of
//! [`crate::lab`] for the picture). Deleted on drop.

use std::net::Ipv4Addr;

use crate::netns::{ip, Netns};

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
        let mut extra: Vec<Ipv4Addr> = vec![BRUTE_FORCE_IP, SCANNER_IP];
        extra.extend((0..FLOOD_SOURCES).map(flood_source));
        extra.extend((0..PROBE_SOURCES).map(probe_source));
        add_addrs(&t.attacker, &extra);
        let mut carrier: Vec<Ipv4Addr> = vec![TRUNK_IP];
        carrier.extend((0..SUBSCRIBERS).map(subscriber_ip));
        add_addrs(&t.carrier, &carrier);
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

    /// One veth pair: `HOST_IF` in `host`, `sbc_if` in the SBC. Two queues
    /// each way, so traffic from senders on different CPUs is received on
    /// different CPUs, as on a multi-queue NIC.
    fn join(&self, host: &Netns, sbc_if: &str, sbc_ip: Ipv4Addr, host_ip: Ipv4Addr) {
        ip(&[
            "link",
            "add",
            HOST_IF,
            "netns",
            &host.name,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            sbc_if,
            "netns",
            &self.sbc.name,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
        ]);
        self.sbc
            .ip(&["addr", "add", &format!("{sbc_ip}/24"), "dev", sbc_if]);
        host.ip(&["addr", "add", &format!("{host_ip}/24"), "dev", HOST_IF]);
        self.sbc.ip(&["link", "set", sbc_if, "up"]);
        host.ip(&["link", "set", HOST_IF, "up"]);
        // NAPI on the SBC's end, so it takes XDP frames from its peer (the
        // flood's in-kernel generator) whether or not an XDP program runs.
        let dev = sbc_if.to_string();
        self.sbc
            .run(move || super::xdpgen::enable_gro(&dev))
            .unwrap_or_else(|e| panic!("enabling GRO on {sbc_if}: {e}"));
    }

    /// The MAC address of `dev` in `ns` (the flood sender writes Ethernet
    /// frames itself). Asked through the namespace's netlink: /sys shows
    /// the namespace of whoever mounted it.
    pub fn mac(ns: &Netns, dev: &str) -> String {
        let out = std::process::Command::new("ip")
            .args(["-n", &ns.name, "-j", "link", "show", "dev", dev])
            .output()
            .expect("ip -j link show");
        assert!(
            out.status.success(),
            "ip link show {dev}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        v[0]["address"].as_str().expect("link address").to_string()
    }

    /// Fills the neighbour tables both ways for every address, so the
    /// first packets of a run do not wait for ARP.
    pub fn warm_neighbours(&self) {
        let sbc_pub = Topology::mac(&self.sbc, SBC_PUBLIC_IF);
        let sbc_car = Topology::mac(&self.sbc, SBC_CARRIER_IF);
        let att = Topology::mac(&self.attacker, HOST_IF);
        let car = Topology::mac(&self.carrier, HOST_IF);
        let mut att_addrs = vec![ATTACKER_IP, BRUTE_FORCE_IP, SCANNER_IP];
        att_addrs.extend((0..FLOOD_SOURCES).map(flood_source));
        att_addrs.extend((0..PROBE_SOURCES).map(probe_source));
        for a in att_addrs {
            self.sbc.ip(&[
                "neigh",
                "replace",
                &a.to_string(),
                "lladdr",
                &att,
                "dev",
                SBC_PUBLIC_IF,
                "nud",
                "permanent",
            ]);
        }
        let mut car_addrs = vec![CARRIER_IP, TRUNK_IP];
        car_addrs.extend((0..SUBSCRIBERS).map(subscriber_ip));
        for a in car_addrs {
            self.sbc.ip(&[
                "neigh",
                "replace",
                &a.to_string(),
                "lladdr",
                &car,
                "dev",
                SBC_CARRIER_IF,
                "nud",
                "permanent",
            ]);
        }
        self.attacker.ip(&[
            "neigh",
            "replace",
            &SBC_PUBLIC_IP.to_string(),
            "lladdr",
            &sbc_pub,
            "dev",
            HOST_IF,
            "nud",
            "permanent",
        ]);
        self.carrier.ip(&[
            "neigh",
            "replace",
            &SBC_CARRIER_IP.to_string(),
            "lladdr",
            &sbc_car,
            "dev",
            HOST_IF,
            "nud",
            "permanent",
        ]);
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new()
    }
}

/// Adds many /32 addresses with one `ip -batch` run.
fn add_addrs(ns: &Netns, addrs: &[Ipv4Addr]) {
    let script: String = addrs
        .iter()
        .map(|a| format!("addr add {a}/32 dev {HOST_IF}\n"))
        .collect();
    let mut child = std::process::Command::new("ip")
        .args(["-n", &ns.name, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip -batch");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("ip -batch input");
    let status = child.wait().expect("ip -batch");
    assert!(status.success(), "adding addresses in {}", ns.name);
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
