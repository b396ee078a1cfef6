//! SPEC §13 through the real programs (`BPF_PROG_TEST_RUN`): a call's
//! life from its INVITE to its BYE's 2xx, the per-source limit exact with
//! both CPUs racing, and the expiry program giving a count back once;
//! plain TCP calls the same way, and over real TCP connections through a
//! veth pair between two namespaces (XDP and the egress classifier
//! attached), where the limit drops the INVITE's segment until a slot
//! frees and the client's TCP sends it again, and a forged-source TCP
//! INVITE (no handshake) holds no slot.

use shield_common::{
    calls::{CallConfig, CallEvent, CallOutcome, CALLS_ON, CALL_COUNTED},
    src_key_v4, Policy, Reason, F_ENFORCE,
};
use shield_tests::{
    frames::{Frame, L3, L4, SBC_V4},
    kernel::{Kernel, XDP_DROP, XDP_PASS},
    model::{Model, Tables},
};

const CALLER: [u8; 4] = [192, 0, 2, 30];

fn tables(limit: u64, max_duration_ns: u64) -> Tables {
    let mut t = Tables::default();
    t.udp_ports.insert(5060);
    t.policy = Policy {
        flags: F_ENFORCE,
        ..Policy::default()
    };
    // `[destinations]` as configured by default: "00" is international.
    t.dest = shield::dest::Destinations::default().policy();
    t.calls = CallConfig {
        max_per_source: limit,
        max_duration_ns,
        flags: CALLS_ON,
    };
    t
}

fn kernel(t: &Tables) -> Kernel {
    let mut k = Kernel::load();
    k.apply(t);
    k
}

fn request(method: &str, call_id: &str, to_tag: bool) -> Vec<u8> {
    let tag = if to_tag { ";tag=callee" } else { "" };
    format!(
        "{method} sip:0033123456789@sbc SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.30:5062;branch=z9hG4bK{call_id}\r\n\
         From: <sip:alice@sbc>;tag=1\r\nTo: <sip:0033123456789@sbc>{tag}\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn invite(call_id: &str) -> Vec<u8> {
    Frame::udp4(CALLER, 5060, &request("INVITE", call_id, false)).build()
}

/// The SBC's reply `status` to `method` of call `call_id`, to the caller.
fn reply(status: u16, method: &str, call_id: &str) -> Vec<u8> {
    reply_to(CALLER, status, method, call_id)
}

/// The SBC's reply `status` to `method` of call `call_id`, to `dst`.
fn reply_to(dst: [u8; 4], status: u16, method: &str, call_id: &str) -> Vec<u8> {
    reply_frame(dst, reply_payload(status, method, call_id))
}

fn reply_payload(status: u16, method: &str, call_id: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 192.0.2.30:5062;branch=z9hG4bK{call_id}\r\n\
         From: <sip:alice@sbc>;tag=1\r\nTo: <sip:0033123456789@sbc>;tag=callee\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A reply `payload` from the SBC's port 5060 to `dst`.
fn reply_frame(dst: [u8; 4], payload: Vec<u8>) -> Vec<u8> {
    Frame {
        vlans: vec![],
        l3: L3::V4 {
            src: SBC_V4,
            dst,
            options: vec![],
            frag_offset: 0,
            more_frags: false,
        },
        l4: L4::Udp { sport: 5060, dport: 5062 },
        payload,
    }
    .build()
}

fn events(k: &mut Kernel) -> Vec<CallEvent> {
    let ring = k.shield.maps.calls.events.as_mut().expect("call event ring");
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(shield::kernel::decode_call_event(&item).expect("a whole CallEvent"));
    }
    out
}

fn in_progress(k: &Kernel) -> u64 {
    in_progress_of(k, CALLER)
}

#[test]
fn a_call_from_invite_to_the_bye_2xx() {
    let mut k = kernel(&tables(0, 3_600_000_000_000));
    assert_eq!(k.run(&invite("c1")).reason, Reason::Ok);
    // Retransmitted, and a re-INVITE in the dialog: still one call.
    k.run(&invite("c1"));
    k.run(&Frame::udp4(CALLER, 5060, &request("INVITE", "c1", true)).build());
    assert_eq!(in_progress(&k), 1);
    let calls = k.shield.maps.calls.calls().expect("CALLS");
    assert_eq!(calls.len(), 1);
    let c = calls[0].1;
    assert_eq!((c.country, c.tail, c.digits, c.answer_ns), (33, 0x6789, 11, 0));
    k.run_egress(&reply(180, "INVITE", "c1"));
    k.run_egress(&reply(200, "INVITE", "c1"));
    assert!(k.shield.maps.calls.calls().expect("CALLS")[0].1.answer_ns != 0);
    k.run_egress(&reply(481, "BYE", "c1")); // a BYE refused ends nothing
    assert_eq!(in_progress(&k), 1);
    k.run_egress(&reply(200, "BYE", "c1"));
    assert_eq!(in_progress(&k), 0);
    let ev = events(&mut k);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].outcome(), Some(CallOutcome::Answered));
    assert!(k.shield.maps.calls.calls().expect("CALLS").is_empty());
}

/// `i:`, the compact Call-ID (RFC 3261 §7.3.3), names the same call as
/// `Call-ID:`, in the requests and in the server's replies.
#[test]
fn the_compact_call_id_is_the_same_call() {
    let compact = |p: Vec<u8>| {
        let t = String::from_utf8(p).expect("ASCII");
        assert!(t.contains("Call-ID: "));
        t.replacen("Call-ID: ", "i: ", 1).into_bytes()
    };
    let mut k = kernel(&tables(0, 3_600_000_000_000));
    let inv = Frame::udp4(CALLER, 5060, &compact(request("INVITE", "c7", false))).build();
    assert_eq!(k.run(&inv).reason, Reason::Ok);
    assert_eq!(in_progress(&k), 1, "the INVITE with `i:` opened no call");
    k.run(&invite("c7")); // the same INVITE with the long form: one call
    assert_eq!(in_progress(&k), 1);
    assert_eq!(k.shield.maps.calls.calls().expect("CALLS").len(), 1);
    k.run_egress(&reply_frame(CALLER, compact(reply_payload(200, "INVITE", "c7"))));
    assert!(k.shield.maps.calls.calls().expect("CALLS")[0].1.answer_ns != 0);
    k.run_egress(&reply_frame(CALLER, compact(reply_payload(200, "BYE", "c7"))));
    assert_eq!(in_progress(&k), 0);
    let ev = events(&mut k);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].outcome(), Some(CallOutcome::Answered));
}

#[test]
fn busy_and_cancelled_calls() {
    let mut k = kernel(&tables(0, 3_600_000_000_000));
    k.run(&invite("busy"));
    k.run(&invite("cancelled"));
    assert_eq!(in_progress(&k), 2);
    k.run_egress(&reply(486, "INVITE", "busy"));
    k.run(&Frame::udp4(CALLER, 5060, &request("CANCEL", "cancelled", false)).build());
    k.run_egress(&reply(200, "CANCEL", "cancelled"));
    k.run_egress(&reply(487, "INVITE", "cancelled"));
    // A digest challenge is no call: forgotten, not reported.
    k.run(&invite("challenged"));
    k.run_egress(&reply(407, "INVITE", "challenged"));
    let mut ev: Vec<_> = events(&mut k).iter().map(|e| (e.outcome(), e.status)).collect();
    ev.sort();
    assert_eq!(ev, vec![(Some(CallOutcome::Failed), 4), (Some(CallOutcome::Cancelled), 0)]);
    assert_eq!(in_progress(&k), 0);
}

#[test]
fn the_limit_refuses_the_next_call_with_reason_calls() {
    let mut k = kernel(&tables(2, 3_600_000_000_000));
    assert_eq!(k.run(&invite("a")).reason, Reason::Ok);
    assert_eq!(k.run(&invite("b")).reason, Reason::Ok);
    let o = k.run(&invite("c"));
    assert_eq!((o.reason, o.action), (Reason::Calls, XDP_DROP));
    // A retransmission of a call in progress still passes.
    assert_eq!(k.run(&invite("a")).action, XDP_PASS);
    k.run_egress(&reply(603, "INVITE", "a"));
    assert_eq!(k.run(&invite("c")).reason, Reason::Ok, "a slot came back");
    assert_eq!(in_progress(&k), 2);
}

/// Both CPUs run INVITEs of new calls from one source at once: exactly
/// `limit` of them open a call, whichever CPU wins each race.
/// Without a limit (the default) no call holds a count slot: a new call
/// costs no `CALL_COUNTS` insert. A limit set later (a reload) holds the
/// calls opened from then on: an older call ending gives back no slot it
/// never took, and the limit still counts the newer ones exactly.
#[test]
fn a_limit_set_later_holds_the_calls_opened_from_then_on() {
    let mut t = tables(0, 3_600_000_000_000);
    let mut k = kernel(&t);
    assert_eq!(k.run(&invite("before")).reason, Reason::Ok);
    assert_eq!(in_progress(&k), 1, "tracked, with no slot held (checked by in_progress)");
    t.calls.max_per_source = 1;
    k.shield.maps.calls.set_config(&t.calls).expect("CALL_CFG");
    assert_eq!(k.run(&invite("after")).reason, Reason::Ok);
    assert_eq!(k.run(&invite("third")).reason, Reason::Calls, "the one slot is the newer call's");
    k.run_egress(&reply(486, "INVITE", "before"));
    assert_eq!(in_progress(&k), 1);
    assert_eq!(k.run(&invite("third")).reason, Reason::Calls, "the older call gave back no slot");
    k.run_egress(&reply(486, "INVITE", "after"));
    assert_eq!(k.run(&invite("third")).reason, Reason::Ok);
    assert_eq!(in_progress(&k), 1);
}

#[test]
fn the_limit_is_exact_with_two_cpus_racing() {
    const LIMIT: u64 = 50;
    const PER_CPU: usize = 400;
    let mut k = kernel(&tables(LIMIT, 3_600_000_000_000));
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(2);
    assert!(cpus == 2, "this test needs two CPUs (found {cpus})");
    let passed: usize = std::thread::scope(|s| {
        let prog = &*k.shield.program();
        let handles: Vec<_> = (0..2)
            .map(|cpu| {
                s.spawn(move || {
                    pin_to_cpu(cpu);
                    let mut n = 0;
                    for i in 0..PER_CPU {
                        let f = invite(&format!("race-{cpu}-{i}"));
                        let opts = aya::programs::TestRunOptions {
                            data_in: Some(&f),
                            ..Default::default()
                        };
                        let r = aya::programs::TestRun::test_run(prog, opts).expect("test run");
                        if r.return_value == XDP_PASS {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("runner")).sum()
    });
    assert_eq!(passed as u64, LIMIT, "INVITEs that passed");
    assert_eq!(in_progress(&k), LIMIT);
    assert_eq!(k.shield.maps.calls.calls().expect("CALLS").len() as u64, LIMIT);
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity on the calling thread have no other precondition.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// A call whose BYE was lost is forgotten after `max_duration` by the
/// expiry program (by the kernel's clock), reported `expired`, and its
/// count given back exactly once; a live call is left alone.
#[test]
fn a_call_with_its_bye_lost_expires_once() {
    let mut k = kernel(&tables(1, 200_000_000));
    k.run(&invite("lost-bye"));
    k.run_egress(&reply(200, "INVITE", "lost-bye"));
    let ids = k.shield.maps.calls.call_ids().expect("CALLS");
    assert_eq!(ids.len(), 1);
    assert!(!k.shield.expire_call(ids[0]).expect("expire"), "too early");
    assert_eq!(k.run(&invite("second")).reason, Reason::Calls, "still counted");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(k.shield.expire_call(ids[0]).expect("expire"));
    assert!(!k.shield.expire_call(ids[0]).expect("expire"), "only once");
    assert_eq!(in_progress(&k), 0);
    let ev = events(&mut k);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].outcome(), Some(CallOutcome::Expired));
    assert!(ev[0].duration_ns() >= 200_000_000);
    assert_eq!(k.run(&invite("second")).reason, Reason::Ok);
}

/// The calls `src` has in progress (its entries in `CALLS`), after
/// checking its `CALL_COUNTS` slot holds exactly its counted ones: none
/// without a limit (`CallConfig::counts`), every one with.
fn in_progress_of(k: &Kernel, src: [u8; 4]) -> u64 {
    let key = src_key_v4(src);
    let calls = k.shield.maps.calls.calls().expect("CALLS");
    let mine = || calls.iter().filter(|(_, c)| c.src == key);
    let counted = mine().filter(|(_, c)| c.flags & CALL_COUNTED != 0).count() as u64;
    let slots = k.shield.maps.calls.in_progress(&key).expect("CALL_COUNTS");
    assert_eq!(slots, counted, "CALL_COUNTS against the counted calls");
    mine().count() as u64
}

/// A real TCP connection from the peer to the SBC's port 5060, made in
/// the SBC's namespace where the XDP program's socket lookup finds it; the
/// tables (port 5060 protected over TCP, a call limit of `limit`), the
/// client's end, the server's end and the client's port.
fn established(
    lab: &shield_tests::netns::Lab,
    limit: u64,
) -> (Tables, std::net::TcpStream, std::net::TcpStream, u16) {
    use shield_tests::netns::SBC_IP;
    let mut t = tables(limit, 3_600_000_000_000);
    t.tcp_ports.insert(5060);
    let listener = lab.sbc.run(|| std::net::TcpListener::bind((SBC_IP, 5060)).expect("listen"));
    let conn = lab.peer.run(|| std::net::TcpStream::connect((SBC_IP, 5060)).expect("connect"));
    let (server_end, _) = listener.accept().expect("accept");
    let port = conn.local_addr().expect("local address").port();
    (t, conn, server_end, port)
}

/// Plain TCP (SPEC §13): an INVITE starting a segment of a connection
/// the host has established opens its call like a UDP one, counted by
/// destination; over the limit it is dropped `calls` with a report but no
/// 403 (nothing can answer inside a TCP stream), and its retransmission
/// passes once a slot is free. A segment of no connection (a forged
/// source: no handshake) opens nothing and counts nothing. An allowlisted
/// source's TCP calls are tracked, never limited. Test runs in the SBC's
/// namespace, where the XDP program's socket lookup finds a real
/// connection from the peer.
#[test]
fn tcp_invites_open_calls_and_the_limit_drops_them() {
    use shield::kernel::List;
    use shield_tests::netns::{Lab, PEER_IP};

    let lab = Lab::new();
    let (t, conn, _server_end, port) = established(&lab, 1);
    let mut k = kernel(&t);
    let peer = PEER_IP.octets();
    let seg = |sport: u16, method: &str, call_id: &str, to_tag: bool| {
        let mut f = Frame::tcp4(peer, 5060, false, true);
        f.l4 = L4::Tcp { sport, dport: 5060, syn: false, ack: true };
        f.payload = request(method, call_id, to_tag);
        f.build()
    };
    let to_peer = |status: u16, method: &str, call_id: &str| reply_to(peer, status, method, call_id);
    let in_progress = |k: &Kernel| in_progress_of(k, peer);
    lab.sbc.run(|| {
        // Forged: the peer's address, a port with no connection.
        let forged = k.run(&seg(port ^ 1, "INVITE", "forged", false));
        assert_eq!((forged.reason, forged.action), (Reason::Ok, XDP_PASS));
        assert_eq!(in_progress(&k), 0, "a forged TCP INVITE holds no slot");
        assert!(k.shield.maps.calls.calls().expect("CALLS").is_empty());
        let counted = k.shield.maps.dest.counts(0).expect("DEST_STATS");
        assert_eq!(counted.by_country.get(&33), None, "nor is it counted by destination");

        assert_eq!(k.run(&seg(port, "INVITE", "t1", false)).reason, Reason::Ok);
        // Sent again by TCP, and a re-INVITE in the dialog: still one call.
        k.run(&seg(port, "INVITE", "t1", false));
        k.run(&seg(port, "INVITE", "t1", true));
        assert_eq!(in_progress(&k), 1);
        let calls = k.shield.maps.calls.calls().expect("CALLS");
        assert_eq!(calls.len(), 1);
        let c = calls[0].1;
        assert_eq!((c.country, c.tail, c.digits), (33, 0x6789, 11));
        let counted = k.shield.maps.dest.counts(0).expect("DEST_STATS");
        assert_eq!(counted.by_country.get(&33), Some(&3), "every TCP INVITE counted by destination");
        // Another forged one at the limit: neither refused nor counted.
        assert_eq!(k.run(&seg(port ^ 1, "INVITE", "forged-2", false)).reason, Reason::Ok);

        let o = k.run(&seg(port, "INVITE", "t2", false));
        assert_eq!((o.reason, o.action), (Reason::Calls, XDP_DROP));
        let ring = k.shield.maps.dest.events.as_mut().expect("refusal ring");
        let item = ring.next().expect("the refusal reported");
        // SAFETY: the ring holds whole RefusalEvent records (plain integers).
        let ev: shield_common::RefusalEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        drop(item);
        assert_eq!(ev.reason, Reason::Calls as u8);
        assert_eq!(ev.flags & shield_common::REFUSAL_REPLY, 0, "no 403 asked for over TCP");
        // The rest of the connection's segments pass.
        assert_eq!(k.run(&seg(port, "BYE", "t1", true)).action, XDP_PASS);
        k.run_egress(&to_peer(200, "INVITE", "t1"));
        k.run_egress(&to_peer(200, "BYE", "t1"));
        assert_eq!(in_progress(&k), 0);
        assert_eq!(events(&mut k).len(), 1, "the first call ended answered");
        let again = k.run(&seg(port, "INVITE", "t2", false));
        assert_eq!(again.reason, Reason::Ok, "sent again by TCP once a slot is free");
        assert_eq!(in_progress(&k), 1);

        k.shield.maps.set_list(List::Allow, &["198.51.100.2/32".parse().unwrap()]).expect("allow");
        for id in ["trunk-1", "trunk-2"] {
            assert_eq!(k.run(&seg(port, "INVITE", id, false)).reason, Reason::Allowlisted);
        }
        assert_eq!(in_progress(&k), 3, "tracked over the limit: the allowlist overrides it");
        assert_eq!(k.run(&seg(port ^ 1, "INVITE", "forged-3", false)).reason, Reason::Allowlisted);
        assert_eq!(in_progress(&k), 3, "a forged allowlisted one is not tracked either");
    });
    drop(conn);
}

/// The kernel and the reference model on one request frame: the same
/// reason.
fn both(k: &mut Kernel, m: &mut Model, f: &[u8]) -> shield_tests::kernel::Observed {
    let want = m.decide(f, shield::kernel::monotonic_ns());
    let got = k.run(f);
    assert_eq!(got.reason, want.reason, "kernel and model disagree");
    got
}

/// The same for a reply leaving the host.
fn both_egress(k: &mut Kernel, m: &mut Model, f: &[u8]) {
    let want = m.egress(f, shield::kernel::monotonic_ns());
    let got = k.run_egress(f).expect("a whole frame");
    assert_eq!(got.1, want, "kernel and model disagree on the reply");
}

/// A CANCEL over plain TCP (SPEC §13: "a CANCEL before the answer ends
/// it as cancelled"), starting a segment of a connection the host has
/// established, marks the caller's call: its 487 ends it `cancelled`. A
/// forged CANCEL (the caller's address, no connection: no handshake)
/// leaves the call as it was: its 487 ends it `failed`, and a call
/// answered after a forged CANCEL is answered. Run in the SBC's
/// namespace, where the socket lookup finds the peer's real connection;
/// the reference model, told of that connection, agrees on every frame,
/// on the call table and on the ended calls.
#[test]
fn a_tcp_cancel_cancels_only_on_an_established_connection() {
    use shield_common::calls::{CALL_CANCELLING, CALL_TRYING};
    use shield_tests::netns::{Lab, PEER_IP, SBC_IP};
    use std::net::IpAddr;

    let lab = Lab::new();
    let (mut t, conn, _server_end, port) = established(&lab, 0);
    let mut k = kernel(&t);
    t.tcp_established.insert((IpAddr::from(PEER_IP), port, IpAddr::from(SBC_IP), 5060));
    let mut m = Model::new(t);
    let peer = PEER_IP.octets();
    let seg = |sport: u16, method: &str, call_id: &str| {
        let mut f = Frame::tcp4(peer, 5060, false, true);
        f.l4 = L4::Tcp { sport, dport: 5060, syn: false, ack: true };
        f.payload = request(method, call_id, false);
        f.build()
    };
    let flags = |k: &Kernel, id: &str| {
        let calls = k.shield.maps.calls.calls().expect("CALLS");
        let want = shield_tests::model::txn_ids(&request("INVITE", id, false)).call_id.expect("a Call-ID");
        calls.iter().find(|(h, _)| *h == want).map(|(_, c)| (c.state, c.flags & CALL_CANCELLING))
    };
    lab.sbc.run(|| {
        for id in ["real", "forged", "answered"] {
            assert_eq!(both(&mut k, &mut m, &seg(port, "INVITE", id)).reason, Reason::Ok);
        }
        assert_eq!(in_progress_of(&k, peer), 3);
        // Forged: the caller's address, a port with no connection.
        for id in ["forged", "answered"] {
            let o = both(&mut k, &mut m, &seg(port ^ 1, "CANCEL", id));
            assert_eq!((o.reason, o.action), (Reason::Ok, XDP_PASS));
            assert_eq!(flags(&k, id), Some((CALL_TRYING, 0)), "a forged CANCEL marked {id}");
        }
        assert_eq!(both(&mut k, &mut m, &seg(port, "CANCEL", "real")).action, XDP_PASS);
        assert_eq!(flags(&k, "real"), Some((CALL_TRYING, CALL_CANCELLING)), "the CANCEL on the connection");
        for id in ["real", "forged"] {
            both_egress(&mut k, &mut m, &reply_to(peer, 200, "CANCEL", id));
            both_egress(&mut k, &mut m, &reply_to(peer, 487, "INVITE", id));
        }
        both_egress(&mut k, &mut m, &reply_to(peer, 200, "INVITE", "answered"));
        assert!(k.shield.maps.calls.calls().expect("CALLS")[0].1.answer_ns != 0, "answered all the same");
    });
    let view = |c: &shield_common::calls::Call| (c.src, c.state, c.flags, c.answer_ns != 0);
    let mut got: Vec<_> = k.shield.maps.calls.calls().expect("CALLS").iter().map(|(id, c)| (*id, view(c))).collect();
    let mut want: Vec<_> = m.calls.calls.iter().map(|(id, c)| (*id, view(c))).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "call tables");
    let ended = events(&mut k);
    let ev = |e: &CallEvent| (e.call_id, e.outcome(), e.status);
    assert_eq!(ended.iter().map(ev).collect::<Vec<_>>(), m.calls.events.iter().map(ev).collect::<Vec<_>>());
    let mut ended: Vec<_> = ended.iter().map(|e| (e.outcome(), e.status)).collect();
    ended.sort();
    assert_eq!(ended, vec![(Some(CallOutcome::Failed), 4), (Some(CallOutcome::Cancelled), 0)]);
    assert_eq!(in_progress_of(&k, peer), 1, "the answered call goes on");
    drop(conn);
}

/// An allowlisted trunk's CANCEL (SPEC §13: "CANCEL before the answer
/// means cancelled", whoever the caller): over UDP, and over TCP on a
/// connection the host has established (first in its segment or behind
/// another request, as its INVITE), it marks the trunk's call, so
/// its 487 ends it `cancelled`, not `failed`. A forged TCP CANCEL from
/// the trunk's address (no connection) marks nothing. Kernel and model
/// agree on every frame, the call table and the ended calls.
#[test]
fn an_allowlisted_trunks_cancel_cancels_its_call() {
    use shield_common::calls::CALL_CANCELLING;
    use shield_tests::netns::{Lab, PEER_IP, SBC_IP};
    use std::net::IpAddr;

    let lab = Lab::new();
    let (mut t, conn, _server_end, port) = established(&lab, 1);
    t.allow = vec![format!("{PEER_IP}/32").parse().expect("a CIDR")];
    let mut k = kernel(&t);
    t.tcp_established.insert((IpAddr::from(PEER_IP), port, IpAddr::from(SBC_IP), 5060));
    let mut m = Model::new(t);
    let peer = PEER_IP.octets();
    let udp = |method: &str, id: &str| Frame::udp4(peer, 5060, &request(method, id, false)).build();
    let seg = |sport: u16, method: &str, id: &str| {
        let mut f = Frame::tcp4(peer, 5060, false, true);
        f.l4 = L4::Tcp { sport, dport: 5060, syn: false, ack: true };
        f.payload = request(method, id, false);
        f.build()
    };
    // The same request behind an OPTIONS in one segment.
    let behind = |method: &str, id: &str| {
        let mut f = Frame::tcp4(peer, 5060, false, true);
        f.l4 = L4::Tcp { sport: port, dport: 5060, syn: false, ack: true };
        f.payload = [request("OPTIONS", "keepalive", false), request(method, id, false)].concat();
        f.build()
    };
    let cancelling = |k: &Kernel| {
        let calls = k.shield.maps.calls.calls().expect("CALLS");
        calls.iter().filter(|(_, c)| c.flags & CALL_CANCELLING != 0).count()
    };
    lab.sbc.run(|| {
        for f in [udp("INVITE", "u"), seg(port, "INVITE", "t"), seg(port, "INVITE", "f")] {
            assert_eq!(both(&mut k, &mut m, &f).reason, Reason::Allowlisted);
        }
        assert_eq!(k.shield.maps.calls.calls().expect("CALLS").len(), 3, "tracked over the limit of 1");
        // Forged: the trunk's address, a port with no connection.
        assert_eq!(both(&mut k, &mut m, &seg(port ^ 1, "CANCEL", "f")).action, XDP_PASS);
        assert_eq!(cancelling(&k), 0, "a forged TCP CANCEL marked the trunk's call");
        assert_eq!(both(&mut k, &mut m, &udp("CANCEL", "u")).reason, Reason::Allowlisted);
        assert_eq!(cancelling(&k), 1, "the UDP CANCEL");
        assert_eq!(both(&mut k, &mut m, &seg(port, "CANCEL", "t")).reason, Reason::Allowlisted);
        assert_eq!(cancelling(&k), 2, "the TCP CANCEL on the connection");
        // Behind another request in the segment: read all the same.
        assert_eq!(both(&mut k, &mut m, &behind("INVITE", "b")).reason, Reason::Allowlisted);
        assert_eq!(k.shield.maps.calls.calls().expect("CALLS").len(), 4, "the INVITE behind an OPTIONS");
        assert_eq!(both(&mut k, &mut m, &behind("CANCEL", "b")).reason, Reason::Allowlisted);
        assert_eq!(cancelling(&k), 3, "the CANCEL behind an OPTIONS");
        for id in ["u", "t", "f", "b"] {
            both_egress(&mut k, &mut m, &reply_to(peer, 200, "CANCEL", id));
            both_egress(&mut k, &mut m, &reply_to(peer, 487, "INVITE", id));
        }
    });
    let ended = events(&mut k);
    let ev = |e: &CallEvent| (e.call_id, e.outcome(), e.status);
    assert_eq!(ended.iter().map(ev).collect::<Vec<_>>(), m.calls.events.iter().map(ev).collect::<Vec<_>>());
    let mut ended: Vec<_> = ended.iter().map(|e| (e.outcome(), e.status)).collect();
    ended.sort();
    let cancelled = (Some(CallOutcome::Cancelled), 0);
    let want = vec![(Some(CallOutcome::Failed), 4), cancelled, cancelled, cancelled];
    assert_eq!(ended, want);
    assert_eq!(in_progress_of(&k, peer), 0);
    drop(conn);
}

mod real_tcp {
    //! Real TCP connections from the peer namespace to a SIP server (a
    //! plain responder) in the SBC's, with the XDP program and the egress
    //! classifier attached to the SBC's veth; and a forged segment (no
    //! handshake) from the peer's address.

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use shield::kernel::{attach_egress, attach_link, EgressHook, Mode};
    use shield_common::{calls::CallOutcome, src_key_v4, Reason, Verdict};
    use shield_tests::frames::Frame;
    use shield_tests::netns::{Lab, PEER_IF, PEER_IP, SBC_IF, SBC_IP};
    use shield_tests::packet::PacketSocket;

    use aya::programs::links::FdLink;
    use shield::kernel::EgressLink;
    use shield_tests::model::Tables;
    use shield_tests::kernel::Kernel;

    use super::{events, kernel, request, tables};

    const SLOT: u32 = 1;

    /// What stays attached while a test runs; dropped in this order (the
    /// egress link, its pin directory, then the XDP link).
    struct Links {
        _egress: EgressLink,
        _pins: tempfile::TempDir,
        _xdp: FdLink,
    }

    /// The kernel with `t` (TCP port 5060 protected), the XDP program
    /// natively on the SBC's veth and the egress classifier beside it.
    fn rig(lab: &Lab, mut t: Tables, name: &str) -> (Kernel, Links) {
        t.tcp_ports.insert(5060);
        let mut k = kernel(&t);
        let ifindex = lab.sbc.ifindex(SBC_IF);
        k.shield.maps.set_iface_slot(ifindex, SLOT).expect("iface slot");
        let xdp = lab
            .sbc
            .run(|| attach_link(&mut k.shield, SBC_IF, Mode::Driver))
            .expect("native XDP attach on veth");
        let pins = tempfile::Builder::new()
            .prefix(&format!("sipshield-{name}-"))
            .tempdir_in("/sys/fs/bpf")
            .expect("pin dir on bpffs");
        let egress = lab
            .sbc
            .run(|| attach_egress(&mut k.shield, pins.path(), SBC_IF, ifindex, EgressHook::auto()))
            .expect("attach the egress classifier");
        (k, Links { _egress: egress, _pins: pins, _xdp: xdp })
    }

    /// A connection from the peer to the SBC's SIP port.
    fn connect(lab: &Lab) -> TcpStream {
        let to: SocketAddr = (SBC_IP, 5060).into();
        lab.peer.run(|| {
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s
        })
    }

    /// Sends `forged` from the peer's interface (AF_PACKET: no handshake)
    /// and waits until the XDP program has passed it.
    fn send_forged(lab: &Lab, k: &Kernel, forged: &Frame, what: &str) {
        let passed =
            |k: &Kernel| k.shield.maps.counter(SLOT, Verdict::Pass, Reason::Ok).expect("STATS").packets;
        let before = passed(k);
        lab.peer
            .run(|| PacketSocket::open(PEER_IF).and_then(|s| Ok(s.send(&forged.build())?)))
            .expect("send the forged segment");
        let deadline = Instant::now() + Duration::from_secs(2);
        while passed(k) == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(passed(k) > before, "the forged {what} reached the XDP program");
    }

    /// The server: answers every request on each of `conns` accepted
    /// connections with a 200 echoing its Call-ID and CSeq, until the
    /// peer closes or 20 s pass.
    fn serve(listener: TcpListener, conns: usize) -> std::thread::JoinHandle<()> {
        serve_with(listener, conns, |req| vec![ok_for(req)])
    }

    /// The replies to one request, each written on its own.
    type Respond = fn(&str) -> Vec<Vec<u8>>;

    /// [`serve`] with `respond` giving the replies to a request: each
    /// written on its own, 20 ms apart, without Nagle's delay, so each
    /// starts its segment (only such a message is read).
    fn serve_with(listener: TcpListener, conns: usize, respond: Respond) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            listener.set_nonblocking(true).expect("nonblocking");
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut workers = Vec::new();
            while workers.len() < conns && Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, _)) => workers.push(std::thread::spawn(move || answer(s, deadline, respond))),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        })
    }

    fn answer(mut s: TcpStream, deadline: Instant, respond: Respond) {
        s.set_nonblocking(false).expect("blocking");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        while Instant::now() < deadline {
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => continue,
            }
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let msg: Vec<u8> = buf.drain(..end + 4).collect();
                for (i, reply) in respond(&String::from_utf8_lossy(&msg)).iter().enumerate() {
                    if i > 0 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let _ = s.write_all(reply);
                }
            }
        }
    }

    /// The 200 answering `req` (Call-ID and CSeq copied, a To tag).
    fn ok_for(req: &str) -> Vec<u8> {
        status_for(req, "200 OK", None)
    }

    /// The reply `status` to `req` (Call-ID copied; its CSeq, or the same
    /// number with `method`).
    fn status_for(req: &str, status: &str, method: Option<&str>) -> Vec<u8> {
        let header = |name: &str| {
            req.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
                .to_string()
        };
        let mut cseq = header("CSeq:");
        if let (Some(m), Some(n)) = (method, cseq.split_whitespace().next()) {
            cseq = format!(" {n} {m}");
        }
        format!(
            "SIP/2.0 {status}\r\nVia: SIP/2.0/TCP 198.51.100.2\r\nFrom: <sip:alice@sbc>;tag=1\r\n\
             To: <sip:0033123456789@sbc>;tag=callee\r\nCall-ID:{}\r\nCSeq:{cseq}\r\nContent-Length: 0\r\n\r\n",
            header("Call-ID:"),
        )
        .into_bytes()
    }

    /// A callee that rings: an INVITE gets a 180 and waits; a CANCEL gets
    /// its 200 and the INVITE's 487.
    fn ringing_for(req: &str) -> Vec<Vec<u8>> {
        if req.starts_with("INVITE ") {
            vec![status_for(req, "180 Ringing", None)]
        } else if req.starts_with("CANCEL ") {
            vec![status_for(req, "200 OK", None), status_for(req, "487 Request Terminated", Some("INVITE"))]
        } else {
            vec![ok_for(req)]
        }
    }

    /// [`ringing_for`], but the CANCEL's 200 and the INVITE's 487 go in
    /// one write (as Kamailio may write them): one TCP segment holds both.
    fn ringing_at_once_for(req: &str) -> Vec<Vec<u8>> {
        if req.starts_with("CANCEL ") {
            vec![ringing_for(req).concat()]
        } else {
            ringing_for(req)
        }
    }

    /// Writes `msg` and waits up to `within` for a whole response.
    fn exchange(s: &mut TcpStream, msg: Option<&[u8]>, within: Duration) -> Option<String> {
        if let Some(m) = msg {
            s.write_all(m).expect("write");
        }
        s.set_read_timeout(Some(within)).expect("timeout");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
        }
        None
    }

    fn bye(call_id: &str) -> Vec<u8> {
        String::from_utf8(request("BYE", call_id, true))
            .unwrap()
            .replace("CSeq: 1 BYE", "CSeq: 2 BYE")
            .into_bytes()
    }

    #[test]
    fn tcp_calls_over_a_veth_are_tracked_and_limited() {
        let lab = Lab::new();
        let (mut k, _links) = rig(&lab, tables(1, 3_600_000_000_000), "calls-tcp");
        let listener = lab.sbc.run(|| TcpListener::bind((SBC_IP, 5060)).expect("listen"));
        let server = serve(listener, 2);
        let in_progress = |k: &Kernel| {
            k.shield.maps.calls.in_progress(&src_key_v4(PEER_IP.octets())).expect("CALL_COUNTS")
        };

        // A forged INVITE first: the peer's address, no handshake (an
        // AF_PACKET frame). XDP sees it and passes it (the stack drops
        // it); it opens no call, so with a limit of 1 call A still goes.
        let mut forged = Frame::tcp4(PEER_IP.octets(), 5060, false, true);
        forged.payload = request("INVITE", "forged", false);
        send_forged(&lab, &k, &forged, "segment");
        assert_eq!(in_progress(&k), 0, "a forged TCP INVITE holds no slot");
        assert!(k.shield.maps.calls.calls().expect("CALLS").is_empty());

        // Call A on its own connection: answered, tracked.
        let mut a = connect(&lab);
        let ok = exchange(&mut a, Some(&request("INVITE", "tcp-a", false)), Duration::from_secs(2));
        assert!(ok.is_some_and(|r| r.starts_with("SIP/2.0 200")), "call A answered");
        assert_eq!(in_progress(&k), 1);
        let calls = k.shield.maps.calls.calls().expect("CALLS");
        assert_eq!(calls.len(), 1);
        assert!(calls[0].1.answer_ns != 0, "the 200 on egress answered it");

        // Call B, over the limit of 1: its segment is dropped, again and
        // again as TCP sends it again, and never reaches the server.
        let mut b = connect(&lab);
        let none = exchange(&mut b, Some(&request("INVITE", "tcp-b", false)), Duration::from_millis(900));
        assert!(none.is_none(), "call B got through: {none:?}");
        let dropped = k.shield.maps.counter(SLOT, Verdict::Drop, Reason::Calls).expect("STATS").packets;
        assert!(dropped >= 2, "the INVITE and a retransmission dropped `calls`: {dropped}");

        // A ends (the BYE's 200 leaves through the classifier): B's next
        // retransmission passes and is answered.
        let ok = exchange(&mut a, Some(&bye("tcp-a")), Duration::from_secs(2));
        assert!(ok.is_some_and(|r| r.contains("CSeq: 2 BYE")), "call A's BYE answered");
        let ended = events(&mut k);
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0].outcome(), Some(CallOutcome::Answered));
        let ok = exchange(&mut b, None, Duration::from_secs(8));
        assert!(ok.is_some_and(|r| r.starts_with("SIP/2.0 200")), "call B answered once a slot was free");
        assert_eq!(in_progress(&k), 1, "call B in progress");
        drop((a, b));
        server.join().expect("server");
    }

    /// SPEC §13's "a CANCEL before the answer means cancelled" over a real
    /// TCP connection: the callee rings; a forged CANCEL (the caller's
    /// address, no handshake: an AF_PACKET frame) reaches the XDP program
    /// and marks nothing; the caller's own CANCEL on its connection marks
    /// the call, and the callee's 487 (through the egress classifier) ends
    /// it `cancelled`.
    #[test]
    fn a_tcp_cancel_over_a_veth_cancels_and_a_forged_one_does_not() {
        use shield_common::calls::{CALL_CANCELLING, CALL_TRYING};
        use shield_tests::frames::L4;

        let lab = Lab::new();
        let (mut k, _links) = rig(&lab, tables(0, 3_600_000_000_000), "calls-cancel");
        let listener = lab.sbc.run(|| TcpListener::bind((SBC_IP, 5060)).expect("listen"));
        let server = serve_with(listener, 1, ringing_for);
        let mut c = connect(&lab);
        let port = c.local_addr().expect("local address").port();
        let state = |k: &Kernel| {
            let calls = k.shield.maps.calls.calls().expect("CALLS");
            calls.first().map(|(_, c)| (c.state, c.flags & CALL_CANCELLING))
        };

        let ringing = exchange(&mut c, Some(&request("INVITE", "tcp-cancel", false)), Duration::from_secs(2));
        assert!(ringing.is_some_and(|r| r.starts_with("SIP/2.0 180")), "the callee rings");
        assert_eq!(state(&k), Some((CALL_TRYING, 0)));

        // Forged: the caller's address, another port, no connection.
        let mut forged = Frame::tcp4(PEER_IP.octets(), 5060, false, true);
        forged.l4 = L4::Tcp { sport: port ^ 1, dport: 5060, syn: false, ack: true };
        forged.payload = request("CANCEL", "tcp-cancel", false);
        send_forged(&lab, &k, &forged, "CANCEL");
        assert_eq!(state(&k), Some((CALL_TRYING, 0)), "a forged CANCEL marked the call");

        // The caller's CANCEL: its 200, the INVITE's 487, the call ended.
        let ok = exchange(&mut c, Some(&request("CANCEL", "tcp-cancel", false)), Duration::from_secs(2));
        assert!(ok.is_some(), "the CANCEL answered");
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut ended = Vec::new();
        while ended.is_empty() && Instant::now() < deadline {
            ended = events(&mut k);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0].outcome(), Some(CallOutcome::Cancelled), "{ended:?}");
        assert!(k.shield.maps.calls.calls().expect("CALLS").is_empty());
        drop(c);
        server.join().expect("server");
    }

    /// Issue 21: the callee writes the CANCEL's 200 and the INVITE's 487
    /// back to back in one write, so one TCP segment carries both over
    /// the veth; the egress classifier reads the second message too and
    /// the call ends `cancelled` (it used to wait for `max_duration`).
    #[test]
    fn a_cancel_200_and_487_in_one_segment_over_a_veth_end_the_call_cancelled() {
        use shield_common::calls::{CALL_CANCELLING, CALL_TRYING};

        let lab = Lab::new();
        let (mut k, _links) = rig(&lab, tables(0, 3_600_000_000_000), "calls-segment");
        let listener = lab.sbc.run(|| TcpListener::bind((SBC_IP, 5060)).expect("listen"));
        let server = serve_with(listener, 1, ringing_at_once_for);
        let mut c = connect(&lab);
        let state = |k: &Kernel| {
            let calls = k.shield.maps.calls.calls().expect("CALLS");
            calls.first().map(|(_, c)| (c.state, c.flags & CALL_CANCELLING))
        };
        let ringing = exchange(&mut c, Some(&request("INVITE", "tcp-segment", false)), Duration::from_secs(2));
        assert!(ringing.is_some_and(|r| r.starts_with("SIP/2.0 180")), "the callee rings");
        assert_eq!(state(&k), Some((CALL_TRYING, 0)));
        c.write_all(&request("CANCEL", "tcp-segment", false)).expect("write the CANCEL");
        // Both replies reach the caller (in one read when one segment
        // carried them).
        let mut got = String::new();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(2);
        c.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        while !got.contains("487") && Instant::now() < deadline {
            if let Ok(n) = c.read(&mut chunk) {
                got.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        }
        assert!(got.starts_with("SIP/2.0 200") && got.contains("SIP/2.0 487"), "{got:?}");
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut ended = Vec::new();
        while ended.is_empty() && Instant::now() < deadline {
            ended = events(&mut k);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ended.len(), 1, "the 487 behind the 200 was not read: {ended:?}");
        assert_eq!(ended[0].outcome(), Some(CallOutcome::Cancelled), "{ended:?}");
        assert!(k.shield.maps.calls.calls().expect("CALLS").is_empty());
        drop(c);
        server.join().expect("server");
    }
}
