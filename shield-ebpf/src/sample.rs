//! Sampled dropped packets for `shieldctl watch` (see shield-common's
//! `sample` module): off unless someone watches, 1 in N, bounded per
//! second and CPU, into the `SAMPLES` ring buffer; a sample that finds it
//! full is counted lost. Called once, where a drop is counted.

use aya_ebpf::{
    bindings::xdp_md,
    helpers::generated::bpf_xdp_load_bytes,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use shield_common::{default_size, Sample, SampleConfig, SampleState, SAMPLE_CAP};

use crate::prog::now_ns;

#[map]
static SAMPLES: RingBuf = RingBuf::with_byte_size(default_size::SAMPLES_BYTES, 0);
#[map]
static SAMPLE_CFG: Array<SampleConfig> = Array::with_max_entries(1, 0);
#[map]
static SAMPLE_STATE: PerCpuArray<SampleState> = PerCpuArray::with_max_entries(1, 0);

/// The maps declared here, for the check against `names::ALL` in prog.rs.
pub(crate) const MAP_NAMES: &[&str] = &["SAMPLES", "SAMPLE_CFG", "SAMPLE_STATE"];

const SECOND_NS: u64 = 1_000_000_000;

/// A frame of `len` bytes was dropped for `reason`: maybe sample it.
#[inline(always)]
pub(crate) fn dropped(ctx: &XdpContext, len: usize, reason: u8) {
    // Nobody watching: this lookup is the whole cost.
    let Some(cfg) = SAMPLE_CFG.get(0) else { return };
    if cfg.every == 0 {
        return;
    }
    take(ctx.ctx, len as u64, reason, cfg.every, cfg.per_second);
}

/// The sampling itself, out of line: it runs only while someone watches,
/// and the verifier checks it once.
#[inline(never)]
fn take(ctx: *mut xdp_md, len: u64, reason: u8, every: u32, per_second: u32) {
    let Some(st) = SAMPLE_STATE.get_ptr_mut(0) else { return };
    // Per-CPU slot: no other writer.
    let st = unsafe { &mut *st };
    st.seen += 1;
    if st.seen % every as u64 != 0 {
        return;
    }
    let now = now_ns();
    if now.wrapping_sub(st.window_ns) >= SECOND_NS {
        st.window_ns = now;
        st.taken = 0;
    }
    if st.taken >= per_second as u64 {
        return;
    }
    st.taken += 1;
    let Some(mut e) = SAMPLES.reserve::<Sample>(0) else {
        st.lost += 1;
        return;
    };
    let s = e.as_mut_ptr();
    let mut cap = len as u32;
    if cap > SAMPLE_CAP {
        cap = SAMPLE_CAP;
    }
    // SAFETY: `s` points at a reserved, writable `Sample`; the copy is at
    // most SAMPLE_CAP bytes, the size of `data`.
    let copied = unsafe {
        (*s).time_ns = now;
        (*s).ifindex = (*ctx).ingress_ifindex;
        (*s).len = len as u32;
        (*s).reason = reason;
        (*s)._pad = [0; 3];
        cap > 0 && bpf_xdp_load_bytes(ctx, 0, (*s).data.as_mut_ptr().cast(), cap) == 0
    };
    if !copied {
        e.discard(0);
        return;
    }
    unsafe { (*s).caplen = cap };
    st.sampled += 1;
    e.submit(0);
}
