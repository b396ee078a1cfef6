//! A tracked source's state (`SOURCES`, SPEC §2 step 9 and escalation) in
//! 40 bytes: eight 32-bit GCRA times and one word for escalation and
//! freshness. A million of them are preallocated (an LRU), so every 8 bytes
//! here is 7.6 MiB of kernel memory.
//!
//! The times are in units of 1024 ns and wrap (every 73 minutes): only a
//! time's distance from now matters (a time in the past is a full bucket),
//! and that distance is read as a signed 32-bit difference. To keep every
//! stored time within reach of that difference, a source's times in the
//! past are set to now (the same: a full bucket) when it is first seen in
//! a new epoch of 2^40 ns (18.3 minutes), see [`fresh_word`]; a bucket is
//! never more than [`MAX_AHEAD`] units ahead, so after two epochs every
//! time is past. Moving a past time to now changes no verdict, so it is
//! safe under any race. A new source starts at now ([`SrcState::new`]).
//!
//! Two times share each 64-bit word, the width the kernel updates with one
//! compare-and-swap (the BPF target's 32-bit atomics need ALU32 codegen):
//! a bucket stays exact when one source's packets land on several CPUs.

use crate::bucket::Bucket;
use crate::policy::METHOD_BUCKETS;

/// TAT units: `now_ns >> UNIT_SHIFT` (1.024 µs).
pub const UNIT_SHIFT: u32 = 10;
/// Epochs: `now_ns >> EPOCH_SHIFT` (2^30 units, 18.3 minutes).
pub const EPOCH_SHIFT: u32 = 40;
/// A bucket's interval and tolerance are each capped at this many units
/// (9.2 minutes): together they stay under one epoch, so a time two epochs
/// old is always in the past.
pub const MAX_AHEAD: u32 = (1 << (EPOCH_SHIFT - UNIT_SHIFT - 1)) - 1;

/// Index in [`SrcState::tat`] of the packet bucket's time.
pub const TAT_PACKET: usize = 0;
/// Index of the TCP SYN bucket's time.
pub const TAT_SYN: usize = 1;
/// Index of method bucket 0's time (bucket `i` is at `TAT_METHOD + i`).
pub const TAT_METHOD: usize = 2;
/// Times per source.
pub const SRC_TATS: usize = TAT_METHOD + METHOD_BUCKETS;
/// 64-bit words of times.
pub const SRC_TAT_WORDS: usize = SRC_TATS / 2;
const _: () = assert!(SRC_TATS % 2 == 0);

/// Per-source state, shared by all CPUs; the times are updated by CAS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrcState {
    /// Escalation and freshness, see [`Meta`]: written with plain stores (a
    /// lost update only delays an escalation report by a drop, or repeats
    /// a harmless [`fresh_word`]).
    pub meta: u64,
    /// GCRA theoretical arrival times in units, two to a 64-bit word (index `i`: word `i / 2`, the low half
    /// for an even `i`, little-endian like the BPF target).
    pub tat: [u32; SRC_TATS],
}

/// The [`SrcState::meta`] word: drops counted in the escalation window
/// (bits 0-23), the window's start in units of 2^24 ns (bits 24-47, wraps
/// every 78 hours) and the epoch the times were last made fresh in (bits
/// 48-63).
pub struct Meta;

/// Escalation counts stop here; `[bans.escalate] drops` is at most this.
pub const MAX_ESCALATE_DROPS: u32 = (1 << 24) - 1;
const ESC_SHIFT: u32 = 24;
const ESC_MASK: u64 = (1 << 24) - 1;

impl Meta {
    /// Drops counted in the current window.
    #[inline(always)]
    pub const fn drops(meta: u64) -> u32 {
        (meta & ESC_MASK) as u32
    }

    /// `meta` with the count set to `n` (at most [`MAX_ESCALATE_DROPS`]).
    #[inline(always)]
    pub const fn with_drops(meta: u64, n: u32) -> u64 {
        meta & !ESC_MASK | (n as u64 & ESC_MASK)
    }

    /// The epoch the source's times were last made fresh in.
    #[inline(always)]
    pub const fn epoch(meta: u64) -> u16 {
        (meta >> 48) as u16
    }

    #[inline(always)]
    pub const fn with_epoch(meta: u64, e: u16) -> u64 {
        meta & !(0xffff << 48) | (e as u64) << 48
    }

    /// Whether the window that holds the count is over at `now_ns`
    /// (`window_ns` rounded up to 2^24 ns). No count: no window.
    #[inline(always)]
    pub const fn window_over(meta: u64, now_ns: u64, window_ns: u64) -> bool {
        let start = (meta >> ESC_SHIFT) & ESC_MASK;
        let now = (now_ns >> ESC_SHIFT) & ESC_MASK;
        let w = window_ns.div_ceil(1 << ESC_SHIFT);
        // Half the 24-bit range at most: a longer window acts as 39 hours.
        let w = if w > 1 << 23 { 1 << 23 } else { w };
        Meta::drops(meta) == 0 || now.wrapping_sub(start) & ESC_MASK >= w
    }

    /// `meta` after one more escalation-counted drop at `now_ns`: a new
    /// window (count 1) if the last one is over, else the count plus one.
    #[inline(always)]
    pub const fn count_drop(meta: u64, now_ns: u64, window_ns: u64) -> u64 {
        let meta = if Meta::window_over(meta, now_ns, window_ns) {
            let start = (now_ns >> ESC_SHIFT) & ESC_MASK;
            meta & !(ESC_MASK << ESC_SHIFT | ESC_MASK) | start << ESC_SHIFT
        } else {
            meta
        };
        let n = Meta::drops(meta);
        if n < MAX_ESCALATE_DROPS {
            Meta::with_drops(meta, n + 1)
        } else {
            meta
        }
    }

    /// The drops counted in the window open at `now_ns` (0: none open).
    #[inline(always)]
    pub const fn drops_at(meta: u64, now_ns: u64, window_ns: u64) -> u32 {
        if Meta::window_over(meta, now_ns, window_ns) {
            0
        } else {
            Meta::drops(meta)
        }
    }
}

/// `now_ns` in TAT units.
#[inline(always)]
pub const fn unit(now_ns: u64) -> u32 {
    (now_ns >> UNIT_SHIFT) as u32
}

/// `now_ns`'s epoch (see [`Meta::epoch`]).
#[inline(always)]
pub const fn epoch(now_ns: u64) -> u16 {
    (now_ns >> EPOCH_SHIFT) as u16
}

/// A bucket's interval and tolerance in units, rounded down and capped at
/// [`MAX_AHEAD`] (at least one unit of interval: rates above 976,562 a
/// second act as that). Rounding both down keeps the burst whole; the rate
/// is off by under one unit per interval (0.005 % at 50 a second).
#[inline(always)]
pub const fn in_units(b: &Bucket) -> (u32, u32) {
    let i = b.interval_ns >> UNIT_SHIFT;
    let t = b.tolerance_ns >> UNIT_SHIFT;
    let i = if i == 0 {
        1
    } else if i > MAX_AHEAD as u64 {
        MAX_AHEAD as u64
    } else {
        i
    };
    let t = if t > MAX_AHEAD as u64 { MAX_AHEAD as u64 } else { t };
    (i as u32, t as u32)
}

/// Whether `b` fits a source's 32-bit times without [`in_units`]' cap
/// on its tolerance: the configuration refuses a bucket that does not,
/// rather than silently holding a smaller burst than the operator wrote.
pub const fn fits(b: &Bucket) -> bool {
    b.tolerance_ns >> UNIT_SHIFT <= MAX_AHEAD as u64
}

/// The largest burst at `per_second` (at least 1) that [`fits`].
pub const fn max_burst(per_second: u64) -> u64 {
    let b = Bucket::new(per_second, 1);
    (((MAX_AHEAD as u64 + 1) << UNIT_SHIFT) - 1) / b.interval_ns + 1
}

/// One GCRA step (see [`crate::gcra`]) on a wrapped 32-bit time `tat` at
/// `now` (both in units): the new time if the packet conforms, `None` if
/// the bucket is empty.
#[inline(always)]
pub const fn gcra32(tat: u32, now: u32, b: &Bucket) -> Option<u32> {
    let (interval, tolerance) = in_units(b);
    let tat = if tat.wrapping_sub(now) as i32 > 0 { tat } else { now };
    if tat.wrapping_sub(now) > tolerance {
        None
    } else {
        Some(tat.wrapping_add(interval))
    }
}

/// A word of two times with those in the past set to `now`, for a source
/// last made fresh `behind` epochs ago (`now` in units). One epoch behind,
/// every stored time is within two epochs of now, so the signed difference
/// tells past from future; two or more behind, every time is past.
#[inline(always)]
pub const fn fresh_word(w: u64, now: u32, behind: u16) -> u64 {
    let (lo, hi) = (w as u32, (w >> 32) as u32);
    let lo = if past(lo, now, behind) { now } else { lo };
    let hi = if past(hi, now, behind) { now } else { hi };
    (hi as u64) << 32 | lo as u64
}

#[inline(always)]
const fn past(t: u32, now: u32, behind: u16) -> bool {
    behind >= 2 || t.wrapping_sub(now) as i32 <= 0
}

impl SrcState {
    /// A new source's state at `now_ns`: full buckets, fresh.
    #[inline(always)]
    pub const fn new(now_ns: u64) -> SrcState {
        let now = unit(now_ns);
        SrcState {
            meta: Meta::with_epoch(0, epoch(now_ns)),
            tat: [now; SRC_TATS],
        }
    }

    /// Whether the times must be made fresh at `now_ns` (a new epoch).
    #[inline(always)]
    pub const fn stale(&self, now_ns: u64) -> bool {
        Meta::epoch(self.meta) != epoch(now_ns)
    }

    /// The state made fresh at `now_ns` (what the kernel does word by word
    /// with compare-and-swap; see [`fresh_word`]).
    pub fn refresh(&mut self, now_ns: u64) {
        if !self.stale(now_ns) {
            return;
        }
        let behind = epoch(now_ns).wrapping_sub(Meta::epoch(self.meta));
        for w in 0..SRC_TAT_WORDS {
            let word = (self.tat[2 * w + 1] as u64) << 32 | self.tat[2 * w] as u64;
            let word = fresh_word(word, unit(now_ns), behind);
            self.tat[2 * w] = word as u32;
            self.tat[2 * w + 1] = (word >> 32) as u32;
        }
        self.meta = Meta::with_epoch(self.meta, epoch(now_ns));
    }

    /// Spends a token from bucket `b` whose time is at index `i`: false if
    /// it is empty (the reference model's step; the kernel's is a CAS).
    pub fn spend(&mut self, i: usize, now_ns: u64, b: &Bucket) -> bool {
        match gcra32(self.tat[i], unit(now_ns), b) {
            Some(t) => {
                self.tat[i] = t;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::NS_PER_SEC;

    const T0: u64 = 5 << 40; // some epoch in

    /// Packets evenly over `span_ns`, from `start`: how many pass.
    fn passed(b: &Bucket, n: u64, span_ns: u64, start: u64) -> u64 {
        let mut st = SrcState::new(start);
        (0..n)
            .filter(|i| {
                let now = start + i * span_ns / n;
                st.refresh(now);
                st.spend(TAT_PACKET, now, b)
            })
            .count() as u64
    }

    #[test]
    fn burst_then_one_per_interval() {
        let b = Bucket::new(10, 5);
        let mut st = SrcState::new(T0);
        for _ in 0..5 {
            assert!(st.spend(TAT_PACKET, T0, &b));
        }
        assert!(!st.spend(TAT_PACKET, T0, &b));
        let later = T0 + b.interval_ns;
        assert!(st.spend(TAT_PACKET, later, &b));
        assert!(!st.spend(TAT_PACKET, later, &b));
    }

    #[test]
    fn flood_passes_rate_times_time_plus_burst_across_wraps() {
        let b = Bucket::new(50, 100);
        // 200 s (past an epoch and the 73-minute wrap of the units when
        // started near it): 50 * 200 + 100 = 10,100.
        for start in [T0, (1 << 42) - 100 * NS_PER_SEC, (1 << 40) - NS_PER_SEC] {
            let ok = passed(&b, 200_000, 200 * NS_PER_SEC, start);
            assert!((10_098..=10_102).contains(&ok), "passed {ok} from {start}");
        }
    }

    #[test]
    fn an_idle_source_comes_back_with_a_full_bucket() {
        let b = Bucket::new(1, 100);
        for idle_epochs in [0u64, 1, 2, 3, 4, 1000, 4097] {
            let mut st = SrcState::new(T0);
            while st.spend(TAT_PACKET, T0, &b) {}
            // A method time set once and never again, the packet time kept
            // busy every minute: both stay readable across epochs.
            st.tat[TAT_METHOD] = unit(T0) + 1;
            let mut now = T0;
            for _ in 0..idle_epochs.min(4) * 19 {
                now += 60 * NS_PER_SEC;
                st.refresh(now);
                st.spend(TAT_PACKET, now, &b);
            }
            now += idle_epochs * (1 << 40) + 700 * NS_PER_SEC;
            st.refresh(now);
            assert!(gcra32(st.tat[TAT_METHOD], unit(now), &b).is_some());
            let mut n = 0;
            while st.spend(TAT_PACKET, now, &b) {
                n += 1;
            }
            assert_eq!(n, 100, "after {idle_epochs} epochs");
        }
    }

    #[test]
    fn fresh_word_moves_only_the_past() {
        let now = 1_000_000u32;
        let n = now as u64;
        let w = (n + 5) << 32 | (n - 5);
        assert_eq!(fresh_word(w, now, 1), (n + 5) << 32 | n);
        assert_eq!(fresh_word(w, now, 2), n << 32 | n);
        // Across the wrap.
        let w = 3u64 << 32 | u32::MAX as u64;
        assert_eq!(fresh_word(w, u32::MAX - 1, 1), w);
        assert_eq!(fresh_word(w, 4, 1), 4 << 32 | 4);
    }

    #[test]
    fn the_largest_burst_that_fits_is_exact() {
        for rate in [1, 3, 5, 50, 977, 10_000, 976_562, 2_000_000] {
            let max = max_burst(rate);
            assert!(fits(&Bucket::new(rate, max)), "{rate}/s burst {max}");
            assert!(!fits(&Bucket::new(rate, max + 1)), "{rate}/s burst {}", max + 1);
        }
        assert_eq!(max_burst(1), 550);
    }

    #[test]
    fn units_are_capped() {
        assert_eq!(in_units(&Bucket::new(2_000_000, 1)), (1, 0));
        let (i, t) = in_units(&Bucket::new(1, u32::MAX as u64));
        assert_eq!((i, t), (976_562, MAX_AHEAD));
        assert!(i as u64 + t as u64 + 1 < 1 << (EPOCH_SHIFT - UNIT_SHIFT));
    }

    #[test]
    fn escalation_window() {
        let w = 10 * NS_PER_SEC;
        let mut m = Meta::with_epoch(0, 7);
        for _ in 0..3 {
            m = Meta::count_drop(m, T0, w);
        }
        assert_eq!(Meta::drops_at(m, T0 + w / 2, w), 3);
        assert_eq!(Meta::epoch(m), 7);
        // The window ends (rounded up to 2^24 ns).
        assert_eq!(Meta::drops_at(m, T0 + w + (1 << 24), w), 0);
        let m = Meta::count_drop(m, T0 + w + (1 << 24), w);
        assert_eq!(Meta::drops(m), 1);
        // A stepped-back count stays in its window.
        let m = Meta::with_drops(m, 0);
        assert_eq!(Meta::drops(Meta::count_drop(m, T0 + w + (1 << 25), w)), 1);
        // Saturates.
        let m = Meta::with_drops(0, MAX_ESCALATE_DROPS);
        let m = Meta::count_drop(m, 1 << 24, u64::MAX);
        assert_eq!(Meta::drops(m), MAX_ESCALATE_DROPS);
    }

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<SrcState>(), 8 + 4 * SRC_TATS);
        assert_eq!(core::mem::offset_of!(SrcState, tat) % 8, 0);
    }
}
