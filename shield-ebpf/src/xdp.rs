//! The decision: SPEC §2's verdict, step by step. The same code runs as
//! the XDP program and, compiled again with another `crate::hook`, as the
//! tc ingress program (see `hook_xdp.rs`).

use aya_ebpf::EbpfContext;
use network_types::{eth::EthHdr, tcp::TcpHdr, udp::UdpHdr, vlan::VlanHdr};
use shield_common::{
    dest, sip, sip_stats_slot,
    srcstate::{gcra32, unit, TAT_METHOD, TAT_PACKET, TAT_SYN},
    stats_index, Method, PayloadKind, Policy, Reason, SrcKey, SrcState, Verdict, F_DROP_MALFORMED,
    F_ENFORCE, F_TRUNK_ONLY, MAX_L4_OFFSET, PORT_TCP, PORT_UDP,
};

use crate::hook::{frame_len, Ctx, RawCtx};
use crate::lists::lists_and_bans;
use crate::maps::{
    port_flags, BUDGET, DEST_POLICY, IFACE_SLOT, IFACE_SLOT_MASK, POLICY, SCRATCH, SIP_STATS, STATS,
};
use crate::pkt::{
    parse, src_key, Frame, Outcome, Pkt, Src, IPPROTO_NONE, IPPROTO_TCP, IPPROTO_UDP,
    L4_OFFSET_MASK, METHOD_MASK, NO_METHOD,
};
use crate::scratch::{launder, Scratch};
use crate::source::{escalate, found, now_ns, offence, source, spend, spend_src, tat_at, verified};
use crate::ua::scanner;

/// The decision for the frame `pkt` of `ctx`, counted (and sampled when
/// not a pass); the hook's entry point (`crate::hook`) turns it into its
/// action.
#[inline(always)]
pub(crate) fn verdict(ctx: &Ctx, pkt: &Pkt) -> Verdict {
    let Some(policy) = POLICY.get(0) else {
        return Verdict::Pass;
    };
    let out = decide(ctx, pkt, policy);
    let verdict = Verdict::of(out.reason, policy.has(F_ENFORCE));
    // From the context, not `pkt.len()`: keeping the two packet pointers
    // alive across `decide` made the verifier carry them through all its
    // states (58,000 more instructions processed).
    let len = frame_len(ctx);
    account(ctx, len, &out, verdict);
    if verdict != Verdict::Pass {
        crate::sample::dropped(ctx, len, out.reason as u8);
    }
    verdict
}

#[inline(always)]
fn account(ctx: &Ctx, len: usize, out: &Outcome, verdict: Verdict) {
    let raw: *mut RawCtx = ctx.as_ptr().cast();
    // SAFETY: the program's context, valid for the whole run.
    let ifindex = unsafe { (*raw).ingress_ifindex };
    let slot = match IFACE_SLOT.get(ifindex) {
        Some(s) => *s & IFACE_SLOT_MASK,
        None => 0,
    };
    if let Some(c) = STATS.get_ptr_mut(stats_index(slot, verdict, out.reason)) {
        // SAFETY: a per-CPU map slot, valid for this run; no other writer.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
    }
    if out.method < Method::COUNT {
        if let Some(c) = SIP_STATS.get_ptr_mut(sip_stats_slot(slot, out.method as u32, verdict)) {
            // SAFETY: a per-CPU map slot, valid for this run; no other writer.
            unsafe { *c += 1 };
        }
    }
}

/// SPEC §2 in its order, each step a function named after it that returns
/// `Some(outcome)` (or `Err(outcome)`) when it decides the verdict.
#[inline(always)]
fn decide(ctx: &Ctx, pkt: &Pkt, p: &Policy) -> Outcome {
    // Step 1: not IP, or a truncated header: pass untouched.
    let Some(f) = parse(pkt) else {
        return Outcome::of(Reason::Ok);
    };
    let (held, trusted) = match lists_and_bans(p, &f.src) {
        Ok(held) => (held, false),
        // SPEC §11: an allowlisted source's INVITEs may still meet the
        // destination policy (after the launder below: one state).
        Err(out) if matches!(out.reason, Reason::Allowlisted) && checks_allowlisted() => {
            (None, true)
        }
        Err(out) => return out,
    };

    // From here on one verifier state covers every L2/L3 shape: the
    // transport offset is laundered, so VLAN and extension-header variants
    // do not each re-verify the SIP checks.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Outcome::of(Reason::Ok);
    };
    crate::walk::start(scratch);
    let mut f = f;
    let far = f.l4 > MAX_L4_OFFSET;
    f.l4 = launder(scratch, f.l4) & L4_OFFSET_MASK;
    if trusted {
        return allowlisted(ctx, p, &f, far, scratch);
    }
    if let Some(out) = out_of_reach(p, &f, far, held) {
        return out;
    }
    if far {
        // Neither UDP nor TCP (see `out_of_reach`): nothing to read there.
        f.proto = IPPROTO_NONE;
    }

    let (udp, tcp) = transport(pkt, &f);
    if let Some(out) = protected_port(p, &f, udp, tcp, held) {
        return out;
    }
    if let Some(out) = trunk_only(p) {
        return out;
    }

    let mut sip = NOT_SIP;
    let mut syn = false;
    if udp.is_some() {
        let udp = udp.unwrap_or(core::ptr::null());
        sip = match sip_payload(ctx, pkt, p, &f.src, udp, f.l4, scratch) {
            Ok(s) => s,
            Err(out) => return out,
        };
    } else if let Some(t) = tcp {
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        syn = unsafe { (*t).syn() != 0 && (*t).ack() == 0 };
    }
    let method = sip.method;
    let out = if sip.held {
        Outcome {
            reason: Reason::Ok,
            method,
        }
    } else {
        buckets(p, &f.src, method, syn, sip.state, sip.now)
    };
    if !matches!(out.reason, Reason::Ok) {
        return out;
    }
    passed(ctx, p, &f, &sip, udp.is_some(), tcp.is_some(), scratch).unwrap_or(out)
}

/// What follows for a packet that passed steps 2-9: step 9b for an initial
/// UDP INVITE, then the transaction table; for a TCP segment, the request
/// starting it (`tcp::request`). `Some`: a step 9b refusal.
#[inline(always)]
fn passed(
    ctx: &Ctx,
    p: &Policy,
    f: &Frame,
    sip: &Sip,
    udp: bool,
    tcp: bool,
    scratch: *mut Scratch,
) -> Option<Outcome> {
    let method = sip.method;
    if tcp {
        // The request starting the segment: its call, its CANCEL, its
        // credentials (`tcp`).
        return crate::tcp::request(ctx, f, scratch, false);
    }
    // Step 9b: an INVITE that passed the buckets meets the destination
    // policy (SPEC §11).
    if method == Method::Invite as usize && udp {
        let v6 = if matches!(f.src, Src::V6(_)) {
            dest_v6()
        } else {
            0
        };
        if let Some(r) = crate::dest::check(ctx, p, &f.src, f.l3 as u64 | v6, f.l4) {
            return Some(Outcome { reason: r, method });
        }
        // Then the per-source call limit (SPEC §13).
        if let Err(r) = crate::calls::invite(ctx, true, false) {
            return Some(Outcome { reason: r, method });
        }
    }
    if method == Method::Cancel as usize && udp {
        crate::calls::cancel(ctx, p, &f.src, sip.payload);
    }
    // A request that passes and may verify its source is remembered, for
    // the egress classifier to pair the server's 2xx with (SPEC §8).
    let fresh = p.verifies(method);
    if fresh {
        crate::txn::remember(ctx, p, &f.src, method, sip.payload, scratch);
    } else if sip.reply && p.verify_methods != 0 && !verified(p, &f.src, now_ns()) {
        crate::txn::contest(ctx, p, sip.payload, scratch);
    }
    // Digest credentials (SPEC §12): one call, the work in globals.
    let meta = crate::auth::meta(f.l3 as u64, matches!(f.src, Src::V6(_)));
    crate::auth::attempt(ctx, method, sip.payload, meta);
    None
}

/// Step 2 with SPEC §11's exception: an allowlisted source passes, but
/// its initial UDP INVITEs still meet the destination policy (its TCP
/// INVITEs are only counted and tracked) (a hacked PBX
/// on a trusted address is the classic toll fraud), unless
/// `check_allowlisted = false` or there is nothing to refuse. Reached
/// after the launder: one verifier state for every L2/L3 shape.
#[inline(always)]
fn allowlisted(ctx: &Ctx, p: &Policy, f: &Frame, far: bool, scratch: *mut Scratch) -> Outcome {
    let pass = Outcome::of(Reason::Allowlisted);
    if far || f.later_fragment || (f.proto != IPPROTO_UDP && f.proto != IPPROTO_TCP) {
        return pass;
    }
    let v6 = if matches!(f.src, Src::V6(_)) {
        dest_v6()
    } else {
        0
    };
    let l3 = launder(scratch, f.l3) as u64 & L3_OFFSET_MASK;
    if f.proto == IPPROTO_TCP {
        // Every request of the segment: INVITEs tracked, never limited,
        // never refused (see `dest::tcp_invite`); CANCELs read.
        let _ = crate::tcp::request(ctx, f, scratch, true);
        return pass;
    }
    let meta = l3 | v6 | crate::dest::ALLOWLISTED;
    match crate::dest::check(ctx, p, &f.src, meta, f.l4) {
        Some(r) => Outcome {
            reason: r,
            method: Method::Invite as usize,
        },
        None => {
            // Tracked, never limited: the allowlist overrides the limit.
            let _ = crate::calls::invite(ctx, false, false);
            crate::calls::allowlisted_cancel(ctx, scratch, meta, f.l4);
            pass
        }
    }
}

/// Whether step 2 lets allowlisted sources meet the destination policy.
/// Also when it refuses nothing: their calls are tracked (SPEC §13).
#[inline(always)]
fn checks_allowlisted() -> bool {
    DEST_POLICY
        .get(0)
        .is_some_and(|dp| dp.has(dest::D_CHECK_ALLOWLISTED))
}

/// Masks a laundered IP header offset (at most two VLAN tags in) back into
/// a range the verifier knows.
pub(crate) const L3_OFFSET_MASK: u64 = 63;
const _: () = assert!(EthHdr::LEN + 2 * VlanHdr::LEN <= L3_OFFSET_MASK as usize);

#[inline(always)]
const fn dest_v6() -> u64 {
    crate::dest::V6
}

/// Step 1's exception: a complete packet whose transport we cannot reach —
/// the extension chain goes on past what we walk, or a UDP/TCP header lies
/// beyond MAX_L4_OFFSET (`far`; a later fragment has no transport header to
/// find).
#[inline(always)]
fn out_of_reach(p: &Policy, f: &Frame, far: bool, held: Option<Reason>) -> Option<Outcome> {
    let tcp_or_udp = f.proto == IPPROTO_UDP || f.proto == IPPROTO_TCP;
    if !(f.unwalked || (far && tcp_or_udp && !f.later_fragment)) {
        return None;
    }
    // The kernel's stack walks any chain to its end, so this must not be a
    // way around the shield. The port is unknown: when in doubt, treat it as
    // protected. Deny and ban (scope "sip" too) win; otherwise drop
    // `malformed`, counted as an offence. Not subject to `[sip]
    // drop_malformed`: that option is about payloads that are not SIP, and
    // this payload was never looked at — the chain itself is what we cannot
    // parse, and no SIP peer sends one like it (RFC 8200: each extension
    // header at most once, destination options twice). Checked after the
    // launder: one verifier state for all such chains.
    Some(match held {
        Some(r) => Outcome::of(r),
        None => offence(&f.src, p, Reason::Malformed, NO_METHOD),
    })
}

/// The UDP or TCP header, if that is the transport and it is in the frame
/// (a later fragment has none).
#[inline(always)]
fn transport(pkt: &Pkt, f: &Frame) -> (Option<*const UdpHdr>, Option<*const TcpHdr>) {
    if f.later_fragment {
        (None, None)
    } else {
        (
            if f.proto == IPPROTO_UDP {
                pkt.ptr_at::<UdpHdr>(f.l4)
            } else {
                None
            },
            if f.proto == IPPROTO_TCP {
                pkt.ptr_at::<TcpHdr>(f.l4)
            } else {
                None
            },
        )
    }
}

/// Step 5: only packets to a protected port go on. Deny and ban held back
/// by `scope = "sip"` apply here; a later fragment (no port) gets the packet
/// bucket only.
#[inline(always)]
fn protected_port(
    p: &Policy,
    f: &Frame,
    udp: Option<*const UdpHdr>,
    tcp: Option<*const TcpHdr>,
    held: Option<Reason>,
) -> Option<Outcome> {
    let protected = if let Some(u) = udp {
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        port_flags(unsafe { (*u).dst }) & PORT_UDP != 0
    } else if let Some(t) = tcp {
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        port_flags(unsafe { (*t).dest }) & PORT_TCP != 0
    } else {
        false
    };
    if let Some(r) = held {
        if protected {
            // `[bans] scope = "sip"`: only protected ports are covered.
            return Some(Outcome::of(r));
        }
    }
    if f.later_fragment {
        return Some(later_fragment(p, &f.src));
    }
    if !protected {
        return Some(Outcome::of(Reason::Ok));
    }
    None
}

/// A fragment other than the first has no port: only the per-source packet
/// bucket applies. With the unverified budget on, a fragment from an
/// unverified source without state creates none (SPEC §2 step 7b): a
/// spoofed flood of fragments must not fill `SOURCES`.
#[inline(always)]
fn later_fragment(p: &Policy, src: &Src) -> Outcome {
    if p.packet.is_limited() {
        let key = src_key(src, p);
        let now = now_ns();
        let st = if p.unverified.is_limited() && !verified(p, src, now) {
            found(&key, now)
        } else {
            source(&key, now)
        };
        if let Some(st) = st {
            if !spend_src(st, TAT_PACKET, now, &p.packet) {
                escalate(st, &key, src, p, now, Reason::Rate);
                return Outcome::of(Reason::Rate);
            }
        }
    }
    Outcome::of(Reason::Ok)
}

/// Step 6: `trunk_only`.
#[inline(always)]
fn trunk_only(p: &Policy) -> Option<Outcome> {
    if p.has(F_TRUNK_ONLY) {
        return Some(Outcome::of(Reason::NotAllowed));
    }
    None
}

/// What steps 7-8 found in a UDP payload that passed them.
#[derive(Clone, Copy)]
struct Sip {
    /// The request's method index (laundered), or `NO_METHOD`.
    method: usize,
    /// The payload's offset and length.
    payload: (usize, usize),
    /// A status line: a reply coming in.
    reply: bool,
    /// Step 7b already held the source to its buckets (step 9 is done).
    held: bool,
    /// The source's state if the early `rate` check found it (null: not
    /// looked up, or none): step 9 spends from it without a second lookup.
    state: *mut SrcState,
    /// The time the early `rate` check read (0: none), reused by step 9.
    now: u64,
}

const NOT_SIP: Sip = Sip {
    method: NO_METHOD,
    payload: (0, 0),
    reply: false,
    held: false,
    state: core::ptr::null_mut(),
    now: 0,
};

/// Steps 7, 7b and 8 for a UDP packet: the payload must be SIP or a
/// keepalive, an unverified source must find a token in the shared budget,
/// and it must not come from a scanner.
#[inline(always)]
fn sip_payload(
    ctx: &Ctx,
    pkt: &Pkt,
    p: &Policy,
    src: &Src,
    udp: *const UdpHdr,
    l4: usize,
    scratch: *mut Scratch,
) -> Result<Sip, Outcome> {
    // SAFETY: inside the frame: the bounds check above covers every byte read.
    let udp_len = u16::from_be_bytes(unsafe { (*udp).len }) as usize;
    let pay = l4 + UdpHdr::LEN;
    let in_frame = pkt.len().saturating_sub(pay);
    let plen = core::cmp::min(in_frame, udp_len.saturating_sub(UdpHdr::LEN));

    // The classifier reads no byte at or past `plen`, so copying a whole
    // HEAD_LEN block when the frame has it is exact. (Kept in SCRATCH: the
    // stack is needed by the UA search's calls.)
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let head = unsafe { &mut (*scratch).head };
    pkt.copy_head(pay, head);
    let mut method = NO_METHOD;
    let mut reply = false;
    let _ = head;
    let code = shield_classify(plen as u64);
    let is_sip = if code < Method::COUNT as u64 {
        // A request. Laundered: fifteen methods would otherwise be
        // fifteen verifier states through everything below.
        method = launder(scratch, code as usize) & METHOD_MASK;
        true
    } else if code == KIND_RESPONSE {
        reply = true;
        true
    } else if code == KIND_KEEPALIVE {
        false
    } else {
        if p.has(F_DROP_MALFORMED) {
            return Err(offence(src, p, Reason::Malformed, NO_METHOD));
        }
        false
    };
    // SPEC §2's allowed reordering: a source whose packet bucket is
    // already empty is dropped `rate` before the budget and the User-Agent
    // scan, so a single-source flood costs one lookup, not a header search.
    let (state, now) = bucket_empty(p, src, method)?;
    // Before the User-Agent scan and before any per-source state: a
    // spoofed flood's packet costs a lookup and a read of the shared line.
    let held = unverified(p, src, method, state)?;
    if is_sip {
        if let Some(out) = scanner(ctx, p, src, (pay, plen), method, reply, scratch) {
            return Err(out);
        }
    }
    Ok(Sip {
        method,
        payload: (pay, plen),
        reply,
        held,
        state,
        now,
    })
}

/// The early `rate` drop (SPEC §2's allowed difference): a source that has
/// state and whose packet bucket is empty now. Only reads the bucket: a
/// source with a token goes on and spends it at step 9 (or 7b) as before,
/// so steps 7-8 still see every packet that step 9 would pass. `Ok`: the
/// state it found and the time it read, for the later steps (null and 0:
/// none, or not looked up).
#[inline(always)]
fn bucket_empty(p: &Policy, src: &Src, method: usize) -> Result<(*mut SrcState, u64), Outcome> {
    if !p.packet.is_limited() {
        return Ok((core::ptr::null_mut(), 0));
    }
    let key = src_key(src, p);
    let now = now_ns();
    let Some(st) = found(&key, now) else {
        return Ok((core::ptr::null_mut(), 0));
    };
    if gcra32(tat_at(st, TAT_PACKET), unit(now), &p.packet).is_some() {
        return Ok((st, now));
    }
    escalate(st, &key, src, p, now, Reason::Rate);
    Err(Outcome {
        reason: Reason::Rate,
        method,
    })
}

/// `sip::classify` on `SCRATCH.head` for a payload of `plen` bytes, as a
/// code: the method index of a request, or one of the `KIND_*` below. A
/// global function: inlined, the classifier's byte compares spill a
/// dozen registers into the XDP program's frame, which every call chain
/// below it carries (the 512-byte limit is for the whole chain).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_classify(plen: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return KIND_NOT_SIP;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    match sip::classify(unsafe { &(*scratch).head }, plen as usize) {
        PayloadKind::Request(m) => m as u64,
        PayloadKind::Response => KIND_RESPONSE,
        PayloadKind::Keepalive => KIND_KEEPALIVE,
        PayloadKind::NotSip => KIND_NOT_SIP,
    }
}

const KIND_RESPONSE: u64 = 0x100;
const KIND_KEEPALIVE: u64 = 0x101;
const KIND_NOT_SIP: u64 = 0x102;
const _: () = assert!(Method::COUNT as u64 <= KIND_RESPONSE);

/// Step 7b: a source neither allowlisted (returned earlier) nor verified
/// spends a token from the bucket all of them share. Not an offence: the
/// source address of such a packet proves nothing. A source that has state
/// (it was granted a token before) is first held to its own buckets, so a
/// real flooder is dropped `rate` and escalated instead of draining the
/// shared budget; a packet never creates state here. `Ok(true)`: the
/// source's buckets were spent (step 9 is done).
#[inline(always)]
fn unverified(p: &Policy, src: &Src, method: usize, state: *mut SrcState) -> Result<bool, Outcome> {
    if !p.unverified.is_limited() {
        return Ok(false);
    }
    let now = now_ns();
    if verified(p, src, now) {
        return Ok(false);
    }
    let key = src_key(src, p);
    let st = if state.is_null() {
        found(&key, now)
    } else {
        Some(state)
    };
    let held = match st {
        Some(st) => match held_to_buckets(p, src, &key, st, method, false, now) {
            Some(out) => return Err(out),
            None => true,
        },
        None => false,
    };
    let Some(budget) = BUDGET.get_ptr_mut(0) else {
        return Ok(held);
    };
    // `spend` writes (one CAS) only when it grants a token: while the
    // bucket is empty every CPU only reads the line.
    // SAFETY: a map value (or ring record) from a successful lookup, valid for this run; plain integers.
    if spend(unsafe { &raw mut (*budget).tat }, now, &p.unverified) {
        return Ok(held);
    }
    Err(Outcome {
        reason: Reason::Unverified,
        method,
    })
}

/// Steps 9 and 10: the source's token buckets, then pass. `state`: the
/// source's state if an earlier step found it (null: look it up, creating
/// it); `now`: the time that step read (0: not read yet).
#[inline(always)]
fn buckets(
    p: &Policy,
    src: &Src,
    method: usize,
    syn: bool,
    state: *mut SrcState,
    now: u64,
) -> Outcome {
    let syn_bucket = syn && p.syn.is_limited();
    if p.packet.is_limited() || p.method_bucket_at(method).is_some() || syn_bucket {
        let key = src_key(src, p);
        let now = if now == 0 { now_ns() } else { now };
        let st = if state.is_null() {
            source(&key, now)
        } else {
            Some(state)
        };
        if let Some(st) = st {
            if let Some(out) = held_to_buckets(p, src, &key, st, method, syn_bucket, now) {
                return out;
            }
        }
    }
    Outcome {
        reason: Reason::Ok,
        method,
    }
}

/// Spends from the source's packet bucket, its method's bucket and (for a
/// SYN) the SYN bucket: DROP `rate`, escalated, when one is empty.
#[inline(always)]
fn held_to_buckets(
    p: &Policy,
    src: &Src,
    key: &SrcKey,
    st: *mut SrcState,
    method: usize,
    syn_bucket: bool,
    now: u64,
) -> Option<Outcome> {
    let ok = (!p.packet.is_limited() || spend_src(st, TAT_PACKET, now, &p.packet))
        && match p.method_bucket_at(method) {
            // (`i < METHOD_BUCKETS` by construction; the check is for
            // the verifier, which loses the bound of a modulo.)
            Some((i, b)) if i < shield_common::METHOD_BUCKETS => {
                spend_src(st, TAT_METHOD + i, now, b)
            }
            Some(_) => true,
            None => true,
        }
        && (!syn_bucket || spend_src(st, TAT_SYN, now, &p.syn));
    if ok {
        return None;
    }
    escalate(st, key, src, p, now, Reason::Rate);
    Some(Outcome {
        reason: Reason::Rate,
        method,
    })
}
