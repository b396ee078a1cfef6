//! Calls seen on the wire (SPEC §13), the daemon's bookkeeping: what the
//! kernel's ended-call reports add up to (counters by interface, class,
//! country and outcome; the duration histogram), the calls in progress as
//! the last sweep saw them (active by class, long calls), and the
//! destinations called in the last hour. Pure: no kernel, no clock of its
//! own (times come in), so every rule is a unit test.

use std::collections::{BTreeMap, HashSet, VecDeque};

use shield_common::calls::{Call, CallEvent, CallOutcome};
use shield_common::dest::DestClass;

pub use crate::report::{Histogram, DURATION_BUCKETS};

/// How far back "the last hour" of `shieldctl calls` reaches.
pub const RECENT_MS: u64 = 3_600_000;
/// Ended calls remembered for it at most (memory stays bounded).
const MAX_RECENT: usize = 100_000;

/// The destination label of a call: its country code (`+33`) when it is
/// international and known, else its class.
pub fn destination_label(class: u8, country: u32) -> String {
    if country != 0 {
        crate::dest::country_label(country)
    } else {
        class_of(class).as_str().to_string()
    }
}

pub fn class_of(class: u8) -> DestClass {
    match class {
        0 => DestClass::National,
        1 => DestClass::International,
        _ => DestClass::Other,
    }
}

/// The book.
#[derive(Debug, Default)]
pub struct CallBook {
    /// (interface, class, outcome) → calls ended.
    pub totals: BTreeMap<(String, DestClass, CallOutcome), u64>,
    /// (interface, country code, outcome) → international calls ended.
    pub by_country: BTreeMap<(String, u32, CallOutcome), u64>,
    /// Answered calls' durations, by class.
    pub durations: BTreeMap<DestClass, Histogram>,
    /// (interface, class) → calls in progress at the last sweep.
    pub active: BTreeMap<(String, DestClass), u64>,
    /// Calls in progress longer than `long_call` at the last sweep.
    pub long_now: u64,
    /// Call-IDs already reported long (until they end).
    long_reported: HashSet<u64>,
    /// (start, wall ms; destination label) of calls ended recently.
    recent: VecDeque<(u64, String)>,
}

impl CallBook {
    /// A call ended (`ev`, on interface `iface`) at wall time `now_ms`; it
    /// started at wall time `started_ms`.
    pub fn ended(&mut self, iface: &str, ev: &CallEvent, now_ms: u64, started_ms: u64) {
        let Some(outcome) = ev.outcome() else { return };
        let class = class_of(ev.class);
        *self.totals.entry((iface.to_string(), class, outcome)).or_default() += 1;
        if ev.country != 0 {
            *self.by_country.entry((iface.to_string(), ev.country, outcome)).or_default() += 1;
        }
        if ev.answer_ns != 0 {
            self.durations.entry(class).or_default().observe(ev.duration_ns() as f64 / 1e9);
        }
        self.long_reported.remove(&ev.call_id);
        self.recent.push_back((started_ms, destination_label(ev.class, ev.country)));
        if self.recent.len() > MAX_RECENT {
            self.recent.pop_front();
        }
        self.prune(now_ms);
    }

    fn prune(&mut self, now_ms: u64) {
        // Ended calls arrive in end order, not start order: prune by the
        // front while it is old (a few stragglers stay a little longer).
        while self.recent.front().is_some_and(|(t, _)| now_ms.saturating_sub(*t) > RECENT_MS) {
            self.recent.pop_front();
        }
    }

    /// The calls in progress (`live`, with each one's interface name) at
    /// monotonic `now_ns`: the active gauges, and the calls that just
    /// went past `long_ns` (answered that long ago), each returned once.
    pub fn swept<'a>(
        &mut self,
        live: impl IntoIterator<Item = (&'a str, u64, &'a Call)>,
        now_ns: u64,
        long_ns: u64,
    ) -> Vec<(u64, Call)> {
        self.active.clear();
        self.long_now = 0;
        let mut newly = Vec::new();
        let mut seen = HashSet::new();
        for (iface, id, c) in live {
            *self.active.entry((iface.to_string(), class_of(c.class))).or_default() += 1;
            seen.insert(id);
            if c.answered() && now_ns.saturating_sub(c.answer_ns) >= long_ns {
                self.long_now += 1;
                if self.long_reported.insert(id) {
                    newly.push((id, *c));
                }
            }
        }
        // Calls gone without an end report (a lost report): forget them.
        self.long_reported.retain(|id| seen.contains(id));
        newly
    }

    /// The destinations of calls started within the last hour (ended ones
    /// and `live` ones, started at the wall times given), most called
    /// first, at most `n`.
    pub fn top_destinations(
        &mut self,
        live: impl IntoIterator<Item = (u64, String)>,
        now_ms: u64,
        n: usize,
    ) -> Vec<(String, u64)> {
        self.prune(now_ms);
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let recent = self.recent.iter().map(|(t, d)| (*t, d.clone()));
        for (t, d) in recent.chain(live) {
            if now_ms.saturating_sub(t) <= RECENT_MS {
                *counts.entry(d).or_default() += 1;
            }
        }
        let mut v: Vec<(String, u64)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shield_common::calls::CALL_ANSWERED;

    fn ended(outcome: CallOutcome, class: u8, country: u32, up_secs: u64) -> CallEvent {
        CallEvent {
            call_id: 1,
            class,
            country,
            outcome: outcome as u8,
            answer_ns: if up_secs > 0 { 1_000 } else { 0 },
            end_ns: 1_000 + up_secs * 1_000_000_000,
            ..CallEvent::default()
        }
    }

    #[test]
    fn ended_calls_add_up_by_class_country_and_outcome() {
        let mut b = CallBook::default();
        b.ended("eth0", &ended(CallOutcome::Answered, 1, 33, 42), 10_000, 5_000);
        b.ended("eth0", &ended(CallOutcome::Failed, 1, 33, 0), 10_000, 6_000);
        b.ended("eth0", &ended(CallOutcome::Cancelled, 0, 0, 0), 10_000, 7_000);
        assert_eq!(b.totals[&("eth0".into(), DestClass::International, CallOutcome::Answered)], 1);
        assert_eq!(b.totals[&("eth0".into(), DestClass::National, CallOutcome::Cancelled)], 1);
        assert_eq!(b.by_country[&("eth0".into(), 33, CallOutcome::Failed)], 1);
        assert_eq!(b.by_country.len(), 2, "national calls have no country");
        let h = &b.durations[&DestClass::International];
        assert_eq!((h.count, h.sum), (1, 42.0));
        assert_eq!(h.buckets[3], 1, "42 s is in the 60 s bucket");
        assert!(!b.durations.contains_key(&DestClass::National), "unanswered: no duration");
    }

    #[test]
    fn histogram_buckets_and_overflow() {
        let mut h = Histogram::default();
        h.observe(5.0);
        h.observe(5.5);
        h.observe(20_000.0);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[DURATION_BUCKETS.len()], 1);
    }

    #[test]
    fn long_calls_are_reported_once_and_counted_while_up() {
        let mut b = CallBook::default();
        let up = Call { state: CALL_ANSWERED, answer_ns: 100, class: 1, ..Call::default() };
        let ringing = Call::default();
        let live = [("eth0", 7u64, &up), ("eth0", 8, &ringing)];
        assert!(b.swept(live, 150, 100).is_empty(), "not long yet");
        assert_eq!(b.active[&("eth0".into(), DestClass::International)], 1);
        assert_eq!(b.long_now, 0);
        assert_eq!(b.swept([("eth0", 7, &up)], 300, 100).len(), 1);
        assert_eq!(b.swept([("eth0", 7, &up)], 400, 100).len(), 0, "once");
        assert_eq!(b.long_now, 1);
        assert!(b.swept([], 500, 100).is_empty());
        assert_eq!((b.long_now, b.active.len()), (0, 0));
    }

    #[test]
    fn top_destinations_of_the_last_hour() {
        let mut b = CallBook::default();
        let now = 10 * RECENT_MS;
        b.ended("eth0", &ended(CallOutcome::Answered, 1, 33, 5), now, now - 1_000);
        b.ended("eth0", &ended(CallOutcome::Failed, 1, 44, 0), now, now - 2 * RECENT_MS);
        let live = vec![(now - 10, "+33".to_string()), (now - 20, "national".to_string())];
        let top = b.top_destinations(live, now, 10);
        assert_eq!(top, vec![("+33".to_string(), 2), ("national".to_string(), 1)]);
        assert_eq!(b.top_destinations(Vec::new(), now, 1).len(), 1);
    }
}
