//! state_dir against the kernel: a start that fails leaves nothing pinned
//! and loses no ban, pinned maps the store is not in step with never
//! override it, an unreadable line of an earlier version's `bans.jsonl` is
//! kept aside when it is imported, and a full state_dir neither hangs a
//! ban nor a shutdown, and loses nothing once space is back.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use shield::kernel::MapId;

/// Host bans written into the hand-made state files (plus PEER_IP and two
/// network bans): enough that a lost batch would show.
const HOSTS: u32 = 2000;
const HEADER: &str = r#"{"format":"sipshield-bans","version":1,"written_ms":1}"#;

/// The i-th test host, in 198.18.0.0/15 (benchmarking, RFC 2544).
fn host(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn ban_line(net: &str) -> String {
    format!(
        r#"{{"ban":{{"net":"{net}","origin":"manual","reason":"saved","created_ms":1,"expires_ms":null}}}}"#
    )
}

/// The records of a state file: every host, PEER_IP, two network bans.
fn record_lines() -> Vec<String> {
    let mut lines: Vec<String> = (0..HOSTS)
        .map(|i| ban_line(&format!("{}/32", host(i))))
        .collect();
    lines.push(ban_line(&format!("{PEER_IP}/32")));
    lines.push(ban_line("203.0.113.0/24"));
    lines.push(ban_line("2001:db8:5::/64"));
    lines
}

fn write_state(d: &Shieldd, header: &str, lines: &[String]) {
    std::fs::create_dir_all(&d.state).expect("state_dir");
    let mut text = format!("{header}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(d.state.join("bans.jsonl"), text).expect("write bans.jsonl");
}

/// The networks the store (state_dir/shield.db) holds as banned, read the
/// way an operator would, with SQLite (alongside a running daemon: WAL).
fn stored_bans(d: &Shieldd) -> HashSet<String> {
    let db = rusqlite::Connection::open_with_flags(
        d.state.join("shield.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open shield.db");
    let mut q = db.prepare("SELECT net FROM bans").expect("query");
    let rows = q
        .query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    rows
}

/// What is pinned under the daemon's pin path.
fn pinned(d: &Shieldd) -> Vec<String> {
    match std::fs::read_dir(&d.pin) {
        Ok(rd) => rd
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The IPv4 host bans in the pinned BANS map, read from the kernel.
fn kernel_hosts(d: &Shieldd) -> HashSet<Ipv4Addr> {
    let fd = shield::kernel::sys::obj_get(&d.pin.join(MapId::Bans.name()))
        .expect("open pinned BANS");
    let mut out = HashSet::new();
    let size = std::mem::size_of::<shield_common::BanKey>();
    shield::kernel::sys::for_each_key(std::os::fd::AsFd::as_fd(&fd), size, |k| {
        if k[16] == shield_common::FAMILY_V4 {
            out.insert(Ipv4Addr::new(k[0], k[1], k[2], k[3]));
        }
    })
    .expect("walk BANS");
    out
}

/// Every ban of [`record_lines`] is in force: in the kernel map, listed by
/// `shieldctl banned`, and PEER_IP's packets are dropped.
fn assert_all_bans_back(lab: &Lab, d: &Shieldd) {
    let kernel = kernel_hosts(d);
    let missing: Vec<_> = (0..HOSTS)
        .map(host)
        .filter(|h| !kernel.contains(h))
        .collect();
    assert!(
        missing.is_empty(),
        "{} host bans missing from BANS, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(kernel.contains(&PEER_IP), "PEER_IP missing from BANS");
    let listed: HashSet<String> = d
        .bans()
        .iter()
        .map(|b| b["net"].as_str().expect("net").to_string())
        .collect();
    assert_eq!(
        listed.len(),
        HOSTS as usize + 3,
        "shieldctl banned lists every ban"
    );
    for net in ["203.0.113.0/24", "2001:db8:5::/64", "198.18.0.1/32"] {
        assert!(listed.contains(net), "{net} not listed");
    }
    let sink = Sink::start(lab);
    let before = d.packets("drop", "ban");
    send(lab, PEER_IP, 20, Duration::from_millis(2));
    settle();
    assert_eq!(sink.from(PEER_IP).count, 0, "a banned packet got through");
    assert!(d.packets("drop", "ban") >= before + 20);
}

#[test]
fn a_failed_start_leaves_no_pins_and_the_next_start_restores_every_ban() {
    let lab = Lab::new();
    let small = format!("{NO_LIMITS}\n[capacity]\nbans = 500\n");
    let mut d = Shieldd::new(bins(), &lab.sbc, &small);
    let records = record_lines();

    // A header that cannot be read: refused before the kernel is touched.
    write_state(&d, "{not a header", &records);
    let out = d.run_once(&[]);
    assert!(!out.status.success(), "start with a bad header must fail");
    let err = text(&out.stderr) + &text(&out.stdout);
    assert!(
        err.contains("bans.jsonl") && err.contains("line 1"),
        "{err}"
    );
    assert_eq!(pinned(&d), Vec::<String>::new(), "a failed start left pins");

    // A failure after the maps were made (more bans than the maps hold):
    // what this attempt pinned is unpinned again.
    write_state(&d, HEADER, &records);
    let out = d.run_once(&[]);
    assert!(!out.status.success(), "start with too small maps must fail");
    let err = text(&out.stderr) + &text(&out.stdout);
    assert!(err.contains("raise [capacity]"), "{err}");
    assert_eq!(pinned(&d), Vec::<String>::new(), "a failed start left pins");
    // The file was imported into the store before the kernel was
    // touched: the failed start lost none of it.
    assert_eq!(
        stored_bans(&d).len(),
        records.len(),
        "a failed start must not lose a ban"
    );

    // Repaired: every ban comes back.
    let config = std::fs::read_to_string(&d.config).expect("config");
    d.write_config(&config.replace("bans = 500", "bans = 65536"));
    d.start();
    assert!(
        d.log_text().contains("adopted_maps=false"),
        "{}",
        d.log_text()
    );
    assert_all_bans_back(&lab, &d);
}

#[test]
fn pinned_maps_the_store_is_not_in_step_with_do_not_override_it() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    write_state(&d, HEADER, &record_lines());
    d.start();
    assert!(d.terminate().success());

    // Other maps at the pin path (made by a failed start of an older
    // shieldd, or another state_dir): empty ones, pinned.
    shield::kernel::remove_all(&d.pin).expect("unpin");
    let saved = d.dir.join("state.saved");
    std::fs::rename(&d.state, &saved).expect("move state_dir away");
    d.start();
    assert!(d.bans().is_empty());
    assert!(d.terminate().success());
    assert!(kernel_hosts(&d).is_empty(), "the pinned maps are empty");
    std::fs::remove_dir_all(&d.state).expect("remove the other state_dir");
    std::fs::rename(&saved, &d.state).expect("put state_dir back");

    d.start();
    assert_all_bans_back(&lab, &d);
    let log = d.log_text();
    assert!(
        log.contains("adopted_maps=true") && log.contains("maps_trusted=false"),
        "{log}"
    );
    // The next ban keeps all of them on disk.
    d.ctl_ok(&["ban", "203.0.113.77"]);
    assert_eq!(stored_bans(&d).len(), HOSTS as usize + 4);
}

/// Pinned maps the store is in step with, changed by hand while no
/// shieldd ran: the restart takes the kernel's word on what is banned and
/// until when (the book is walked beside the kernel's sorted dump): a ban
/// only the kernel holds is kept (origin `kernel`), one deleted or expired
/// there is gone, an expiry changed there is the one listed.
#[test]
fn in_step_maps_changed_while_no_shieldd_ran_win_at_the_restart() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    let ip = |last: u8| Ipv4Addr::new(198, 51, 100, last);
    for last in 10..14 {
        d.ctl_ok(&["ban", &ip(last).to_string(), "--duration", "1h"]);
    }
    assert!(d.terminate().success());

    let mut bans = d.ban_map().expect("pinned BANS");
    bans.remove(ip(11)).expect("remove");
    // 1 ns after boot: long past.
    bans.insert(ip(12), 1).expect("expire");
    let two_hours = shield::kernel::monotonic_ns() + 7200 * 1_000_000_000;
    bans.insert(ip(13), two_hours).expect("extend");
    bans.insert(ip(14), 0).expect("add");
    drop(bans);

    d.start();
    let log = d.log_text();
    let line = log.lines().rfind(|l| l.contains("bans restored")).expect("restore logged");
    for want in ["maps_trusted=true", "kernel_only=1", "lifted_in_kernel=2", "expired_in_kernel=1"] {
        assert!(line.contains(want), "{want} in {line}");
    }
    let listed: HashSet<String> = d
        .bans()
        .iter()
        .map(|b| b["net"].as_str().expect("net").to_string())
        .collect();
    let want: HashSet<String> = [10, 13, 14].map(|l| format!("{}/32", ip(l))).into();
    assert_eq!(listed, want);
    let only_kernel = d.ban_of("198.51.100.14/32").expect("kept");
    assert_eq!(only_kernel["origin"], "kernel");
    let left = d.ban_of("198.51.100.13/32").expect("kept")["expires_in_secs"]
        .as_u64()
        .expect("left");
    assert!((7100..=7200).contains(&left), "the kernel's expiry wins: {left} s left");
    let kernel = kernel_hosts(&d);
    assert!(!kernel.contains(&ip(12)), "the expired entry is removed from BANS");
    assert!(kernel.contains(&ip(10)) && kernel.contains(&ip(14)));
    assert_eq!(stored_bans(&d), want, "the store is brought in step");
}

#[test]
fn an_unreadable_line_is_kept_aside_and_no_ban_is_lost() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    let records = record_lines();
    // One record damaged by a stray byte that is not UTF-8.
    let victim = 7usize;
    let mut bytes = format!("{HEADER}\n").into_bytes();
    for (i, l) in records.iter().enumerate() {
        if i == victim {
            bytes.extend_from_slice(&l.as_bytes()[..10]);
            bytes.push(0xff);
            bytes.extend_from_slice(&l.as_bytes()[10..]);
        } else {
            bytes.extend_from_slice(l.as_bytes());
        }
        bytes.push(b'\n');
    }
    std::fs::create_dir_all(&d.state).expect("state_dir");
    std::fs::write(d.state.join("bans.jsonl"), &bytes).expect("write");

    d.start();
    assert_eq!(
        d.bans().len(),
        records.len() - 1,
        "every readable ban is restored"
    );
    let copies: Vec<PathBuf> = std::fs::read_dir(&d.state)
        .expect("state_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("bans.jsonl.bad-")
        })
        .collect();
    assert_eq!(copies.len(), 1, "a copy of the damaged file is kept");
    assert_eq!(
        std::fs::read(&copies[0]).expect("copy"),
        bytes,
        "the copy is the file as it was"
    );
    let log = d.log_text();
    assert!(
        log.contains("skipping unreadable ban record") && log.contains("bans.jsonl.bad-"),
        "{log}"
    );
    assert!(d.terminate().success());

    // The operator repairs the line and puts the file back; the pinned
    // maps (which lack that ban) are not trusted over it.
    write_state(&d, HEADER, &records);
    d.start();
    assert_all_bans_back(&lab, &d);
    assert!(d.ban_of(&format!("{}/32", host(victim as u32))).is_some());
}

/// A small tmpfs mounted over a directory, unmounted on drop (also when
/// the test fails).
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).expect("mount point");
        let s = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs", path_str(dir)])
            .status()
            .expect("mount");
        assert!(s.success(), "mount tmpfs: {s}");
        SmallFs(dir.to_path_buf())
    }

    /// Fills the file system up: a file that grows until ENOSPC.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bans fresh addresses (198.19.`block`.x, with a long reason) until one
/// reply warns that it was not saved; every ban is answered at once and in
/// force either way. Returns the warned ban's address and the warning.
fn ban_until_unsaved(d: &Shieldd, block: u8) -> (Ipv4Addr, String) {
    let long = "x".repeat(150);
    for i in 0..3000u32 {
        let addr = Ipv4Addr::new(198, 19, block.wrapping_add((i / 250) as u8), (i % 250 + 1) as u8);
        let t = Instant::now();
        let out = d.ctl(&["ban", &addr.to_string(), "--reason", &long]);
        assert!(t.elapsed() < Duration::from_secs(5), "ban took {:?}", t.elapsed());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        if stderr.contains("shieldctl: warning:") {
            assert!(stderr.contains("NOT saved"), "{stderr}");
            eprintln!("the store filled up after {i} bans: {stderr}");
            return (addr, stderr);
        }
    }
    panic!("a full state_dir never produced a warning");
}

#[test]
fn a_full_state_dir_neither_hangs_a_ban_nor_the_shutdown_and_loses_nothing() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    let fs = SmallFs::mount(&d.state, "1m");
    d.start();
    d.ctl_ok(&["ban", "203.0.113.1"]);
    let filler = fs.fill();

    // The write-ahead log has room for some more commits; then the disk is
    // full. Every change is in force and answered at once either way.
    let (warned, _) = ban_until_unsaved(&d, 0);
    assert!(d.ban_of(&format!("{warned}/32")).is_some(), "the ban is listed");
    let t = Instant::now();
    d.ctl_ok(&["unban", "203.0.113.1"]);
    d.ctl_ok(&["allow", "add", "198.51.100.99"]);
    assert!(t.elapsed() < Duration::from_secs(5));

    // Space again: the sweeper brings the store up to date by itself.
    std::fs::remove_file(&filler).expect("free space");
    let t = Instant::now();
    while !d.log_text().contains("the store is up to date again") {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let stored = stored_bans(&d);
    assert!(stored.contains(&format!("{warned}/32")), "the store caught up");
    assert!(!stored.contains("203.0.113.1/32"), "the store caught up");

    // Full again, and shut down while it is.
    let filler = fs.fill();
    let (unsaved, _) = ban_until_unsaved(&d, 100);
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    eprintln!("SIGTERM with a full state_dir: exit after {:?}", t.elapsed());
    assert!(status.success(), "{status}");
    // The last attempt at exit either failed and says so, or found room
    // (the background checkpoint recycles the write-ahead log's pages).
    let log = d.log_text();
    assert!(
        log.contains("not saved to state_dir")
            || log.matches("the store is up to date again").count() >= 2,
        "{log}"
    );

    // Every change was in the pinned maps all along (in step with the
    // store): a restart keeps them, and the store takes them in.
    std::fs::remove_file(&filler).expect("free space");
    d.start();
    for net in [format!("{warned}/32"), format!("{unsaved}/32")] {
        assert!(d.ban_of(&net).is_some(), "{net}: {}", d.log_text());
        assert!(stored_bans(&d).contains(&net), "{net}: the store caught up");
    }
    assert!(d.ban_of("203.0.113.1/32").is_none(), "the unban holds too");
    assert!(kernel_hosts(&d).contains(&unsaved));
    let allow = d.ctl_ok(&["allow", "list"]);
    assert!(allow.contains("198.51.100.99"), "{allow}");
    assert!(d.terminate().success());
    drop(fs);
}
