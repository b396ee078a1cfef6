//! The ban store (SPEC §10) as an operator meets it: every acknowledged
//! change survives `kill -9` even with the pins gone, a re-ban extends and
//! is counted, `shieldctl banned ADDR` tells why and how often, and the
//! file is readable with SQLite.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn sqlite(d: &Shieldd) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        d.state.join("shield.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open shield.db")
}

#[test]
fn acknowledged_changes_survive_kill_9_without_the_pins() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    d.ctl_ok(&["ban", "198.51.100.2", "--duration", "forever", "--reason", "kept"]);
    d.ctl_ok(&["ban", "203.0.113.0/24", "--duration", "2h"]);
    d.ctl_ok(&["ban", "2001:db8:7::/64"]);
    d.ctl_ok(&["unban", "2001:db8:7::/64"]);
    d.ctl_ok(&["allow", "add", "192.0.2.10"]);
    d.ctl_ok(&["deny", "add", "192.0.2.128/25"]);
    // No pause: the acknowledgement alone must be enough.
    d.kill9();
    // Without the pins only the store remembers.
    shield::kernel::remove_all(&d.pin).expect("unpin");
    d.start();
    let ban = d.ban_of("198.51.100.2/32").expect("restored");
    assert_eq!(ban["reason"], "kept");
    assert_eq!(ban["expires_in_secs"], "forever", "{ban}");
    let net = d.ban_of("203.0.113.0/24").expect("restored");
    let left = net["expires_in_secs"].as_u64().expect("left");
    assert!((7000..=7200).contains(&left), "{net}");
    assert!(d.ban_of("2001:db8:7::/64").is_none(), "the unban holds");
    assert!(d.ctl_ok(&["allow", "list"]).contains("192.0.2.10/32"));
    assert!(d.ctl_ok(&["deny", "list"]).contains("192.0.2.128/25"));
    assert!(d.log_text().contains("adopted_maps=false"));
    // And the kernel enforces what came back.
    let sink = Sink::start(&lab);
    send(&lab, PEER_IP, 10, Duration::from_millis(2));
    settle();
    assert_eq!(sink.from(PEER_IP).count, 0, "a banned packet got through");
}

#[test]
fn a_reban_extends_to_the_later_expiry_and_is_counted() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    let first = d.ctl_json(&["ban", "198.51.100.7", "--duration", "1h", "--reason", "one"]);
    assert_eq!(first["times"], 1, "{first}");
    // Shorter: the hour stands, and the ban is counted.
    let second = d.ctl_json(&["ban", "198.51.100.7", "--duration", "10m", "--reason", "two"]);
    assert_eq!(second["times"], 2, "{second}");
    let left = second["expires_in_secs"].as_u64().expect("left");
    assert!((3590..=3600).contains(&left), "{second}");
    assert_eq!(second["reason"], "one", "the ban in force is the longer one");
    // Longer: extended.
    let third = d.ctl_json(&["ban", "198.51.100.7", "--duration", "2h", "--reason", "three"]);
    assert_eq!(third["times"], 3);
    let left = third["expires_in_secs"].as_u64().expect("left");
    assert!((7190..=7200).contains(&left), "{third}");
    let out = d.ctl_ok(&["ban", "198.51.100.7", "--duration", "1m"]);
    assert!(out.contains("banned 4 times"), "{out}");

    // The operator's view of that source, and an address inside a net.
    d.ctl_ok(&["ban", "203.0.113.0/24", "--reason", "the net"]);
    let rec = d.ctl_json(&["banned", "198.51.100.7"]);
    assert_eq!(rec["times_banned"], 4, "{rec}");
    assert_eq!(rec["bans"][0]["net"], "198.51.100.7/32");
    assert_eq!(rec["bans"][0]["times"], 4);
    let history = rec["history"].as_array().expect("history");
    let actions: Vec<&str> = history
        .iter()
        .map(|h| h["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["reban", "reban", "reban", "ban"], "{rec}");
    // The history keeps what each request asked, and who asked.
    assert_eq!(history[2]["reason"], "two");
    assert_eq!(history[0]["who"], "uid 0");
    let inside = d.ctl_json(&["banned", "203.0.113.77"]);
    assert_eq!(inside["bans"][0]["net"], "203.0.113.0/24", "{inside}");
    assert_eq!(inside["times_banned"], 0, "the host itself never was");
    let text = d.ctl_ok(&["banned", "203.0.113.77"]);
    assert!(text.contains("203.0.113.0/24") && text.contains("the net"), "{text}");
    let none = d.ctl_ok(&["banned", "192.0.2.99"]);
    assert!(none.contains("is not banned"), "{none}");
    let bad = d.ctl(&["banned", "not-an-address"]);
    assert_eq!(bad.status.code(), Some(2));

    // An unban is history too; a ban after it counts on.
    d.ctl_ok(&["unban", "198.51.100.7"]);
    let rec = d.ctl_json(&["banned", "198.51.100.7"]);
    assert_eq!(rec["bans"].as_array().expect("bans").len(), 0);
    assert_eq!(rec["history"][0]["action"], "unban");
    let again = d.ctl_json(&["ban", "198.51.100.7"]);
    assert_eq!(again["times"], 5);

    // Readable with SQLite, as SPEC §10 promises.
    let db = sqlite(&d);
    let (times, reason): (u32, String) = db
        .query_row(
            "SELECT times, reason FROM bans WHERE net = '198.51.100.7/32'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!(times, 5);
    assert!(reason.starts_with("banned by uid 0"), "{reason}");
    let rows: u32 = db
        .query_row(
            "SELECT count(*) FROM history WHERE net = '198.51.100.7/32'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(rows, 6);
}

#[test]
fn a_jail_ban_keeps_its_log_line_and_hostile_text_stays_inert() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "");
    let logpath = d.add_jail(
        "kamailio.log",
        "name = \"kam\"\nfilter = \"kamailio\"\nmaxretry = 2\nbantime = \"5m\"\n",
        NO_LIMITS,
    );
    d.start();
    std::thread::sleep(Duration::from_millis(500));
    // The SIP user is the attacker's: a terminal escape in it.
    let line = "Mar 14 09:12:07 sbc1 /usr/sbin/kamailio[2215]: NOTICE: <script>: sipshield: auth failed for \x1b]0;pwned\x07 from 198.51.100.2:5060\n";
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&logpath)
        .expect("open log");
    for _ in 0..2 {
        log.write_all(line.as_bytes()).expect("write");
    }
    log.flush().expect("flush");
    wait_for("a jail ban", Duration::from_secs(5), || {
        d.ban_of("198.51.100.2/32")
    });
    let rec = d.ctl_json(&["banned", "198.51.100.2"]);
    let detail = rec["bans"][0]["detail"].as_str().expect("detail");
    assert!(detail.contains("auth failed for"), "{rec}");
    assert_eq!(rec["history"][0]["who"], "jail kam");
    assert_eq!(rec["history"][0]["origin"], "jail:kam");
    let text = d.ctl_ok(&["banned", "198.51.100.2"]);
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(text.contains("auth failed for"), "{text}");
}

/// The one line shieldd printed when it refused to start, checked to name
/// `db` and say `why`; nothing was pinned.
fn refused_start(d: &Shieldd, db: &std::path::Path, why: &str) {
    let out = d.run_once(&[]);
    assert!(!out.status.success(), "shieldd started with {why} at {}", db.display());
    let err = text(&out.stderr) + &text(&out.stdout);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].contains(path_str(db)) && lines[0].contains(why), "{err}");
    assert!(!d.pin.exists(), "a refused start pinned something");
}

#[test]
fn a_store_path_that_is_not_a_regular_file_is_refused() {
    let lab = Lab::new();
    let d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    std::fs::create_dir_all(&d.state).expect("state_dir");
    let db = d.state.join("shield.db");

    // A dangling link: following it would create a database elsewhere.
    let target = d.dir.join("elsewhere.db");
    std::os::unix::fs::symlink(&target, &db).expect("symlink");
    refused_start(&d, &db, "symbolic link");
    assert!(!target.exists(), "a database was created at the link's target");

    // A link to a file that exists is refused all the same, untouched.
    std::fs::write(&target, "").expect("target");
    refused_start(&d, &db, "symbolic link");
    assert_eq!(std::fs::metadata(&target).expect("target").len(), 0);
    std::fs::remove_file(&db).expect("remove link");

    // A directory is not a database either.
    std::fs::create_dir(&db).expect("dir");
    refused_start(&d, &db, "not a regular file");
}

/// Bans and an allowlist entry made before `shield.db` is deleted (then
/// replaced by another file) under the running daemon, and bans made
/// after: every one comes back from the store alone.
#[test]
fn a_store_deleted_or_replaced_under_the_daemon_is_rewritten() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    for i in 1..=5 {
        d.ctl_ok(&["ban", &format!("203.0.113.{i}"), "--duration", "2h", "--reason", &format!("kept {i}")]);
    }
    d.ctl_ok(&["allow", "add", "192.0.2.10"]);
    let db = d.state.join("shield.db");

    std::fs::remove_file(&db).expect("delete shield.db");
    let out = d.ctl(&["ban", "203.0.113.20", "--reason", "after the delete"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(db.exists(), "the store was not rewritten at its path");
    let log = d.log_text();
    assert!(log.contains("was deleted") && log.contains(path_str(&db)), "{log}");
    let status = d.ctl_json(&["status"]);
    let notice = status["store_notice"].as_str().unwrap_or_default();
    assert!(notice.contains("deleted"), "{status}");

    // Replaced: another file moved over it. It is kept aside, not written.
    let other = d.dir.join("other.db");
    std::fs::write(&other, "not a database").expect("other");
    std::fs::rename(&other, &db).expect("replace shield.db");
    d.ctl_ok(&["ban", "203.0.113.21", "--reason", "after the replace"]);
    let aside: Vec<_> = std::fs::read_dir(&d.state)
        .expect("state_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains("shield.db.replaced-"))
        .collect();
    assert_eq!(aside.len(), 1, "the replacing file is kept aside");
    assert_eq!(std::fs::read(&aside[0]).expect("aside"), b"not a database");
    assert!(d.log_text().contains("was replaced"), "{}", d.log_text());

    // Without the pins, only the store remembers.
    assert!(d.terminate().success());
    shield::kernel::remove_all(&d.pin).expect("unpin");
    d.start();
    for i in 1..=5 {
        let ban = d.ban_of(&format!("203.0.113.{i}/32")).expect("restored");
        assert_eq!(ban["origin"], "manual", "{ban}");
        assert_eq!(ban["reason"], format!("kept {i}"), "{ban}");
    }
    assert!(d.ban_of("203.0.113.20/32").is_some(), "the ban after the delete");
    assert!(d.ban_of("203.0.113.21/32").is_some(), "the ban after the replace");
    assert!(d.ctl_ok(&["allow", "list"]).contains("192.0.2.10/32"));
    // The history moved with it.
    let rec = d.ctl_json(&["banned", "203.0.113.1"]);
    assert_eq!(rec["history"][0]["action"], "ban", "{rec}");
}

/// `n` host bans of 10.0.0.0/8 (map keys only, nothing is sent to them).
fn bulk(n: u32) -> Vec<shield::store::BanRecord> {
    (0..n)
        .map(|i| shield::store::BanRecord {
            net: std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)).into(),
            origin: "manual".into(),
            reason: "bulk".into(),
            created_ms: shield::store::now_ms(),
            expires_ms: None,
        })
        .collect()
}

/// A start reads `bans.snap` (left by the bulk import) instead of the
/// rows; changes made after it, then `kill -9` and the pins gone, are all
/// back at the next start, which reads the snapshot plus those rows; a
/// corrupted snapshot is reported and the rows are read.
#[test]
fn a_start_reads_the_snapshot_and_the_changes_made_after_it() {
    const N: u32 = 12_000;
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    shield::store::Store::open(&d.state)
        .unwrap()
        .import(&bulk(N), "test")
        .unwrap();
    assert!(d.state.join("bans.snap").is_file(), "the import left no snapshot");
    d.start();
    assert!(d.log_text().contains("from=Snapshot { changed: 0 }"), "{}", d.log_text());
    assert_eq!(d.status().unwrap().bans_active, u64::from(N));
    d.ctl_ok(&["ban", "198.51.100.2", "--duration", "forever", "--reason", "after"]);
    d.ctl_ok(&["ban", "2001:db8:7::/64"]);
    d.ctl_ok(&["unban", "10.0.0.5"]);
    d.kill9();
    shield::kernel::remove_all(&d.pin).expect("unpin");
    d.start();
    assert!(d.log_text().contains("from=Snapshot { changed: 3 }"), "{}", d.log_text());
    assert_eq!(d.status().unwrap().bans_active, u64::from(N) + 1);
    assert_eq!(d.ban_of("198.51.100.2/32").expect("restored")["reason"], "after");
    assert!(d.ban_of("2001:db8:7::/64").is_some());
    assert!(d.ban_of("10.0.0.5/32").is_none(), "the unban holds");
    let map = d.ban_map().unwrap();
    assert!(map.contains("198.51.100.2".parse().unwrap()));
    assert!(map.contains("10.0.0.9".parse().unwrap()));
    assert!(!map.contains("10.0.0.5".parse().unwrap()));
    d.stop();
    // A flipped byte: reported, and nothing lost.
    let snap = d.state.join("bans.snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&snap, &bytes).unwrap();
    shield::kernel::remove_all(&d.pin).expect("unpin");
    d.start();
    let log = d.log_text();
    assert!(log.contains("ban snapshot not used (checksum mismatch)"), "{log}");
    assert!(log.contains("from=Rows"), "{log}");
    assert_eq!(d.status().unwrap().bans_active, u64::from(N) + 1);
}
