//! A million bans: loaded into the kernel with `ShieldMaps::ban_batch`,
//! imported by a starting daemon from an earlier version's state file, and
//! restored from its store after a detach. All must take seconds, not
//! minutes.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::*;
use ipnet::IpNet;
use shield::kernel::{monotonic_ns, MapId};
use shield::{Capacity, Shield};

const MILLION: u32 = 1_000_000;

/// Distinct host addresses (map keys only: nothing is sent to them).
fn hosts(n: u32) -> impl Iterator<Item = IpNet> {
    (0..n).map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
}

#[test]
fn a_million_bans_load_in_seconds_with_batches() {
    shield_tests::kernel::require_root();
    let mut shield = Shield::load(Capacity::default(), None).expect("load");
    let until = monotonic_ns() + 3_600_000_000_000;
    let bans: Vec<(IpNet, u64)> = hosts(MILLION).map(|n| (n, until)).collect();

    let t = Instant::now();
    let written = shield.maps.ban_batch(&bans).expect("ban_batch");
    let batch = t.elapsed();
    assert_eq!(written, MILLION as usize);
    let t = Instant::now();
    assert_eq!(
        shield.maps.entry_count(MapId::Bans).expect("count"),
        Some(MILLION as usize)
    );
    let count = t.elapsed();
    let t = Instant::now();
    let dump = shield.maps.bans_dump().expect("dump");
    let dumped = t.elapsed();
    assert_eq!(dump.len(), MILLION as usize);
    assert!(dump.iter().all(|(_, e)| *e == until));

    // The one-syscall-per-ban path, on a tenth, for comparison.
    let mut other = Shield::load(Capacity::default(), None).expect("load");
    let t = Instant::now();
    for (n, e) in &bans[..100_000] {
        other.maps.ban(*n, *e).expect("ban");
    }
    let single = t.elapsed() * 10;
    eprintln!(
        "1M bans: batch {:.2} s ({:.0} bans/s); per-element (extrapolated) {:.2} s; counting {:.2} s; dumping {:.2} s",
        batch.as_secs_f64(),
        f64::from(MILLION) / batch.as_secs_f64(),
        single.as_secs_f64(),
        count.as_secs_f64(),
        dumped.as_secs_f64()
    );
    assert!(batch < Duration::from_secs(10), "1M bans took {batch:?}");
}

#[test]
fn a_daemon_restores_a_million_bans_from_state_dir_in_seconds() {
    shield_tests::kernel::require_root();
    let lab = Lab::new();
    // Room for one more after the million.
    let mut d = Shieldd::new(bins(), &lab.sbc, "[capacity]\nbans = 1000016\n");
    let cfg = std::fs::read_to_string(&d.config).expect("config");
    d.write_config(&cfg.replace("listen = \"127.0.0.1:9814\"", "listen = \"off\""));
    std::fs::create_dir_all(&d.state).expect("state dir");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(d.state.join("bans.jsonl")).expect("state file"),
    );
    writeln!(
        f,
        r#"{{"format":"sipshield-bans","version":1,"written_ms":{now_ms}}}"#
    )
    .expect("write");
    for n in hosts(MILLION) {
        writeln!(
            f,
            r#"{{"ban":{{"net":"{n}","origin":"escalation","reason":"bulk","created_ms":{now_ms},"expires_ms":{}}}}}"#,
            now_ms + 3_600_000
        )
        .expect("write");
    }
    // One that has already expired is dropped, not restored.
    writeln!(f, r#"{{"ban":{{"net":"192.0.2.1/32","origin":"manual","reason":"old","created_ms":0,"expires_ms":1}}}}"#)
        .expect("write");
    f.flush().expect("flush");
    drop(f);

    let t = Instant::now();
    d.start();
    let ready = t.elapsed();
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["bans_active"], u64::from(MILLION));
    let log = d.log_text();
    let restored = log
        .lines()
        .find(|l| l.contains("bans restored"))
        .expect("restore logged")
        .to_string();
    eprintln!(
        "daemon with 1M bans in state_dir ready in {:.2} s: {restored}",
        ready.as_secs_f64()
    );
    assert!(restored.contains("expired_in_store=1"), "{restored}");

    // Saving them back (a ban triggers a write of the whole book).
    let t = Instant::now();
    d.ctl_ok(&["ban", "192.0.2.2"]);
    assert_eq!(
        d.ctl_json(&["status"])["bans_active"],
        u64::from(MILLION) + 1
    );
    eprintln!(
        "ban with 1M bans on record: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert!(
        ready < Duration::from_secs(60),
        "start with 1M bans took {ready:?}"
    );

    // Fresh maps: every ban comes back from the store.
    d.ctl_ok(&["detach"]);
    d.wait_exit(Duration::from_secs(30));
    let t = Instant::now();
    d.start();
    let ready = t.elapsed();
    assert_eq!(
        d.ctl_json(&["status"])["bans_active"],
        u64::from(MILLION) + 1
    );
    let restored = d
        .log_text()
        .lines()
        .rfind(|l| l.contains("bans restored"))
        .expect("restore logged")
        .to_string();
    eprintln!(
        "daemon restoring 1M bans from its store into fresh maps ready in {:.2} s: {restored}",
        ready.as_secs_f64()
    );
    assert!(restored.contains("adopted_maps=false"), "{restored}");
    assert!(
        ready < Duration::from_secs(60),
        "start with 1M bans took {ready:?}"
    );
}
