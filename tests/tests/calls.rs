//! SPEC §13 through the real programs (`BPF_PROG_TEST_RUN`): a call's
//! life from its INVITE to its BYE's 2xx, the per-source limit exact with
//! both CPUs racing, and the expiry program giving a count back once.

use shield_common::{
    calls::{CallConfig, CallEvent, CallOutcome, CALLS_ON},
    src_key_v4, Policy, Reason, F_ENFORCE,
};
use shield_tests::{
    frames::{Frame, L3, L4, SBC_V4},
    kernel::{Kernel, XDP_DROP, XDP_PASS},
    model::Tables,
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
    let payload = format!(
        "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 192.0.2.30:5062;branch=z9hG4bK{call_id}\r\n\
         From: <sip:alice@sbc>;tag=1\r\nTo: <sip:0033123456789@sbc>;tag=callee\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    Frame {
        vlans: vec![],
        l3: L3::V4 {
            src: SBC_V4,
            dst: CALLER,
            options: vec![],
            frag_offset: 0,
            more_frags: false,
        },
        l4: L4::Udp { sport: 5060, dport: 5062 },
        payload: payload.into_bytes(),
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
    k.shield.maps.calls.in_progress(&src_key_v4(CALLER)).expect("CALL_COUNTS")
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
