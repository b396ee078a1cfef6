//! Per-source state (SPEC §2 step 9 and escalation) and verified sources
//! (SPEC §8): what the verdict, the destination policy and the egress
//! classifier share.

use core::intrinsics::{atomic_cxchg, AtomicOrdering::Relaxed};

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key};
use shield_common::{
    gcra, src_key_v4,
    srcstate::{epoch, fresh_word, gcra32, unit, SRC_TAT_WORDS},
    verified_hint, Bucket, Meta, OffenderEvent, Policy, Reason, SrcKey, SrcState, Verified,
    FAMILY_V4, FAMILY_V6, F_VERIFY_NETS_V4, F_VERIFY_NETS_V6,
};

use crate::maps::{
    EVENTS, EVENTS_LOST, SCRATCH, SOURCES, VERIFIED, VERIFIED_HINT, VERIFY_NETS_V4, VERIFY_NETS_V6,
};
use crate::pkt::{src_key, Outcome, Src};

/// `CLOCK_MONOTONIC_COARSE`: a tick's resolution (1-4 ms) is plenty for
/// ban expiry and for buckets — a GCRA's TAT advances by exact intervals, so
/// a coarse `now` only makes a bucket a tick stricter, never looser — and it
/// costs a fraction of `bpf_ktime_get_ns` on virtual machines.
#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// A drop that counts towards escalation (malformed, scanner).
#[inline(always)]
pub(crate) fn offence(src: &Src, p: &Policy, reason: Reason, method: usize) -> Outcome {
    if p.escalate_drops != 0 {
        let key = src_key(src, p);
        let now = now_ns();
        if let Some(st) = source(&key, now) {
            escalate(st, &key, src, p, now, reason);
        }
    }
    Outcome { reason, method }
}

/// The source's state, created with full buckets if it is new.
#[inline(always)]
pub(crate) fn source(key: &SrcKey, now: u64) -> Option<*mut SrcState> {
    if let Some(st) = found(key, now) {
        return Some(st);
    }
    // The new state is built in scratch: on the stack its bytes would
    // count against every call chain.
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let new = unsafe { &raw mut (*scratch).new_source };
    // SAFETY: as above.
    unsafe { new.write(SrcState::new(now)) };
    // BPF_NOEXIST: if another CPU created it meanwhile, keep theirs.
    // SAFETY: as above; the insert copies it.
    let _ = SOURCES.insert(key, unsafe { &*new }, 1);
    found(key, now)
}

/// The source's state if it has one, its times made fresh for `now` (see
/// `shield_common::srcstate`): in a new epoch, a call that clears the
/// times in the past, once per source every 18 minutes.
#[inline(always)]
pub(crate) fn found(key: &SrcKey, now: u64) -> Option<*mut SrcState> {
    let st = SOURCES.get_ptr_mut(key)?;
    // SAFETY: a map value from a successful lookup, valid for this run; plain integers.
    let meta = unsafe { core::ptr::read_volatile(&raw const (*st).meta) };
    if Meta::epoch(meta) != epoch(now) {
        let (hi, lo) = key.split_at(8);
        shield_src_fresh(
            u64::from_ne_bytes(hi.try_into().unwrap_or([0; 8])),
            u64::from_ne_bytes(lo.try_into().unwrap_or([0; 8])),
            now,
        );
    }
    Some(st)
}

/// Makes the state of the source keyed `hi:lo` (its key's two halves, in
/// memory order) fresh at `now`: each word of times with those in the past
/// cleared, by compare-and-swap (a word another CPU just changed holds a
/// time of now: left as it is), then the epoch. A global function: it
/// runs once per source per epoch, and the verifier checks it once.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_src_fresh(hi: u64, lo: u64, now: u64) -> u64 {
    let (h, l) = (hi.to_ne_bytes(), lo.to_ne_bytes());
    let key: SrcKey = [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ];
    let Some(st) = SOURCES.get_ptr_mut(&key) else {
        return 0;
    };
    // SAFETY: a map value from a successful lookup, valid for this run; plain integers.
    unsafe {
        let meta = core::ptr::read_volatile(&raw const (*st).meta);
        let behind = epoch(now).wrapping_sub(Meta::epoch(meta));
        let words = (&raw mut (*st).tat).cast::<u64>();
        for w in 0..SRC_TAT_WORDS {
            let word = words.add(w);
            let cur = core::ptr::read_volatile(word);
            let fresh = fresh_word(cur, unit(now), behind);
            if fresh != cur {
                let _ = atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(word, cur, fresh);
            }
        }
        let meta = core::ptr::read_volatile(&raw const (*st).meta);
        core::ptr::write_volatile(&raw mut (*st).meta, Meta::with_epoch(meta, epoch(now)));
    }
    1
}

/// The time at index `i` of a source's state (see `SrcState::tat`).
#[inline(always)]
pub(crate) fn tat_at(st: *mut SrcState, i: usize) -> u32 {
    // SAFETY: a map value from a successful lookup, valid for this run; `i` is a constant index in range.
    unsafe { core::ptr::read_volatile((&raw const (*st).tat).cast::<u32>().add(i)) }
}

/// Spends one token from the bucket `b` whose time is at index `i` (< 8)
/// of the source's state. A CAS of the 64-bit word that holds it (and its
/// neighbour, kept as it is) makes the update exact when the same source
/// is handled on several CPUs at once.
#[inline(always)]
pub(crate) fn spend_src(st: *mut SrcState, i: usize, now: u64, b: &Bucket) -> bool {
    // SAFETY: a map value from a successful lookup, valid for this run; word `i / 2 < 4` is inside it.
    let word = unsafe { (&raw mut (*st).tat).cast::<u64>().add(i / 2) };
    let shift = (i as u64 % 2) * 32;
    let now = unit(now);
    // SAFETY: an aligned u64 in a map value valid for this run.
    let mut cur = unsafe { core::ptr::read_volatile(word) };
    for _ in 0..4 {
        let Some(t) = gcra32((cur >> shift) as u32, now, b) else {
            return false;
        };
        let next = cur & !(0xffff_ffff_u64 << shift) | (t as u64) << shift;
        // SAFETY: an aligned u64 inside a map value that stays valid for this run.
        let (seen, _) = unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(word, cur, next) };
        if seen == cur {
            return true;
        }
        cur = seen;
    }
    false
}

/// Spends one token from the bucket whose TAT is at `tat`. A CAS makes the
/// update exact when the same source is handled on several CPUs at once.
#[inline(always)]
pub(crate) fn spend(tat: *mut u64, now: u64, b: &Bucket) -> bool {
    // SAFETY: `tat` is an aligned u64 in a map value valid for this run.
    let mut cur = unsafe { core::ptr::read_volatile(tat) };
    for _ in 0..4 {
        let Some(next) = gcra(cur, now, b) else {
            return false;
        };
        // Compare the returned value rather than use cmpxchg's success flag:
        // bitcode using the flag is rejected by bpf-linker 0.10's LLVM 22
        // reader ("Invalid record").
        // SAFETY: an aligned u64 inside a map value that stays valid for this run.
        let (seen, _) = unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(tat, cur, next) };
        if seen == cur {
            return true;
        }
        cur = seen;
    }
    // Lost the race four times in a row: the other CPUs are spending this
    // source's tokens, so treat it as empty.
    false
}

/// Counts a drop towards the source's escalation window and reports the
/// source to user space once it reaches the threshold.
#[inline(always)]
pub(crate) fn escalate(
    st: *mut SrcState,
    key: &SrcKey,
    src: &Src,
    p: &Policy,
    now: u64,
    reason: Reason,
) {
    // (`reason` is a constant at every call: the test folds away.)
    if p.escalate_drops == 0 || !reason.escalates() {
        return;
    }
    // A plain store: a lost update under a multi-CPU flood only delays the
    // report by a drop, and every CPU sees the count it wrote, so the
    // threshold is never skipped.
    // SAFETY: a source's state from a successful lookup, valid for this run.
    unsafe {
        let meta = core::ptr::read_volatile(&raw const (*st).meta);
        let meta = Meta::count_drop(meta, now, p.escalate_window_ns);
        core::ptr::write_volatile(&raw mut (*st).meta, meta);
        if Meta::drops(meta) != p.escalate_drops {
            return;
        }
    }
    // SPEC §2: a verified source is never escalation-banned (its address
    // can be forged); its packets are still dropped one by one.
    if verified(p, src, now) {
        return;
    }
    if !report_offender(key, src, p, now, reason, p.escalate_drops) {
        // The ring is full (the daemon is behind, or gone): step back
        // below the threshold so the source's next drop reports it again
        // rather than never.
        // SAFETY: a map value from a successful lookup, valid for this run; plain integers.
        unsafe {
            let meta = core::ptr::read_volatile(&raw const (*st).meta);
            let meta = Meta::with_drops(meta, p.escalate_drops - 1);
            core::ptr::write_volatile(&raw mut (*st).meta, meta);
        }
    }
}

/// Reports the source `src` (keyed `key`) to the daemon for an escalation
/// ban. False when the ring buffer is full (the loss is counted).
#[inline(always)]
pub(crate) fn report_offender(
    key: &SrcKey,
    src: &Src,
    p: &Policy,
    now: u64,
    reason: Reason,
    drops: u32,
) -> bool {
    let (family, prefix_len, addr) = match src {
        Src::V4(a) => {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(a);
            (FAMILY_V4, 32, addr)
        }
        Src::V6(_) => (FAMILY_V6, p.ipv6_prefix as u8, *key),
    };
    let Some(mut e) = EVENTS.reserve::<OffenderEvent>(0) else {
        if let Some(lost) = EVENTS_LOST.get_ptr_mut(0) {
            // Per-CPU slot: no other writer.
            // SAFETY: a per-CPU map slot, valid for this run; no other writer.
            unsafe { *lost += 1 };
        }
        return false;
    };
    // Field by field into the ring: a whole event built on the stack first
    // would count against every call chain through here.
    let ev = e.as_mut_ptr();
    // SAFETY: a reserved ring record, ours until `submit`.
    unsafe {
        (*ev).addr = addr;
        (*ev).family = family;
        (*ev).prefix_len = prefix_len;
        (*ev).reason = reason as u8;
        (*ev)._pad = 0;
        (*ev).drops = drops;
        (*ev).ts_ns = now;
    }
    e.submit(0);
    true
}

/// Whether `src` is verified (SPEC §8). A call to a global function: the
/// keys it builds live on its own stack, not on the XDP program's, which is
/// near the 512-byte limit along the User-Agent search's call chain.
#[inline(always)]
pub(crate) fn verified(p: &Policy, src: &Src, now: u64) -> bool {
    let (hi, lo, v6) = match src {
        Src::V4(a) => (0, u32::from_be_bytes(*a) as u64, 0),
        Src::V6(a) => {
            let (h, l) = a.split_at(8);
            (
                u64::from_be_bytes(h.try_into().unwrap_or([0; 8])),
                u64::from_be_bytes(l.try_into().unwrap_or([0; 8])),
                1,
            )
        }
    };
    // The policy's flags and prefix ride along: the caller has them.
    let policy = (p.flags as u64) << 32 | p.ipv6_prefix as u64;
    shield_verified(hi, lo, v6, now, policy) == 1
}

/// `verified` for the source `hi:lo` (IPv6 if `v6`, else the IPv4 address
/// in `lo`): a live `VERIFIED` entry for its key, or a live `VERIFY_NETS`
/// prefix around it (empty tries not looked up). `policy`: the caller's
/// `Policy::flags << 32 | ipv6_prefix` (no second `POLICY` lookup). 1 or 0.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_verified(hi: u64, lo: u64, v6: u64, now: u64, policy: u64) -> u64 {
    let (flags, ipv6_prefix) = ((policy >> 32) as u32, policy as u32);
    let has = |f: u32| flags & f != 0;
    let live = |v: &Verified| v.active(now);
    if v6 == 0 {
        let a = (lo as u32).to_be_bytes();
        let hit = learned(&src_key_v4(a), now)
            || (has(F_VERIFY_NETS_V4) && VERIFY_NETS_V4.get(&Key::new(32, a)).is_some_and(live));
        return hit as u64;
    }
    let key = join_v6(hi, lo);
    let hit = learned(&shield_common::mask_v6(&key, ipv6_prefix), now)
        || (has(F_VERIFY_NETS_V6) && VERIFY_NETS_V6.get(&Key::new(128, key)).is_some_and(live));
    hit as u64
}

/// A live `VERIFIED` entry (learned from a reply) for `key`. The hint bit
/// is looked at first: clear, the key was never learned (see
/// `shield_common::verified_hint`).
#[inline(always)]
fn learned(key: &SrcKey, now: u64) -> bool {
    let (word, bit) = verified_hint(key);
    VERIFIED_HINT.get(word).is_some_and(|w| *w & bit != 0)
        // SAFETY: a copy of a map value of plain integers; another CPU writing it meanwhile only makes the copy older.
        && unsafe { VERIFIED.get(key) }.is_some_and(|v| v.active(now))
}

#[inline(always)]
fn join_v6(hi: u64, lo: u64) -> [u8; 16] {
    let (h, l) = (hi.to_be_bytes(), lo.to_be_bytes());
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}
