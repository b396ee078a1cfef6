//! Nested and overlapping CIDRs in the allow, deny and ban tries, against
//! the model. Random sequences of add, delete, reload, ban (forever, for a
//! while, already expired), unban and sweep over a small pool of nested v4
//! and v6 prefixes go through the same `ShieldMaps` calls the daemon makes;
//! after every step, probe addresses inside, between and outside the
//! prefixes run through the real program (`BPF_PROG_TEST_RUN`) and must
//! get the model's verdict.
//!
//! The defect this pins down: an LPM trie's lookup is a longest-prefix
//! match, so "is this exact prefix there?" asked with `get()` answered yes
//! for a /26 inside a listed /25, the occupancy count went wrong, and the
//! flag that makes the kernel consult the trie was cleared while a prefix
//! was still in it (and the count underflowed: a panic).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use proptest::prelude::*;
use shield::kernel::{monotonic_ns, List};
use shield_common::Policy;
use shield_tests::frames::Frame;
use shield_tests::kernel::Kernel;
use shield_tests::model::{Model, Tables};

const HOUR_NS: u64 = 3_600_000_000_000;

#[derive(Clone, Copy, Debug)]
enum Ttl {
    Forever,
    Hour,
    /// Already expired: what the kernel sees between expiry and the
    /// daemon's sweep.
    Expired,
}

#[derive(Clone, Debug)]
enum Op {
    Add(List, IpNet),
    Del(List, IpNet),
    /// A reload: the list becomes exactly these.
    Reload(List, Vec<IpNet>),
    Ban(IpNet, Ttl),
    Unban(IpNet),
    /// The daemon's sweeper: lift every ban whose time is up.
    Sweep,
}

/// Prefixes that nest and overlap a lot: inside 198.51.100.0/24 and
/// 2001:db8:0:100::/56, at lengths that contain one another.
fn net() -> impl Strategy<Value = IpNet> {
    let v4 = (
        prop::sample::select(vec![22u8, 24, 25, 26, 27, 28, 30, 31, 32]),
        any::<u8>(),
    )
        .prop_map(|(len, host)| {
            IpNet::new(IpAddr::from([198, 51, 100, host]), len)
                .expect("valid")
                .trunc()
        });
    let v6 = (
        prop::sample::select(vec![48u8, 56, 57, 60, 64, 96, 127, 128]),
        any::<u8>(),
        any::<u16>(),
    )
        .prop_map(|(len, sub, host)| {
            let a: IpAddr = format!("2001:db8:0:1{sub:02x}::{host:x}").parse().expect("v6");
            IpNet::new(a, len).expect("valid").trunc()
        });
    prop_oneof![3 => v4, 1 => v6]
}

fn list() -> impl Strategy<Value = List> {
    prop_oneof![Just(List::Allow), Just(List::Deny)]
}

fn op() -> impl Strategy<Value = Op> {
    let ttl = prop_oneof![Just(Ttl::Forever), Just(Ttl::Hour), Just(Ttl::Expired)];
    prop_oneof![
        4 => (list(), net()).prop_map(|(l, n)| Op::Add(l, n)),
        3 => (list(), net()).prop_map(|(l, n)| Op::Del(l, n)),
        1 => (list(), prop::collection::vec(net(), 0..4)).prop_map(|(l, v)| Op::Reload(l, v)),
        5 => (net(), ttl).prop_map(|(n, t)| Op::Ban(n, t)),
        3 => net().prop_map(Op::Unban),
        1 => Just(Op::Sweep),
    ]
}

/// What the model holds: the same lists and bans, as plain sets.
#[derive(Default)]
struct Want {
    allow: BTreeSet<IpNet>,
    deny: BTreeSet<IpNet>,
    bans: std::collections::BTreeMap<IpNet, u64>,
}

impl Want {
    fn list(&mut self, l: List) -> &mut BTreeSet<IpNet> {
        match l {
            List::Allow => &mut self.allow,
            List::Deny => &mut self.deny,
        }
    }

    fn tables(&self, policy: Policy) -> Tables {
        Tables {
            policy,
            allow: self.allow.iter().copied().collect(),
            deny: self.deny.iter().copied().collect(),
            bans: self.bans.iter().map(|(n, e)| (*n, *e)).collect(),
            ..Tables::default()
        }
    }
}

/// Addresses at the edges and in the middle of every pool prefix, and
/// outside them.
fn probes() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = [0u8, 1, 10, 31, 63, 64, 100, 127, 128, 129, 191, 192, 200, 223, 224, 254, 255]
        .iter()
        .map(|h| IpAddr::from([198, 51, 100, *h]))
        .collect();
    v.push(IpAddr::from([198, 51, 101, 7]));
    v.push(IpAddr::from([198, 51, 99, 250]));
    for a in [
        "2001:db8:0:100::",
        "2001:db8:0:100::1",
        "2001:db8:0:17f::ffff",
        "2001:db8:0:180::1",
        "2001:db8:0:1ff::1",
        "2001:db8:0:100:0:0:1:0",
        "2001:db8:0:200::1",
    ] {
        v.push(a.parse().expect("v6"));
    }
    v
}

fn frame(src: IpAddr) -> Vec<u8> {
    // To a port that is not protected: only steps 2-4 can decide.
    match src {
        IpAddr::V4(a) => Frame::udp4(a.octets(), 9, b"probe").build(),
        IpAddr::V6(a) => Frame::udp6(a.octets(), 9, b"probe").build(),
    }
}

fn apply(k: &mut Kernel, want: &mut Want, op: &Op, now: u64) {
    let m = &mut k.shield.maps;
    match op {
        Op::Add(l, n) => {
            m.list_add(*l, *n).expect("list_add");
            want.list(*l).insert(*n);
        }
        Op::Del(l, n) => {
            m.list_del(*l, *n).expect("list_del");
            want.list(*l).remove(n);
        }
        Op::Reload(l, nets) => {
            m.set_list(*l, nets).expect("set_list");
            *want.list(*l) = nets.iter().copied().collect();
        }
        Op::Ban(n, ttl) => {
            let exp = match ttl {
                Ttl::Forever => 0,
                Ttl::Hour => now + HOUR_NS,
                // Well behind the kernel's coarse clock.
                Ttl::Expired => now - 1_000_000_000,
            };
            m.ban(*n, exp).expect("ban");
            want.bans.insert(*n, exp);
        }
        Op::Unban(n) => {
            m.unban(*n).expect("unban");
            want.bans.remove(n);
        }
        Op::Sweep => {
            let expired: Vec<IpNet> = m
                .bans_dump()
                .expect("dump")
                .into_iter()
                .filter(|(_, e)| *e != 0 && *e <= now)
                .map(|(n, _)| n)
                .collect();
            for n in expired {
                m.unban(n).expect("sweep unban");
                want.bans.remove(&n);
            }
        }
    }
}

fn check(k: &mut Kernel, want: &Want, policy: Policy, step: usize, op: &Op) {
    let now = monotonic_ns();
    let mut model = Model::new(want.tables(policy));
    for a in probes() {
        let f = frame(a);
        let expect = model.decide(&f, now).reason;
        let got = k.run(&f).reason;
        assert_eq!(got, expect, "step {step} ({op:?}): {a} is {got:?} in the kernel, {expect:?} in the model");
    }
    // The kernel's ban maps hold exactly the bans asked for.
    let mut dumped: Vec<(IpNet, u64)> = k.shield.maps.bans_dump().expect("dump");
    dumped.sort();
    let asked: Vec<(IpNet, u64)> = want.bans.iter().map(|(n, e)| (*n, *e)).collect();
    assert_eq!(dumped, asked, "step {step} ({op:?}): ban maps");
    for (l, set) in [(List::Allow, &want.allow), (List::Deny, &want.deny)] {
        let have: BTreeSet<IpNet> = k.shield.maps.list(l).expect("list").into_iter().collect();
        assert_eq!(&have, set, "step {step} ({op:?}): {l:?} list");
    }
}

fn run_sequence(ops: &[Op]) {
    let mut k = Kernel::load();
    let policy = Policy::default();
    k.shield.maps.set_policy(&policy).expect("policy");
    let mut want = Want::default();
    for (step, op) in ops.iter().enumerate() {
        apply(&mut k, &mut want, op, monotonic_ns());
        check(&mut k, &want, policy, step, op);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn nested_lists_and_bans_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run_sequence(&ops);
    }
}

fn v4(s: &str) -> IpNet {
    s.parse().expect("net")
}

/// The sequences the adversarial test found, spelled out.
#[test]
fn unbanning_the_outer_net_keeps_the_inner_one_enforced() {
    run_sequence(&[
        Op::Ban(v4("198.51.100.128/25"), Ttl::Forever),
        Op::Ban(v4("198.51.100.192/26"), Ttl::Forever),
        Op::Unban(v4("198.51.100.128/25")),
        Op::Unban(v4("198.51.100.192/26")),
    ]);
}

#[test]
fn an_inner_ban_that_expires_first_does_not_end_the_outer_one() {
    run_sequence(&[
        Op::Ban(v4("198.51.100.128/25"), Ttl::Hour),
        Op::Ban(v4("198.51.100.192/26"), Ttl::Expired),
        Op::Sweep,
        Op::Ban(v4("198.51.100.192/26"), Ttl::Hour),
        Op::Ban(v4("198.51.100.128/25"), Ttl::Expired),
        Op::Sweep,
    ]);
}

#[test]
fn nested_deny_entries_survive_deleting_the_outer_one() {
    run_sequence(&[
        Op::Add(List::Deny, v4("198.51.100.128/25")),
        Op::Add(List::Deny, v4("198.51.100.200/32")),
        Op::Del(List::Deny, v4("198.51.100.128/25")),
    ]);
}

#[test]
fn a_shrunk_allowlist_still_protects_the_trunk() {
    run_sequence(&[
        Op::Reload(List::Allow, vec![v4("198.51.100.0/24"), v4("198.51.100.10/32")]),
        Op::Reload(List::Allow, vec![v4("198.51.100.10/32")]),
        Op::Ban(v4("198.51.100.0/24"), Ttl::Forever),
    ]);
}
