//! Step 9b, destinations (SPEC §11): the dialled number of an initial UDP
//! INVITE against the operator's policy, read and decided by
//! `shield_common::dest` (the code the reference model runs), with the
//! per-source international rate, the refusal counters, escalation and
//! the report that carries the INVITE to the daemon for its 403.
//!
//! The work is one BTF-global function, `shield_destination`, verified
//! once whatever state reaches it; its caller leaves the INVITE's
//! addresses in `Scratch::invite` (a global takes five scalars at most).

use core::intrinsics::{atomic_xadd, AtomicOrdering::Relaxed};

use aya_ebpf::{maps::lpm_trie::Key, EbpfContext};
use shield_common::{
    dest::{
        self, DestClass, DestSource, Dialled, Listed, DEST_CLASS_SLOT, DEST_STATS_PER_IFACE,
        D_REJECT,
    },
    refused_key, Policy, Reason, SrcKey, FAMILY_V4, FAMILY_V6, F_ENFORCE, REFUSAL_PAYLOAD,
    REFUSAL_REPLY, REFUSAL_REPORT,
};

use network_types::{
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};
use shield_common::{
    sip::{self, HEAD_LEN},
    Method, PayloadKind, MAX_L4_OFFSET, PORT_TCP, PORT_UDP,
};

use crate::hook::{Ctx, RawCtx};
use crate::lines;
use crate::maps::{
    port_flags, DEST_BUDGET, DEST_EVENTS, DEST_POLICY, DEST_REFUSED, DEST_RULES, DEST_SOURCES,
    DEST_STATS, EVENTS_LOST, IFACE_SLOT, IFACE_SLOT_MASK, POLICY, SCRATCH,
};
use crate::pkt::{src_key, Pkt, Src, MAX_PAYLOAD_OFFSET};
use crate::scratch::{launder, Invite, Scratch, NO_METHOD};
use crate::source::{now_ns, report_offender, spend, verified};
use crate::walk::W_TO;

/// Masks a laundered digit count (at most `RAW_DIGITS`) back into range.
const DIGITS_MASK: u32 = 2 * dest::RAW_DIGITS - 1;
const _: () = assert!(dest::RAW_DIGITS.is_power_of_two());

/// Bytes of `INVITE ` before the Request-URI.
const URI_AT: usize = 7;

/// Step 9b for a UDP packet to a protected port (`f`), an INVITE that
/// passed steps 3-9, or from an allowlisted source (then not yet looked
/// at): `Some(reason)` when refused.
///
/// A sequence of global functions called from here, the XDP program,
/// rather than one that calls the others: the program's own frame is
/// large, and the header search calls two levels deeper (the 512-byte
/// limit is for the whole chain). Only scalars cross; the INVITE's
/// addresses, its Request-URI and its number wait in `SCRATCH`.
#[inline(always)]
pub(crate) fn check(ctx: &Ctx, p: &Policy, src: &Src, meta: u64, l4: usize) -> Option<Reason> {
    let c: *mut RawCtx = ctx.as_ptr().cast();
    let at = shield_invite_at(c, meta, l4 as u64);
    if at == 0 || shield_invite(c, at) == 0 {
        return None;
    }
    let mut verdict = shield_dest_verdict(c);
    if verdict == 0 {
        return None;
    }
    // Only now the To search (most INVITEs are never refused): an INVITE
    // in a dialog is not a call being placed, neither refused nor rated.
    let (pay, plen) = payload(at);
    if crate::walk::shield_walk(c, pay, plen, W_TO) & W_TO != 0 {
        return None;
    }
    if verdict == RATE_CANDIDATE {
        if shield_dest_spend() == 1 {
            return None;
        }
        verdict = (dest::RULE_INTERNATIONAL_RATE as u64) << 8 | Reason::DestinationRate as u64;
    }
    // SPEC §11: allowlisted and verified sources are never banned for
    // their refusals (asked here: `verified` is a call too).
    let keep = meta & ALLOWLISTED != 0 || verified(p, src, now_ns());
    let flags = shield_refusal(c, verdict, keep as u64);
    if flags != 0 {
        shield_report(c, at, verdict, flags);
    }
    if verdict & 0xff == Reason::DestinationRate as u64 {
        Some(Reason::DestinationRate)
    } else {
        Some(Reason::Destination)
    }
}

/// `shield_dest_verdict`: the lists let the number through, but it is
/// international and the source's rate applies (spent once the INVITE
/// is known to be initial).
const RATE_CANDIDATE: u64 = 1;
const _: () = assert!(RATE_CANDIDATE < Reason::Destination as u64);

/// Masks a payload offset (at most `MAX_PAYLOAD_OFFSET`) into a range the
/// verifier knows.
const PAY_MASK: u64 = (2 * MAX_PAYLOAD_OFFSET).next_power_of_two() as u64 - 1;
const _: () = assert!(MAX_PAYLOAD_OFFSET as u64 <= PAY_MASK);

/// `check`'s `meta`: the IP header's offset (bits 0-15), then these.
pub(crate) const V6: u64 = 1 << 16;
pub(crate) const ALLOWLISTED: u64 = 1 << 17;
/// The transport at `l4` is TCP (see `tcp_invite`).
const TCP: u64 = 1 << 18;
/// A TCP segment's message read is this many bytes into its payload
/// (bits 32-47; 0: the first, see `tcp::request`).
pub(crate) const MSG_SHIFT: u64 = 32;

/// The offset of the segment's message `meta` names (see `MSG_SHIFT`).
#[inline(always)]
pub(crate) const fn msg_offset(meta: u64) -> usize {
    ((meta >> MSG_SHIFT) & 0xffff) as usize
}

/// A TCP segment to a protected port (`meta` as for `check`, with the
/// message's offset: `MSG_SHIFT`) that passed steps 2-9, or from an
/// allowlisted source: `true` if that message is an initial INVITE. It is then counted by destination but never refused
/// by the destination policy (SPEC §11: dropping a segment would stall
/// every call on the connection); the caller opens its call (SPEC §13).
/// Not read: a message split across segments, TLS, and a segment of no
/// connection the host has established (see `conn::shield_tcp_established`).
/// Called by `tcp::request` for a message its classifier found an INVITE.
#[inline(always)]
pub(crate) fn tcp_invite(ctx: &Ctx, meta: u64, l4: usize) -> bool {
    let c: *mut RawCtx = ctx.as_ptr().cast();
    let at = shield_invite_at(c, meta | TCP, l4 as u64);
    // Only on a connection the host has established: a forged-source
    // segment (no handshake) is never a call, never counted.
    if at == 0 || crate::conn::shield_tcp_established(c) == 0 || shield_invite(c, at) == 0 {
        return false;
    }
    shield_dest_count(c);
    true
}

/// Counts the INVITE whose number is in `SCRATCH.dialled` by class and
/// country (a TCP INVITE: no verdict).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_dest_count(ctx: *mut RawCtx) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    count(iface_slot(ctx), unsafe { &(*scratch).dialled });
    1
}

/// Reads the initial-INVITE candidate for step 9b (see `check`) whose
/// payload `shield_invite_at` found at `at` (`offset << 16 | length`):
/// unless it is in a dialog, its dialled number into `SCRATCH.dialled`.
/// Returns `at`, or 0 when the policy does not look at it.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_invite(ctx: *mut RawCtx, at: u64) -> u64 {
    let (pay, plen) = payload(at);
    if shield_copy_uri(ctx, pay + URI_AT as u64, plen - URI_AT as u64) == 0 || shield_dialled() == 0
    {
        return 0;
    }
    if let Some(scratch) = SCRATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
        // For `calls`: this INVITE.
        unsafe { (*scratch).call_at = at };
    }
    at
}

/// `at` (`offset << 16 | length`, from `shield_invite_at`) masked: what
/// comes back from a global is any number to the verifier (the mask
/// keeps every offset `shield_invite_at` gives). black_box: LLVM knows
/// those offsets and would drop the mask.
#[inline(always)]
fn payload(at: u64) -> (u64, u64) {
    let at = core::hint::black_box(at);
    ((at >> 16) & PAY_MASK, at & 0xffff)
}

/// Spends a token from the INVITE's source's international bucket; 1 if
/// there was one.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_dest_spend() -> u64 {
    let (Some(dp), Some(p), Some(scratch)) =
        (DEST_POLICY.get(0), POLICY.get(0), SCRATCH.get_ptr_mut(0))
    else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let inv = unsafe { &(*scratch).invite };
    let Some(st) = caller(&invite_key(inv, p)) else {
        return 0;
    };
    // SAFETY: a map value (or ring record) from a successful lookup, valid for this run; plain integers.
    spend(unsafe { &raw mut (*st).intl_tat }, now_ns(), &dp.intl_rate) as u64
}

/// The offset of the IP header is at most this (two VLAN tags).
const MAX_L3_OFFSET: usize = 64;

/// Step 9b's first part: the addresses and ports into `SCRATCH.invite`,
/// and the payload's `offset << 16 | length` if the destination policy
/// looks at it, else 0. A global of its own, called from the XDP program
/// like `shield_invite`: its frame then never sits under another's.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_invite_at(ctx: *mut RawCtx, meta: u64, l4: u64) -> u64 {
    let (Some(dp), Some(scratch)) = (DEST_POLICY.get(0), SCRATCH.get_ptr_mut(0)) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    // Nothing for `calls` until `shield_invite` reads an INVITE, nor a
    // method until `is_invite` reads one.
    unsafe {
        (*scratch).call_at = 0;
        (*scratch).invite.method = NO_METHOD;
    }
    let allowlisted = meta & ALLOWLISTED != 0;
    if allowlisted && !dp.has(dest::D_CHECK_ALLOWLISTED) {
        return 0;
    }
    let pkt = Pkt::of(ctx);
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let inv = unsafe { &mut (*scratch).invite };
    let tcp = meta & TCP != 0;
    let Some((pay, plen)) = segment(&pkt, meta, l4, tcp, inv) else {
        return 0;
    };
    // A later message of a TCP segment (0 for UDP).
    let off = msg_offset(meta);
    if off >= plen {
        return 0;
    }
    let (pay, plen) = (pay + off, plen - off);
    inv.allowlisted = allowlisted as u8;
    let dport = inv.dport.to_be_bytes();
    if pay > MAX_PAYLOAD_OFFSET || plen <= URI_AT || plen > 0xffff {
        return 0;
    }
    // An allowlisted source's packet, or a TCP segment, has not been
    // looked at yet.
    let port = if tcp { PORT_TCP } else { PORT_UDP };
    if (allowlisted || tcp) && !is_invite(&pkt, scratch, dport, port, pay, plen) {
        return 0;
    }
    (pay as u64) << 16 | plen as u64
}

/// The addresses and ports of the packet whose IP header is at `meta &
/// 0xffff` (`meta & V6`: IPv6) and whose UDP or (`tcp`) TCP header is at
/// `l4`, into `inv`; its payload's offset and length. `None`: a header
/// out of reach.
#[inline(always)]
pub(crate) fn segment(
    pkt: &Pkt,
    meta: u64,
    l4: u64,
    tcp: bool,
    inv: &mut Invite,
) -> Option<(usize, usize)> {
    let (l3, l4) = ((meta & 0xffff) as usize, l4 as usize);
    if l3 > MAX_L3_OFFSET || l4 > MAX_L4_OFFSET || !addresses(pkt, l3, meta & V6 != 0, inv) {
        return None;
    }
    let (sport, dport, pay, plen) = transport(pkt, l4, tcp)?;
    inv.sport = u16::from_be_bytes(sport);
    inv.dport = u16::from_be_bytes(dport);
    Some((pay, plen))
}

/// The source and destination ports, the payload's offset and its length
/// (what the frame has of it; a UDP datagram's also what its header says)
/// of the UDP or (`tcp`) TCP header at `l4`.
#[inline(always)]
fn transport(
    pkt: &Pkt,
    l4: usize,
    tcp: bool,
) -> Option<([u8; 2], [u8; 2], usize, usize)> {
    if tcp {
        let t = pkt.ptr_at::<TcpHdr>(l4)?;
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        let (sport, dport, doff) = unsafe { ((*t).source, (*t).dest, (*t).doff() as usize * 4) };
        if doff < TcpHdr::LEN {
            return None;
        }
        let pay = l4 + doff;
        return Some((sport, dport, pay, pkt.len().saturating_sub(pay)));
    }
    let u = pkt.ptr_at::<UdpHdr>(l4)?;
    // SAFETY: inside the frame: the bounds check above covers every byte read.
    let (sport, dport, udp_len) = unsafe { ((*u).src, (*u).dst, (*u).len) };
    let pay = l4 + UdpHdr::LEN;
    let plen = core::cmp::min(
        pkt.len().saturating_sub(pay),
        (u16::from_be_bytes(udp_len) as usize).saturating_sub(UdpHdr::LEN),
    );
    Some((sport, dport, pay, plen))
}

/// The INVITE's addresses from its IP header at `l3` into `inv`.
#[inline(always)]
fn addresses(pkt: &Pkt, l3: usize, v6: bool, inv: &mut Invite) -> bool {
    if v6 {
        let Some(ip) = pkt.ptr_at::<Ipv6Hdr>(l3) else {
            return false;
        };
        inv.family = FAMILY_V6;
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        inv.src = unsafe { (*ip).src_addr };
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        inv.dst = unsafe { (*ip).dst_addr };
    } else {
        let Some(ip) = pkt.ptr_at::<Ipv4Hdr>(l3) else {
            return false;
        };
        inv.family = FAMILY_V4;
        inv.src = [0; 16];
        inv.dst = [0; 16];
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        inv.src[..4].copy_from_slice(unsafe { &(*ip).src_addr });
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        inv.dst[..4].copy_from_slice(unsafe { &(*ip).dst_addr });
    }
    true
}

/// Whether the payload at `pay` (`plen` bytes) to `dport` is an INVITE to
/// a port protected for its transport (`port`: `PORT_UDP` or `PORT_TCP`).
#[inline(always)]
fn is_invite(
    pkt: &Pkt,
    scratch: *mut Scratch,
    dport: [u8; 2],
    port: u8,
    pay: usize,
    plen: usize,
) -> bool {
    if port_flags(dport) & port == 0 {
        return false;
    }
    let Some(h) = pkt.ptr_at::<[u8; HEAD_LEN]>(pay) else {
        return false;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let head = unsafe { &mut (*scratch).head };
    // SAFETY: inside the frame: the bounds check above covers every byte read.
    unsafe { core::ptr::copy_nonoverlapping(h.cast::<u8>(), head.as_mut_ptr(), HEAD_LEN) };
    let kind = sip::classify(head, plen);
    // The method, for an allowlisted source's CANCEL (`calls::allowlisted_cancel`).
    let method = match kind {
        PayloadKind::Request(m) => m as u8,
        _ => NO_METHOD,
    };
    // SAFETY: as above.
    unsafe { (*scratch).invite.method = method };
    kind == PayloadKind::Request(Method::Invite)
}

/// The policy's verdict on `SCRATCH.dialled` (counted by class and
/// country first: every INVITE, initial or not): `rule << 8 | reason` for
/// a refusal, `RATE_CANDIDATE`, or 0.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_dest_verdict(ctx: *mut RawCtx) -> u64 {
    let (Some(dp), Some(scratch)) = (DEST_POLICY.get(0), SCRATCH.get_ptr_mut(0)) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let d = unsafe { &(*scratch).dialled };
    count(iface_slot(ctx), d);
    if !dp.refuses() {
        return 0;
    }
    let hit = match d.key() {
        Some((len, data)) if dp.has(dest::D_RULES) => DEST_RULES.get(&Key::new(len, data)).copied(),
        _ => None,
    };
    let (rule, reason) = match dest::listed(d, hit, dp) {
        Listed::Refused(rule) => (rule, Reason::Destination),
        Listed::Pass if d.class() == DestClass::International && dp.intl_rate.is_limited() => {
            return RATE_CANDIDATE;
        }
        Listed::Pass => return 0,
    };
    (rule as u64) << 8 | reason as u64
}

/// The `SOURCES`-style key of the INVITE's source.
#[inline(always)]
fn invite_key(inv: &Invite, p: &Policy) -> SrcKey {
    src_key(&invite_src(inv), p)
}

#[inline(always)]
pub(crate) fn invite_src(inv: &Invite) -> Src {
    if inv.family == FAMILY_V4 {
        Src::V4([inv.src[0], inv.src[1], inv.src[2], inv.src[3]])
    } else {
        Src::V6(inv.src)
    }
}

/// `SCRATCH.uri`'s dialled number, normalised by the policy, into
/// `SCRATCH.dialled`; 1, or 0. A global of its own: the parse returns from
/// many places, each a verifier state that would otherwise go on through
/// everything after it.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_dialled() -> u64 {
    let (Some(dp), Some(scratch)) = (DEST_POLICY.get(0), SCRATCH.get_ptr_mut(0)) else {
        return 0;
    };
    // (A digit count is at most RAW_DIGITS: the mask keeps it exact.)
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let raw = dest::user_part_with(unsafe { &(*scratch).uri }, |n| {
        launder(scratch, n as usize) as u32 & DIGITS_MASK
    });
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    unsafe { (*scratch).dialled = dest::normalise(raw, dp) };
    1
}

/// A refusal's bookkeeping: its rule's counter and, unless `keep` (an
/// allowlisted or verified source), the source's escalation window.
/// `verdict` is `shield_dest_verdict`'s. Returns the `REFUSAL_*` flags of
/// the report to send (the buckets granted them), or 0.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_refusal(ctx: *mut RawCtx, verdict: u64, keep: u64) -> u64 {
    let (Some(dp), Some(p), Some(scratch)) =
        (DEST_POLICY.get(0), POLICY.get(0), SCRATCH.get_ptr_mut(0))
    else {
        return 0;
    };
    count_refusal(iface_slot(ctx), (verdict >> 8) as u32);
    let now = now_ns();
    if dp.escalate != 0 && keep == 0 {
        // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
        escalate(p, dp, unsafe { &(*scratch).invite }, now);
    }
    let reply = dp.has(D_REJECT) && p.has(F_ENFORCE) && take(0, now, &dp.reject);
    let report = take(1, now, &dp.report);
    (if reply { REFUSAL_REPLY } else { 0 }) as u64
        | (if report { REFUSAL_REPORT } else { 0 }) as u64
}

/// `DEST_REFUSED[slot, rule] += 1`.
#[inline(always)]
fn count_refusal(slot: u32, rule: u32) {
    let key = refused_key(slot, rule);
    match DEST_REFUSED.get_ptr_mut(&key) {
        // Shared by the CPUs: an atomic add loses no refusal.
        // SAFETY: an aligned u64 inside a map value that stays valid for this run.
        Some(c) => unsafe { atomic_xadd::<u64, u64, { Relaxed }>(c, 1) },
        None => {
            // BPF_NOEXIST: another CPU's first count stays; this one is
            // then added to it. (A full map loses the count here; the
            // reason's counter in STATS still has it.)
            if DEST_REFUSED.insert(&key, &1, 1).is_err() {
                if let Some(c) = DEST_REFUSED.get_ptr_mut(&key) {
                    // SAFETY: an aligned u64 inside a map value that stays valid for this run.
                    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(c, 1) };
                }
            }
            0
        }
    };
}

/// The report of a refusal (`verdict`, `flags`) that carries the INVITE
/// (payload at `at >> 16`, `at & 0xffff` bytes) to the daemon, for its
/// record and its 403: built in scratch and output (copied) whole, since
/// a reserved record is a pointer no global function may take.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_report(ctx: *mut RawCtx, at: u64, verdict: u64, flags: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let (pay, plen) = (at >> 16, at & 0xffff);
    let len = core::cmp::min(plen, REFUSAL_PAYLOAD as u64);
    let copied = copy_payload(ctx, scratch, pay as usize, len as usize);
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let ev = unsafe { &raw mut (*scratch).event };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let inv = unsafe { &raw const (*scratch).invite };
    // SAFETY: `ev` and `inv` are this CPU's scratch slot; `ctx` is the program's context.
    unsafe {
        (*ev).ts_ns = now_ns();
        (*ev).src = (*inv).src;
        (*ev).dst = (*inv).dst;
        (*ev).sport = (*inv).sport;
        (*ev).dport = (*inv).dport;
        (*ev).family = (*inv).family;
        (*ev).reason = verdict as u8;
        (*ev)._pad = 0;
        // No 403 for an INVITE the report could not carry whole.
        let whole = copied && plen <= REFUSAL_PAYLOAD as u64;
        (*ev).flags = if whole {
            flags as u32
        } else {
            flags as u32 & !REFUSAL_REPLY
        };
        (*ev).rule = (verdict >> 8) as u32;
        (*ev).ifindex = (*ctx).ingress_ifindex;
        (*ev).len = if copied { len as u32 } else { 0 };
    }
    // SAFETY: this CPU's scratch slot, filled above.
    if DEST_EVENTS.output(unsafe { &*ev }, 0).is_err() {
        if let Some(lost) = EVENTS_LOST.get_ptr_mut(0) {
            // Per-CPU slot: no other writer.
            // SAFETY: a per-CPU map slot, valid for this run; no other writer.
            unsafe { *lost += 1 };
        }
        return 0;
    }
    1
}

/// The caller's `DEST_SOURCES` entry, created (full bucket, no refusals)
/// if it is new.
#[inline(always)]
fn caller(key: &SrcKey) -> Option<*mut DestSource> {
    if let Some(st) = DEST_SOURCES.get_ptr_mut(key) {
        return Some(st);
    }
    // BPF_NOEXIST: if another CPU created it meanwhile, keep theirs.
    let _ = DEST_SOURCES.insert(key, &DestSource::default(), 1);
    DEST_SOURCES.get_ptr_mut(key)
}

/// The counter slot of the interface the frame came in on.
#[inline(always)]
fn iface_slot(ctx: *mut RawCtx) -> u32 {
    // SAFETY: the program's context, valid for the whole run.
    let ifindex = unsafe { (*ctx).ingress_ifindex };
    match IFACE_SLOT.get(ifindex) {
        Some(s) => *s & IFACE_SLOT_MASK,
        None => 0,
    }
}

/// INVITEs by class, and international ones by country code.
#[inline(always)]
fn count(slot: u32, d: &Dialled) {
    let base = slot * DEST_STATS_PER_IFACE;
    let cc = dest::country(d);
    if cc != 0 && cc < DEST_CLASS_SLOT {
        if let Some(c) = DEST_STATS.get_ptr_mut(base + cc) {
            // Per-CPU slot: no other writer.
            // SAFETY: a per-CPU map slot, valid for this run; no other writer.
            unsafe { *c += 1 };
        }
    }
    if let Some(c) = DEST_STATS.get_ptr_mut(base + DEST_CLASS_SLOT + d.class() as u32) {
        // SAFETY: a per-CPU map slot, valid for this run; no other writer.
        unsafe { *c += 1 };
    }
}

/// A token from the host-wide bucket `i` of `DEST_BUDGET` (0: replies,
/// 1: reports).
#[inline(always)]
fn take(i: u32, now: u64, b: &shield_common::Bucket) -> bool {
    if !b.is_limited() {
        return false;
    }
    match DEST_BUDGET.get_ptr_mut(i) {
        // SAFETY: a map value (or ring record) from a successful lookup, valid for this run; plain integers.
        Some(budget) => spend(unsafe { &raw mut (*budget).tat }, now, b),
        None => false,
    }
}

/// Counts a refusal in the source's window; at `escalate` of them the
/// source is reported for a ban (reason `destination`), unless verified.
#[inline(always)]
fn escalate(p: &Policy, dp: &dest::DestPolicy, inv: &Invite, now: u64) {
    let src = invite_src(inv);
    let key = src_key(&src, p);
    let Some(st) = caller(&key) else {
        return;
    };
    // SAFETY: a map value from a successful lookup, valid for this run; plain integers.
    unsafe {
        if now.wrapping_sub((*st).start_ns) >= p.escalate_window_ns {
            (*st).start_ns = now;
            (*st).refusals = 0;
        }
        let n = (*st).refusals + 1;
        (*st).refusals = n;
        if n != dp.escalate as u64 {
            return;
        }
    }
    if !report_offender(&key, &src, p, now, Reason::Destination, dp.escalate) {
        // The ring is full: the next refusal reports it again.
        // SAFETY: a map value (or ring record) from a successful lookup, valid for this run; plain integers.
        unsafe { (*st).refusals = dp.escalate as u64 - 1 };
    }
}

/// The `len` payload bytes at `pay` into `scratch.event.payload`: eight
/// at a time, then the last eight again (overlapping) so the tail is one
/// more load, not a byte loop. False if the frame is shorter (never, for
/// a payload the caller measured).
#[inline(always)]
fn copy_payload(ctx: *mut RawCtx, scratch: *mut Scratch, pay: usize, len: usize) -> bool {
    let pkt = Pkt::of(ctx);
    if pay > MAX_PAYLOAD_OFFSET || len > REFUSAL_PAYLOAD {
        return false;
    }
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let out = unsafe { (&raw mut (*scratch).event.payload).cast::<u8>() };
    if len < 8 {
        for i in 0..8 {
            if i >= len {
                break;
            }
            let Some(b) = pkt.byte_at(pay + i) else {
                return false;
            };
            // SAFETY: `out` is the scratch event's payload and `i` < its length (checked on entry).
            unsafe { *out.add(i) = b };
        }
        return true;
    }
    for k in 0..REFUSAL_PAYLOAD / 8 {
        if k * 8 + 8 > len {
            break;
        }
        let Some(w) = pkt.ptr_at::<[u8; 8]>(pay + k * 8) else {
            return false;
        };
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        unsafe { core::ptr::copy_nonoverlapping(w.cast::<u8>(), out.add(k * 8), 8) };
    }
    // black_box: otherwise LLVM checks `pay + len` against the end and
    // reads at -8 from there, which the verifier refuses.
    let tail = core::hint::black_box(len - 8);
    if tail > REFUSAL_PAYLOAD - 8 {
        return false;
    }
    let Some(w) = pkt.ptr_at::<[u8; 8]>(pay + tail) else {
        return false;
    };
    // SAFETY: inside the frame: the bounds check above covers every byte read.
    unsafe { core::ptr::copy_nonoverlapping(w.cast::<u8>(), out.add(tail), 8) };
    true
}

/// The Request-URI's first `URI_WINDOW` bytes (at payload offset `at`,
/// `avail` left) into `SCRATCH.uri`; 1, or 0 if out of reach. A global of
/// its own: inlined, each exit of its byte loop would go on through the
/// parse as a verifier state of its own.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_copy_uri(ctx: *mut RawCtx, at: u64, avail: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let pkt = Pkt::of(ctx);
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    lines::copy_into(&pkt, unsafe { &mut (*scratch).uri }, at, avail) as u64
}
