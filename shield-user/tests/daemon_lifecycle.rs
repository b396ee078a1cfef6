//! The daemon's life cycle under traffic: `kill -9` and restarts without a
//! moment of lost protection, bans restored from the pinned maps and from
//! state_dir, reloads that refuse a broken file, detaching, and pinned maps
//! that no longer fit the configuration.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use shield::kernel::MapId;

const EVERY: Duration = Duration::from_millis(1);

#[test]
fn kill_9_and_restart_let_not_one_banned_packet_through() {
    let lab = Lab::new();
    let legit = Ipv4Addr::new(198, 51, 100, 10);
    lab.add_peer_addr(legit);
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    d.ctl_ok(&["ban", "198.51.100.2", "--duration", "forever"]);
    let sink = Sink::start(&lab);
    // A banned flood and an unbanned control stream, through the whole
    // kill / gap / restart sequence.
    let banned = Flood::start(&lab, PEER_IP, EVERY, 60_000, Duration::from_secs(60));
    let control = Flood::start(
        &lab,
        legit,
        Duration::from_millis(5),
        12_000,
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(300));

    d.kill9();
    assert!(!d.socket.exists() || std::os::unix::net::UnixStream::connect(&d.socket).is_err());
    std::thread::sleep(Duration::from_millis(700));
    let during_gap = sink.from(legit).count;
    d.start();
    std::thread::sleep(Duration::from_millis(300));
    let sent = banned.stop();
    control.stop();
    settle();

    eprintln!("banned source sent {sent} packets across kill -9 and restart");
    assert!(sent > 1000, "the flood must have run (sent {sent})");
    assert_eq!(sink.from(PEER_IP).count, 0, "a banned packet got through");
    assert!(
        during_gap > 50,
        "control traffic must flow while no daemon runs"
    );
    assert!(
        sink.from(legit).count > during_gap,
        "control traffic must flow after the restart"
    );
    let ban = d.ban_of("198.51.100.2/32").expect("ban survives kill -9");
    assert_eq!(ban["origin"], "manual");
    assert!(
        ban["expires_in_secs"] == "forever",
        "a forever ban stays forever: {ban}"
    );
    assert!(
        d.log_text().contains("adopted=true"),
        "the restart adopts the pinned link"
    );
}

#[test]
fn restart_adopts_the_pins_and_detach_then_start_restores_from_state_dir() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    d.ctl_ok(&[
        "ban",
        "198.51.100.2",
        "--duration",
        "1h",
        "--reason",
        "persist me",
    ]);
    d.ctl_ok(&["allow", "add", "198.51.100.77"]);
    let before = d.ctl_json(&["status"]);
    let sink = Sink::start(&lab);
    let flood = Flood::start(&lab, PEER_IP, EVERY, 60_000, Duration::from_secs(60));

    // SIGTERM: the shield stays (pinned), the daemon goes.
    let status = d.terminate();
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(d.pin.join(MapId::Bans.name()).exists() && d.pin.join("prog").exists());
    let links: Vec<_> = std::fs::read_dir(&d.pin)
        .expect("pins")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("link_"))
        .collect();
    assert_eq!(links, ["link_driver_veth-s"]);
    assert!(d.state.join("shield.db").exists());
    std::thread::sleep(Duration::from_millis(300));
    d.start();
    std::thread::sleep(Duration::from_millis(200));
    let after = d.ctl_json(&["status"]);
    assert_eq!(
        sink.from(PEER_IP).count,
        0,
        "a banned packet got through the restart"
    );
    assert_eq!(
        after["interfaces"][0]["link_id"], before["interfaces"][0]["link_id"],
        "the link is adopted, not recreated"
    );
    assert_eq!(
        after["program_id"], before["program_id"],
        "the same build runs the pinned program again, unverified"
    );
    assert!(d.log_text().contains("program_reused=true"), "the restart reuses the program");
    let ban = d.ban_of("198.51.100.2/32").expect("ban restored");
    assert_eq!(ban["reason"], "persist me");
    let left = ban["expires_in_secs"].as_u64().expect("left");
    assert!((3500..3600).contains(&left), "remaining time kept: {left}");
    let allow = d.ctl_json(&["allow", "list"]);
    assert!(
        allow["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["net"] == "198.51.100.77/32"),
        "{allow}"
    );

    // Detach: the shield is gone from the kernel, the daemon exits.
    let out = d.ctl_ok(&["detach"]);
    assert!(out.contains("detached from veth-s"), "{out}");
    assert!(d.wait_exit(Duration::from_secs(10)).success());
    assert!(!d.pin.exists(), "pins removed");
    let at_detach = sink.from(PEER_IP).count;
    wait_for("traffic without the shield", Duration::from_secs(5), || {
        (sink.from(PEER_IP).count > at_detach + 50).then_some(())
    });

    // A fresh start has fresh maps: the bans come back from state_dir.
    d.start();
    std::thread::sleep(Duration::from_millis(300));
    let resumed = sink.from(PEER_IP).count;
    std::thread::sleep(Duration::from_millis(300));
    flood.stop();
    settle();
    assert!(
        sink.from(PEER_IP).count - resumed <= 5,
        "the restored ban drops again"
    );
    assert_eq!(
        d.ban_of("198.51.100.2/32").expect("restored")["reason"],
        "persist me"
    );
    assert!(
        d.log_text().contains("from_store=1"),
        "restored from the store"
    );
}

#[test]
fn a_broken_reload_keeps_the_old_policy_and_a_good_one_applies_without_losing_bans() {
    let lab = Lab::new();
    let denied = Ipv4Addr::new(198, 51, 100, 3);
    lab.add_peer_addr(denied);
    let mut d = Shieldd::new(
        bins(),
        &lab.sbc,
        &format!("{NO_LIMITS}\n[deny]\ncidrs = [\"198.51.100.3\"]\n"),
    );
    let good = std::fs::read_to_string(&d.config).expect("config");
    d.start();
    d.ctl_ok(&["ban", "198.51.100.2"]);
    let sink = Sink::start(&lab);

    // Two problems: both reported, with line and key; nothing changes.
    let broken = good.replace(
        "cidrs = [\"198.51.100.3\"]",
        "cidrs = [\"198.51.100.0/8\"]\nbogus_key = 1",
    );
    d.write_config(&broken);
    let out = d.ctl(&["reload"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("deny.cidrs[0]") && err.contains("deny.bogus_key"),
        "{err}"
    );
    assert!(
        err.contains("shield.toml:"),
        "errors name the file and line: {err}"
    );
    d.signal(libc::SIGHUP);
    wait_for(
        "the SIGHUP reload to be refused",
        Duration::from_secs(5),
        || d.log_text().contains("reload refused").then_some(()),
    );
    assert!(d.is_running());
    send(&lab, denied, 50, EVERY);
    send(&lab, PEER_IP, 50, EVERY);
    settle();
    assert_eq!(
        sink.from(denied).count,
        0,
        "the old denylist must stay in force"
    );
    assert_eq!(sink.from(PEER_IP).count, 0, "bans must stay in force");

    // A valid file with a different policy is applied; the ban stays.
    d.write_config(&good.replace("cidrs = [\"198.51.100.3\"]", "cidrs = []"));
    let out = d.ctl_ok(&["reload"]);
    assert!(out.contains("deny changed"), "{out}");
    send(&lab, denied, 50, EVERY);
    send(&lab, PEER_IP, 50, EVERY);
    settle();
    assert_eq!(
        sink.from(denied).count,
        50,
        "the new (empty) denylist applies"
    );
    assert_eq!(sink.from(PEER_IP).count, 0, "bans survive a reload");
    assert!(d.ban_of("198.51.100.2/32").is_some());
    assert_eq!(
        d.ctl_json(&["status"])["interfaces"]
            .as_array()
            .expect("ifaces")
            .len(),
        1,
        "still attached"
    );
}

#[test]
fn pinned_maps_that_no_longer_fit_are_reported_and_detach_works_offline() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "[capacity]\nbans = 4096\n");
    d.start();
    d.ctl_ok(&["ban", "198.51.100.2", "--reason", "kept across the resize"]);
    assert!(d.terminate().success());

    let cfg = std::fs::read_to_string(&d.config).expect("config");
    d.write_config(&cfg.replace("bans = 4096", "bans = 8192"));
    let out = d.run_once(&[]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("pinned map BANS")
            && err.contains("max_entries")
            && err.contains("shieldctl detach"),
        "{err}"
    );
    assert!(
        d.pin.join("link_driver_veth-s").exists(),
        "a refused start leaves the running shield alone"
    );

    // With no daemon, `shieldctl --config ... detach` removes the pins itself.
    let out = output_within(
        {
            let mut c = std::process::Command::new(SHIELDCTL);
            c.arg("--config").arg(&d.config).arg("detach");
            c
        },
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("not running"),
        "{}",
        text(&out.stdout)
    );
    assert!(!d.pin.exists());

    d.start();
    let ban = d
        .ban_of("198.51.100.2/32")
        .expect("ban kept in state_dir across the resize");
    assert_eq!(ban["reason"], "kept across the resize");
}

/// `bpftool` with `args`; panics with its output if it fails.
fn bpftool(args: &[&str]) {
    let out = std::process::Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool (package bpftool, installed by scripts/setup.sh)");
    assert!(out.status.success(), "bpftool {args:?}: {}", text(&out.stderr));
}

/// Makes a pinned hash map as an earlier shieldd's per-family ban map was
/// (`key_size`-byte address, 16-byte `BanValue`, not preallocated) holding
/// `keys`, each banned forever (expiry 0).
fn old_ban_map(path: &std::path::Path, name: &str, key_size: usize, keys: &[&[u8]]) {
    let p = path.to_str().expect("utf-8 path");
    let ks = key_size.to_string();
    bpftool(&["map", "create", p, "type", "hash", "key", &ks, "value", "16", "entries", "1024", "name", name, "flags", "1"]);
    for key in keys {
        let mut args = vec!["map".to_string(), "update".into(), "pinned".into(), p.into(), "key".into()];
        args.extend(key.iter().map(|b| b.to_string()));
        args.push("value".into());
        args.extend(std::iter::repeat_n("0".to_string(), 16));
        bpftool(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

#[test]
fn an_earlier_versions_per_family_ban_maps_are_read_and_unpinned() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    d.ctl_ok(&["ban", "198.51.100.9", "--duration", "1h", "--reason", "in the store"]);
    assert!(d.terminate().success());

    // The pin directory as an earlier version left it: BANS_V4 and BANS_V6
    // instead of BANS, with bans the store never saw (a store write that
    // failed) beside one it has.
    std::fs::remove_file(d.pin.join(MapId::Bans.name())).expect("unpin BANS");
    let v6: std::net::Ipv6Addr = "2001:db8::3".parse().unwrap();
    old_ban_map(&d.pin.join("BANS_V4"), "BANS_V4", 4, &[&PEER_IP.octets(), &[198, 51, 100, 9]]);
    old_ban_map(&d.pin.join("BANS_V6"), "BANS_V6", 16, &[&v6.octets()]);

    d.start();
    let log = d.log_text();
    assert!(
        log.contains("removed the ban maps an earlier shieldd pinned") && log.contains("BANS_V4"),
        "{log}"
    );
    assert!(!d.pin.join("BANS_V4").exists() && !d.pin.join("BANS_V6").exists());
    assert!(
        log.contains("the pinned program uses a map this start did not adopt") && !log.contains("program_reused=true"),
        "a program bound to another BANS is not reused: {log}"
    );
    let map = d.ban_map().expect("pinned BANS");
    assert!(map.contains(PEER_IP) && map.contains(Ipv4Addr::new(198, 51, 100, 9)));
    assert!(map.contains_v6(v6), "the IPv6 ban is in the one map too");
    let stored = d.ban_of("198.51.100.9/32").expect("the stored ban");
    assert_eq!(stored["reason"], "in the store");
    let only_kernel = d.ban_of("198.51.100.2/32").expect("the old map's own ban is kept");
    assert_eq!(only_kernel["origin"], "kernel", "{only_kernel}");
    assert_eq!(d.ban_of("2001:db8::3/128").expect("IPv6")["origin"], "kernel");

    // Enforced by the new program through the new map.
    let sink = Sink::start(&lab);
    let flood = Flood::start(&lab, PEER_IP, EVERY, 500, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(700));
    let sent = flood.stop();
    settle();
    assert!(sent > 0);
    assert_eq!(sink.from(PEER_IP).count, 0, "the ban from BANS_V4 is enforced");

    // A later restart finds nothing obsolete and keeps every ban.
    assert!(d.terminate().success());
    d.start();
    assert!(!d.log_text().contains("could not remove"));
    assert!(d.ban_of("198.51.100.2/32").is_some() && d.ban_of("2001:db8::3/128").is_some());
}

/// The pins `prog_xdp_<hash>` / `prog_egress_<hash>` under `d`'s pin path.
fn object_pins(d: &Shieldd) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&d.pin)
        .expect("pins")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("prog_xdp_") || n.starts_with("prog_egress_"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_restart_of_another_build_loads_and_swaps_in_its_own_program() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    d.ctl_ok(&["ban", "198.51.100.2", "--duration", "forever"]);
    let before = d.ctl_json(&["status"]);
    let pins = object_pins(&d);
    assert_eq!(pins.len(), 2, "{pins:?}");
    assert!(d.terminate().success());

    // The pins as another build left them: its object's hash in the names.
    for p in &pins {
        let other = format!("{}0123456789abcdef", p.trim_end_matches(|c: char| c.is_ascii_hexdigit()));
        std::fs::rename(d.pin.join(p), d.pin.join(&other)).expect("rename pin");
    }
    let sink = Sink::start(&lab);
    let flood = Flood::start(&lab, PEER_IP, EVERY, 60_000, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(200));
    d.start();
    std::thread::sleep(Duration::from_millis(200));
    let sent = flood.stop();
    settle();
    let after = d.ctl_json(&["status"]);
    assert!(sent > 100, "the flood ran ({sent})");
    assert_eq!(sink.from(PEER_IP).count, 0, "a banned packet got through the swap");
    assert_ne!(after["program_id"], before["program_id"], "another build's program is replaced");
    assert_eq!(
        after["interfaces"][0]["link_id"], before["interfaces"][0]["link_id"],
        "atomically, inside the same link"
    );
    assert!(!d.log_text().contains("program_reused=true"), "nothing was reused");
    assert_eq!(object_pins(&d), pins, "the other build's pins are replaced by this one's");

    // And the next restart of this build reuses what it pinned.
    assert!(d.terminate().success());
    d.start();
    assert_eq!(d.ctl_json(&["status"])["program_id"], after["program_id"]);
}
