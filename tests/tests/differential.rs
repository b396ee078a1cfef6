//! Differential test: the kernel program and the reference model must give
//! the same verdict and reason for every frame — valid SIP in every shape,
//! truncations, bit flips, random bytes — and report the same repeat
//! offenders. Cases are sequences of frames sharing bucket state; the state
//! is reset between cases so a shrunk failure replays exactly.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};

use ipnet::IpNet;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use shield_common::{
    calls::{Call, CallEvent},
    sip::{ua_key, DEFAULT_SCANNERS},
    SrcKey,
    Bucket, Method, OffenderEvent, Policy, Verdict, F_DROP_MALFORMED, F_ENFORCE, F_SCAN_UA,
    F_SCOPE_SIP, F_TRUNK_ONLY,
};
use shield_tests::{
    gen::{
        auth_reply_frame, auth_request_frame, call_reply_frame, call_request_frame, frame,
        response_frame, Rng,
    },
    kernel::{Hook, Kernel, XDP_DROP, XDP_PASS},
    model::{transport_out_of_reach, transport_protocol, Model, Tables},
};

/// `TC_ACT_UNSPEC`: the egress classifier's only return value.
const TC_ACT_UNSPEC: i32 = -1;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Buckets whose refill interval is 3 minutes: within a test run they
/// only empty, so kernel and model agree whatever their clocks read. (A
/// source's bucket reaches at most 9.2 minutes ahead, see
/// `shield_common::srcstate::MAX_AHEAD`: bursts up to 3.)
fn slow(burst: u64) -> Bucket {
    assert!((1..=3).contains(&burst));
    let interval_ns = 180_000_000_000;
    Bucket {
        interval_ns,
        tolerance_ns: (burst - 1) * interval_ns,
    }
}

fn tables(variant: u8) -> Tables {
    let mut t = Tables::default();
    t.udp_ports.insert(5060);
    t.tcp_ports.extend([5060, 5061]);
    t.allow = vec![net("198.51.100.1/32"), net("2001:db8:1::/48")];
    t.deny = vec![net("198.51.100.2/32")];
    // Forever, long expired, a CIDR, a v6 /64.
    t.bans = vec![
        (net("198.51.100.3/32"), 0),
        (net("198.51.100.4/32"), 1),
        (net("203.0.113.0/28"), 0),
        (net("2001:db8:2::/64"), 0),
    ];
    t.scanners = DEFAULT_SCANNERS
        .iter()
        .map(|s| ua_key(s).unwrap())
        .collect();
    let mut p = Policy {
        flags: F_ENFORCE | F_DROP_MALFORMED | F_SCAN_UA,
        ..Policy::default()
    };
    // Small bursts: a 1..24-frame case empties some buckets.
    p.packet = slow(3);
    p.syn = slow(1);
    p.method[0] = slow(1);
    p.method[1] = slow(2);
    p.method_slot[Method::Register as usize] = 1;
    p.method_slot[Method::Invite as usize] = 2;
    p.escalate_drops = 3;
    p.escalate_window_ns = 1_000_000_000_000_000;
    if variant == 1 {
        // Dry run, SIP-only bans, trunk-only, /56 keying, no malformed drops.
        p.flags = F_SCAN_UA | F_SCOPE_SIP;
        p.ipv6_prefix = 56;
    }
    if variant == 2 {
        p.flags = F_ENFORCE | F_TRUNK_ONLY | F_DROP_MALFORMED | F_SCAN_UA;
    }
    if variant == 3 {
        // SPEC §8: a small shared budget, verified sources (a host, a
        // long-expired host, a v6 /48 network, a v6 /64 source), and
        // replies leaving the host that verify more.
        p.unverified = slow(1);
        p.verify_ttl_ns = 3_600_000_000_000;
        p.verify_methods = 1 << Method::Register as u32 | 1 << Method::Invite as u32;
        // SPEC §12: challenges learned from the replies, attempts proven.
        t.auth_on = true;
        t.verified = vec![
            (net("198.51.100.5/32"), 0),
            (net("198.51.100.6/32"), 1),
            (net("2001:db8:3::/48"), 0),
            (net("2001:db8:4:0:1::/80"), 0),
        ];
    }
    if variant == 4 {
        // SPEC §13: two calls in progress per source; replies leaving the
        // host answer, fail and end them.
        t.calls.max_per_source = 2;
        t.calls.max_duration_ns = 3_600_000_000_000;
        // No per-source buckets, so that many INVITEs reach step 9b (a
        // slow bucket 64 deep would reach past `srcstate::MAX_AHEAD`).
        p.packet = Bucket::UNLIMITED;
        p.method = Default::default();
        p.method_slot = Default::default();
    }
    // Calls tracked in every variant (the limit only in variant 4).
    t.calls.flags = shield_common::calls::CALLS_ON;
    t.policy = p;
    destinations(&mut t);
    t
}

/// SPEC §11 in every variant: deny and allow_international entries in
/// several spellings, a strip prefix, two international prefixes, a slow
/// international bucket and escalation after two refusals; compiled as
/// shieldd compiles `[destinations]`.
fn destinations(t: &mut Tables) {
    use shield::dest::{Destinations, EntryKind};
    let mut d = Destinations {
        strip_prefixes: vec!["9".into()],
        international_prefixes: vec!["00".into(), "011".into()],
        escalate: 2,
        ..Destinations::default()
    };
    let probe = d.policy();
    for (text, kind) in [
        ("00899", EntryKind::Deny),
        ("+1 900", EntryKind::Deny),
        ("0900", EntryKind::Deny),
        ("+33", EntryKind::Allow),
        ("0044", EntryKind::Allow),
        ("+1", EntryKind::Allow),
        ("+8991", EntryKind::Allow),
    ] {
        d.entries.push(shield::config::parse_entry(text, kind, &probe).expect(text));
    }
    t.dest = d.policy();
    t.dest.intl_rate = slow(2);
    t.dest_rules = d.trie();
}

fn drain_events(k: &mut Kernel) -> Vec<OffenderEvent> {
    let ring = k.shield.maps.events.as_mut().expect("event ring");
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), std::mem::size_of::<OffenderEvent>());
        // SAFETY: the kernel wrote an OffenderEvent; read_unaligned copes
        // with the ring's 8-byte alignment.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<OffenderEvent>()) });
    }
    out
}

/// Runs `frames_wanted` frames in cases of up to 24 through both; returns
/// the number compared.
fn differential(variant: u8, frames_wanted: usize) -> usize {
    differential_on(Hook::Xdp, variant, frames_wanted)
}

/// [`differential`] with the decision on `hook` (the tc ingress program
/// runs the same modules on a socket buffer).
fn differential_on(hook: Hook, variant: u8, frames_wanted: usize) -> usize {
    let t = tables(variant);
    let mut kernel = match hook {
        Hook::Xdp => Kernel::load(),
        Hook::Tc => Kernel::load_tc(),
    };
    kernel.apply(&t);
    let enforce = t.policy.has(F_ENFORCE);
    // proptest wants an Fn: the state lives in RefCells.
    let k = RefCell::new(kernel);
    let model = RefCell::new(Model::new(t));
    let compared = Cell::new(0usize);
    let sip_tally: RefCell<HashMap<(Method, Verdict), u64>> = RefCell::new(HashMap::new());

    // Sequences average 12.5 frames (32.5 for calls, some not run); aim
    // about 12 % over the target, many standard deviations above it.
    let cases = frames_wanted / if variant == 4 { 28 } else { 11 } + 1;
    let mut runner = TestRunner::new(Config {
        cases: cases as u32,
        failure_persistence: None,
        ..Config::default()
    });
    // Calls (variant 4) need longer cases: a call is opened, answered,
    // then ended.
    let longest = if variant == 4 { 64 } else { 24 };
    let strategy = proptest::collection::vec(proptest::num::u64::ANY, 1..longest);
    let result = runner.run(&strategy, |seeds| {
        let (mut k, mut model) = (k.borrow_mut(), model.borrow_mut());
        k.shield.maps.clear_sources().expect("clear SOURCES");
        k.shield.maps.dest.clear_sources().expect("clear DEST_SOURCES");
        k.shield.maps.calls.clear().expect("clear CALLS");
        drain_events(&mut k);
        drain_call_events(&mut k);
        model.calls.clear();
        model.sources.clear();
        model.dest_sources.clear();
        model.events.clear();
        let t = model.tables.clone();
        k.reset_verified(&t);
        model.reset_verified();
        for seed in seeds {
            let mut rng = Rng::new(seed);
            if (variant == 3 || variant == 4) && rng.chance(35) {
                let f = if variant == 4 && rng.chance(60) {
                    call_reply_frame(&mut rng)
                } else if variant == 3 && rng.chance(40) {
                    auth_reply_frame(&mut rng)
                } else {
                    response_frame(&mut rng)
                };
                let mut want = model.egress_all(&f, shield::kernel::monotonic_ns());
                want.sort_by_key(|r| (r.method as usize, r.class));
                // A frame cut inside its IP header cannot be run as an
                // skb (and is never sent): nothing to compare.
                let Some(got) = k.run_egress_all(&f) else { continue };
                compared.set(compared.get() + 1);
                if got != (TC_ACT_UNSPEC, want.clone()) {
                    return Err(TestCaseError::fail(format!(
                        "seed {seed:#x} (egress): kernel {got:?}, model {want:?}\nframe {f:02x?}"
                    )));
                }
                continue;
            }
            let f = if variant == 4 && rng.chance(50) {
                call_request_frame(&mut rng)
            } else if variant == 3 && rng.chance(30) {
                // Digest exchanges (SPEC §12), over UDP and plain TCP.
                auth_request_frame(&mut rng)
            } else {
                frame(&mut rng)
            };
            let now = shield::kernel::monotonic_ns();
            let want = model.decide(&f, now);
            // On tc, a frame cut inside its IP header is no socket buffer
            // (see `Kernel::try_run`); the model changes no state for it.
            let Some(got) = k.try_run(&f) else { continue };
            compared.set(compared.get() + 1);
            let verdict = Verdict::of(want.reason, enforce);
            let action = if verdict == Verdict::Drop {
                XDP_DROP
            } else {
                XDP_PASS
            };
            if (got.reason, got.verdict, got.action) != (want.reason, verdict, action) {
                return Err(TestCaseError::fail(format!(
                    "seed {seed:#x}: kernel {got:?}, model {want:?}\nframe {f:02x?}"
                )));
            }
            if let Some(m) = want.method {
                *sip_tally.borrow_mut().entry((m, verdict)).or_default() += 1;
            }
        }
        let got = drain_events(&mut k);
        let want: Vec<_> = model
            .events
            .iter()
            .map(|e| (e.addr, e.family, e.prefix_len, e.reason))
            .collect();
        let got: Vec<_> = got
            .iter()
            .map(|e| (e.addr, e.family, e.prefix_len, e.reason))
            .collect();
        if got != want {
            return Err(TestCaseError::fail(format!(
                "offender reports: kernel {got:?}, model {want:?}"
            )));
        }
        compare_calls(&mut k, &model)?;
        let got: Vec<_> = auth_reports(&mut k);
        let want: Vec<_> = model.auth.events.drain(..).collect();
        if got != want {
            return Err(TestCaseError::fail(format!(
                "auth reports: kernel {got:?}, model {want:?}"
            )));
        }
        let (got, want) = (kernel_verified(&k), model_verified(&model));
        if got != want {
            return Err(TestCaseError::fail(format!(
                "verified sources: kernel {got:?}, model {want:?}"
            )));
        }
        Ok(())
    });
    let compared = compared.get();
    if let Err(e) = result {
        panic!("kernel and model disagree (after {compared} frames): {e}");
    }
    let (k, sip_tally) = (k.into_inner(), sip_tally.into_inner());
    // Refusals by rule, as the kernel counted them (every interface).
    let mut got: HashMap<u32, u64> = HashMap::new();
    for ((_, rule), n) in k.shield.maps.dest.refusals().expect("DEST_REFUSED") {
        *got.entry(rule).or_default() += n;
    }
    assert_eq!(got, model.borrow().dest_refused, "refusals by rule");
    // Digest attempts by method and result (SPEC §12).
    let counts = k.shield.maps.auth.counts(0).expect("AUTH_STATS");
    for (m, row) in counts.iter().enumerate() {
        for (r, n) in row.iter().enumerate() {
            let want = model.borrow().auth.stats.get(&(m as u32, r as u32)).copied().unwrap_or(0);
            assert_eq!(*n, want, "AUTH_STATS method {m} result {r}");
        }
    }
    if t_auth_on(variant) {
        let total: u64 = counts.iter().flatten().sum();
        assert!(total > 0, "the generator makes digest attempts");
    }
    // The per-method SIP counters agree too (only successful runs got here,
    // so every frame run was tallied).
    for m in Method::ALL {
        for v in Verdict::ALL {
            let want = sip_tally.get(&(m, v)).copied().unwrap_or(0);
            assert_eq!(k.sip_count(m, v), want, "SIP_STATS {m:?}/{v:?}");
        }
    }
    compared
}

fn drain_call_events(k: &mut Kernel) -> Vec<CallEvent> {
    let ring = k.shield.maps.calls.events.as_mut().expect("call event ring");
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(shield::kernel::decode_call_event(&item).expect("a whole CallEvent"));
    }
    out
}

fn t_auth_on(variant: u8) -> bool {
    tables(variant).auth_on
}

/// The settled attempts in `AUTH_EVENTS`, as the model records them.
fn auth_reports(k: &mut Kernel) -> Vec<(std::net::IpAddr, bool, Vec<u8>)> {
    let ring = k.shield.maps.auth.events.as_mut().expect("AUTH_EVENTS");
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        let o = shield::kernel::AuthOutcome::decode(&item).expect("a record");
        out.push((o.addr, o.success, o.username));
    }
    out
}

/// What a call record says, times aside (the kernel's clock is not the
/// model's) and the interface slot (the test run's).
fn call_view(id: u64, c: &Call) -> (u64, SrcKey, u8, u8, u8, u32, u16, u8, u8, bool) {
    (id, c.src, c.state, c.flags, c.class, c.country, c.tail, c.digits, c.family, c.answer_ns != 0)
}

fn event_view(e: &CallEvent) -> (u64, SrcKey, u8, u8, u8, u32, u16, u8, bool) {
    (e.call_id, e.src, e.outcome, e.status, e.class, e.country, e.tail, e.family, e.answer_ns != 0)
}

/// SPEC §13: the call table, the callers' counts and the ended calls
/// reported agree.
fn compare_calls(k: &mut Kernel, model: &Model) -> Result<(), TestCaseError> {
    let mut got: Vec<_> = k.shield.maps.calls.calls().expect("CALLS").iter().map(|(id, c)| call_view(*id, c)).collect();
    let mut want: Vec<_> = model.calls.calls.iter().map(|(id, c)| call_view(*id, c)).collect();
    got.sort();
    want.sort();
    if got != want {
        return Err(TestCaseError::fail(format!("calls: kernel {got:?}, model {want:?}")));
    }
    let mut got: Vec<_> = k.shield.maps.calls.counts().expect("CALL_COUNTS").into_iter().filter(|(_, n)| *n != 0).collect();
    let mut want: Vec<_> = model.calls.counts.iter().filter(|(_, n)| **n != 0).map(|(k, n)| (*k, *n)).collect();
    got.sort();
    want.sort();
    if got != want {
        return Err(TestCaseError::fail(format!("call counts: kernel {got:?}, model {want:?}")));
    }
    let got: Vec<_> = drain_call_events(k).iter().map(event_view).collect();
    let want: Vec<_> = model.calls.events.iter().map(event_view).collect();
    if got != want {
        return Err(TestCaseError::fail(format!("ended calls: kernel {got:?}, model {want:?}")));
    }
    Ok(())
}

/// The verified sources and networks in the kernel's maps.
fn kernel_verified(k: &Kernel) -> BTreeSet<IpNet> {
    let all = k.shield.maps.verified(0).expect("read VERIFIED");
    all.into_iter().map(|e| e.net).collect()
}

/// The same, as the model holds them.
fn model_verified(m: &Model) -> BTreeSet<IpNet> {
    let prefix = m.tables.policy.ipv6_prefix as u8;
    let mut out: BTreeSet<IpNet> = m
        .verified
        .keys()
        .map(|k| match k {
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d] => {
                IpNet::from(std::net::IpAddr::from([*a, *b, *c, *d]))
            }
            _ => IpNet::new(std::net::IpAddr::from(*k), prefix).unwrap().trunc(),
        })
        .collect();
    let host = |n: &IpNet| match n {
        IpNet::V4(n) => n.prefix_len() == 32,
        IpNet::V6(n) => n.prefix_len() >= prefix,
    };
    out.extend(m.tables.verified.iter().map(|(n, _)| *n).filter(|n| !host(n)));
    out
}

#[test]
fn kernel_and_model_agree_on_100k_frames() {
    let n = differential(0, 100_000);
    println!("differential (enforce): {n} frames compared, 0 mismatches");
    assert!(n >= 100_000, "only {n} frames compared");
}

#[test]
fn kernel_and_model_agree_in_dry_run_with_sip_scope() {
    let n = differential(1, 20_000);
    println!("differential (dry run, scope = sip, /56): {n} frames compared, 0 mismatches");
    assert!(n >= 20_000);
}

/// SPEC §8 and step 7b: the shared unverified budget, verified sources
/// and networks, escalation sparing verified sources, and the egress
/// classifier (replies counted by method and class; 2xx verifying their
/// destination), interleaved.
#[test]
fn kernel_and_model_agree_on_verification_and_the_unverified_budget() {
    let n = differential(3, 100_000);
    println!("differential ([verify], budget, egress): {n} frames compared, 0 mismatches");
    assert!(n >= 100_000, "only {n} frames compared");
}

/// SPEC §13: calls opened by initial INVITEs (retransmissions and
/// re-INVITEs not counted twice), limited to two in progress per source,
/// marked by CANCELs, answered, failed and ended by the replies leaving
/// the host; the table, the counts and the ended-call reports agree.
#[test]
fn kernel_and_model_agree_on_calls() {
    let n = differential(4, 50_000);
    println!("differential (calls, limit 2): {n} frames compared, 0 mismatches");
    assert!(n >= 50_000, "only {n} frames compared");
}

#[test]
fn kernel_and_model_agree_with_trunk_only() {
    let n = differential(2, 20_000);
    println!("differential (trunk_only): {n} frames compared, 0 mismatches");
    assert!(n >= 20_000);
}

/// The same decision as a tc ingress program on a socket buffer (issue 22
/// item 4): every variant above, against the same model.
#[test]
fn tc_ingress_and_model_agree_on_100k_frames() {
    let n = differential_on(Hook::Tc, 0, 100_000);
    println!("differential (tc ingress, enforce): {n} frames compared, 0 mismatches");
    assert!(n >= 95_000, "only {n} frames compared");
}

#[test]
fn tc_ingress_and_model_agree_in_dry_run_trunk_only_verification_and_calls() {
    for (variant, wanted, what) in [
        (1, 20_000, "dry run, scope = sip, /56"),
        (2, 20_000, "trunk_only"),
        (3, 50_000, "[verify], budget, egress"),
        (4, 30_000, "calls, limit 2"),
    ] {
        let n = differential_on(Hook::Tc, variant, wanted);
        println!("differential (tc ingress, {what}): {n} frames compared, 0 mismatches");
        assert!(n >= wanted * 95 / 100, "only {n} frames compared");
    }
}

/// The generator itself reaches every reason, or the comparison above
/// would prove little.
#[test]
fn generated_frames_cover_every_reason() {
    let mut model = Model::new(tables(0));
    let mut seen = std::collections::HashMap::new();
    let mut out_of_reach = 0;
    for seed in 0..20_000u64 {
        let f = frame(&mut Rng::new(seed));
        if transport_out_of_reach(&f) {
            out_of_reach += 1;
        }
        *seen.entry(model.decide(&f, 1).reason).or_insert(0u32) += 1;
        if seed % 24 == 0 {
            model.sources.clear();
        }
    }
    for r in shield_common::Reason::ALL {
        if matches!(
            r,
            shield_common::Reason::NotAllowed | shield_common::Reason::Unverified
        ) {
            continue; // only with trunk_only (variant 2) or a budget (variant 3)
        }
        if r == shield_common::Reason::Calls {
            continue; // only with a call limit (variant 4, checked below)
        }
        assert!(
            seen.get(&r).copied().unwrap_or(0) >= 100,
            "generator rarely produces {r:?}: {seen:?}"
        );
    }
    // IPv6 chains longer than walked or reaching past MAX_L4_OFFSET.
    assert!(
        out_of_reach >= 100,
        "generator rarely puts the transport out of reach: {out_of_reach}"
    );
    println!("reasons over 20,000 generated frames: {seen:?}");
    println!("transport out of reach: {out_of_reach} of them");
}

/// Variant 3's frames reach `unverified`, and the egress frames every
/// status class, verifying and non-verifying methods.
#[test]
fn generated_frames_cover_the_budget_and_every_reply() {
    let mut model = Model::new(tables(3));
    let mut unverified = 0;
    let mut replies = std::collections::HashMap::new();
    for seed in 0..20_000u64 {
        if seed % 24 == 0 {
            model.sources.clear();
            model.reset_verified();
        }
        let mut rng = Rng::new(seed);
        if rng.chance(35) {
            if let Some(r) = model.egress(&response_frame(&mut rng), 1) {
                *replies.entry((r.method, r.class)).or_insert(0u32) += 1;
            }
            continue;
        }
        if model.decide(&frame(&mut rng), 1).reason == shield_common::Reason::Unverified {
            unverified += 1;
        }
    }
    assert!(unverified >= 50, "only {unverified} unverified drops");
    for class in 1..=6 {
        assert!(replies.keys().any(|(_, c)| *c == class), "no {class}xx: {replies:?}");
    }
    for m in [Method::Register, Method::Invite, Method::Options, Method::Other] {
        assert!(replies.get(&(m, 2)).copied().unwrap_or(0) >= 10, "few 2xx {m:?}: {replies:?}");
    }
    println!("unverified drops: {unverified}; replies: {replies:?}");
}

/// Variant 4's frames open calls, reach the limit (`calls`), and the
/// replies answer, fail, cancel and end them: the comparison above
/// covers the whole state machine.
#[test]
fn generated_frames_cover_every_call_outcome() {
    use shield_common::calls::CallOutcome;
    let mut model = Model::new(tables(4));
    let mut refused = 0;
    let mut opened = 0;
    let mut outcomes = std::collections::HashMap::new();
    for seed in 0..20_000u64 {
        if seed % 64 == 0 {
            model.sources.clear();
            model.calls.clear();
        }
        let mut rng = Rng::new(seed);
        let before = model.calls.calls.len();
        if rng.chance(35) {
            let f = if rng.chance(60) { call_reply_frame(&mut rng) } else { response_frame(&mut rng) };
            model.egress(&f, 1);
        } else if model
            .decide(
                &if rng.chance(50) { call_request_frame(&mut rng) } else { frame(&mut rng) },
                1,
            )
            .reason
            == shield_common::Reason::Calls
        {
            refused += 1;
        }
        opened += model.calls.calls.len().saturating_sub(before);
        for e in model.calls.events.drain(..) {
            *outcomes.entry(e.outcome().expect("known outcome")).or_insert(0u32) += 1;
        }
    }
    assert!(opened >= 300, "only {opened} calls opened");
    // (15: TCP segments holding several replies end more calls since
    // issue 21's segments were read, so fewer sources sit at the limit.)
    assert!(refused >= 15, "only {refused} INVITEs refused for the limit");
    for (o, least) in [(CallOutcome::Answered, 5), (CallOutcome::Failed, 20), (CallOutcome::Cancelled, 20)] {
        assert!(outcomes.get(&o).copied().unwrap_or(0) >= least, "few {o:?}: {outcomes:?}");
    }
    println!("calls opened {opened}, refused {refused}, ended {outcomes:?}");
}

/// The replies leaving the host over TCP often ride several to a
/// segment (issue 21's gap): the comparison above covers segments whose
/// later replies are read, and segments where a missing, garbled,
/// repeated or overlong Content-Length stops the reading.
#[test]
fn generated_segments_hold_several_replies() {
    let mut model = Model::new(tables(4));
    let (mut several, mut three, mut stopped) = (0, 0, 0);
    for seed in 0..20_000u64 {
        let mut rng = Rng::new(seed);
        let f = if rng.chance(60) { call_reply_frame(&mut rng) } else { response_frame(&mut rng) };
        if transport_protocol(&f) != Some(6) {
            continue;
        }
        let n = model.egress_all(&f, 1).len();
        several += (n >= 2) as u32;
        three += (n >= 3) as u32;
        // More than one status line in the frame, fewer replies read.
        let lines = f.windows(8).filter(|w| w == b"SIP/2.0 ").count();
        stopped += (n >= 1 && lines > n + 1) as u32;
        if seed % 64 == 0 {
            model.calls.clear();
        }
    }
    assert!(several >= 300, "only {several} segments with several replies read");
    assert!(three >= 50, "only {three} segments with three or more");
    assert!(stopped >= 100, "only {stopped} segments whose reading stopped early");
    println!("TCP segments: {several} with several replies read, {three} with three or more, {stopped} stopped early");
}

/// Variant 3's digest exchanges (SPEC §12) over plain TCP: credentials
/// proven by a challenge the replies carried, and not, and proven
/// attempts settled by the final replies: the comparison above covers
/// the credentials read from TCP segments too.
#[test]
fn generated_frames_cover_credentials_over_tcp() {
    use shield_common::auth::RESULT_UNPROVEN;
    let mut model = Model::new(tables(3));
    let unproven = |m: &Model| {
        m.auth.stats.iter().filter(|((_, r), _)| *r == RESULT_UNPROVEN).map(|(_, n)| *n).sum::<u64>()
    };
    let (mut tcp_unproven, mut tcp_proven, mut settled) = (0, 0, 0);
    for seed in 0..20_000u64 {
        if seed % 24 == 0 {
            model.sources.clear();
            model.reset_verified();
        }
        let mut rng = Rng::new(seed);
        if rng.chance(35) {
            let f = if rng.chance(40) { auth_reply_frame(&mut rng) } else { response_frame(&mut rng) };
            model.egress(&f, 1);
            settled += model.auth.events.drain(..).count();
            continue;
        }
        let f = if rng.chance(30) { auth_request_frame(&mut rng) } else { frame(&mut rng) };
        let (before, attempts) = (unproven(&model), model.auth.attempts.clone());
        model.decide(&f, 1);
        if transport_protocol(&f) == Some(6) {
            tcp_unproven += unproven(&model) - before;
            tcp_proven += (model.auth.attempts != attempts) as u32;
        }
    }
    assert!(tcp_unproven >= 100, "only {tcp_unproven} unproven attempts over TCP");
    assert!(tcp_proven >= 20, "only {tcp_proven} proven attempts over TCP");
    assert!(settled >= 4, "only {settled} attempts settled");
    println!("over TCP: {tcp_proven} proven attempts, {tcp_unproven} unproven; {settled} settled (UDP and TCP)");
}
