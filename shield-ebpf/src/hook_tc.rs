//! The hook the decision runs on in this object: tc (tcx on Linux >= 6.6,
//! a clsact filter before) ingress, on the socket buffer, for drivers
//! without native XDP (issue 22 item 4). Same decision as the XDP program
//! (`xdp::verdict`, the same modules compiled with this module as
//! `crate::hook`; see `hook_xdp.rs`).

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
};
use shield_common::Verdict;

use crate::pkt::Pkt;

/// The program's raw context, as global functions take it.
pub(crate) type RawCtx = __sk_buff;
/// The program's context, as aya hands it to the entry point.
pub(crate) type Ctx = TcContext;

/// Bytes made linear before the decision when the socket buffer keeps
/// more in page fragments: every byte the decision reads (headers at most
/// `MAX_L4_OFFSET` in, then header lines starting in the first
/// `UA_SCAN_LIMIT` payload bytes) of any frame that fits a page, which is
/// all an XDP program in driver mode sees of it too.
const PULL_LEN: u32 = 4096;

/// The frame's length (the byte counters, the samples): the whole socket
/// buffer, linear part and fragments (at ingress it starts at the
/// Ethernet header, as an XDP frame does).
#[inline(always)]
pub(crate) fn frame_len(ctx: &Ctx) -> usize {
    ctx.len() as usize
}

/// Pass is `TC_ACT_UNSPEC` (`TCX_NEXT` on tcx): the next program or filter
/// on the hook still runs, as after an XDP program's `XDP_PASS`; only a
/// drop ends the packet.
#[classifier]
// Inlined into the entry aya's macro wraps it in (the macro keeps this
// attribute): as a function of its own it sat under an empty entry frame,
// which kernels that round every frame up to 32 bytes (5.15) count as 32,
// and the deepest chain came to 544 bytes there (scripts/bpf-stack.py).
#[inline(always)]
pub fn shield_tc(ctx: TcContext) -> i32 {
    // Direct packet access sees only the linear part. A driver that builds
    // its skbs linear (most small frames) pays one comparison here.
    let len = core::cmp::min(ctx.len(), PULL_LEN);
    if ctx.data_end() - ctx.data() < len as usize {
        // Failing (no memory) leaves the skb as it was: the decision then
        // sees what is linear, as `Pkt`'s bounds checks allow.
        let _ = ctx.pull_data(len);
    }
    let pkt = Pkt::new(&ctx);
    if crate::xdp::verdict(&ctx, &pkt) == Verdict::Drop {
        TC_ACT_SHOT as i32
    } else {
        TC_ACT_UNSPEC
    }
}
