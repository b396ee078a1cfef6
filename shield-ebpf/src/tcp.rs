//! Plain-TCP requests (SPEC §12, §13): the requests of a TCP segment to
//! a protected port that passed steps 2-9, each read in turn (up to
//! `SEGMENT_MAX_MESSAGES`, while each one's end is known:
//! `shield_common::framing`). An INVITE opens its call
//! (`dest::tcp_invite`, `calls::invite`); a CANCEL marks the caller's
//! call cancelling; a REGISTER or INVITE with digest credentials is an
//! attempt (`auth::attempt`), exactly as over UDP: the same header walk,
//! the same globals, the payload starting at `l4 + doff * 4` plus the
//! message's offset.
//!
//! A request split across segments is not seen (neither is anything
//! inside TLS).

use aya_ebpf::EbpfContext;
use shield_common::{
    framing::{starts_message, FRAMING_LETTERS, SEGMENT_MAX_MESSAGES},
    sip::HEAD_LEN,
    Method, Reason,
};

use crate::dest::{msg_offset, ALLOWLISTED, MSG_SHIFT, V6};
use crate::hook::{Ctx, RawCtx};
use crate::lines::{self, LINE_BAD};
use crate::maps::{POLICY, SCRATCH};
use crate::pkt::{src_key, Frame, Outcome, Pkt, Src, MAX_PAYLOAD_OFFSET};
use crate::scratch::{launder, Scratch};
use crate::walk::W_CID;
use crate::xdp::L3_OFFSET_MASK;

/// Masks a payload offset (at most `MAX_PAYLOAD_OFFSET`) into a range the
/// verifier knows.
const PAY_MASK: u64 = (2 * MAX_PAYLOAD_OFFSET).next_power_of_two() as u64 - 1;
const _: () = assert!(MAX_PAYLOAD_OFFSET as u64 <= PAY_MASK);

/// A TCP segment (the frame `f`, to a protected port) passed steps 2-9:
/// its messages, each as [`message`] reads it, up to
/// `SEGMENT_MAX_MESSAGES` while each one's end is known. `Some`: an
/// INVITE whose source is at its call limit, dropped `calls` (the whole
/// segment: TCP sends it again, the messages before it included, which
/// are read again: a retransmitted INVITE opens no second call).
///
/// Inlined in the XDP program's frame, handing over to globals only: their
/// chains (the refusal's, the header walk's) need all the stack left under
/// that frame; none fits under another TCP global.
///
/// `allowlisted`: from a source step 2 let through (SPEC §11). Its calls
/// are tracked, never limited (so never `Some`), and its credentials are
/// not read, as over UDP.
#[inline(always)]
pub(crate) fn request(
    ctx: &Ctx,
    f: &Frame,
    scratch: *mut Scratch,
    allowlisted: bool,
) -> Option<Outcome> {
    let c: *mut RawCtx = ctx.as_ptr().cast();
    let v6 = if matches!(f.src, Src::V6(_)) { V6 } else { 0 };
    // Laundered: every L2/L3 shape goes on as one verifier state.
    let meta = launder(scratch, (f.l3 as u64 | v6) as usize) as u64 & (V6 | L3_OFFSET_MASK);
    let meta = if allowlisted { meta | ALLOWLISTED } else { meta };
    let mut off = 0;
    for _ in 0..SEGMENT_MAX_MESSAGES {
        let m = meta | off << MSG_SHIFT;
        let at = shield_tcp_request(c, m, f.l4 as u64);
        if at == 0 {
            return None;
        }
        let (pay, plen) = ((at >> 16) & PAY_MASK, at & 0xffff);
        if let Some(o) = message(ctx, m, f.l4, (pay, plen)) {
            return Some(o);
        }
        let n = shield_tcp_next(c, pay, plen);
        if n == 0 {
            return None;
        }
        off = (off + n) & 0xffff;
    }
    None
}

/// One request of the segment (`meta`: the IP header and the message's
/// offset; its payload at `pay`, `plen` bytes, its first bytes in
/// `SCRATCH.head`). An initial INVITE on an established connection opens
/// its call; a CANCEL on an established connection marks the caller's
/// call (a forged segment must not cancel someone's call); a REGISTER's
/// or INVITE's credentials are read as over UDP, whatever the connection:
/// a proven attempt carries a nonce the server sent to that very
/// address, which the author of a forged segment never sees, and the
/// server answers only on the real connection, so a forged segment's
/// attempt is never settled. `Some`: an INVITE whose source is at its
/// call limit (no 403 can answer inside a TCP stream; the client's TCP
/// sends the segment again, and it passes once a call of that source has
/// ended).
#[inline(always)]
fn message(ctx: &Ctx, meta: u64, l4: usize, (pay, plen): (u64, u64)) -> Option<Outcome> {
    let c: *mut RawCtx = ctx.as_ptr().cast();
    // The classifier of UDP payloads, on the head `shield_tcp_request`
    // copied (a global verified once, not a second copy inlined there).
    let method = crate::xdp::shield_classify(plen) as usize;
    if method == Method::Cancel as usize {
        if crate::conn::shield_tcp_established(c) != 0 {
            crate::walk::shield_walk(c, pay, plen, W_CID);
            shield_tcp_cancel();
        }
        return None;
    }
    let allowlisted = meta & ALLOWLISTED != 0;
    if method == Method::Invite as usize
        && crate::dest::tcp_invite(ctx, meta, l4)
        && crate::calls::invite(ctx, !allowlisted, true).is_err()
    {
        return Some(Outcome::of(Reason::Calls));
    }
    if allowlisted {
        return None;
    }
    // (Any other method, and a reply, is no attempt: `auth::attempt` asks.)
    let auth_meta = crate::auth::meta(meta & L3_OFFSET_MASK, meta & V6 != 0);
    crate::auth::attempt(ctx, method, (pay as usize, plen as usize), auth_meta);
    None
}

/// `calls::shield_call_cancel` for the CANCEL whose source is in
/// `SCRATCH.invite` and Call-ID in `SCRATCH.ids` (its key computed here,
/// not in the XDP program's frame).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_tcp_cancel() -> u64 {
    let (Some(scratch), Some(p)) = (SCRATCH.get_ptr_mut(0), POLICY.get(0)) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let src = crate::dest::invite_src(unsafe { &(*scratch).invite });
    let (hi, lo) = crate::calls::split(&src_key(&src, p));
    crate::calls::shield_call_cancel(hi, lo)
}

/// The payload of the message `msg_offset(meta)` bytes into the TCP
/// segment at `l4` (IP header per `meta`, as `dest::shield_invite_at`
/// takes it): `pay << 16 | plen` if its first `HEAD_LEN` bytes are in the
/// frame (copied to `SCRATCH.head`), else 0. Leaves the segment's
/// addresses and ports in `SCRATCH.invite` (for
/// `conn::shield_tcp_established`); for a later message, forgets the
/// header walk's findings (they were the message before's).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_tcp_request(ctx: *mut RawCtx, meta: u64, l4: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let pkt = Pkt::of(ctx);
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let inv = unsafe { &mut (*scratch).invite };
    let Some((pay, plen)) = crate::dest::segment(&pkt, meta, l4, true, inv) else {
        return 0;
    };
    inv.allowlisted = 0;
    let off = msg_offset(meta);
    if off >= plen {
        return 0;
    }
    if off != 0 {
        crate::walk::start(scratch);
    }
    let (pay, plen) = (pay + off, plen - off);
    if pay > MAX_PAYLOAD_OFFSET || plen > 0xffff {
        return 0;
    }
    let Some(h) = pkt.ptr_at::<[u8; HEAD_LEN]>(pay) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let head = unsafe { &mut (*scratch).head };
    // SAFETY: inside the frame: `ptr_at` checked all HEAD_LEN bytes.
    unsafe { core::ptr::copy_nonoverlapping(h.cast::<u8>(), head.as_mut_ptr(), HEAD_LEN) };
    (pay as u64) << 16 | plen as u64
}

/// Where the message after the one at `pay` (`plen` bytes, the rest of
/// the segment; its first bytes in `SCRATCH.head`) starts, in bytes from
/// `pay`: 0 when it does not start with a SIP start line, or its end is
/// unknown or past the segment (see `lines::message_end`).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_tcp_next(ctx: *mut RawCtx, pay: u64, plen: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    if !starts_message(unsafe { &(*scratch).head }, plen as usize) {
        return 0;
    }
    lines::message_end(
        &Pkt::of(ctx),
        scratch,
        pay,
        plen,
        |j, limit| shield_tcp_frame_scan(ctx, pay, j, limit),
        |at, avail| shield_tcp_length_line(ctx, at, avail),
    )
}

/// `lines::take_length_line` on the line at payload offset `at` (`avail`
/// bytes left).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_tcp_length_line(ctx: *mut RawCtx, at: u64, avail: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return LINE_BAD;
    };
    lines::read_length_line(&Pkt::of(ctx), scratch, at, avail)
}

/// `lines::scan_block2` for lines starting with `c`/`C` or `l`/`L`
/// (Content-Length and its compact form).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_tcp_frame_scan(ctx: *mut RawCtx, pay: u64, j: u64, limit: u64) -> u64 {
    let (c, l) = FRAMING_LETTERS;
    lines::scan_block2(&Pkt::of(ctx), pay, j, limit, c, l)
}
