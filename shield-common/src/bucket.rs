//! Token buckets as GCRA (generic cell rate algorithm).
//!
//! A bucket of `burst` tokens refilled at `rate` tokens per second is the same
//! as one 64-bit "theoretical arrival time" (TAT) per source: each packet
//! moves the TAT forward by one emission interval, and a packet conforms when
//! the TAT is no more than `(burst - 1)` intervals ahead of now. One word of
//! state means the kernel can update it with a single compare-and-swap, so
//! the bucket stays exact when one source's packets land on several CPUs.

/// Bucket parameters as the kernel uses them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Nanoseconds per token; 0 means "no bucket" (unlimited).
    pub interval_ns: u64,
    /// `(burst - 1) * interval_ns`: how far the TAT may run ahead of now.
    pub tolerance_ns: u64,
}

pub const NS_PER_SEC: u64 = 1_000_000_000;

impl Bucket {
    pub const UNLIMITED: Bucket = Bucket {
        interval_ns: 0,
        tolerance_ns: 0,
    };

    /// `per_second` tokens per second, `burst` tokens deep. `per_second == 0`
    /// disables the bucket; `burst` is at least 1.
    pub const fn new(per_second: u64, burst: u64) -> Bucket {
        if per_second == 0 {
            return Bucket::UNLIMITED;
        }
        let interval_ns = NS_PER_SEC / per_second;
        let interval_ns = if interval_ns == 0 { 1 } else { interval_ns };
        let burst = if burst == 0 { 1 } else { burst };
        Bucket {
            interval_ns,
            tolerance_ns: (burst - 1).saturating_mul(interval_ns),
        }
    }

    #[inline(always)]
    pub const fn is_limited(&self) -> bool {
        self.interval_ns != 0
    }
}

/// One GCRA step. `tat` is the stored theoretical arrival time (0 for a new
/// source, which therefore starts with a full bucket). Returns the new TAT if
/// the packet conforms (spends a token), `None` if the bucket is empty.
#[inline(always)]
pub const fn gcra(tat: u64, now: u64, b: &Bucket) -> Option<u64> {
    let tat = if tat > now { tat } else { now };
    if tat - now > b.tolerance_ns {
        None
    } else {
        Some(tat.saturating_add(b.interval_ns))
    }
}

/// Tokens left in the bucket whose TAT is `tat` at `now`: how many packets
/// [`gcra`] would grant in a row (`u64::MAX` for no bucket).
#[inline(always)]
pub const fn tokens(tat: u64, now: u64, b: &Bucket) -> u64 {
    if !b.is_limited() {
        return u64::MAX;
    }
    let ahead = tat.saturating_sub(now);
    if ahead > b.tolerance_ns {
        0
    } else {
        (b.tolerance_ns - ahead) / b.interval_ns + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `n` packets evenly over `span_ns` and returns how many pass.
    fn passed(b: &Bucket, n: u64, span_ns: u64) -> u64 {
        let mut tat = 0;
        let mut ok = 0;
        for i in 0..n {
            let now = 1_000_000 + i * span_ns / n;
            if let Some(t) = gcra(tat, now, b) {
                tat = t;
                ok += 1;
            }
        }
        ok
    }

    #[test]
    fn new_source_gets_full_burst_then_nothing() {
        let b = Bucket::new(10, 5);
        let mut tat = 0;
        let now = 42;
        for _ in 0..5 {
            tat = gcra(tat, now, &b).expect("burst token");
        }
        assert_eq!(gcra(tat, now, &b), None);
        // One interval later exactly one more token is there.
        let later = now + b.interval_ns;
        let tat = gcra(tat, later, &b).expect("refilled token");
        assert_eq!(gcra(tat, later, &b), None);
    }

    #[test]
    fn flood_passes_rate_times_time_plus_burst() {
        let b = Bucket::new(50, 100);
        // 10 s of 10,000 pps: 50 * 10 + 100 = 600.
        let ok = passed(&b, 100_000, 10 * NS_PER_SEC);
        assert!((599..=601).contains(&ok), "passed {ok}");
    }

    #[test]
    fn slow_sender_is_never_limited() {
        let b = Bucket::new(50, 1);
        assert_eq!(passed(&b, 100, 10 * NS_PER_SEC), 100);
    }

    #[test]
    fn tokens_left_match_what_gcra_grants() {
        let b = Bucket::new(10, 5);
        let (mut tat, now) = (0, 1_000);
        for left in (1..=5).rev() {
            assert_eq!(tokens(tat, now, &b), left);
            tat = gcra(tat, now, &b).unwrap();
        }
        assert_eq!(tokens(tat, now, &b), 0);
        assert_eq!(tokens(tat, now + b.interval_ns, &b), 1);
        assert_eq!(tokens(0, 0, &Bucket::UNLIMITED), u64::MAX);
    }

    #[test]
    fn degenerate_parameters() {
        assert!(!Bucket::new(0, 10).is_limited());
        let b = Bucket::new(2_000_000_000, 0);
        assert_eq!(b.interval_ns, 1);
        assert_eq!(b.tolerance_ns, 0);
        let huge = Bucket::new(1, u64::MAX);
        assert_eq!(huge.tolerance_ns, u64::MAX);
        // A saturated tolerance never overflows the comparison.
        assert!(gcra(u64::MAX - NS_PER_SEC, 0, &huge).is_some());
    }
}
