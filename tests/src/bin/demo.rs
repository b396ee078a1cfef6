//! `cargo xtask demo`: SIP Shield on a throwaway two-host lab.
//!
//! A peer namespace sends legitimate SIP, a scanner, a banned source, junk
//! and a flood to an SBC namespace whose veth runs the XDP program in native
//! mode; then the counters are printed. Everything is torn down at the end,
//! also on Ctrl-C (the namespaces are deleted by their Drop guards, and the
//! signal handler exits through them).

use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::programs::XdpMode;
use ipnet::IpNet;
use shield_common::{
    sip::{ua_key, DEFAULT_SCANNERS},
    Bucket, Method, Policy, Reason, Verdict, F_DROP_MALFORMED, F_ENFORCE, F_SCAN_UA,
};
use shield_tests::{
    frames::sip_request,
    kernel::Kernel,
    model::Tables,
    netns::{Lab, SBC_IF, SBC_IP},
};

const LEGIT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const BANNED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);
const SCANNER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
const FLOODER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 88);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn step(msg: &str) {
    print!("  {msg} ... ");
    let _ = std::io::stdout().flush();
}

fn main() {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as usize);
        libc::signal(libc::SIGTERM, on_signal as *const () as usize);
    }
    println!("SIP Shield demo: peer 198.51.100.0/24 --veth--> SBC 198.51.100.1 (XDP, native mode)\n");
    step("creating the lab (two network namespaces, a veth pair)");
    let lab = Lab::new();
    for a in [LEGIT, BANNED, SCANNER, FLOODER] {
        lab.add_peer_addr(a);
    }
    println!("ok");

    step("loading and attaching the XDP program");
    let mut t = Tables::default();
    t.udp_ports.insert(5060);
    t.tcp_ports.extend([5060, 5061]);
    t.scanners = DEFAULT_SCANNERS.iter().map(|s| ua_key(s).unwrap()).collect();
    t.bans = vec![(IpNet::from(std::net::IpAddr::V4(BANNED)), 0)];
    t.policy = Policy { flags: F_ENFORCE | F_DROP_MALFORMED | F_SCAN_UA, ..Policy::default() };
    t.policy.packet = Bucket::new(50, 100);
    let mut k = Kernel::load();
    k.apply(&t);
    let ifindex = lab.sbc.ifindex(SBC_IF);
    k.shield.maps.set_iface_slot(ifindex, 1).unwrap();
    let _link = lab.sbc.run(|| k.shield.attach(SBC_IF, XdpMode::Driver)).expect("attach");
    println!("ok (50 pps, burst 100 per source; 198.51.100.66 banned)");

    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let sink = lab.sbc.spawn(move || {
        let sock = UdpSocket::bind((SBC_IP, 5060)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut n = std::collections::HashMap::<Ipv4Addr, u64>::new();
        let mut buf = [0u8; 2048];
        while !s2.load(Ordering::SeqCst) {
            if let Ok((_, std::net::SocketAddr::V4(a))) = sock.recv_from(&mut buf) {
                *n.entry(*a.ip()).or_default() += 1;
            }
        }
        n
    });

    let send = |src: Ipv4Addr, payload: Vec<u8>, count: usize, pace: Duration| {
        lab.peer.run(move || {
            let sock = UdpSocket::bind((src, 0)).unwrap();
            for _ in 0..count {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    return;
                }
                let _ = sock.send_to(&payload, (SBC_IP, 5060));
                std::thread::sleep(pace);
            }
        })
    };
    step("legitimate REGISTERs from 198.51.100.10 (20 at 20/s)");
    send(LEGIT, sip_request("REGISTER", Some("Linphone/5.2")), 20, Duration::from_millis(50));
    println!("sent");
    step("sipvicious-style OPTIONS scan from 198.51.100.77 (200)");
    send(SCANNER, sip_request("OPTIONS", Some("friendly-scanner")), 200, Duration::ZERO);
    println!("sent");
    step("INVITEs from the banned 198.51.100.66 (200)");
    send(BANNED, sip_request("INVITE", None), 200, Duration::ZERO);
    println!("sent");
    step("INVITE flood from 198.51.100.88 (2 s)");
    let t0 = Instant::now();
    let flood = lab.peer.run(move || {
        let sock = UdpSocket::bind((FLOODER, 0)).unwrap();
        let p = sip_request("INVITE", None);
        let mut n = 0u64;
        while t0.elapsed() < Duration::from_secs(2) && n < 300_000 && !INTERRUPTED.load(Ordering::SeqCst) {
            if sock.send_to(&p, (SBC_IP, 5060)).is_ok() {
                n += 1;
            }
        }
        n
    });
    println!("{flood} packets");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let got = sink.join().unwrap();

    let m = &k.shield.maps;
    println!("\nWhat reached the SBC's SIP socket:");
    for (who, a, sent) in [
        ("legitimate", LEGIT, 20),
        ("scanner", SCANNER, 200),
        ("banned", BANNED, 200),
        ("flooder", FLOODER, flood),
    ] {
        println!("  {who:<11} {a:<15} sent {sent:>7}  arrived {:>7}", got.get(&a).copied().unwrap_or(0));
    }
    println!("\nKernel counters on {SBC_IF} (sipshield_packets_total):");
    for v in Verdict::ALL {
        for r in Reason::ALL {
            let c = m.counter(1, v, r).unwrap();
            if c.packets > 0 {
                println!("  {:<6} {:<12} {:>8} packets {:>10} bytes", v.as_str(), r.as_str(), c.packets, c.bytes);
            }
        }
    }
    println!("\nSIP requests by method:");
    for me in Method::ALL {
        let pass = m.sip_counter(1, me, Verdict::Pass).unwrap();
        let drop = m.sip_counter(1, me, Verdict::Drop).unwrap();
        if pass + drop > 0 {
            println!("  {:<9} passed {pass:>7}  dropped {drop:>7}", me.as_str());
        }
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        println!("\ninterrupted; cleaning up");
    }
    println!("\nLab removed (namespaces deleted, XDP detached).");
}
