//! Sampled dropped packets for `shieldctl watch` (see shield-common's
//! `sample` module): off unless someone watches, 1 in N, bounded per
//! second and CPU, into the `SAMPLES` ring buffer; a sample that finds it
//! full is counted lost. Called once, where a drop is counted.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    EbpfContext,
};
use shield_common::{default_size, Sample, SampleConfig, SampleState, SAMPLE_CAP};

use crate::hook::{Ctx, RawCtx};
use crate::pkt::Pkt;
use crate::source::now_ns;

#[map]
static SAMPLES: RingBuf = RingBuf::with_byte_size(default_size::SAMPLES_BYTES, 0);
#[map]
static SAMPLE_CFG: Array<SampleConfig> = Array::with_max_entries(1, 0);
#[map]
static SAMPLE_STATE: PerCpuArray<SampleState> = PerCpuArray::with_max_entries(1, 0);

/// The maps declared here, for the check against `names::ALL` in main.rs.
pub(crate) const MAP_NAMES: &[&str] = &["SAMPLES", "SAMPLE_CFG", "SAMPLE_STATE"];

const SECOND_NS: u64 = 1_000_000_000;

/// A frame of `len` bytes was dropped for `reason`: maybe sample it.
#[inline(always)]
pub(crate) fn dropped(ctx: &Ctx, len: usize, reason: u8) {
    // Nobody watching: this lookup is the whole cost.
    let Some(cfg) = SAMPLE_CFG.get(0) else { return };
    if cfg.every == 0 {
        return;
    }
    let packed = cfg.every as u64 | (cfg.per_second as u64) << 32;
    shield_sample(ctx.as_ptr().cast(), len as u64, reason as u64, packed);
}

/// The sampling itself, a global function: it runs only while someone
/// watches, the verifier checks it once, and only scalars cross (the XDP
/// program's frame stays as it is). `cfg`: `every | per_second << 32`.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_sample(ctx: *mut RawCtx, len: u64, reason: u64, cfg: u64) -> u64 {
    let (every, per_second) = (cfg as u32, (cfg >> 32) as u32);
    if every == 0 {
        return 0;
    }
    let Some(st) = SAMPLE_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // Per-CPU slot: no other writer.
    // SAFETY: a map value (or ring record) from a successful lookup, valid for this run; plain integers.
    let st = unsafe { &mut *st };
    st.seen += 1;
    if st.seen % every as u64 != 0 {
        return 0;
    }
    let now = now_ns();
    if now.wrapping_sub(st.window_ns) >= SECOND_NS {
        st.window_ns = now;
        st.taken = 0;
    }
    if st.taken >= per_second as u64 {
        return 0;
    }
    st.taken += 1;
    let Some(mut e) = SAMPLES.reserve::<Sample>(0) else {
        st.lost += 1;
        return 0;
    };
    let s = e.as_mut_ptr();
    let cap = core::cmp::min(len, SAMPLE_CAP as u64) as usize;
    // SAFETY: `s` points at a reserved, writable `Sample`; `copy` writes
    // at most SAMPLE_CAP bytes, the size of `data`.
    let copied = unsafe {
        (*s).time_ns = now;
        (*s).ifindex = (*ctx).ingress_ifindex;
        (*s).len = len as u32;
        (*s).reason = reason as u8;
        (*s)._pad = [0; 3];
        copy(ctx, (&raw mut (*s).data).cast::<u8>(), cap)
    };
    if !copied {
        e.discard(0);
        return 0;
    }
    // SAFETY: a map value (or ring record) from a successful lookup, valid for this run; plain integers.
    unsafe { (*s).caplen = cap as u32 };
    st.sampled += 1;
    e.submit(0);
    1
}

/// The frame's first `cap` bytes (8 to SAMPLE_CAP) to `out`: eight at a
/// time, then the last eight again, overlapping, so the tail is one load
/// (`bpf_xdp_load_bytes` would do it in one call, but needs Linux 5.18).
#[inline(always)]
fn copy(ctx: *mut RawCtx, out: *mut u8, cap: usize) -> bool {
    let pkt = Pkt::of(ctx);
    if !(8..=SAMPLE_CAP as usize).contains(&cap) {
        return false;
    }
    for k in 0..SAMPLE_CAP as usize / 8 {
        if k * 8 + 8 > cap {
            break;
        }
        let Some(w) = pkt.ptr_at::<[u8; 8]>(k * 8) else {
            return false;
        };
        // SAFETY: k * 8 + 8 <= cap <= SAMPLE_CAP, inside `out`.
        unsafe { core::ptr::copy_nonoverlapping(w.cast::<u8>(), out.add(k * 8), 8) };
    }
    // black_box: otherwise LLVM checks `cap` against the end and reads at
    // -8 from there, which the verifier refuses.
    let tail = core::hint::black_box(cap - 8);
    if tail > SAMPLE_CAP as usize - 8 {
        return false;
    }
    let Some(w) = pkt.ptr_at::<[u8; 8]>(tail) else {
        return false;
    };
    // SAFETY: tail + 8 <= SAMPLE_CAP.
    unsafe { core::ptr::copy_nonoverlapping(w.cast::<u8>(), out.add(tail), 8) };
    true
}
