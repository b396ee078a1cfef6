//! `[calls]` (SPEC §13): the call table's size, the per-source limit of
//! calls in progress, and the two durations.

use std::time::Duration;

use shield_common::calls::CallConfig;

use super::reader::Section;

/// `[calls]`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calls {
    /// Calls tracked at once.
    pub capacity: u32,
    /// Answered or ringing calls per source; 0 = no limit.
    pub max_concurrent_per_source: u32,
    /// A call still up after this is reported.
    pub long_call: Duration,
    /// A call with no end seen is forgotten after this.
    pub max_duration: Duration,
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            capacity: shield_common::default_size::CALLS,
            max_concurrent_per_source: 0,
            long_call: Duration::from_secs(2 * 3600),
            max_duration: Duration::from_secs(12 * 3600),
        }
    }
}

impl Calls {
    /// The record the kernel reads (`CALL_CFG[0]`).
    pub fn kernel(&self) -> CallConfig {
        CallConfig {
            max_per_source: u64::from(self.max_concurrent_per_source),
            max_duration_ns: u64::try_from(self.max_duration.as_nanos()).unwrap_or(u64::MAX),
            flags: shield_common::calls::CALLS_ON,
        }
    }
}

pub(super) fn calls(mut s: Section) -> Calls {
    let d = Calls::default();
    let capacity = s.int("capacity", d.capacity, 1..=u32::MAX);
    let max_concurrent_per_source =
        s.int("max_concurrent_per_source", d.max_concurrent_per_source, 0..=1_000_000);
    // (`duration` rejects 0s itself.)
    let long_call = s.duration("long_call", d.long_call);
    let mut max_duration = d.max_duration;
    if let Some(v) = s.get("max_duration") {
        match v.duration() {
            Some(t) if t < long_call => v.error(format_args!(
                "{}s is shorter than long_call = {}s: no call would ever be reported long",
                t.as_secs(),
                long_call.as_secs()
            )),
            Some(t) => max_duration = t,
            None => {}
        }
    }
    s.finish();
    Calls {
        capacity,
        max_concurrent_per_source,
        long_call,
        max_duration,
    }
}
