//! Reloads are all or nothing (SPEC §3): a reload that fails part-way (an
//! interface the kernel will not attach, lists that overflow their maps
//! once shieldctl's runtime entries are added) leaves the old policy in
//! force, in the kernel and in the daemon. The kernel side is read from
//! the pinned maps, and checked with traffic.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use aya::maps::{lpm_trie::LpmTrie, Array, Map, MapData};
use common::*;
use shield::kernel::MapId;
use shield_common::{Policy, F_ENFORCE, PORT_UDP};

const EVERY: Duration = Duration::from_millis(1);

fn pinned(d: &Shieldd, map: MapId) -> MapData {
    let path = d.pin.join(map.name());
    MapData::from_pin(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// The policy record the kernel enforces.
fn kernel_policy(d: &Shieldd) -> Policy {
    let a: Array<MapData, Policy> =
        Array::try_from(Map::Array(pinned(d, MapId::Policy))).expect("POLICY is an array");
    a.get(&0, 0).expect("POLICY[0]")
}

/// The kernel's `PORTS` entry of `port`.
fn kernel_port(d: &Shieldd, port: u32) -> u8 {
    let a: Array<MapData, u8> =
        Array::try_from(Map::Array(pinned(d, MapId::Ports))).expect("PORTS is an array");
    a.get(&port, 0).expect("PORTS entry")
}

/// Prefixes in the kernel's IPv4 allowlist.
fn kernel_allow_v4(d: &Shieldd) -> usize {
    let t: LpmTrie<MapData, [u8; 4], u8> =
        LpmTrie::try_from(Map::LpmTrie(pinned(d, MapId::AllowV4))).expect("ALLOW_V4 is a trie");
    t.keys().map(|k| k.expect("ALLOW_V4 key")).count()
}

/// Entries of `shieldctl allow|deny list`.
fn listed(d: &Shieldd, list: &str) -> Vec<String> {
    d.ctl_json(&[list, "list"])["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["net"].as_str().expect("net").to_string())
        .collect()
}

/// A list file of `n` distinct /32s in 10.0.0.0/8.
fn write_list(path: &Path, n: u32) {
    let text: String = (0..n)
        .map(|i| format!("{}\n", Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    std::fs::write(path, text).expect("list file");
}

#[test]
fn a_reload_with_an_interface_that_cannot_attach_keeps_enforcing_the_old_policy() {
    let lab = Lab::new();
    let mut d = Shieldd::new(
        bins(),
        &lab.sbc,
        "[limits]\npackets_per_second = 0\n\n[verify]\nunverified_per_second = 0\n",
    );
    let good = std::fs::read_to_string(&d.config).expect("config");
    d.start();
    d.ctl_ok(&["ban", "198.51.100.2"]);
    let before = kernel_policy(&d);
    assert!(before.has(F_ENFORCE));

    // Dry run, a rate, a budget, and `lo`, which has no driver-mode XDP.
    let bad = good
        .replace(
            &format!("interfaces = [\"{SBC_IF}\"]"),
            &format!("interfaces = [\"{SBC_IF}\", \"lo\"]\nmode = \"driver\"\nenforce = false"),
        )
        .replace("packets_per_second = 0", "packets_per_second = 7")
        .replace("unverified_per_second = 0", "unverified_per_second = 9");
    assert_ne!(bad, good);
    d.write_config(&bad);
    let out = d.ctl(&["reload"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");

    // The kernel: the very same policy record, no link on lo.
    assert_eq!(kernel_policy(&d), before, "the kernel's policy changed");
    assert!(!d.pin.join("link_driver_lo").exists(), "lo stays detached");
    // The daemon: the old configuration.
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["enforce"], true, "{status}");
    let ifaces: Vec<_> = status["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ifaces, [SBC_IF], "{status}");
    let verified = d.ctl_json(&["verified"]);
    assert_eq!(verified["unverified_per_second"], 0, "{verified}");
    // And traffic: the banned source is still dropped.
    let sink = Sink::start(&lab);
    send(&lab, PEER_IP, 50, EVERY);
    settle();
    assert_eq!(sink.from(PEER_IP).count, 0, "a banned packet got through");
    assert!(
        err.contains("lo") && err.contains("driver") && err.contains("nothing changed"),
        "the error names what failed and says the old policy stays: {err}"
    );

    // Swapping the interface for one that cannot attach keeps the old
    // one attached: nothing is detached before everything is attached.
    d.write_config(&bad.replace(&format!("\"{SBC_IF}\", "), ""));
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["interfaces"][0]["name"], SBC_IF, "{status}");
    assert!(d.pin.join(format!("link_driver_{SBC_IF}")).exists());
    assert_eq!(kernel_policy(&d), before, "the kernel's policy changed");
    send(&lab, PEER_IP, 50, EVERY);
    settle();
    assert_eq!(sink.from(PEER_IP).count, 0, "a banned packet got through");

    // A good reload afterwards applies.
    d.write_config(&good.replace(
        &format!("interfaces = [\"{SBC_IF}\"]"),
        &format!("interfaces = [\"{SBC_IF}\"]\nenforce = false"),
    ));
    d.ctl_ok(&["reload"]);
    assert_eq!(d.ctl_json(&["status"])["enforce"], false);
    assert!(!kernel_policy(&d).has(F_ENFORCE));
}

#[test]
fn a_reload_whose_lists_overflow_with_runtime_entries_changes_nothing() {
    let lab = Lab::new();
    let denied = Ipv4Addr::new(198, 51, 100, 3);
    lab.add_peer_addr(denied);
    let files = tempfile::tempdir().expect("tempdir");
    let list = files.path().join("allow.txt");
    write_list(&list, 998);
    let mut d = Shieldd::new(
        bins(),
        &lab.sbc,
        &format!(
            "{NO_LIMITS}\n[capacity]\nallow = 1000\n\n[ports]\nudp = [5060]\n\n\
             [allow]\nfiles = [\"{}\"]\n",
            list.display()
        ),
    );
    let good = std::fs::read_to_string(&d.config).expect("config");
    d.start();
    // 998 from the file and 2 from shieldctl: the map is full.
    d.ctl_ok(&["allow", "add", "192.0.2.1"]);
    d.ctl_ok(&["allow", "add", "192.0.2.2"]);
    assert_eq!(kernel_allow_v4(&d), 1000);
    let before = kernel_policy(&d);

    // One more in the file (fits alone, not with the runtime entries), a
    // new port, a new deny entry.
    write_list(&list, 999);
    d.write_config(&format!(
        "{}\n[deny]\ncidrs = [\"{denied}\"]\n",
        good.replace("udp = [5060]", "udp = [5060, 5080]")
    ));
    let out = d.ctl(&["reload"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the reload must fail: {err}");

    assert_eq!(kernel_port(&d, 5080), 0, "the new port is not protected");
    assert_ne!(kernel_port(&d, 5060) & PORT_UDP, 0);
    assert_eq!(kernel_policy(&d), before, "the kernel's policy changed");
    assert!(
        listed(&d, "deny").is_empty(),
        "the daemon's denylist changed"
    );
    let allowed = listed(&d, "allow");
    assert_eq!(allowed.len(), 1000);
    assert_eq!(
        kernel_allow_v4(&d),
        allowed.len(),
        "kernel and daemon disagree on the allowlist"
    );
    let sink = Sink::start(&lab);
    send(&lab, denied, 20, EVERY);
    settle();
    assert_eq!(
        sink.from(denied).count,
        20,
        "the new deny entry is not in force"
    );
    assert!(
        err.contains("capacity.allow") && err.contains("1001") && err.contains("nothing changed"),
        "the error names the full list: {err}"
    );
}

#[test]
fn a_map_that_fills_part_way_through_a_reload_is_rolled_back_entirely() {
    let lab = Lab::new();
    let denied = Ipv4Addr::new(198, 51, 100, 3);
    lab.add_peer_addr(denied);
    let mut d = Shieldd::new(
        bins(),
        &lab.sbc,
        &format!("{NO_LIMITS}\n[ports]\nudp = [5060]\n"),
    );
    let good = std::fs::read_to_string(&d.config).expect("config");
    d.start();
    d.ctl_ok(&["ban", "198.51.100.2"]);
    // One operator entry: with a full `[verify] cidrs` the IPv4 trie
    // overflows on the last write of the reload, after ports, lists and
    // policy are written.
    d.ctl_ok(&["verify", "192.0.2.77"]);
    let before = kernel_policy(&d);
    let capacity = shield_common::default_size::VERIFY_NETS;
    let cidrs: Vec<String> = (0..capacity)
        .map(|i| format!("\"{}\"", Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    d.write_config(&format!(
        "{}\n[deny]\ncidrs = [\"{denied}\"]\n\n[verify]\ncidrs = [{}]\n",
        good.replace("udp = [5060]", "udp = [5060, 5080]").replace(
            &format!("interfaces = [\"{SBC_IF}\"]"),
            &format!("interfaces = [\"{SBC_IF}\"]\nenforce = false"),
        ),
        cidrs.join(", ")
    ));
    let out = d.ctl(&["reload"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");

    // Lists written and rolled back bump the list generation; the rest of
    // the record is the old one.
    let gen_free = |p: Policy| Policy { acl_gen: 0, ..p };
    assert_eq!(gen_free(kernel_policy(&d)), gen_free(before));
    assert_eq!(kernel_port(&d, 5080), 0, "the new port is not protected");
    assert!(
        listed(&d, "deny").is_empty(),
        "the daemon's denylist changed"
    );
    assert_eq!(d.ctl_json(&["status"])["enforce"], true);
    let verified = d.ctl_json(&["verified"]);
    assert_eq!(
        verified["total"], 1,
        "only the operator's entry: {verified}"
    );
    let sink = Sink::start(&lab);
    send(&lab, denied, 20, EVERY);
    send(&lab, PEER_IP, 20, EVERY);
    settle();
    assert_eq!(
        sink.from(denied).count,
        20,
        "the new deny entry is not in force"
    );
    assert_eq!(sink.from(PEER_IP).count, 0, "a banned packet got through");
    assert!(
        err.contains("[verify] cidrs") && err.contains("rolled back"),
        "{err}"
    );
}
