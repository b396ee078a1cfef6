//! Authentication seen on the wire (SPEC §12, `shield_common::auth`): the
//! egress classifier learns the nonce of every 401/407 challenge per
//! destination; the XDP program remembers a REGISTER/INVITE whose
//! credentials carry a nonce that source was sent (a proven attempt) or
//! counts it `unproven`; the egress classifier settles a proven attempt
//! with the server's final reply and reports it in `AUTH_EVENTS`.
//!
//! Everything off until shieldd sets `AUTH_CONFIG`. The digest line is
//! found by the header-line search (lines starting `a`/`p` on ingress, in
//! the XDP program's one header walk, `walk`; `w`/`p` on egress) and parsed by the shared parser,
//! one step (8-byte reads, no loop) per call of a global: verified once per
//! program, whatever the line holds. Each program has its own thin
//! globals (their context argument has the program's type) and its own
//! slot of `AUTH_SCRATCH` (0 ingress, 1 egress).

use aya_ebpf::{
    bindings::__sk_buff,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    EbpfContext,
};
use shield_common::{
    auth::{
        auth_method, auth_name, auth_stats_slot, challenges, outcome, Attempt, AuthConfig,
        AuthEvent, AuthHeader, DigestParse, LineWords, NonceKey, NonceSeen, AUTH_LINE_MAX,
        AUTH_MAX_CHALLENGES, AUTH_MAX_LINES, AUTH_MAX_STEPS, AUTH_ON, AUTH_STATS_ENTRIES,
        CHALLENGE_LETTERS, DIGEST_STALE, RESULT_FAILURE, RESULT_STALE, RESULT_SUCCESS,
        RESULT_UNPROVEN,
    },
    default_size, mask_v6,
    sip::UA_SCAN_LIMIT,
    src_key_v4, SrcKey, TxnKey, FAMILY_V4, FAMILY_V6,
};

use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::hook::{Ctx, RawCtx};
use crate::lines::{self, LINE_BAD, LINE_FOUND, LINE_OTHER};
use crate::maps::{EGRESS_SCRATCH, IFACE_SLOT, IFACE_SLOT_MASK, POLICY, SCRATCH};
use crate::pkt::{Pkt, MAX_PAYLOAD_OFFSET};
use crate::source::now_ns;
use crate::walk::{W_CREDS, W_TXN};

#[map]
static AUTH_CONFIG: Array<AuthConfig> = Array::with_max_entries(1, 0);
#[map]
static AUTH_NONCES: LruHashMap<NonceKey, NonceSeen> =
    LruHashMap::with_max_entries(default_size::AUTH_NONCES, 0);
#[map]
static AUTH_ATTEMPTS: LruHashMap<TxnKey, Attempt> =
    LruHashMap::with_max_entries(default_size::AUTH_ATTEMPTS, 0);
#[map]
static AUTH_EVENTS: RingBuf = RingBuf::with_byte_size(default_size::AUTH_EVENTS_BYTES, 0);
#[map]
static AUTH_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(AUTH_STATS_ENTRIES, 0);
#[map]
static AUTH_SCRATCH: PerCpuArray<AuthScratch> = PerCpuArray::with_max_entries(2, 0);

/// The maps declared here, for the check against `names::ALL` in main.rs.
pub(crate) const MAP_NAMES: &[&str] = &[
    "AUTH_CONFIG",
    "AUTH_NONCES",
    "AUTH_ATTEMPTS",
    "AUTH_EVENTS",
    "AUTH_STATS",
    "AUTH_SCRATCH",
];

const INGRESS: u32 = 0;
const EGRESS: u32 = 1;

/// Per-CPU, per-program work space (off the 512-byte stack).
#[repr(C)]
pub(crate) struct AuthScratch {
    parse: DigestParse,
    attempt: Attempt,
    /// The requester (ingress) or the reply's destination (egress), keyed.
    key: SrcKey,
    /// The reply's destination address and family (egress).
    addr: [u8; 16],
    family: u32,
    /// The request-line method index (ingress).
    method: u32,
    /// `Scratch::ids` already holds this request's Call-ID and CSeq.
    ids_fresh: u32,
    _pad: u32,
    /// The digest line being parsed: its packet offset, and its bytes
    /// that may be read.
    line_at: u64,
    line_end: u64,
    /// The challenge lines found (egress): `at << 32 | start << 16 | end`
    /// (packet offset, value offset, bytes that may be read).
    lines: [u64; AUTH_MAX_CHALLENGES],
    challenges: u32,
    /// A challenge said `stale=true`.
    stale: u32,
    /// The keys of `shield_auth_prove`'s lookups, built here: on its
    /// frame they took the stack that the chain under the XDP program's
    /// frame does not have to spare (5.15 rounds every frame up to 32).
    nonce_key: NonceKey,
    txn_key: TxnKey,
}

#[inline(always)]
pub(crate) fn on() -> bool {
    AUTH_CONFIG.get(0).is_some_and(|c| c.flags & AUTH_ON != 0)
}

#[inline(always)]
fn count(ifindex: u32, method: u32, result: u32) {
    let slot = match IFACE_SLOT.get(ifindex) {
        Some(s) => *s & IFACE_SLOT_MASK,
        None => 0,
    };
    if let Some(c) = AUTH_STATS.get_ptr_mut(auth_stats_slot(slot, method & 1, result & 3)) {
        // Per-CPU slot: no other writer.
        // SAFETY: a per-CPU map slot, valid for this run; no other writer.
        unsafe { *c += 1 };
    }
}

// ---- ingress (XDP) ----

/// `meta` bits shared by both entries: the IP header's offset (bits 0-7),
/// IPv6 (bit 8).
pub(crate) const META_V6: u64 = 1 << 8;
/// Masks a laundered IP header offset (at most two VLAN tags in).
pub(crate) const L3_MASK: u64 = 63;

/// `meta` for a packet whose IP header is at `l3` (already laundered and
/// masked by the caller), IPv6 or not: no branch in the caller's frame.
#[inline(always)]
pub(crate) fn meta(l3: u64, v6: bool) -> u64 {
    (l3 & L3_MASK) | (v6 as u64) << 8
}

/// A REGISTER or INVITE (method index `method`) passed: a proven attempt
/// is remembered, an unproven one counted. `meta`: see [`meta`]. Inlined in the XDP frame, so it only
/// hands over to one global: code here is verified again for every state
/// that reaches it.
#[inline(always)]
pub(crate) fn attempt(ctx: &Ctx, method: usize, (pay, plen): (usize, usize), meta: u64) {
    if auth_method(method).is_none() || !on() {
        return;
    }
    // The credentials line and the Call-ID and CSeq an attempt is keyed
    // by: the packet's header walk (step 8's already found them; one pass
    // otherwise), called from the XDP program's frame (its chain of
    // globals needs the stack left under it).
    let c = ctx.as_ptr().cast();
    if crate::walk::shield_walk(c, pay as u64, plen as u64, W_CREDS | W_TXN) & W_CREDS == 0 {
        return;
    }
    let meta = meta | (method as u64 & 0xff) << 16;
    shield_auth(ctx.as_ptr().cast(), pay as u64, plen as u64, meta);
}

/// [`attempt`]'s work: the credentials parsed, then the proof. Few
/// globals (each call costs a return, about 7 ns on this kind of machine)
/// but a small frame: the deepest chain (XDP frame, this, a step, its
/// word) stays under 512 bytes of stack, so the proof's keys live in a
/// global of their own.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_auth(ctx: *mut RawCtx, pay: u64, plen: u64, meta: u64) -> u64 {
    if auth_method(((meta >> 16) & 0xff) as usize).is_none() || !creds(ctx, pay, plen) {
        return 0;
    }
    shield_auth_prove(ctx, meta)
}

/// The credentials on the line the header walk found (and whose value it
/// located), parsed into `AUTH_SCRATCH[0].parse`: false when there is none.
#[inline(always)]
fn creds(ctx: *mut RawCtx, pay: u64, plen: u64) -> bool {
    let Some(a) = AUTH_SCRATCH.get_ptr_mut(INGRESS) else {
        return false;
    };
    let Some((at, avail, value)) = crate::walk::creds_line(pay, plen) else {
        return false;
    };
    // SAFETY: a per-CPU map value of this type, used by this program only.
    let a = unsafe { &mut *a };
    a.parse
        .start((value & 0xff) as usize, AuthHeader::Credentials);
    a.line_at = at;
    a.line_end = core::cmp::min(avail, AUTH_LINE_MAX as u64);
    digest_steps(|fin| shield_auth_step(ctx, fin));
    true
}

/// The packet's source (IP header at `meta`'s offset) keyed as bans
/// are, into `AUTH_SCRATCH[slot].key` (and its address into `.addr`), or
/// its destination (`dst`). 0 if the header is out of reach.
#[inline(always)]
fn key_into(pkt: &Pkt, slot: u32, meta: u64, dst: bool) -> u64 {
    let (Some(a), Some(p)) = (AUTH_SCRATCH.get_ptr_mut(slot), POLICY.get(0)) else {
        return 0;
    };
    // SAFETY: a per-CPU map value of this type, used by this program only.
    let a = unsafe { &mut *a };
    let l3 = (meta & L3_MASK) as usize;
    if meta & META_V6 != 0 {
        let Some(ip) = pkt.ptr_at::<Ipv6Hdr>(l3) else {
            return 0;
        };
        // SAFETY: `ptr_at` checked the header is in the packet.
        a.addr = unsafe {
            if dst {
                (*ip).dst_addr
            } else {
                (*ip).src_addr
            }
        };
        a.family = FAMILY_V6 as u32;
        a.key = mask_v6(&a.addr, p.ipv6_prefix);
    } else {
        let Some(ip) = pkt.ptr_at::<Ipv4Hdr>(l3) else {
            return 0;
        };
        // SAFETY: as above.
        let v = unsafe {
            if dst {
                (*ip).dst_addr
            } else {
                (*ip).src_addr
            }
        };
        a.addr = [v[0], v[1], v[2], v[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a.family = FAMILY_V4 as u32;
        a.key = src_key_v4(v);
    }
    1
}

/// Proves the credentials in `AUTH_SCRATCH[0].parse` against the nonces
/// sent to the source (keyed from the IP header at `meta`'s offset);
/// remembers a proven attempt by Call-ID and CSeq (from `SCRATCH.ids`),
/// counts an unproven one.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_auth_prove(ctx: *mut RawCtx, meta: u64) -> u64 {
    if key_into(&Pkt::of(ctx), INGRESS, meta, false) == 0 {
        return 0;
    }
    let (Some(a), Some(scratch)) = (AUTH_SCRATCH.get_ptr_mut(INGRESS), SCRATCH.get_ptr_mut(0))
    else {
        return 0;
    };
    // SAFETY: per-CPU map values of these types, used by this program only.
    let a = unsafe { &mut *a };
    let method = ((meta >> 16) & 0xff) as usize;
    let Some(m) = auth_method(method) else {
        return 0;
    };
    if !a.parse.has_nonce() {
        return 0;
    }
    let now = now_ns();
    // Field by field, in scratch (see `AuthScratch::nonce_key`).
    a.nonce_key.src = a.key;
    a.nonce_key.nonce = a.parse.nonce_hash;
    // SAFETY: a copy of a map value of plain integers; another CPU writing it meanwhile only makes the copy older.
    let proven = unsafe { AUTH_NONCES.get(&a.nonce_key) }.is_some_and(|n| n.proves(now));
    if !proven {
        // SAFETY: the program's context, valid for the whole run.
        count(unsafe { (*ctx).ingress_ifindex }, m, RESULT_UNPROVEN);
        return 0;
    }
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let (call_id, cseq) = unsafe { ((*scratch).ids.call_id, (*scratch).ids.cseq) };
    let (Some(call_id), Some((cseq, cseq_method))) = (call_id, cseq) else {
        return 0;
    };
    let t = &mut a.attempt;
    t.seen_ns = now;
    t.user_hash = a.parse.user_hash;
    t.cseq_method = cseq_method as u32;
    t.method = method as u32;
    t.user_len = a.parse.user_len;
    t._pad = 0;
    t.user = a.parse.user;
    let k = &mut a.txn_key;
    k.src = a.key;
    k.call_id = call_id;
    k.cseq = cseq;
    k._pad = 0;
    // A retransmission (or any request with this key) overwrites the
    // remembered attempt in place: an LRU update takes a fresh node and
    // locks, a plain store does not. Another CPU copying it meanwhile may
    // see a mix of two records of the same transaction.
    match AUTH_ATTEMPTS.get_ptr_mut(&a.txn_key) {
        // SAFETY: a map value from a successful lookup, valid for this run; plain integers.
        Some(t) => unsafe { *t = a.attempt },
        None => {
            let _ = AUTH_ATTEMPTS.insert(&a.txn_key, &a.attempt, 0);
        }
    }
    1
}

/// One parser step on `AUTH_SCRATCH[0].parse` (see `step`).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_auth_step(ctx: *mut RawCtx, fin: u64) -> u64 {
    step(INGRESS, fin, &Pkt::of(ctx), |at, end, off| {
        shield_auth_word(ctx, at, end, off)
    })
}

/// `word_tail` for `shield_auth_step`: a global, so that each of the
/// step's word reads is verified as one load or one call.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_auth_word(ctx: *mut RawCtx, at: u64, end: u64, off: u64) -> u64 {
    word_tail(&Pkt::of(ctx), at, end, off)
}

// ---- egress (TC) ----

/// A final response (status `status`) with the ids in
/// `EGRESS_SCRATCH.ids`, CSeq method index `method`, IP header per `meta`
/// (see [`meta`]): learns its challenge, settles the proven attempt it
/// answers and reports it. True when it is a success (the destination is
/// then verified, SPEC §12, whatever `[verify] methods` says).
#[inline(always)]
pub(crate) fn settle(
    skb: *mut __sk_buff,
    (pay, plen): (usize, usize),
    meta: u64,
    status: u16,
    method: usize,
) -> bool {
    let meta = meta | (status as u64) << 16 | (method as u64 & 0xff) << 32;
    if shield_egress_auth(skb, pay as u64, plen as u64, meta) == 0 {
        return false;
    }
    // From the program's own frame: the steps' chain of stacks is the
    // shortest there is.
    learn(skb);
    shield_egress_outcome(skb, meta) == 1
}

/// [`settle`]'s first steps: the key, the challenge lines. 0: nothing to
/// settle (off, or the header out of reach).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_auth(skb: *mut __sk_buff, pay: u64, plen: u64, meta: u64) -> u64 {
    if !on() {
        return 0;
    }
    let Some(a) = AUTH_SCRATCH.get_ptr_mut(EGRESS) else {
        return 0;
    };
    // SAFETY: per-CPU scratch of this program.
    unsafe {
        (*a).stale = 0;
        (*a).challenges = 0;
    }
    if shield_egress_key(skb, meta) == 0 {
        return 0;
    }
    if challenges(((meta >> 16) & 0xffff) as u16) {
        shield_egress_challenge(skb, pay, plen);
    }
    1
}

/// The reply's destination keyed as bans are, into `AUTH_SCRATCH[1]`.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_key(skb: *mut __sk_buff, meta: u64) -> u64 {
    key_into(&Pkt::skb(skb), EGRESS, meta, true)
}

/// Settles the attempt the reply answers (its challenges already
/// learned).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_outcome(skb: *mut __sk_buff, meta: u64) -> u64 {
    let (Some(a), Some(scratch)) = (
        AUTH_SCRATCH.get_ptr_mut(EGRESS),
        EGRESS_SCRATCH.get_ptr_mut(0),
    ) else {
        return 0;
    };
    // SAFETY: per-CPU map values of these types, used by this program only.
    let a = unsafe { &mut *a };
    let status = ((meta >> 16) & 0xffff) as u16;
    let method = ((meta >> 32) & 0xff) as u32;
    let now = now_ns();
    let stale = a.stale != 0;
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let ids = unsafe { (*scratch).ids };
    let (Some(call_id), Some((cseq, _))) = (ids.call_id, ids.cseq) else {
        return 0;
    };
    let tk = TxnKey {
        src: a.key,
        call_id,
        cseq,
        _pad: 0,
    };
    // SAFETY: a copy of a map value of plain integers; another CPU writing it meanwhile only makes the copy older.
    let Some(t) = (unsafe { AUTH_ATTEMPTS.get(&tk) }) else {
        return 0;
    };
    if t.cseq_method != method {
        return 0; // another transaction's reply
    }
    a.attempt = *t;
    let _ = AUTH_ATTEMPTS.remove(&tk);
    let (Some(result), Some(m)) = (
        outcome(status, stale),
        auth_method(a.attempt.method as usize),
    ) else {
        return 0;
    };
    // SAFETY: the program's context, valid for the whole run.
    let ifindex = unsafe { (*skb).ifindex };
    count(ifindex, m, result);
    if result == RESULT_STALE {
        return 0;
    }
    report(a, now, m, status, result, ifindex);
    (result == RESULT_SUCCESS) as u64
}

/// One `AUTH_EVENTS` record for a settled attempt (lost if the ring is
/// full: the counters still have it).
#[inline(always)]
fn report(a: &AuthScratch, now: u64, method: u32, status: u16, result: u32, ifindex: u32) {
    let Some(mut e) = AUTH_EVENTS.reserve::<AuthEvent>(0) else {
        return;
    };
    e.write(AuthEvent {
        ts_ns: now,
        user_hash: a.attempt.user_hash,
        addr: a.addr,
        family: a.family as u8,
        method: method as u8,
        status,
        result: if result == RESULT_SUCCESS {
            RESULT_SUCCESS
        } else {
            RESULT_FAILURE
        },
        ifindex,
        user_len: a.attempt.user_len,
        user: a.attempt.user,
    });
    e.submit(0);
}

/// Walks the response's `w`/`p` lines for its challenges (a server may
/// offer several: SHA-256 and MD5) into `AUTH_SCRATCH[1].lines`: how many.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_challenge(skb: *mut __sk_buff, pay: u64, plen: u64) -> u64 {
    let (Some(scratch), Some(a)) = (
        EGRESS_SCRATCH.get_ptr_mut(0),
        AUTH_SCRATCH.get_ptr_mut(EGRESS),
    ) else {
        return 0;
    };
    // SAFETY: see `settle`.
    unsafe { (*a).challenges = 0 };
    lines::find_line(
        &Pkt::skb(skb),
        scratch,
        pay,
        plen,
        AUTH_MAX_LINES,
        |j, limit| shield_egress_auth_scan_block(skb, pay, j, limit),
        |at, avail| shield_egress_challenge_line(skb, at, avail),
    );
    // SAFETY: as above.
    unsafe { (*a).challenges as u64 }
}

/// Parses each challenge line `shield_egress_challenge` found and learns
/// its nonce for the destination in `AUTH_SCRATCH[1].key`; `stale` if one
/// says so.
#[inline(always)]
fn learn(skb: *mut __sk_buff) {
    let Some(a) = AUTH_SCRATCH.get_ptr_mut(EGRESS) else {
        return;
    };
    let now = now_ns();
    for i in 0..AUTH_MAX_CHALLENGES {
        // SAFETY: a per-CPU map value of this type, used by this program only.
        let a = unsafe { &mut *a };
        if i >= a.challenges as usize {
            break;
        }
        let line = a.lines[i];
        a.parse
            .start(((line >> 16) & 0xffff) as usize, AuthHeader::Challenge);
        a.line_at = line >> 32;
        a.line_end = line & 0xffff;
        digest_steps(|fin| shield_egress_auth_step(skb, fin));
        if a.parse.has_nonce() {
            a.stale |= (a.parse.flags & DIGEST_STALE != 0) as u32;
            let nk = NonceKey {
                src: a.key,
                nonce: a.parse.nonce_hash,
            };
            let _ = AUTH_NONCES.insert(&nk, &NonceSeen { seen_ns: now }, 0);
        }
    }
}

/// The line at payload offset `at` (`avail` bytes left): a challenge is
/// remembered in `AUTH_SCRATCH[1].lines` (the walk stops once
/// `AUTH_MAX_CHALLENGES` are).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_challenge_line(skb: *mut __sk_buff, at: u64, avail: u64) -> u64 {
    let (Some(scratch), Some(a)) = (
        EGRESS_SCRATCH.get_ptr_mut(0),
        AUTH_SCRATCH.get_ptr_mut(EGRESS),
    ) else {
        return LINE_BAD;
    };
    if !lines::copy_window(&Pkt::skb(skb), scratch, at, avail) {
        return LINE_BAD;
    }
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let Some(start) = auth_name(unsafe { &(*scratch).win }, AuthHeader::Challenge) else {
        return LINE_OTHER;
    };
    // SAFETY: a per-CPU map value of this type, used by this program only.
    let a = unsafe { &mut *a };
    let n = a.challenges as usize;
    if n >= AUTH_MAX_CHALLENGES {
        return LINE_FOUND;
    }
    let end = core::cmp::min(avail, AUTH_LINE_MAX as u64);
    a.lines[n & (AUTH_MAX_CHALLENGES - 1)] = (at & 0xffff) << 32 | (start as u64) << 16 | end;
    a.challenges += 1;
    if n + 1 == AUTH_MAX_CHALLENGES {
        LINE_FOUND
    } else {
        LINE_OTHER
    }
}

/// One parser step on `AUTH_SCRATCH[1].parse` (see `step`).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_auth_step(skb: *mut __sk_buff, fin: u64) -> u64 {
    step(EGRESS, fin, &Pkt::skb(skb), |at, end, off| {
        shield_egress_auth_word(skb, at, end, off)
    })
}

/// `word_tail` for `shield_egress_auth_step` (see `shield_auth_word`).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_auth_word(skb: *mut __sk_buff, at: u64, end: u64, off: u64) -> u64 {
    word_tail(&Pkt::skb(skb), at, end, off)
}

/// `lines::scan_block2` for lines starting with `w`/`W` or `p`/`P`.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_auth_scan_block(
    skb: *mut __sk_buff,
    pay: u64,
    j: u64,
    limit: u64,
) -> u64 {
    let (a, b) = CHALLENGE_LETTERS;
    lines::scan_block2(&Pkt::skb(skb), pay, j, limit, a, b)
}

// ---- shared bodies ----

/// The value of a digest line, parsed: `step(fin)` is the
/// program's step global (`fin` 1: finish). The loop keeps no arithmetic
/// of its own: one verifier state per iteration. `LINE_FOUND`.
#[inline(always)]
fn digest_steps(step: impl Fn(u64) -> u64) -> u64 {
    for _ in 0..AUTH_MAX_STEPS {
        if step(0) != 0 {
            return LINE_FOUND;
        }
    }
    step(1); // the steps ran out: finish
    LINE_FOUND
}

/// A step of `AUTH_SCRATCH[slot].parse` on the line it holds; `fin` 1
/// finishes it. 1 once it is done.
#[inline(always)]
fn step(slot: u32, fin: u64, pkt: &Pkt, tail: impl Fn(u64, u64, u64) -> u64) -> u64 {
    let Some(a) = AUTH_SCRATCH.get_ptr_mut(slot) else {
        return 1;
    };
    // SAFETY: a per-CPU map value of this type, used by this program only.
    let a = unsafe { &mut *a };
    if fin != 0 {
        a.parse.finish();
        return 1;
    }
    let (at, end) = (a.line_at, a.line_end);
    a.parse.step(&Words(|off| {
        word_at(pkt, at, end, off).unwrap_or_else(|| tail(at, end, off))
    })) as u64
}

/// Lines start no further into the frame than this (see `word_at`).
const MAX_LINE_AT: u64 = (MAX_PAYLOAD_OFFSET + UA_SCAN_LIMIT) as u64;
/// Masks a line byte's packet offset (at most `MAX_LINE_AT` plus
/// `AUTH_LINE_MAX`).
const LINE_AT_MASK: u64 = (MAX_LINE_AT + AUTH_LINE_MAX as u64).next_power_of_two() - 1;

/// The parser's view of the line.
struct Words<F>(F);

impl<F: Fn(u64) -> u64> LineWords for Words<F> {
    #[inline(always)]
    fn word(&self, off: usize) -> u64 {
        (self.0)(off as u64)
    }
}

/// The 8 bytes `off` bytes into the line at packet offset `at` (`end` of
/// its bytes may be read) when they are all inside both the line and the
/// frame (nearly every word): one load after one bounds check. `None`:
/// see `word_tail`.
#[inline(always)]
fn word_at(pkt: &Pkt, at: u64, end: u64, off: u64) -> Option<u64> {
    if off >= AUTH_LINE_MAX as u64 || off + 8 > end || at > MAX_LINE_AT {
        return None;
    }
    // Masked (a no-op: both were checked above) after black_box: LLVM
    // would otherwise add an unchecked copy of `off`, and the verifier
    // needs the bound on the very value used as the offset.
    let p = core::hint::black_box(at + off) & LINE_AT_MASK;
    let w = pkt.ptr_at::<[u8; 8]>(p as usize)?;
    // One 8-byte load, though rarely 8-aligned (see `lines::scan_block_with`).
    #[allow(clippy::cast_ptr_alignment)]
    // SAFETY: `ptr_at` checked all eight bytes are in the frame.
    Some(u64::from_le(unsafe { core::ptr::read(w.cast::<u64>()) }))
}

/// A word the line or the frame cuts (or none: 0): the frame's last 8
/// bytes (shifted) when fewer than 8 are left, the bytes past `end` zero.
#[inline(always)]
fn word_tail(pkt: &Pkt, at: u64, end: u64, off: u64) -> u64 {
    if off >= AUTH_LINE_MAX as u64 || off >= end || at > MAX_LINE_AT {
        return 0;
    }
    let p = (at + off) as usize;
    // black_box: the verifier needs the bound checked on the very value
    // used as the offset.
    let frame = core::hint::black_box(pkt.len());
    let (q, shift) = if p + 8 <= frame {
        (p, 0)
    } else if p < frame && frame >= 8 {
        (frame - 8, p + 8 - frame)
    } else {
        return 0;
    };
    if q > MAX_PAYLOAD_OFFSET + UA_SCAN_LIMIT + AUTH_LINE_MAX {
        return 0;
    }
    let Some(w) = pkt.ptr_at::<[u8; 8]>(q) else {
        return 0;
    };
    #[allow(clippy::cast_ptr_alignment)]
    // SAFETY: `ptr_at` checked all eight bytes are in the frame.
    let w = u64::from_le(unsafe { core::ptr::read(w.cast::<u64>()) }) >> (8 * (shift & 7));
    let left = end - off;
    if left < 8 {
        w & ((1u64 << (8 * left)) - 1)
    } else {
        w
    }
}
