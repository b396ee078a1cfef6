//! The transaction table's two ends (SPEC §8, `shield_common::txn`): the
//! XDP program remembers a request that passed and may verify its source;
//! the egress classifier asks whether a final 2xx answers one.
//!
//! Both find the Call-ID and the CSeq with a walk over the `c` header
//! lines, the line itself parsed by the shared `txn_line` into
//! `Scratch::ids`: the XDP program in its one header walk (`walk`), the
//! egress classifier in its own (`egress`).

use aya_ebpf::EbpfContext;
use shield_common::{Method, Policy, SrcKey, Txn, TxnKey};

use crate::hook::Ctx;
use crate::maps::TXNS;
use crate::pkt::{src_key, Src};
use crate::scratch::Scratch;
use crate::source::now_ns;

/// Remembers the request in the payload at `pay` (`plen` bytes) from
/// `src`, whose request line has method index `method`, if it has a
/// Call-ID and a CSeq (from the packet's header walk).
#[inline(always)]
pub(crate) fn remember(
    ctx: &Ctx,
    p: &Policy,
    src: &Src,
    method: usize,
    (pay, plen): (usize, usize),
    scratch: *mut Scratch,
) {
    let Some((call_id, (cseq, cseq_method))) = request_ids(ctx, (pay, plen), scratch) else {
        return;
    };
    let key = txn_key(src_key(src, p), call_id, cseq);
    let txn = Txn {
        seen_ns: now_ns(),
        method: method as u32,
        cseq_method: cseq_method as u32,
    };
    let _ = TXNS.insert(&key, &txn, 0);
}

/// A final response (status class `class`, 2..=6) to `dst` with Call-ID
/// hash `call_id`, CSeq number `cseq` and CSeq method index `method`
/// settles the request remembered from `dst` that it answers: the record is
/// used up, so only the first final response counts (a forged 2xx relayed
/// after the server's own 401 finds nothing). True when that response is
/// a 2xx that verifies (see `Txn::verified_by`).
#[inline(always)]
pub(crate) fn settle(
    p: &Policy,
    dst: SrcKey,
    call_id: u64,
    cseq: u32,
    method: usize,
    class: u8,
) -> bool {
    let key = txn_key(dst, call_id, cseq);
    // SAFETY: a copy of a map value of plain integers; another CPU writing it meanwhile only makes the copy older.
    let Some(t) = (unsafe { TXNS.get(&key) }) else {
        return false;
    };
    let t = *t;
    if t.cseq_method != method as u32 {
        return false; // another transaction's reply: not this one's
    }
    let _ = TXNS.remove(&key);
    let now = now_ns();
    let contested =
        // SAFETY: a copy of a map value of plain integers; another CPU writing it meanwhile only makes the copy older.
        unsafe { TXNS.get(&TxnKey::contested(call_id, cseq)) }.is_some_and(|c| c.live(now));
    t.verified_by(p, class, now) && !contested
}

/// Marks the transaction of the reply in the payload at `pay` (`plen`
/// bytes), which came in from a source neither allowlisted nor verified,
/// contested (see `TxnKey::contested`), if its CSeq method verifies.
#[inline(always)]
pub(crate) fn contest(ctx: &Ctx, p: &Policy, (pay, plen): (usize, usize), scratch: *mut Scratch) {
    let Some((call_id, (cseq, cseq_method))) = request_ids(ctx, (pay, plen), scratch) else {
        return;
    };
    if !p.verifies(cseq_method as usize) {
        return;
    }
    let txn = Txn {
        seen_ns: now_ns(),
        method: cseq_method as u32,
        cseq_method: cseq_method as u32,
    };
    let _ = TXNS.insert(&TxnKey::contested(call_id, cseq), &txn, 0);
}

/// The Call-ID hash and the CSeq (number, method) of the message at `pay`
/// (`plen` bytes), from the packet's header walk; `None` unless both were
/// found.
#[inline(always)]
fn request_ids(
    ctx: &Ctx,
    (pay, plen): (usize, usize),
    scratch: *mut Scratch,
) -> Option<(u64, (u32, Method))> {
    walk_ids(ctx, pay, plen);
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let ids = unsafe { (*scratch).ids };
    Some((ids.call_id?, ids.cseq?))
}

#[inline(always)]
fn txn_key(src: SrcKey, call_id: u64, cseq: u32) -> TxnKey {
    TxnKey {
        src,
        call_id,
        cseq,
        _pad: 0,
    }
}

/// The request's Call-ID and CSeq into `SCRATCH.ids`: the packet's
/// header walk (searched now if it was not yet). Called from the XDP
/// program's own frame, not from a global: the walk's chain of globals
/// needs all the stack left under it.
#[inline(always)]
pub(crate) fn walk_ids(ctx: &Ctx, pay: usize, plen: usize) {
    crate::walk::shield_walk(
        ctx.as_ptr().cast(),
        pay as u64,
        plen as u64,
        crate::walk::W_TXN,
    );
}
