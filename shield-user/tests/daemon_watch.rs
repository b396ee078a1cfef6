//! `shieldctl watch` against a real `shieldd` and real floods between two
//! namespaces: the sampled drops decode (source, method, Request-URI user
//! masked, User-Agent) with the reason the kernel counted; `--reason` and
//! `--source` filter; the rates line shows the drops per second by reason
//! and the top sources with their ban's time left; `--pcap` writes frames
//! that tshark reads back as SIP; a reader that stops reading gets lost
//! samples counted; sampling is off again when watch ends; bad arguments
//! are exit 2.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const SCANNER: Ipv4Addr = PEER_IP;
const BANNED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const INVITE: &[u8] = b"INVITE sip:1000@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.2:5060\r\n\
From: <sip:x@198.51.100.2>;tag=1\r\nTo: <sip:1000@198.51.100.1>\r\nCall-ID: w1\r\nCSeq: 1 INVITE\r\n\
User-Agent: friendly-scanner/1.0\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
/// Escalation off: the scanner stays a `scanner` drop, never a ban.
const CONFIG: &str = "[limits]\npackets_per_second = 0\n\n[bans.escalate]\ndrops = 0\n";

/// Sends `payload` from `src` to SBC:5060 `n` times, one every ms, from
/// a thread in the peer namespace.
fn send_from(lab: &Lab, src: Ipv4Addr, payload: &'static [u8], n: u32) -> std::thread::JoinHandle<()> {
    lab.peer.spawn(move || {
        let sock = UdpSocket::bind(SocketAddr::from((src, 0))).expect("bind source");
        for _ in 0..n {
            let _ = sock.send_to(payload, SocketAddr::from((SBC_IP, 5060)));
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

fn daemon(lab: &Lab) -> Shieldd {
    lab.add_peer_addr(BANNED);
    let mut d = Shieldd::new(bins(), &lab.sbc, CONFIG);
    d.start();
    d.ctl_ok(&["ban", &BANNED.to_string(), "--duration", "1h", "--reason", "watch test"]);
    d
}

fn watch(d: &Shieldd, args: &[&str]) -> Command {
    let mut c = Command::new(SHIELDCTL);
    c.arg("--socket").arg(&d.socket).arg("watch").arg("--pin-path").arg(&d.pin).args(args);
    c
}

/// Runs watch with a flood of both sources going on; its JSON lines.
fn watch_flood(lab: &Lab, d: &Shieldd, args: &[&str]) -> Vec<Value> {
    let mut child = watch(d, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("shieldctl watch");
    std::thread::sleep(Duration::from_millis(500));
    let a = send_from(lab, SCANNER, INVITE, 1500);
    let b = send_from(lab, BANNED, OPTIONS, 1500);
    a.join().unwrap();
    b.join().unwrap();
    let out = collect_output(&mut child, Duration::from_secs(30));
    assert!(out.status.success(), "watch {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn collect_output(child: &mut std::process::Child, within: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + within;
    let mut stdout = Vec::new();
    let mut so = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        so.read_to_end(&mut stdout).ok();
        stdout
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "shieldctl watch did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = Vec::new();
    child.stderr.take().map(|mut e| e.read_to_end(&mut stderr));
    std::process::Output { status, stdout: reader.join().unwrap(), stderr }
}

fn samples(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "sample").collect()
}

fn sampling_is_off(d: &Shieldd) {
    let cfg = shield::watch::PinnedSampler::open(&d.pin).expect("pins");
    let before = cfg.counters().expect("counters");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cfg.counters().unwrap(), before, "sampling still on after watch ended");
}

#[test]
fn samples_decode_with_the_right_reason_and_filters_hold() {
    let lab = Lab::new();
    let d = daemon(&lab);
    let lines = watch_flood(&lab, &d, &["--json", "--for", "4s", "--interval", "1s"]);
    let s = samples(&lines);
    let scanner: Vec<_> = s.iter().filter(|v| v["packet"]["source"] == SCANNER.to_string()).collect();
    let banned: Vec<_> = s.iter().filter(|v| v["packet"]["source"] == BANNED.to_string()).collect();
    println!("{} samples: {} from the scanner, {} from the banned source", s.len(), scanner.len(), banned.len());
    assert!(scanner.len() > 100 && banned.len() > 100, "too few samples");
    for v in &scanner {
        assert_eq!(v["reason"], "scanner", "{v}");
        assert_eq!(v["packet"]["method"], "INVITE");
        assert_eq!(v["packet"]["ruri_user"], "10**", "Request-URI user masked");
        assert_eq!(v["packet"]["user_agent"], "friendly-scanner/1.0");
        assert_eq!(v["len"], 14 + 20 + 8 + INVITE.len());
    }
    for v in &banned {
        assert_eq!(v["reason"], "ban", "{v}");
        assert_eq!(v["packet"]["method"], "OPTIONS");
    }
    // The rates: scanner and ban drops per second, the top sources with
    // the ban's time left.
    let rates: Vec<_> = lines.iter().filter(|l| l["type"] == "rates").collect();
    let busiest = rates.iter().max_by_key(|r| r["drops_per_second"]["scanner"].as_f64().unwrap_or(0.0) as u64).expect("rates");
    println!("busiest rates line: {busiest}");
    assert!(busiest["drops_per_second"]["scanner"].as_f64().unwrap() > 100.0);
    assert!(busiest["drops_per_second"]["ban"].as_f64().unwrap() > 100.0);
    let top = busiest["top"].as_array().expect("top");
    let b = top.iter().find(|t| t["source"] == BANNED.to_string()).expect("banned source in top");
    assert_ne!(b["ban_left"], "-", "{b}");
    let sc = top.iter().find(|t| t["source"] == SCANNER.to_string()).expect("scanner in top");
    assert_eq!(sc["ban_left"], "-");
    let prefixes = busiest["top_prefixes"].as_array().expect("top_prefixes");
    let lab_net = prefixes.iter().find(|p| p["prefix"] == "198.51.100.0/24").expect("the lab's /24");
    assert_eq!(lab_net["sources"], 2, "{lab_net}");
    assert_eq!(lines.last().unwrap()["type"], "end");
    sampling_is_off(&d);

    // The plain view (not a terminal here: one block per refresh).
    let mut child = watch(&d, &["--for", "3s"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("watch");
    std::thread::sleep(Duration::from_millis(500));
    send_from(&lab, SCANNER, INVITE, 1500).join().unwrap();
    let out = collect_output(&mut child, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let block = text.rsplit("shieldctl watch: samples taken").find(|b| b.contains("friendly-scanner")).unwrap_or(&text);
    println!("plain view:\n{block}");
    for needle in ["Drops per second", "scanner", "Top sources", "INVITE", "10**", "friendly-scanner/1.0"] {
        assert!(text.contains(needle), "the plain view lacks {needle}:\n{text}");
    }

    let lines = watch_flood(&lab, &d, &["--json", "--for", "4s", "--reason", "ban"]);
    assert!(!samples(&lines).is_empty());
    assert!(samples(&lines).iter().all(|v| v["reason"] == "ban"));
    let lines = watch_flood(&lab, &d, &["--json", "--for", "4s", "--source", &format!("{SCANNER}/32")]);
    assert!(!samples(&lines).is_empty());
    assert!(samples(&lines).iter().all(|v| v["packet"]["source"] == SCANNER.to_string()));
}

#[test]
fn pcap_is_read_back_by_tshark_as_sip() {
    let lab = Lab::new();
    let d = daemon(&lab);
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("drops.pcap");
    let p = pcap.to_str().unwrap();
    let lines = watch_flood(&lab, &d, &["--json", "--pcap", p, "--count", "25", "--reason", "scanner", "--for", "20s"]);
    assert_eq!(samples(&lines).len(), 25);
    let out = Command::new("tshark")
        .args(["-r", p, "-T", "fields", "-E", "separator=|", "-e", "ip.src", "-e", "udp.dstport", "-e", "sip.Method"])
        .args(["-e", "sip.r-uri.user", "-e", "sip.User-Agent", "-e", "frame.len"])
        .output()
        .expect("tshark (make setup installs it)");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    println!("tshark read:\n{}", text.lines().take(3).collect::<Vec<_>>().join("\n"));
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 25, "{text}");
    let frame_len = 14 + 20 + 8 + INVITE.len();
    for r in rows {
        assert_eq!(r, format!("{SCANNER}|5060|INVITE|1000|friendly-scanner/1.0|{frame_len}"));
    }
    sampling_is_off(&d);
}

#[test]
fn a_reader_that_falls_behind_is_told_what_it_lost() {
    let lab = Lab::new();
    let d = daemon(&lab);
    // Its output is not read until the flood is over: the pipe fills, watch
    // blocks, the kernel's ring buffer fills.
    let mut child = watch(&d, &["--json", "--for", "3s", "--per-second", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shieldctl watch");
    std::thread::sleep(Duration::from_millis(300));
    send_from(&lab, SCANNER, INVITE, 3000).join().unwrap();
    let out = collect_output(&mut child, Duration::from_secs(30));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let end: Value = serde_json::from_str(text.lines().last().expect("lines")).unwrap();
    println!("{end}");
    assert_eq!(end["type"], "end");
    let (shown, lost) = (end["samples"].as_u64().unwrap(), end["lost_samples"].as_u64().unwrap());
    assert!(lost > 0, "nothing lost with a blocked reader");
    assert!(shown + lost <= 3000 && shown > 0, "shown {shown} lost {lost}");
}

#[test]
fn bad_arguments_are_exit_2_naming_them() {
    let lab = Lab::new();
    let d = daemon(&lab);
    for (args, needle) in [
        (vec!["--reason", "ok"], "--reason"),
        (vec!["--reason", "nonsense"], "--reason"),
        (vec!["--source", "300.1.1.1"], "--source"),
        (vec!["--interval", "0s"], "--interval"),
        (vec!["--every", "0"], "--every"),
    ] {
        let out = watch(&d, &args).output().expect("shieldctl");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new(SHIELDCTL)
        .arg("--socket")
        .arg(&d.socket)
        .args(["watch", "--pin-path", "/sys/fs/bpf/does-not-exist"])
        .output()
        .expect("shieldctl");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist"));
}

#[test]
fn pins_of_a_version_without_sampling_are_adopted_and_completed() {
    let lab = Lab::new();
    let mut d = daemon(&lab);
    // What an earlier version left pinned: everything but the sampling maps.
    d.terminate();
    for name in [shield_common::names::SAMPLES, shield_common::names::SAMPLE_CFG, shield_common::names::SAMPLE_STATE] {
        std::fs::remove_file(d.pin.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let sink = Sink::start(&lab);
    let flood = Flood::start(&lab, BANNED, Duration::from_millis(2), u32::MAX, Duration::from_secs(60));
    d.restart().expect("restart on the older pins");
    let through = sink.from(BANNED).count;
    assert_eq!(through, 0, "the ban held across the upgrade");
    assert!(d.banned().expect("banned").bans.iter().any(|b| b.net.to_string() == format!("{BANNED}/32")));
    let lines = watch_flood(&lab, &d, &["--json", "--for", "3s", "--reason", "ban"]);
    flood.stop();
    assert!(samples(&lines).len() > 10, "no samples after the upgrade");
    sampling_is_off(&d);
}

#[test]
fn a_killed_watch_leaves_sampling_on_only_until_shieldd_restarts() {
    let lab = Lab::new();
    let mut d = daemon(&lab);
    let mut child = watch(&d, &["--json"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("watch");
    std::thread::sleep(Duration::from_millis(700));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let sampler = shield::watch::PinnedSampler::open(&d.pin).expect("pins");
    let seen = |s: &shield::watch::PinnedSampler| s.counters().expect("counters").seen;
    let before = seen(&sampler);
    send(&lab, BANNED, 50, Duration::from_millis(2));
    settle();
    assert!(seen(&sampler) >= before + 50, "sampling was off already after SIGKILL");
    d.restart().expect("restart");
    let before = seen(&sampler);
    send(&lab, BANNED, 50, Duration::from_millis(2));
    settle();
    assert_eq!(seen(&sampler), before, "sampling still on after shieldd restarted");
}
