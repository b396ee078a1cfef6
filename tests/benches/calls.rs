//! SPEC §13's cost (issue 21): the call table on the INVITE, the 200 OK
//! and the BYE's 200, with call tracking off and on, beside a bare
//! `XDP_DROP` program in the same run (ratios), under a bare policy and
//! under shieldd's defaults; then the table at 100,000 concurrent calls:
//! its memory, and the cost of a reply's lookup.
//!
//! `cargo bench -p shield-tests --bench calls`, as root.

use std::process::Command;
use std::time::Instant;

use shield::Capacity;
use shield_common::{
    calls::{CallConfig, CALLS_ON},
    sip::{ua_key, DEFAULT_SCANNERS},
    Policy, Reason, F_DROP_MALFORMED, F_ENFORCE, F_SCAN_UA,
};
use shield_tests::{
    baseline::BareDrop,
    frames::{Frame, L3, L4},
    kernel::Kernel,
};

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;
/// Concurrent calls: `[calls] capacity`'s default.
const CALLS: u32 = 100_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn invite(i: u32) -> Vec<u8> {
    invite_from(i, i)
}

/// Call `i` from the `caller`-th caller: 100.64.0.0/10 and up (map keys
/// only: test_run sends nothing anywhere); no limit applies.
fn invite_from(caller: u32, i: u32) -> Vec<u8> {
    let src = (0x6440_0000 + caller).to_be_bytes();
    let p = format!(
        "INVITE sip:0033612345678@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 100.64.0.1:5062;branch=z9hG4bK{i}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1000@sbc>;tag={i}\r\nTo: <sip:0033612345678@sbc>\r\n\
         Call-ID: call-{i}@bench\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@100.64.0.1:5062>\r\n\
         User-Agent: Linphone/5.2.0\r\nContent-Length: 0\r\n\r\n"
    );
    Frame::udp4(src, 5060, p.as_bytes()).build()
}

/// The SBC's `status` reply to `method` of call `i`, to its caller.
fn reply(i: u32, status: &str, method: &str) -> Vec<u8> {
    let dst = (0x6440_0000 + i).to_be_bytes();
    let p = format!(
        "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 100.64.0.1:5062;branch=z9hG4bK{i}\r\nFrom: <sip:1000@sbc>;tag={i}\r\n\
         To: <sip:0033612345678@sbc>;tag=pbx\r\nCall-ID: call-{i}@bench\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    Frame {
        vlans: vec![],
        l3: L3::V4 { src: [198, 51, 100, 1], dst, options: vec![], frag_offset: 0, more_frags: false },
        l4: L4::Udp { sport: 5060, dport: 5062 },
        payload: p.into_bytes(),
    }
    .build()
}

fn config(on: bool) -> CallConfig {
    CallConfig { max_per_source: 0, max_duration_ns: 12 * 3_600_000_000_000, flags: if on { CALLS_ON } else { 0 } }
}

/// Median ns per run of `frame` (XDP or egress) and of the bare program.
fn time(k: &mut Kernel, base: &BareDrop, frame: &[u8], egress: bool) -> (f64, f64) {
    let (mut ns, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        b.push(f64::from(base.time(frame, REPEAT).unwrap()));
        ns.push(if egress { k.time_egress(frame, REPEAT) } else { k.time(frame, REPEAT) });
    }
    (median(ns), median(b))
}

/// Mean ns of one run per frame (each a new call), and the bare program's.
fn cycle(k: &mut Kernel, base: &BareDrop, frames: &[Vec<u8>]) -> (f64, f64) {
    let (mut ns, mut b) = (0f64, 0f64);
    for f in frames {
        b += f64::from(base.time(f, 1).unwrap());
        ns += k.time(f, 1);
    }
    (ns / frames.len() as f64, b / frames.len() as f64)
}

/// `bytes_memlock` of the map named `name` (bpftool's view of the kernel's
/// accounting), the largest of that name.
fn memlock(name: &str) -> Option<u64> {
    let out = Command::new("bpftool").args(["map", "show", "-j"]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?
        .iter()
        .filter(|m| m["name"] == name)
        .filter_map(|m| m["bytes_memlock"].as_u64())
        .max()
}

/// The two policies the rows are measured under: steps 2-9 with nothing
/// else to do (no header walk unless calls are tracked), and shieldd's
/// defaults (`[sip] drop_malformed`, the default scanner list: the
/// User-Agent walk every SIP request gets, which also finds the call's
/// To and Call-ID lines).
fn policy(defaults: bool) -> Policy {
    let flags = if defaults { F_ENFORCE | F_DROP_MALFORMED | F_SCAN_UA } else { F_ENFORCE };
    Policy { flags, ..Policy::default() }
}

type Row = (bool, (f64, f64), (f64, f64), (f64, f64), (f64, f64), (f64, f64));

/// The four paths with tracking off, then on, under `policy(defaults)`.
fn measure(k: &mut Kernel, base: &BareDrop, defaults: bool, first: u32) -> Vec<Row> {
    k.shield.maps.set_policy(&policy(defaults)).unwrap();
    let mut rows = Vec::new();
    for on in [false, true] {
        k.shield.maps.calls.set_config(&config(on)).unwrap();
        k.shield.maps.calls.clear().unwrap();
        let inv = invite(0);
        assert_eq!(k.run(&inv).reason, Reason::Ok);
        // Repeated: the first run opens the call, the rest find it (the
        // retransmission path: the To and Call-ID searches, a lookup).
        let i = time(k, base, &inv, false);
        let ok = time(k, base, &reply(0, "200 OK", "INVITE"), true);
        let bye = time(k, base, &reply(0, "200 OK", "BYE"), true);
        // New calls: one run per frame, each a call (and a caller) of its own.
        let frames: Vec<Vec<u8>> = (first..first + 20_000).map(invite).collect();
        let new = cycle(k, base, &frames);
        // New calls from one caller (a PBX): its count exists already.
        let frames: Vec<Vec<u8>> = (first..first + 20_000).map(|i| invite_from(first - 1, i + 500_000)).collect();
        let known = cycle(k, base, &frames);
        rows.push((on, i, ok, bye, new, known));
    }
    rows
}

fn main() {
    shield_tests::kernel::require_root();
    let base = BareDrop::load().expect("load the XDP_DROP baseline");
    let mut k = Kernel::load_with(Capacity::default());
    let m = &mut k.shield.maps;
    m.set_ports(&[5060], &[5060]).unwrap();
    let keys: Vec<_> = DEFAULT_SCANNERS.iter().map(|s| ua_key(s).unwrap()).collect();
    m.set_scanners(&keys).unwrap();
    m.dest.apply(&shield::dest::Destinations::default().policy(), &[]).unwrap();

    println!("Calls (SPEC §13), BPF_PROG_TEST_RUN, median of {ROUNDS} x {REPEAT} runs per path\n");
    println!("| policy | packet | tracking | ns/packet | bare XDP_DROP ns | ratio to bare | ratio to tracking off |");
    println!("|---|---|---|---:|---:|---:|---:|");
    let mut goal = Vec::new();
    for (defaults, first) in [(false, 1), (true, 1_000_001)] {
        let rows = measure(&mut k, &base, defaults, first);
        let name = if defaults { "shieldd defaults (UA scan)" } else { "bare (no header walk)" };
        let off = rows[0];
        for (on, i, ok, bye, new, known) in &rows {
            let t = if *on { "on" } else { "off" };
            for (what, (ns, b), r) in [
                ("INVITE (repeated: retransmission)", i, off.1 .0),
                ("INVITE, a new call each (1 run per frame, 20,000 frames)", new, off.4 .0),
                ("INVITE, a new call each from one caller (1 run per frame, 20,000)", known, off.5 .0),
                ("200 OK to the INVITE (egress)", ok, off.2 .0),
                ("200 OK to the BYE (egress)", bye, off.3 .0),
            ] {
                println!("| {name} | {what} | {t} | {ns:.1} | {b:.1} | {:.2}x | {:.2}x |", ns / b, ns / r);
            }
        }
        goal.push((name, rows[1].1 .0 / off.1 .0, rows[1].4 .0 / off.4 .0));
    }
    println!();
    for (name, retransmitted, new) in goal {
        println!(
            "Goal (INVITE with tracking <= 1.15x without), {name}: retransmission {retransmitted:.2}x, new call {new:.2}x ({})",
            if retransmitted.max(new) <= 1.15 { "met" } else { "not met" }
        );
    }

    // The table at 100,000 concurrent calls (the bare policy, as before).
    k.shield.maps.set_policy(&policy(false)).unwrap();
    k.shield.maps.calls.set_config(&config(true)).unwrap();
    k.shield.maps.calls.clear().unwrap();
    let t0 = Instant::now();
    for i in 0..CALLS {
        k.run(&invite(i));
    }
    let held = k.shield.maps.calls.call_ids().unwrap().len();
    eprintln!("{held} calls opened in {:.1}s", t0.elapsed().as_secs_f64());
    let ok = time(&mut k, &base, &reply(CALLS / 2, "200 OK", "INVITE"), true);
    let miss = time(&mut k, &base, &reply(CALLS + 1, "200 OK", "INVITE"), true);
    println!("\nThe call table at {held} concurrent calls (capacity {CALLS})\n");
    println!("| what | value |");
    println!("|---|---:|");
    if let Some(b) = memlock("CALLS") {
        println!("| CALLS memory (bytes_memlock, preallocated) | {:.1} MiB ({} bytes per call) |", b as f64 / 1048576.0, b / u64::from(CALLS));
    }
    if let Some(b) = memlock("CALL_COUNTS") {
        println!("| CALL_COUNTS memory (LRU, per caller) | {:.1} MiB |", b as f64 / 1048576.0);
    }
    println!("| 200 OK to a call among them (egress, ns) | {:.1} ({:.2}x bare) |", ok.0, ok.0 / ok.1);
    println!("| 200 OK with no such call (egress, ns) | {:.1} ({:.2}x bare) |", miss.0, miss.0 / miss.1);
}
