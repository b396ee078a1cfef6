//! SPEC §2 step 7b / §8 with real traffic: the shared budget of unverified
//! sources holds its rate within ±10 % while a many-source flood lands on
//! both CPUs, and a verified source sending at the same time loses nothing.
//! Veth pair between two namespaces, XDP in native mode on the SBC side.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use shield::kernel::{attach_link, Mode, VerifiedBy};
use shield_common::{Bucket, Policy, Reason, Verdict, F_DROP_MALFORMED, F_ENFORCE};
use shield_tests::{
    process::pin_to_cpus,
    frames::sip_request,
    kernel::Kernel,
    model::Tables,
    netns::{Lab, SBC_IF, SBC_IP},
    udp::{settle, Sink},
};

/// Counter slot the SBC interface is registered under.
const SLOT: u32 = 1;
const RATE: u64 = 1000;
const BURST: u64 = 200;
const FLOOD: Duration = Duration::from_secs(3);
const MAX_PACKETS_PER_THREAD: usize = 300_000;
/// Distinct flood sources (peer addresses): 198.51.100.100 ..
const SOURCES: u8 = 64;
const VERIFIED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);


fn flood_source(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 100 + i)
}

#[test]
fn the_shared_budget_holds_its_rate_across_cpus_and_spares_verified_sources() {
    let lab = Lab::new();
    for i in 0..SOURCES {
        lab.add_peer_addr(flood_source(i));
    }
    lab.add_peer_addr(VERIFIED);
    let mut t = Tables::default();
    t.udp_ports.insert(5060);
    t.policy = Policy {
        flags: F_ENFORCE | F_DROP_MALFORMED,
        unverified: Bucket::new(RATE, BURST),
        ..Policy::default()
    };
    let mut k = Kernel::load();
    k.apply(&t);
    let verified = IpNet::from(std::net::IpAddr::V4(VERIFIED));
    k.shield.maps.verify(verified, 0, VerifiedBy::Operator).expect("verify");
    k.shield
        .maps
        .set_iface_slot(lab.sbc.ifindex(SBC_IF), SLOT)
        .expect("iface slot");
    let _link = lab
        .sbc
        .run(|| attach_link(&mut k.shield, SBC_IF, Mode::Driver))
        .expect("native XDP attach on veth");
    let sink = Sink::start(&lab);
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);

    // One sender per CPU, each cycling through all the flood sources: the
    // shared bucket is spent from both CPUs at once.
    let payload = sip_request("INVITE", None);
    let start = Instant::now();
    let senders: Vec<_> = (0..cpus)
        .map(|cpu| {
            let payload = payload.clone();
            lab.peer.spawn(move || {
                pin_to_cpus(&[cpu]).expect("pin the sender to a CPU");
                let socks: Vec<UdpSocket> = (0..SOURCES)
                    .map(|i| UdpSocket::bind((flood_source(i), 0)).expect("bind"))
                    .collect();
                let mut sent = 0;
                while start.elapsed() < FLOOD && sent < MAX_PACKETS_PER_THREAD {
                    let s = &socks[sent % socks.len()];
                    if s.send_to(&payload, (SBC_IP, 5060)).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    // The verified subscriber: 500 requests, 5 ms apart, during the flood.
    let verified_sent = 500u64;
    let subscriber = {
        let payload = sip_request("REGISTER", None);
        lab.peer.spawn(move || {
            let s = UdpSocket::bind((VERIFIED, 0)).expect("bind verified");
            for _ in 0..verified_sent {
                s.send_to(&payload, (SBC_IP, 5060)).expect("send");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let sent: usize = senders.into_iter().map(|h| h.join().unwrap()).sum();
    let span = start.elapsed().as_secs_f64();
    subscriber.join().unwrap();
    settle();

    let m = &k.shield.maps;
    let dropped = m
        .counter(SLOT, Verdict::Drop, Reason::Unverified)
        .unwrap()
        .packets;
    let from_flood: u64 = sink
        .counts()
        .iter()
        .filter(|(a, _)| **a != VERIFIED)
        .map(|(_, n)| n)
        .sum();
    let expected = RATE as f64 * span + BURST as f64;
    let ratio = from_flood as f64 / expected;
    println!(
        "spoof-like flood: {sent} packets from {SOURCES} sources in {span:.2}s on {cpus} CPU(s); \
         {from_flood} reached the SIP socket, {dropped} dropped `unverified`; expected {expected:.0} \
         (rate x time + burst); ratio {ratio:.3}"
    );
    assert!(sent as f64 > 3.0 * expected, "the flood must exceed the budget ({sent} sent)");
    assert!((0.9..=1.1).contains(&ratio), "passed {from_flood}, expected {expected:.0} +-10%");
    // The shield passes every one of them (the differential test proves
    // the verdict); a veth ring full of flood can still lose one before
    // XDP runs, as a NIC's ring would.
    let got = sink.from(VERIFIED).count;
    println!("verified source: {got} of {verified_sent} arrived");
    assert!(
        got * 100 >= verified_sent * 99,
        "the verified source lost {} of {verified_sent} requests",
        verified_sent - got
    );
    if cpus > 1 {
        let per_cpu = m
            .counter_per_cpu(SLOT, Verdict::Drop, Reason::Unverified)
            .unwrap();
        let busy = per_cpu.iter().filter(|c| c.packets > 100).count();
        println!(
            "unverified drops per CPU: {:?}",
            per_cpu.iter().map(|c| c.packets).collect::<Vec<_>>()
        );
        assert!(busy >= 2, "the flood was handled on only {busy} CPU(s)");
    }
}
