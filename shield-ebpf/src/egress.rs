//! The egress classifier (SPEC §8): reads the SIP responses the server
//! sends from a protected port, counts them by CSeq method and status
//! class, and marks the destination of a final 2xx verified when it
//! answers a request of an authenticated method that the XDP program saw
//! from that destination (same Call-ID and CSeq, within 32 s). A spoofer never receives the digest challenge, so it
//! never gets such a reply: this is what tells real sources from forged
//! ones. Every message of a TCP segment is read in turn (see `messages`).
//!
//! It never changes or drops a packet: every path returns `TC_ACT_UNSPEC`
//! (`TCX_NEXT` on tcx), "carry on as if I were not here".

use core::intrinsics::{atomic_or, AtomicOrdering::Relaxed};

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
    EbpfContext,
};
use network_types::{
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};
use shield_common::{
    framing::{starts_message, FRAMING_LETTERS, SEGMENT_MAX_MESSAGES},
    response, responses_slot,
    txn::{TxnIds, TXN_MAX_C_LINES},
    verified_hint, Method, Policy, SrcKey, Verified, MAX_L4_OFFSET, PORT_TCP,
    PORT_UDP, RESPONSE_CLASSES, VERIFIED_BY_REPLY,
};

use crate::lines::{self, LINE_BAD};
use crate::maps::{
    port_flags, EGRESS_SCRATCH, IFACE_SLOT, IFACE_SLOT_MASK, POLICY, RESPONSES, VERIFIED,
    VERIFIED_HINT,
};
use crate::pkt::{
    parse, src_key, Frame, Pkt, Src, IPPROTO_TCP, IPPROTO_UDP, L4_OFFSET_MASK, MAX_PAYLOAD_OFFSET,
    METHOD_MASK, NO_METHOD,
};
use crate::scratch::{launder, Scratch};
use crate::source::now_ns;

/// Bytes made linear before parsing: headers plus the search window.
const PULL_LEN: u32 = 2048;

#[classifier]
pub fn shield_egress(ctx: TcContext) -> i32 {
    egress(&ctx);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn egress(ctx: &TcContext) {
    // A socket's skb may keep its payload in page fragments; direct packet
    // access sees only the linear part. Pulling never changes the bytes.
    let len = core::cmp::min(ctx.len(), PULL_LEN);
    if ctx.data_end() - ctx.data() < len as usize {
        let _ = ctx.pull_data(len);
    }
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    let pkt = Pkt::skb(skb);
    let Some(f) = parse(&pkt) else {
        return;
    };
    let Some(scratch) = EGRESS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let Some((pay, plen, tcp)) = response_payload(&pkt, &f, scratch) else {
        return;
    };
    let l3 = launder(scratch, f.l3) as u64 & crate::xdp::L3_OFFSET_MASK;
    let meta = crate::auth::meta(l3, matches!(f.dst, Src::V6(_)));
    messages(skb, (pay as u64, plen as u64), meta, tcp);
}

/// Reads the SIP messages of the payload at `pay` (`plen` bytes): a UDP
/// datagram's one; over TCP, up to `SEGMENT_MAX_MESSAGES` back to back, as
/// long as each one's end is known (`shield_common::framing`). A server
/// writes a CANCEL's 200 and the INVITE's 487 at once: both ride in one
/// segment, and the 487 is what ends the call `cancelled`.
///
/// A loop over two globals, in this frame: each message's work is
/// verified once, and its chain of frames (the auth and call steps
/// under it) sits under this small frame only.
#[inline(always)]
fn messages(skb: *mut __sk_buff, (pay, plen): (u64, u64), meta: u64, tcp: bool) {
    let (mut at, mut left) = (pay, plen);
    for _ in 0..SEGMENT_MAX_MESSAGES {
        if shield_egress_message(skb, at, left, meta) == 0 || !tcp {
            return;
        }
        let n = shield_egress_next(skb, at, left);
        if n == 0 || n >= left {
            return;
        }
        at += n;
        left -= n;
    }
}

/// One SIP message leaving the host, at `pay` (`plen` bytes), whose IP
/// header `meta` describes (see `auth::meta`): a response is counted, and
/// a final one settles its transaction and attempt, may verify its
/// destination, and answers, fails or ends its call. 1 when it is a SIP
/// message (a response, or a request leaving the host: counted nowhere),
/// so that the one after it may be read; 0 otherwise.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_message(skb: *mut __sk_buff, pay: u64, plen: u64, meta: u64) -> u64 {
    let (Some(p), Some(scratch)) = (POLICY.get(0), EGRESS_SCRATCH.get_ptr_mut(0)) else {
        return 0;
    };
    if pay > MAX_PAYLOAD_OFFSET as u64 || plen > 0xffff {
        return 0; // (a later message of a segment may start out of reach)
    }
    let (pay, plen) = (pay as usize, plen as usize);
    let pkt = Pkt::skb(skb);
    // The status line: copy a HEAD_LEN block when the frame has it.
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let head = unsafe { &mut (*scratch).head };
    pkt.copy_head(pay, head);
    let Some(class) = response::status_class(head, plen) else {
        return starts_message(head, plen) as u64;
    };
    reply(skb, p, scratch, (pay, plen), meta, class);
    1
}

/// [`shield_egress_message`] for a response of status class `class`.
#[inline(always)]
fn reply(
    skb: *mut __sk_buff,
    p: &Policy,
    scratch: *mut Scratch,
    (pay, plen): (usize, usize),
    meta: u64,
    class: u8,
) {
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    unsafe { (*scratch).ids = TxnIds::default() };
    shield_egress_txn(skb, pay as u64, plen as u64);
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let ids = unsafe { (*scratch).ids };
    let method = match ids.cseq {
        Some((_, m)) => launder(scratch, m as usize) & METHOD_MASK,
        None => NO_METHOD,
    };
    count(skb, method, class);
    if class < 2 {
        return; // provisional: the transaction goes on
    }
    // Only the first final reply to a request this destination really
    // sent may verify it (SPEC §8).
    let (Some(call_id), Some((cseq, _))) = (ids.call_id, ids.cseq) else {
        return;
    };
    if shield_egress_dst(skb, meta) == 0 {
        return;
    }
    // Read from scratch, not copied here: an address held in this frame
    // spreads over a register per byte and spills (the chain under this
    // frame has no room for that).
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let dst = unsafe { &(*scratch).dst };
    let verifies = crate::txn::settle(p, *dst, call_id, cseq, method, class);
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let status = shield_common::auth::status_code(unsafe { &(*scratch).head });
    if crate::auth::settle(skb, (pay, plen), meta, status, method) || verifies {
        verify(p, dst);
    }
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let challenge = shield_common::calls::is_challenge(unsafe { &(*scratch).head });
    crate::calls::reply(dst, call_id, method, class, challenge);
}

/// The destination of the frame whose IP header `meta` describes (see
/// `auth::meta`), keyed like a source, into `EGRESS_SCRATCH.dst`: 1, or 0
/// when the header is out of reach. A global: only scalars reach
/// `shield_egress_message`, and the address's bytes stay off its frame.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_dst(skb: *mut __sk_buff, meta: u64) -> u64 {
    let (Some(p), Some(scratch)) = (POLICY.get(0), EGRESS_SCRATCH.get_ptr_mut(0)) else {
        return 0;
    };
    let pkt = Pkt::skb(skb);
    let l3 = (meta & crate::auth::L3_MASK) as usize;
    let dst = if meta & crate::auth::META_V6 != 0 {
        let Some(ip) = pkt.ptr_at::<Ipv6Hdr>(l3) else {
            return 0;
        };
        // SAFETY: inside the frame: `ptr_at` checked the whole header.
        Src::V6(unsafe { (*ip).dst_addr })
    } else {
        let Some(ip) = pkt.ptr_at::<Ipv4Hdr>(l3) else {
            return 0;
        };
        // SAFETY: inside the frame: `ptr_at` checked the whole header.
        Src::V4(unsafe { (*ip).dst_addr })
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    unsafe { (*scratch).dst = src_key(&dst, p) };
    1
}

/// Where the message after the one at `pay` (`plen` bytes, the rest of
/// the segment) starts, in bytes from `pay`; 0: unknown, or past the
/// segment (see `lines::message_end`).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_next(skb: *mut __sk_buff, pay: u64, plen: u64) -> u64 {
    let Some(scratch) = EGRESS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    lines::message_end(
        &Pkt::skb(skb),
        scratch,
        pay,
        plen,
        |j, limit| shield_egress_frame_scan(skb, pay, j, limit),
        |at, avail| shield_egress_length_line(skb, at, avail),
    )
}

/// `lines::take_length_line` on the line at payload offset `at` (`avail`
/// bytes left).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_length_line(skb: *mut __sk_buff, at: u64, avail: u64) -> u64 {
    let Some(scratch) = EGRESS_SCRATCH.get_ptr_mut(0) else {
        return LINE_BAD;
    };
    lines::read_length_line(&Pkt::skb(skb), scratch, at, avail)
}

/// `lines::scan_block2` for lines starting with `c`/`C` or `l`/`L`
/// (Content-Length and its compact form).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_frame_scan(skb: *mut __sk_buff, pay: u64, j: u64, limit: u64) -> u64 {
    let (c, l) = FRAMING_LETTERS;
    lines::scan_block2(&Pkt::skb(skb), pay, j, limit, c, l)
}

/// Where the payload of a packet from a protected UDP or TCP port starts
/// and its length (laundered: one verifier state for every L2/L3 shape).
/// `None`: not from a protected port, a later fragment, or out of reach.
/// The flag: TCP (a segment may hold several messages).
#[inline(always)]
fn response_payload(pkt: &Pkt, f: &Frame, scratch: *mut Scratch) -> Option<(usize, usize, bool)> {
    if f.later_fragment || f.unwalked || f.l4 > MAX_L4_OFFSET {
        return None;
    }
    let l4 = launder(scratch, f.l4) & L4_OFFSET_MASK;
    let (pay, wire_len) = if f.proto == IPPROTO_UDP {
        let udp: *const UdpHdr = pkt.ptr_at(l4)?;
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        if port_flags(unsafe { (*udp).src }) & PORT_UDP == 0 {
            return None;
        }
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        let ulen = u16::from_be_bytes(unsafe { (*udp).len }) as usize;
        (l4 + UdpHdr::LEN, ulen.saturating_sub(UdpHdr::LEN))
    } else if f.proto == IPPROTO_TCP {
        let tcp: *const TcpHdr = pkt.ptr_at(l4)?;
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        if port_flags(unsafe { (*tcp).source }) & PORT_TCP == 0 {
            return None;
        }
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        let doff = unsafe { (*tcp).doff() } as usize * 4;
        if doff < TcpHdr::LEN {
            return None;
        }
        (l4 + doff, usize::MAX)
    } else {
        return None;
    };
    let plen = core::cmp::min(pkt.len().saturating_sub(pay), wire_len);
    Some((pay, plen, f.proto == IPPROTO_TCP))
}

/// Counts the response in `RESPONSES` (a missing or garbled CSeq counts as
/// method `OTHER`).
#[inline(always)]
fn count(skb: *mut __sk_buff, method: usize, class: u8) {
    // SAFETY: the program's context, valid for the whole run.
    let slot = match IFACE_SLOT.get(unsafe { (*skb).ifindex }) {
        Some(s) => *s & IFACE_SLOT_MASK,
        None => 0,
    };
    let m = if method < NO_METHOD {
        method
    } else {
        Method::Other as usize
    };
    let class = (class as u32).clamp(1, RESPONSE_CLASSES as u32);
    if let Some(c) = RESPONSES.get_ptr_mut(responses_slot(slot, m as u32, class)) {
        // Per-CPU slot: no other writer.
        // SAFETY: a per-CPU map slot, valid for this run; no other writer.
        unsafe { *c += 1 };
    }
}

/// Marks the response's destination (keyed `key`) verified until now +
/// `[verify] ttl`, never shortening a longer entry (an operator's, or one
/// for ever).
#[inline(always)]
fn verify(p: &Policy, key: &SrcKey) {
    let now = now_ns();
    let expires_ns = now.saturating_add(p.verify_ttl_ns);
    // SAFETY: a copy of a map value of plain integers; another CPU writing it meanwhile only makes the copy older.
    if let Some(v) = unsafe { VERIFIED.get(key) } {
        if v.expires_ns == 0 || v.expires_ns >= expires_ns {
            return;
        }
    }
    let v = Verified {
        expires_ns,
        how: VERIFIED_BY_REPLY,
        _pad: 0,
    };
    if VERIFIED.insert(key, &v, 0).is_err() {
        return;
    }
    // Then the hint, which the XDP program reads first. An atomic OR: two
    // CPUs setting bits of one word at once must both stay set.
    let (word, bit) = verified_hint(key);
    if let Some(w) = VERIFIED_HINT.get_ptr_mut(word) {
        // SAFETY: a map value (or ring record) from a successful lookup, valid for this run; plain integers.
        if unsafe { core::ptr::read_volatile(w) } & bit == 0 {
            // SAFETY: an aligned u64 inside a map value that stays valid for this run.
            unsafe { atomic_or::<u64, u64, { Relaxed }>(w, bit) };
        }
    }
}

/// Walks the response's `c` lines into `EGRESS_SCRATCH.ids` (see
/// `crate::txn`).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_txn(ctx: *mut __sk_buff, pay: u64, plen: u64) -> u64 {
    let Some(scratch) = EGRESS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    lines::find_line(
        &Pkt::skb(ctx),
        scratch,
        pay,
        plen,
        TXN_MAX_C_LINES,
        |j, limit| shield_egress_scan_block(ctx, pay, j, limit),
        |at, avail| shield_egress_txn_line(ctx, at, avail),
    )
}

/// `lines::take_txn_line` on the line at payload offset `at` (`avail` bytes
/// left).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_txn_line(ctx: *mut __sk_buff, at: u64, avail: u64) -> u64 {
    let Some(scratch) = EGRESS_SCRATCH.get_ptr_mut(0) else {
        return LINE_BAD;
    };
    if !lines::copy_window(&Pkt::skb(ctx), scratch, at, avail) {
        return LINE_BAD;
    }
    crate::lines::take_txn_line(scratch)
}

/// `lines::scan_block2` for lines starting with `c`/`C` or `i`/`I` (Call-ID,
/// CSeq, compact Call-ID).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_egress_scan_block(
    ctx: *mut __sk_buff,
    pay: u64,
    j: u64,
    limit: u64,
) -> u64 {
    let (c, i) = shield_common::txn::TXN_LETTERS;
    lines::scan_block2(&Pkt::skb(ctx), pay, j, limit, c, i)
}
