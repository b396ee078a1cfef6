//! Spoofed-source floods from the lab's flood sender (`flood --spoof`):
//! every engine (`auto`, the in-kernel XDP generator where the kernel
//! allows live frames, the redirect hop, AF_PACKET), IPv4 and IPv6. Two namespaces joined by a veth; the `flood` binary sends a
//! bounded number of packets from one, a UDP socket on the other receives
//! them. Every source must lie in the prefix, nearly every packet must
//! have its own source (IPv6: spread over many /64s), and the receiver's
//! UDP stack must take them: a datagram reaches the socket only with a
//! valid IPv4 header checksum, and an IPv6 one only with a valid UDP
//! checksum. The kernel's checksum-error counters must stay at zero, and a
//! control test shows that this path does drop and count bad checksums.
//! The flood without `--spoof` (a few sources) is checked the same way.
//! The engines that promise XDP frames must deliver them as XDP frames:
//! the sender's veth counts every frame it took by `ndo_xdp_xmit`
//! (`tx_queue_N_xdp_xmit` of `ethtool -S`), and the packet engine none.
//!
//! Needs root (namespaces, XDP, AF_PACKET); fails, never skips, without it.
//! No timed assertions: the floods are paced and bounded in packets.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use shield_tests::lab::cpu::net_counters;
use shield_tests::lab::flood::{choose, udp6_frame, udp_frame, Engine, FloodReport};
use shield_tests::lab::xdpgen::{enable_gro, XdpGen};
use shield_tests::netns::{veth, End, Netns};
use shield_tests::packet::{parse_mac, PacketSocket};
use shield_tests::udp::{receive_any, settle, Background};

const TX_IF: &str = "veth-t";
const RX_IF: &str = "veth-r";
const TX_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const RX_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const RX_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// 1,048,576 addresses.
const SPOOF_V4: &str = "10.64.0.0/12";
/// 2^80 addresses in 65,536 /64s.
const SPOOF_V6: &str = "2001:db8:5::/48";
const PACKETS: u64 = 20_000;
/// Paced well below what the receiver takes, so nothing is lost on the way.
const RATE: u64 = 10_000;

/// One flood at a time: on a two-CPU machine, parallel floods and their
/// receivers would compete for the CPUs and lose packets.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The sender and the receiver, joined by `veth-t` / `veth-r`. The
/// receiver has 198.51.100.1 and 2001:db8::1, routes the spoofed prefixes
/// back over the veth (so reverse-path filtering accepts their packets)
/// and runs GRO on its end (so it takes the XDP generator's frames).
/// Both namespaces are deleted on drop.
struct Link {
    tx: Netns,
    rx: Netns,
}

fn link() -> Link {
    let tx = Netns::new("sptx");
    let rx = Netns::new("sprx");
    veth(
        End {
            ns: &tx,
            dev: TX_IF,
            addr: TX_V4,
        },
        End {
            ns: &rx,
            dev: RX_IF,
            addr: RX_V4,
        },
    );
    rx.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{RX_V6}/64"),
        "dev",
        RX_IF,
        "nodad",
    ]);
    rx.ip(&["route", "add", SPOOF_V4, "dev", RX_IF]);
    rx.ip(&["-6", "route", "add", SPOOF_V6, "dev", RX_IF]);
    rx.run(|| enable_gro(RX_IF))
        .expect("GRO on the receiver's veth");
    Link { tx, rx }
}

/// A UDP socket on `at` in the receiver, with a large receive buffer,
/// recording the source of every datagram.
fn receiver(l: &Link, at: SocketAddr) -> (Arc<Mutex<Vec<IpAddr>>>, Background) {
    let sock =
        l.rx.run(move || UdpSocket::bind(at).expect("bind the receiver"));
    let size: libc::c_int = 64 << 20;
    // SAFETY: a valid socket; the option value outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let bg = receive_any(sock, move |_, from| s.lock().expect("lock").push(from.ip()));
    (seen, bg)
}

/// Waits (bounded) until `seen` holds `want` datagrams or stops growing.
fn drain(seen: &Mutex<Vec<IpAddr>>, want: usize) -> Vec<IpAddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = usize::MAX;
    loop {
        settle();
        let n = seen.lock().expect("lock").len();
        if n >= want || n == last || Instant::now() > deadline {
            return seen.lock().expect("lock").clone();
        }
        last = n;
    }
}

/// Runs the `flood` binary in the sender: `PACKETS` packets at `RATE`
/// from `sources` (`--spoof PREFIX` or `--sources FIRST/COUNT`).
fn flood(l: &Link, engine: &str, dst: SocketAddr, sources: [&str; 2]) -> FloodReport {
    let out =
        l.tx.command(env!("CARGO_BIN_EXE_flood"))
            .args(["--engine", engine, "--iface", TX_IF])
            .args(["--dst-mac", &l.rx.mac(RX_IF), "--dst", &dst.to_string()])
            .args(sources)
            .args(["--methods", "INVITE,REGISTER,OPTIONS"])
            .args(["--rate", &RATE.to_string(), "--seconds", "60"])
            .args(["--max-packets", &PACKETS.to_string()])
            .output()
            .expect("running flood");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "flood --engine {engine} {sources:?}: {stderr}"
    );
    let report: FloodReport = serde_json::from_slice(&out.stdout).expect("flood's JSON summary");
    let expected = match Engine::parse(engine).expect("engine") {
        Engine::Auto => {
            let (e, why) = choose(&live_frames(l));
            if let Some(why) = why {
                assert!(
                    stderr.contains(&why),
                    "auto says why it fell back: {stderr}"
                );
            }
            e
        }
        e => e,
    };
    assert_eq!(report.engine, expected, "{stderr}");
    report
}

/// Whether this kernel allows live-frames test runs (from the sender).
fn live_frames(l: &Link) -> std::io::Result<()> {
    l.tx.run(|| XdpGen::live_frames(TX_IF))
}

/// Frames the sender's veth has taken by `ndo_xdp_xmit` (XDP frames for
/// its peer), from `ethtool -S`: `tx_queue_N_xdp_xmit`, summed over the
/// queues (the lab's veths have one per CPU).
fn xdp_xmit(l: &Link) -> u64 {
    let out =
        l.tx.command("ethtool")
            .args(["-S", TX_IF])
            .output()
            .expect("ethtool -S");
    assert!(
        out.status.success(),
        "ethtool -S {TX_IF}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, value) = l.trim().split_once(": ")?;
            let queue = name.strip_prefix("tx_queue_")?.strip_suffix("_xdp_xmit")?;
            queue.parse::<u32>().ok()?;
            Some(value.parse::<u64>().expect("a count"))
        })
        .sum()
}

/// The checksum-error counters of the receiver.
const CSUM_ERRORS: [&str; 3] = ["IpExt:InCsumErrors", "Udp:InCsumErrors", "Udp6InCsumErrors"];

fn csum_errors(ns: &Netns) -> [u64; 3] {
    let c = net_counters(ns);
    CSUM_ERRORS.map(|k| c.get(k).copied().unwrap_or(0))
}

/// Floods a fresh [`link`] (see [`flood`]) and returns the source of every
/// datagram the receiver's socket got: at least 95 % of them, and none
/// counted as a checksum error.
fn flood_and_receive(engine: &str, dst: SocketAddr, sources: [&str; 2]) -> Vec<IpAddr> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let l = link();
    let (seen, _rx) = receiver(&l, dst);
    let errors_before = csum_errors(&l.rx);
    let xmit_before = xdp_xmit(&l);
    let report = flood(&l, engine, dst, sources);
    assert_eq!(report.sent, PACKETS, "{report:?}");
    let got = drain(&seen, PACKETS as usize);
    let as_xdp_frames = xdp_xmit(&l) - xmit_before;
    match report.engine {
        Engine::Xdp | Engine::Redirect => assert!(
            as_xdp_frames >= got.len() as u64,
            "{engine}: {as_xdp_frames} XDP frames for {} datagrams",
            got.len()
        ),
        _ => assert_eq!(as_xdp_frames, 0, "{engine}: socket buffers only"),
    }
    let c = net_counters(&l.rx);
    let distinct = got.iter().collect::<HashSet<_>>().len();
    eprintln!(
        "{engine} {sources:?}: {} received, {distinct} distinct sources; \
         Udp:RcvbufErrors {:?}, Udp6RcvbufErrors {:?}",
        got.len(),
        c.get("Udp:RcvbufErrors"),
        c.get("Udp6RcvbufErrors"),
    );
    assert_eq!(
        csum_errors(&l.rx),
        errors_before,
        "checksum errors {CSUM_ERRORS:?}"
    );
    assert!(
        got.len() as u64 >= PACKETS * 95 / 100,
        "{} received",
        got.len()
    );
    got
}

/// A spoofed flood: every source in the prefix, nearly all different.
fn spoofed_flood(engine: &str, dst: SocketAddr, spoof: &str) {
    let got = flood_and_receive(engine, dst, ["--spoof", spoof]);
    let net: IpNet = spoof.parse().expect("prefix");
    if let Some(bad) = got.iter().find(|s| !net.contains(*s)) {
        panic!("source {bad} outside {net}");
    }
    let distinct = got.iter().collect::<HashSet<_>>().len() as u64;
    // 20,000 of 1,048,576 addresses: about 190 repeats expected.
    assert!(
        distinct >= PACKETS * 95 / 100,
        "{distinct} distinct sources"
    );
    if let IpNet::V6(_) = net {
        let subnets: HashSet<u128> = got
            .iter()
            .filter_map(|s| match s {
                IpAddr::V6(a) => Some(u128::from(*a) >> 64),
                IpAddr::V4(_) => None,
            })
            .collect();
        // 20,000 draws from 65,536 /64s: about 17,300 different ones.
        assert!(subnets.len() >= 10_000, "{} /64s", subnets.len());
    }
}

/// The flood without --spoof, as before: 198.51.100.100 to .163, each.
fn few_sources_flood(engine: &str) {
    let got = flood_and_receive(engine, dst_v4(), ["--sources", "198.51.100.100/64"]);
    let distinct: HashSet<&IpAddr> = got.iter().collect();
    let expected: HashSet<IpAddr> = (100..164)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    assert_eq!(distinct, expected.iter().collect());
}

fn dst_v4() -> SocketAddr {
    SocketAddr::from((RX_V4, 5060))
}

fn dst_v6() -> SocketAddr {
    SocketAddr::from((RX_V6, 5060))
}

/// `--engine xdp` where the kernel allows live frames; where it does
/// not, the refusal is one clear line and a failure, never a silent zero.
fn xdp_engine_or_refusal(test: impl FnOnce()) {
    let l = link();
    let refused = live_frames(&l).err();
    let Some(err) = refused else {
        drop(l);
        return test();
    };
    let out =
        l.tx.command(env!("CARGO_BIN_EXE_flood"))
            .args(["--engine", "xdp", "--iface", TX_IF])
            .args([
                "--dst-mac",
                &l.rx.mac(RX_IF),
                "--dst",
                &dst_v4().to_string(),
            ])
            .args([
                "--sources",
                "198.51.100.100/4",
                "--seconds",
                "5",
                "--max-packets",
                "100",
            ])
            .output()
            .expect("running flood");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a refused engine fails: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("live frames") && stderr.contains(&err.to_string()),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no report of zero packets");
}

#[test]
fn few_sources_auto_engine() {
    few_sources_flood("auto");
}

#[test]
fn few_sources_xdp_engine() {
    xdp_engine_or_refusal(|| few_sources_flood("xdp"));
}

#[test]
fn few_sources_redirect_engine() {
    few_sources_flood("redirect");
}

#[test]
fn few_sources_packet_engine() {
    few_sources_flood("packet");
}

#[test]
fn ipv4_spoofed_flood_auto_engine() {
    spoofed_flood("auto", dst_v4(), SPOOF_V4);
}

#[test]
fn ipv4_spoofed_flood_xdp_engine() {
    xdp_engine_or_refusal(|| spoofed_flood("xdp", dst_v4(), SPOOF_V4));
}

#[test]
fn ipv4_spoofed_flood_redirect_engine() {
    spoofed_flood("redirect", dst_v4(), SPOOF_V4);
}

#[test]
fn ipv4_spoofed_flood_packet_engine() {
    spoofed_flood("packet", dst_v4(), SPOOF_V4);
}

#[test]
fn ipv6_spoofed_flood_auto_engine() {
    spoofed_flood("auto", dst_v6(), SPOOF_V6);
}

#[test]
fn ipv6_spoofed_flood_xdp_engine() {
    xdp_engine_or_refusal(|| spoofed_flood("xdp", dst_v6(), SPOOF_V6));
}

#[test]
fn ipv6_spoofed_flood_redirect_engine() {
    spoofed_flood("redirect", dst_v6(), SPOOF_V6);
}

#[test]
fn ipv6_spoofed_flood_packet_engine() {
    spoofed_flood("packet", dst_v6(), SPOOF_V6);
}

/// The control: on this path the receiver really checks. Frames with a
/// broken IPv4 header checksum or a broken IPv6 UDP checksum never reach
/// the socket and are counted as checksum errors; the same frames with
/// their checksums intact arrive.
#[test]
fn the_receiver_drops_and_counts_bad_checksums() {
    const N: usize = 10;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let l = link();
    let sock =
        l.tx.run(|| PacketSocket::open(TX_IF))
            .expect("AF_PACKET socket");
    let dst_mac = parse_mac(&l.rx.mac(RX_IF)).expect("MAC");
    let p = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    let (good4, bad4) = (Ipv4Addr::new(10, 64, 0, 1), Ipv4Addr::new(10, 64, 0, 2));
    let (good6, bad6): (Ipv6Addr, Ipv6Addr) = (
        "2001:db8:5::1".parse().expect("a"),
        "2001:db8:5::2".parse().expect("a"),
    );
    let v4 = |s| {
        udp_frame(
            sock.mac(),
            dst_mac,
            SocketAddrV4::new(s, 5062),
            SocketAddrV4::new(RX_V4, 5060),
            p,
        )
    };
    let v6 = |s| {
        udp6_frame(
            sock.mac(),
            dst_mac,
            SocketAddrV6::new(s, 5062, 0, 0),
            SocketAddrV6::new(RX_V6, 5060, 0, 0),
            p,
        )
    };
    let mut broken4 = v4(bad4);
    broken4[24] ^= 0x01; // IPv4 header checksum
    let mut broken6 = v6(bad6);
    broken6[60] ^= 0x01; // UDP checksum
    let (seen4, _rx4) = receiver(&l, dst_v4());
    let (seen6, _rx6) = receiver(&l, dst_v6());
    let before = csum_errors(&l.rx);
    for _ in 0..N {
        for f in [&broken4, &broken6, &v4(good4), &v6(good6)] {
            sock.send(f).expect("send");
        }
    }
    let got4 = drain(&seen4, N);
    let got6 = drain(&seen6, N);
    let after = csum_errors(&l.rx);
    assert_eq!(
        got4,
        vec![IpAddr::V4(good4); N],
        "only the intact IPv4 frames"
    );
    assert_eq!(
        got6,
        vec![IpAddr::V6(good6); N],
        "only the intact IPv6 frames"
    );
    let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(delta, vec![N as u64, 0, N as u64], "{CSUM_ERRORS:?}");
}

/// The sender names no real host as a source and keeps its own limits.
#[test]
fn the_flood_refuses_prefixes_outside_the_lab_ranges() {
    let cases = [
        ("8.8.0.0/16", "198.51.100.1:5060", "not a documentation"),
        (
            "10.0.0.0/7",
            "198.51.100.1:5060",
            "prefix length must be 8 to 32",
        ),
        ("172.32.0.0/12", "198.51.100.1:5060", "not a documentation"),
        (
            "2001:4860::/32",
            "[2001:db8::1]:5060",
            "not a documentation",
        ),
        (
            "10.64.0.0/12",
            "[2001:db8::1]:5060",
            "not the same IP version",
        ),
        (
            "2001:db8:5::/48",
            "198.51.100.1:5060",
            "not the same IP version",
        ),
        (
            "2001:db8:5::/48",
            "[2001:4860::1]:5060",
            "documentation network",
        ),
    ];
    for (spoof, dst, why) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flood"))
            .args(["--iface", "lo", "--dst-mac", "02:00:00:00:00:01"])
            .args(["--dst", dst, "--spoof", spoof, "--max-packets", "1"])
            .output()
            .expect("running flood");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "--spoof {spoof} --dst {dst} was accepted"
        );
        assert!(
            stderr.contains(why),
            "--spoof {spoof} --dst {dst}: {stderr}"
        );
    }
}
