//! Calls seen on the wire (SPEC §13): the kernel's ends of the call table
//! whose state machine is `shield_common::calls` (run unchanged by the
//! reference model).
//!
//! - The XDP program opens a call for an initial INVITE that passed step
//!   9b's destination policy (after `dest::check`, which left the INVITE's
//!   addresses, payload and dialled number in `SCRATCH`), or that starts a
//!   TCP segment (`dest::tcp_invite`, which leaves the same), refusing it
//!   with reason `calls` when its source is at `max_concurrent_per_source`;
//!   a CANCEL from the caller (UDP, or starting a TCP segment of an
//!   established connection: `tcp`) marks the call.
//! - The egress classifier hands every final response to `reply`.
//! - `shield_calls_expire`, a program of its own that shieldd runs with
//!   `BPF_PROG_TEST_RUN` on a Call-ID hash, forgets a call past its time.
//!
//! Counting (`CALL_COUNTS`): an atomic add reserves a slot before the call
//! is inserted (`BPF_NOEXIST`: a retransmission racing on another CPU
//! loses and gives its slot back); the one whose delete of the call
//! succeeds gives the slot back. So a call counts exactly once, whichever
//! CPU and whichever path sees its end.

use core::intrinsics::{atomic_cxchg, AtomicOrdering::Relaxed};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, RingBuf},
    programs::XdpContext,
    EbpfContext,
};
use shield_common::{
    calls::{
        self, Call, CallConfig, CallEvent, CallOutcome, Step, CALL_ANSWERED, CALL_CANCELLING,
        CALL_COUNTED,
    },
    default_size,
    dest::{self, RULE_CALLS},
    mask_v6, src_key_v4, Method, Policy, Reason, SrcKey, FAMILY_V4, REFUSAL_REPLY,
};

use crate::hook::{Ctx, RawCtx};
use crate::maps::{EVENTS_LOST, IFACE_SLOT, IFACE_SLOT_MASK, POLICY, SCRATCH};
use crate::pkt::{src_key, Pkt, Src, MAX_PAYLOAD_OFFSET};
use crate::scratch::Scratch;
use crate::source::now_ns;
use crate::walk::{W_CID, W_TO};

#[map]
// Not preallocated (10 MiB idle at 100,000 calls): an entry is allocated
// when a call starts, which only an INVITE that passed every step does;
// a failed insert (full) leaves the call untracked, as before.
static CALLS: HashMap<u64, Call> =
    HashMap::with_max_entries(default_size::CALLS, BPF_F_NO_PREALLOC);
#[map]
static CALL_COUNTS: LruHashMap<SrcKey, u64> =
    LruHashMap::with_max_entries(default_size::CALL_COUNTS, 0);
#[map]
static CALL_CFG: Array<CallConfig> = Array::with_max_entries(1, 0);
#[map]
static CALL_EVENTS: RingBuf = RingBuf::with_byte_size(default_size::CALL_EVENTS_BYTES, 0);

/// The maps declared here, for the check against `names::ALL` in main.rs.
pub(crate) const MAP_NAMES: &[&str] = &["CALLS", "CALL_COUNTS", "CALL_CFG", "CALL_EVENTS"];

/// `shield_call_open`: the source is at its limit.
const REFUSED: u64 = 1;

/// After `dest::check` (or `dest::tcp_invite`) let an INVITE through:
/// open its call if it is an initial one (`limited`: the source is held to
/// the per-source limit, i.e. not allowlisted). `Err(Reason::Calls)` when
/// refused; the 403 and its report go the destination refusals' way (rule
/// `RULE_CALLS`, never escalated: a busy caller is not an attacker), but
/// over `tcp` there is no 403, only the report.
#[inline(always)]
pub(crate) fn invite(ctx: &Ctx, limited: bool, tcp: bool) -> Result<(), Reason> {
    let c: *mut RawCtx = ctx.as_ptr().cast();
    let at = shield_call_at();
    if at == 0 {
        return Ok(());
    }
    let (pay, plen) = (at >> 16, at & 0xffff);
    // The Call-ID first (found by step 8's walk already, or now): a call
    // already tracked (a retransmission, a re-INVITE) needs no To line.
    crate::walk::walk_if_needed(c, pay, plen, W_CID);
    if shield_call_new() == 0 {
        return Ok(());
    }
    // A new Call-ID: an INVITE in a dialog (To tagged) places no call.
    if crate::walk::walk_if_needed(c, pay, plen, W_TO) != 0 {
        return Ok(());
    }
    if shield_call_record(c) == 0 || shield_call_open(limited as u64) != REFUSED {
        return Ok(());
    }
    let verdict = (RULE_CALLS as u64) << 8 | Reason::Calls as u64;
    let mut flags = crate::dest::shield_refusal(c, verdict, 1);
    if tcp {
        flags &= !(REFUSAL_REPLY as u64);
    }
    if flags != 0 {
        crate::dest::shield_report(c, at, verdict, flags);
    }
    Err(Reason::Calls)
}

/// The INVITE `dest::check` looked at: its payload's `offset << 16 |
/// length`, or 0 when there is none or calls are not tracked.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_call_at() -> u64 {
    let (Some(scratch), Some(cfg)) = (SCRATCH.get_ptr_mut(0), CALL_CFG.get(0)) else {
        return 0;
    };
    if !cfg.on() {
        return 0;
    }
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    unsafe { (*scratch).call_at }
}

/// Whether calls are tracked (`CALL_CFG` set by shieldd).
#[inline(always)]
pub(crate) fn on() -> bool {
    CALL_CFG.get(0).is_some_and(|cfg| cfg.on())
}

/// 1 when the INVITE's Call-ID (in `SCRATCH.ids`) is there and not
/// tracked yet, else 0 (none, or a retransmission).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_call_new() -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let Some(id) = (unsafe { (*scratch).ids.call_id }) else {
        return 0;
    };
    // SAFETY: a copy of a map value of plain integers; another CPU writing it meanwhile only makes the copy older.
    unsafe { CALLS.get(&id) }.is_none() as u64
}

/// The record of the call the INVITE in `SCRATCH` would open (from the
/// source in `SCRATCH.invite`, to `SCRATCH.dialled`; its Call-ID new, see
/// `shield_call_new`) into `SCRATCH.call`: 1, or 0 without a Call-ID.
/// Built in scratch, and apart from `shield_call_open`: in one frame it
/// pushed the XDP program's call chain past 512 bytes.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_call_record(ctx: *mut RawCtx) -> u64 {
    let (Some(scratch), Some(p)) = (SCRATCH.get_ptr_mut(0), POLICY.get(0)) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let s = unsafe { &mut *scratch };
    if s.ids.call_id.is_none() {
        return 0;
    }
    let inv = &s.invite;
    s.call.src = if inv.family == FAMILY_V4 {
        src_key_v4([inv.src[0], inv.src[1], inv.src[2], inv.src[3]])
    } else {
        mask_v6(&inv.src, p.ipv6_prefix)
    };
    // Field by field: a whole record built first would sit on this frame.
    let (tail, digits) = calls::last4(&s.dialled);
    let c = &mut s.call;
    c.start_ns = now_ns();
    c.answer_ns = 0;
    c.country = dest::country(&s.dialled);
    c.tail = tail;
    c.digits = digits;
    c.class = s.dialled.class as u8;
    c.state = calls::CALL_TRYING;
    c.flags = 0;
    c.iface = iface_slot(ctx);
    c.family = inv.family;
    c._pad = 0;
    1
}

/// Opens the call `shield_call_record` built: `REFUSED` when its source
/// has `max_per_source` calls in progress and `limited`, else 0 (opened,
/// or lost to another CPU's retransmission, or the table is full).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_call_open(limited: u64) -> u64 {
    let (Some(scratch), Some(cfg)) = (SCRATCH.get_ptr_mut(0), CALL_CFG.get(0)) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let s = unsafe { &mut *scratch };
    let Some(id) = s.ids.call_id else {
        return 0;
    };
    if !cfg.counts() {
        // No limit: no count to hold (flags 0: nothing to give back).
        let _ = CALLS.insert(&id, &s.call, BPF_NOEXIST as u64);
        return 0;
    }
    let limit = if limited != 0 { cfg.max_per_source } else { 0 };
    match take_slot(&s.call.src, limit) {
        Some(true) => {}
        Some(false) => return REFUSED,
        None => return 0, // no count to hold: not tracked (never refused for it)
    }
    s.call.flags = CALL_COUNTED;
    if CALLS.insert(&id, &s.call, BPF_NOEXIST as u64).is_err() {
        release(&s.call.src);
    }
    0
}

/// A CANCEL from `src` that passed (its Call-ID from the header walk, in
/// `SCRATCH.ids`): marks the call cancelling if it is the caller's and not
/// answered.
#[inline(always)]
pub(crate) fn cancel(ctx: &Ctx, p: &Policy, src: &Src, (pay, plen): (usize, usize)) {
    crate::walk::shield_walk(ctx.as_ptr().cast(), pay as u64, plen as u64, W_CID);
    let key = src_key(src, p);
    let (hi, lo) = split(&key);
    shield_call_cancel(hi, lo);
}

/// An allowlisted source's UDP datagram that `dest::shield_invite_at`
/// read (`meta`, `l4` as it took them) and found no INVITE: if it is a
/// CANCEL, it marks the caller's call as any CANCEL does (a trunk's
/// cancelled calls end `cancelled`). (Over TCP, `tcp::request` reads every
/// request of an allowlisted source's segment.) The walk from the XDP
/// program's frame, as every walk.
#[inline(always)]
pub(crate) fn allowlisted_cancel(ctx: &Ctx, scratch: *mut Scratch, meta: u64, l4: usize) {
    // Most of a trunk's packets are no CANCEL: one load here, not a call.
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    if unsafe { (*scratch).invite.method } != Method::Cancel as u8 {
        return;
    }
    let c: *mut RawCtx = ctx.as_ptr().cast();
    let at = shield_cancel_at(c, meta, l4 as u64);
    if at == 0 {
        return;
    }
    let (pay, plen) = (core::hint::black_box(at >> 16) & PAY_MASK, at & 0xffff);
    crate::walk::shield_walk(c, pay, plen, W_CID);
    crate::tcp::shield_tcp_cancel();
}

/// Masks a payload offset (at most `MAX_PAYLOAD_OFFSET`) into a range the
/// verifier knows.
const PAY_MASK: u64 = (2 * MAX_PAYLOAD_OFFSET).next_power_of_two() as u64 - 1;
const _: () = assert!(MAX_PAYLOAD_OFFSET as u64 <= PAY_MASK);

/// `allowlisted_cancel`'s payload (`offset << 16 | length`) when calls
/// are tracked (its caller saw the CANCEL; checked again here, where the
/// verifier knows nothing of the caller); else 0.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_cancel_at(ctx: *mut RawCtx, meta: u64, l4: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let inv = unsafe { &mut (*scratch).invite };
    if inv.method != Method::Cancel as u8 || !on() {
        return 0;
    }
    let Some((pay, plen)) = crate::dest::segment(&Pkt::of(ctx), meta, l4, false, inv) else {
        return 0;
    };
    if pay > MAX_PAYLOAD_OFFSET || plen > 0xffff {
        return 0;
    }
    (pay as u64) << 16 | plen as u64
}

/// See `cancel`; the caller's key in two halves.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_call_cancel(hi: u64, lo: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let Some(id) = (unsafe { (*scratch).ids.call_id }) else {
        return 0;
    };
    let Some(c) = CALLS.get_ptr_mut(&id) else {
        return 0;
    };
    // SAFETY: a map value from a successful lookup, valid for this run; plain integers.
    if !calls::cancels(unsafe { &*c }, &join(hi, lo)) {
        return 0;
    }
    // A plain store: the flag only ever goes on.
    // SAFETY: a map value from a successful lookup, valid for this run; plain integers.
    unsafe { (*c).flags |= CALL_CANCELLING };
    1
}

/// The egress classifier's final response (status class `class`, CSeq
/// method index `method`, Call-ID hash `call_id`) to `dst` (keyed like a
/// source).
#[inline(always)]
pub(crate) fn reply(dst: &SrcKey, call_id: u64, method: usize, class: u8, challenge: bool) {
    let (hi, lo) = split(dst);
    let mc = (challenge as u64) << 16 | (method as u64) << 8 | class as u64;
    shield_call_reply(call_id, mc, hi, lo);
}

/// See `reply`: `mc` is `challenge << 16 | method << 8 | class`.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_call_reply(call_id: u64, mc: u64, hi: u64, lo: u64) -> u64 {
    if !CALL_CFG.get(0).is_some_and(|cfg| cfg.on()) {
        return 0;
    }
    let Some(c) = CALLS.get_ptr_mut(&call_id) else {
        return 0;
    };
    // SAFETY: a map value from a successful lookup, valid for this run; plain integers.
    let call = unsafe { *c };
    let method = match (mc >> 8) as u8 as usize {
        m if m == Method::Invite as usize => Method::Invite,
        m if m == Method::Bye as usize => Method::Bye,
        _ => return 0,
    };
    let class = mc as u8;
    let to_caller = call.src == join(hi, lo);
    let now = now_ns();
    match calls::on_final(&call, method, class, mc >> 16 != 0, to_caller) {
        Step::Keep => 0,
        Step::Answer => {
            // SAFETY: a map value from a successful lookup, valid for this run; plain integers.
            // Two CPUs with a retransmitted 2xx both write the same.
            unsafe {
                (*c).answer_ns = now;
                (*c).state = CALL_ANSWERED;
            }
            1
        }
        Step::End(outcome, status) => end(call_id, &call, outcome, status, now, true),
        Step::Forget => end(call_id, &call, CallOutcome::Failed, 4, now, false),
    }
}

/// Forgets the call `id` (a copy of which is `call`) and, if `report`,
/// reports its end, if this delete is the one that removed it; gives its
/// count back.
#[inline(always)]
fn end(id: u64, call: &Call, outcome: CallOutcome, status: u8, now: u64, report: bool) -> u64 {
    if CALLS.remove(&id).is_err() {
        return 0; // another CPU (or the expiry) ended it
    }
    if call.flags & CALL_COUNTED != 0 {
        release(&call.src);
    }
    if !report {
        return 1;
    }
    let ev: CallEvent = call.ended(id, outcome, status, now);
    if CALL_EVENTS.output(&ev, 0).is_err() {
        if let Some(lost) = EVENTS_LOST.get_ptr_mut(0) {
            // Per-CPU slot: no other writer.
            // SAFETY: a per-CPU map slot, valid for this run; no other writer.
            unsafe { *lost += 1 };
        }
    }
    1
}

/// Run by shieldd (`BPF_PROG_TEST_RUN`) on a frame whose first eight
/// bytes are a Call-ID hash: forgets that call, as `expired`, if it is
/// past its time by the kernel's own clock. `XDP_PASS` (2) when it did,
/// `XDP_DROP` (1) when the call is still live or gone.
#[xdp]
pub fn shield_calls_expire(ctx: XdpContext) -> u32 {
    const GONE: u32 = 1;
    const EXPIRED: u32 = 2;
    // An XDP program in both objects (not `Pkt::new`: that takes the
    // object's hook context, `__sk_buff`'s in the tc object).
    let pkt = Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    let Some(b) = pkt.ptr_at::<[u8; 8]>(0) else {
        return GONE;
    };
    // SAFETY: inside the frame: `ptr_at` checked all 8 bytes.
    let id = u64::from_ne_bytes(unsafe { *b });
    // SAFETY: a copy of a map value of plain integers; another CPU writing it meanwhile only makes the copy older.
    let (Some(cfg), Some(c)) = (CALL_CFG.get(0), unsafe { CALLS.get(&id) }) else {
        return GONE;
    };
    let call = *c;
    let now = now_ns();
    if !call.expired(now, cfg.max_duration_ns) {
        return GONE;
    }
    if end(id, &call, CallOutcome::Expired, 0, now, true) == 1 {
        EXPIRED
    } else {
        GONE
    }
}

/// Takes one of the caller's slots if it has fewer than `limit` (0: no
/// limit) calls in progress. A new caller's count is created holding
/// this call (any limit lets a first call through): one insert, no
/// second lookup and no compare-and-swap. `Some(false)`: refused;
/// `None`: no count could be made.
#[inline(always)]
fn take_slot(key: &SrcKey, limit: u64) -> Option<bool> {
    if let Some(n) = CALL_COUNTS.get_ptr_mut(key) {
        return Some(reserve(n, limit));
    }
    const _: () = assert!(calls::within_limit(0, 0) && calls::within_limit(0, 1));
    // BPF_NOEXIST: if another CPU created it meanwhile, theirs stays and
    // this call reserves in it like any other.
    if CALL_COUNTS.insert(key, &1, BPF_NOEXIST as u64).is_ok() {
        return Some(true);
    }
    CALL_COUNTS.get_ptr_mut(key).map(|n| reserve(n, limit))
}

/// Compare-and-swap rounds before giving up: with two CPUs racing on one
/// caller, losing this many in a row does not happen in practice.
const CAS_ROUNDS: usize = 16;

/// Takes one of the count at `n`'s slots if it is below `limit` (0: no
/// limit). A compare-and-swap, so two CPUs at the limit never both get
/// the last slot. (A fetching atomic add would be one instruction, but
/// LLVM's generic BPF CPU cannot use its result.) False: refused.
#[inline(always)]
fn reserve(n: *mut u64, limit: u64) -> bool {
    // SAFETY: `n` points into a CALL_COUNTS value, updated only by CAS.
    let mut cur = unsafe { core::ptr::read_volatile(n) };
    for _ in 0..CAS_ROUNDS {
        if !calls::within_limit(cur, limit) {
            return false;
        }
        // SAFETY: an aligned u64 inside a map value that stays valid for this run.
        let (seen, _) = unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(n, cur, cur + 1) };
        if seen == cur {
            return true;
        }
        cur = seen;
    }
    false
}

/// Gives one of `key`'s slots back, never below 0 (an entry the LRU
/// recreated after an eviction starts at 0 again).
#[inline(always)]
fn release(key: &SrcKey) {
    let Some(n) = CALL_COUNTS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: as in `reserve`.
    let mut cur = unsafe { core::ptr::read_volatile(n) };
    for _ in 0..CAS_ROUNDS {
        if cur == 0 {
            return;
        }
        let next = calls::count_down(cur);
        // SAFETY: an aligned u64 inside a map value that stays valid for this run.
        let (seen, _) = unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(n, cur, next) };
        if seen == cur {
            return;
        }
        cur = seen;
    }
}

/// The counter slot of the interface the frame came in on.
#[inline(always)]
fn iface_slot(ctx: *mut RawCtx) -> u8 {
    // SAFETY: the program's context, valid for the whole run.
    let ifindex = unsafe { (*ctx).ingress_ifindex };
    match IFACE_SLOT.get(ifindex) {
        Some(s) => (*s & IFACE_SLOT_MASK) as u8,
        None => 0,
    }
}

#[inline(always)]
pub(crate) fn split(k: &SrcKey) -> (u64, u64) {
    (
        u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]),
        u64::from_ne_bytes([k[8], k[9], k[10], k[11], k[12], k[13], k[14], k[15]]),
    )
}

#[inline(always)]
fn join(hi: u64, lo: u64) -> SrcKey {
    let (h, l) = (hi.to_ne_bytes(), lo.to_ne_bytes());
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}

const _: () = assert!(dest::RULE_CALLS >= dest::RULE_IDS_RESERVED);
