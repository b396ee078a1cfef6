//! The hook the decision runs on in this object: XDP. Its twin,
//! `hook_tc.rs`, is the crate root `tc_main.rs`'s: the same modules
//! compiled again for a tc/tcx ingress program on the socket buffer
//! (issue 22 item 4). Every module names the program's context through
//! this module's types, never `xdp_md` or `__sk_buff` directly, because a
//! global function's context argument must have the program type's own
//! context type: one source, two objects.

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        xdp_md,
    },
    macros::xdp,
    programs::XdpContext,
};
use shield_common::Verdict;

use crate::pkt::Pkt;

/// The program's raw context, as global functions take it.
pub(crate) type RawCtx = xdp_md;
/// The program's context, as aya hands it to the entry point.
pub(crate) type Ctx = XdpContext;

/// The frame's length (the byte counters, the samples): all of it is in
/// the buffer.
#[inline(always)]
pub(crate) fn frame_len(ctx: &Ctx) -> usize {
    ctx.data_end() - ctx.data()
}

#[xdp]
// Inlined into the entry aya's macro wraps it in (the macro keeps this
// attribute): as a function of its own it sat under an empty entry frame,
// which kernels that round every frame up to 32 bytes (5.15) count as 32,
// and the deepest chain came to 544 bytes there (scripts/bpf-stack.py).
#[inline(always)]
pub fn shield(ctx: XdpContext) -> u32 {
    let pkt = Pkt::new(&ctx);
    if crate::xdp::verdict(&ctx, &pkt) == Verdict::Drop {
        XDP_DROP
    } else {
        XDP_PASS
    }
}
