//! Real traffic through a veth pair between two network namespaces, the XDP
//! program attached in native (driver) mode on the SBC side. Packets are sent
//! with ordinary sockets from the peer namespace; the test counts what
//! arrives at sockets on the SBC and what the kernel counters say.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use shield::kernel::{attach_link, Mode};
use shield_common::{
    sip::{ua_key, DEFAULT_SCANNERS},
    Bucket, Policy, Reason, Verdict, F_DROP_MALFORMED, F_ENFORCE, F_SCAN_UA,
};
use shield_tests::{
    process::pin_to_cpus,
    frames::sip_request,
    kernel::Kernel,
    model::Tables,
    netns::{Lab, SBC_IF, SBC_IP},
    udp::Sink,
};

const LEGIT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const BANNED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);
const SCANNER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
const FLOODER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 88);
/// Counter slot the SBC interface is registered under.
const SLOT: u32 = 1;

fn tables() -> Tables {
    let mut t = Tables::default();
    t.udp_ports.insert(5060);
    t.tcp_ports.insert(5060);
    t.policy = Policy {
        flags: F_ENFORCE | F_DROP_MALFORMED | F_SCAN_UA,
        ..Policy::default()
    };
    t.scanners = DEFAULT_SCANNERS
        .iter()
        .map(|s| ua_key(s).unwrap())
        .collect();
    t.bans = vec![(IpNet::from(std::net::IpAddr::V4(BANNED)), 0)];
    t
}

/// Loads the program, applies `t` and attaches it natively to the SBC side.
fn shield_on(lab: &Lab, t: &Tables) -> (Kernel, aya::programs::links::FdLink) {
    let mut k = Kernel::load();
    k.apply(t);
    let ifindex = lab.sbc.ifindex(SBC_IF);
    k.shield
        .maps
        .set_iface_slot(ifindex, SLOT)
        .expect("iface slot");
    let link = lab
        .sbc
        .run(|| attach_link(&mut k.shield, SBC_IF, Mode::Driver))
        .expect("native XDP attach on veth");
    (k, link)
}

fn send_from(lab: &Lab, src: Ipv4Addr, payload: Vec<u8>, count: usize) {
    lab.peer.run(move || {
        let sock = UdpSocket::bind((src, 0)).expect("bind peer source");
        for _ in 0..count {
            sock.send_to(&payload, (SBC_IP, 5060)).expect("send");
        }
    });
}

#[test]
fn real_udp_and_tcp_through_native_xdp() {
    let lab = Lab::new();
    for a in [LEGIT, BANNED, SCANNER] {
        lab.add_peer_addr(a);
    }
    let (k, _link) = shield_on(&lab, &tables());

    let sink = Sink::start(&lab);
    send_from(&lab, LEGIT, sip_request("INVITE", Some("Linphone/5.2")), 50);
    send_from(&lab, BANNED, sip_request("INVITE", None), 50);
    send_from(
        &lab,
        SCANNER,
        sip_request("OPTIONS", Some("friendly-scanner")),
        50,
    );
    send_from(&lab, LEGIT, b"\x16\x03\x01 not sip".to_vec(), 10);
    std::thread::sleep(Duration::from_millis(300));
    let seen = sink.counts();
    drop(sink);

    assert_eq!(
        seen.get(&LEGIT),
        Some(&50),
        "legitimate INVITEs arrive, garbage does not: {seen:?}"
    );
    assert_eq!(
        seen.get(&BANNED),
        None,
        "banned source reaches the SBC: {seen:?}"
    );
    assert_eq!(
        seen.get(&SCANNER),
        None,
        "scanner reaches the SBC: {seen:?}"
    );

    let m = &k.shield.maps;
    assert_eq!(
        m.counter(SLOT, Verdict::Drop, Reason::Ban).unwrap().packets,
        50
    );
    assert_eq!(
        m.counter(SLOT, Verdict::Drop, Reason::Scanner)
            .unwrap()
            .packets,
        50
    );
    assert_eq!(
        m.counter(SLOT, Verdict::Drop, Reason::Malformed)
            .unwrap()
            .packets,
        10
    );
    assert!(m.counter(SLOT, Verdict::Pass, Reason::Ok).unwrap().packets >= 50);

    // TCP: the handshake from a legitimate source completes and carries data;
    // a banned source's SYNs never get an answer.
    let listener = lab
        .sbc
        .run(|| TcpListener::bind((SBC_IP, 5060)).expect("listen"));
    listener.set_nonblocking(true).unwrap();
    let ok = lab.peer.run(|| {
        let s = socket2_connect(LEGIT, Duration::from_secs(2));
        s.is_ok()
    });
    assert!(ok, "TCP from a legitimate source is accepted");
    let mut accepted = listener.accept().expect("accepted connection").0;
    accepted
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let _ = accepted.read(&mut [0u8; 16]);
    let banned = lab
        .peer
        .run(|| socket2_connect(BANNED, Duration::from_millis(1500)).is_err());
    assert!(banned, "TCP from a banned source must not connect");
    assert!(
        m.counter(SLOT, Verdict::Drop, Reason::Ban).unwrap().packets > 50,
        "SYNs counted"
    );
}

/// Connects to SBC:5060 from `src`, with a timeout.
fn socket2_connect(src: Ipv4Addr, timeout: Duration) -> std::io::Result<TcpStream> {
    // std has no bind-before-connect: do it with libc on a raw socket.
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket syscalls on an fd we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let stream = TcpStream::from_raw_fd(fd);
        let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let local = sin(src, 0);
        let rc = libc::bind(
            fd,
            (&raw const local).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, 0, "bind {src}");
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as i64,
            tv_usec: timeout.subsec_micros() as i64,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let remote = sin(SBC_IP, 5060);
        let rc = libc::connect(
            fd,
            (&raw const remote).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}


#[test]
fn bucket_holds_rate_plus_burst_across_cpus() {
    const RATE: u64 = 1000;
    const BURST: u64 = 200;
    const FLOOD: Duration = Duration::from_secs(3);
    const MAX_PACKETS_PER_THREAD: usize = 200_000;

    let lab = Lab::new();
    lab.add_peer_addr(FLOODER);
    let mut t = tables();
    t.policy.packet = Bucket::new(RATE, BURST);
    let (k, _link) = shield_on(&lab, &t);
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);

    // One source, one sender thread per CPU, each pinned: the same source's
    // packets are handled by XDP on different CPUs at the same time.
    let payload = sip_request("OPTIONS", None);
    let start = Instant::now();
    let senders: Vec<_> = (0..cpus)
        .map(|cpu| {
            let payload = payload.clone();
            lab.peer.spawn(move || {
                pin_to_cpus(&[cpu]).expect("pin the sender to a CPU");
                let sock = UdpSocket::bind((FLOODER, 0)).expect("bind flooder");
                let mut sent = 0;
                while start.elapsed() < FLOOD && sent < MAX_PACKETS_PER_THREAD {
                    if sock.send_to(&payload, (SBC_IP, 5060)).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    let sent: usize = senders.into_iter().map(|h| h.join().unwrap()).sum();
    let span = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));

    let m = &k.shield.maps;
    let passed = m.counter(SLOT, Verdict::Pass, Reason::Ok).unwrap().packets;
    let limited = m
        .counter(SLOT, Verdict::Drop, Reason::Rate)
        .unwrap()
        .packets;
    let expected = RATE as f64 * span + BURST as f64;
    let ratio = passed as f64 / expected;
    println!(
        "flood: {sent} packets in {span:.2}s on {cpus} CPU(s); passed {passed}, rate-dropped {limited}; \
         expected {expected:.0} (rate x time + burst); ratio {ratio:.3}"
    );
    assert!(
        sent as f64 > 3.0 * expected,
        "the flood must exceed the bucket to test it ({sent} sent)"
    );
    // Non-SIP ARP/ND frames are "ok" too; they are a handful.
    assert!(
        (0.9..=1.1).contains(&ratio),
        "passed {passed}, expected {expected:.0} +-10%"
    );

    // Both CPUs really ran the program for this source.
    if cpus > 1 {
        let per_cpu = m
            .counter_per_cpu(SLOT, Verdict::Drop, Reason::Rate)
            .unwrap();
        let busy = per_cpu.iter().filter(|c| c.packets > 100).count();
        println!(
            "rate drops per CPU: {:?}",
            per_cpu.iter().map(|c| c.packets).collect::<Vec<_>>()
        );
        assert!(busy >= 2, "the flood was handled on only {busy} CPU(s)");
    }
}
