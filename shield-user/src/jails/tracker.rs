//! Failure counting: `maxretry` failures within `findtime` make a ban.
//!
//! Pure logic with the clock passed in, so it is exact to test. The window
//! slides: a host is banned when its last `maxretry` failures all lie within
//! `findtime` of the newest one (inclusive). After a ban decision the host
//! starts from zero.
//!
//! Memory is bounded: a host is forgotten once its newest failure is older
//! than `findtime`, at most `maxretry - 1` timestamps are kept per host, and
//! at most `max_hosts` hosts are tracked (the least recently failing one is
//! evicted first), so a flood of failures from spoofed or many sources costs
//! at most `max_hosts × (maxretry − 1)` timestamps.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Default cap on tracked hosts per jail.
pub const DEFAULT_MAX_HOSTS: usize = 100_000;

#[derive(Debug)]
struct Host {
    failures: VecDeque<Instant>,
    /// Key in [`Tracker::by_last_failure`].
    key: (Instant, u64),
}

/// Per-jail failure counter.
#[derive(Debug)]
pub struct Tracker {
    maxretry: u32,
    findtime: Duration,
    max_hosts: usize,
    hosts: HashMap<IpAddr, Host>,
    /// Hosts ordered by their newest failure (ties broken by arrival).
    by_last_failure: BTreeMap<(Instant, u64), IpAddr>,
    seq: u64,
}

impl Tracker {
    /// `maxretry` 0 is treated as 1 (every failure bans).
    pub fn new(maxretry: u32, findtime: Duration) -> Tracker {
        Tracker::with_max_hosts(maxretry, findtime, DEFAULT_MAX_HOSTS)
    }

    /// Like [`Tracker::new`] with an explicit cap on tracked hosts (at least 1).
    pub fn with_max_hosts(maxretry: u32, findtime: Duration, max_hosts: usize) -> Tracker {
        Tracker {
            maxretry: maxretry.max(1),
            findtime,
            max_hosts: max_hosts.max(1),
            hosts: HashMap::new(),
            by_last_failure: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Records a failure of `host` at `now`. Returns the number of failures
    /// within `findtime` when that reaches `maxretry` (a ban decision; the
    /// host's count is then reset), else `None`.
    pub fn record(&mut self, host: IpAddr, now: Instant) -> Option<u32> {
        self.expire(now);
        let mut entry = match self.hosts.remove(&host) {
            Some(entry) => {
                self.by_last_failure.remove(&entry.key);
                entry
            }
            None => Host {
                failures: VecDeque::new(),
                key: (now, 0),
            },
        };
        while entry
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > self.findtime)
        {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        let count = u32::try_from(entry.failures.len()).unwrap_or(u32::MAX);
        if count >= self.maxretry {
            return Some(count);
        }
        self.seq += 1;
        entry.key = (now, self.seq);
        self.by_last_failure.insert(entry.key, host);
        self.hosts.insert(host, entry);
        while self.hosts.len() > self.max_hosts {
            let Some((_, oldest)) = self.by_last_failure.pop_first() else {
                break;
            };
            self.hosts.remove(&oldest);
        }
        None
    }

    /// Failures of `host` that still count at `now`.
    pub fn failures(&self, host: IpAddr, now: Instant) -> u32 {
        self.hosts.get(&host).map_or(0, |h| {
            let live = h
                .failures
                .iter()
                .filter(|&&t| now.saturating_duration_since(t) <= self.findtime)
                .count();
            u32::try_from(live).unwrap_or(u32::MAX)
        })
    }

    /// Forgets hosts whose newest failure is older than `findtime`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((&(last, seq), &host)) = self.by_last_failure.first_key_value() {
            if now.saturating_duration_since(last) <= self.findtime {
                break;
            }
            self.by_last_failure.remove(&(last, seq));
            self.hosts.remove(&host);
        }
    }

    /// Number of hosts with failures on record.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn maxretry_within_findtime_bans_and_resets() {
        let t0 = Instant::now();
        let mut t = Tracker::new(3, Duration::from_secs(60));
        let a = ip("192.0.2.1");
        assert_eq!(t.record(a, t0), None);
        assert_eq!(t.record(a, t0 + Duration::from_secs(10)), None);
        assert_eq!(t.failures(a, t0 + Duration::from_secs(10)), 2);
        assert_eq!(t.record(a, t0 + Duration::from_secs(20)), Some(3));
        // Reset after the decision.
        assert_eq!(t.failures(a, t0 + Duration::from_secs(20)), 0);
        assert_eq!(t.record(a, t0 + Duration::from_secs(21)), None);
        assert_eq!(t.record(a, t0 + Duration::from_secs(22)), None);
        assert_eq!(t.record(a, t0 + Duration::from_secs(23)), Some(3));
    }

    #[test]
    fn failures_outside_findtime_do_not_count() {
        let t0 = Instant::now();
        let mut t = Tracker::new(3, Duration::from_secs(60));
        let a = ip("2001:db8::1");
        assert_eq!(t.record(a, t0), None);
        assert_eq!(t.record(a, t0 + Duration::from_secs(30)), None);
        // The first one is 61 s old now: two in the window.
        assert_eq!(t.record(a, t0 + Duration::from_secs(61)), None);
        assert_eq!(t.failures(a, t0 + Duration::from_secs(61)), 2);
        // Exactly findtime apart still counts (inclusive window).
        assert_eq!(t.record(a, t0 + Duration::from_secs(90)), Some(3));
    }

    #[test]
    fn hosts_are_counted_separately() {
        let t0 = Instant::now();
        let mut t = Tracker::new(2, Duration::from_secs(60));
        assert_eq!(t.record(ip("192.0.2.1"), t0), None);
        assert_eq!(t.record(ip("192.0.2.2"), t0), None);
        assert_eq!(t.record(ip("192.0.2.2"), t0), Some(2));
        assert_eq!(t.failures(ip("192.0.2.1"), t0), 1);
    }

    #[test]
    fn maxretry_one_bans_at_once() {
        let mut t = Tracker::new(0, Duration::from_secs(1));
        assert_eq!(t.record(ip("192.0.2.1"), Instant::now()), Some(1));
        assert!(t.is_empty());
    }

    #[test]
    fn old_hosts_expire() {
        let t0 = Instant::now();
        let mut t = Tracker::new(5, Duration::from_secs(10));
        for i in 0..100u8 {
            t.record(IpAddr::from([192, 0, 2, i]), t0);
        }
        assert_eq!(t.len(), 100);
        t.expire(t0 + Duration::from_secs(10));
        assert_eq!(t.len(), 100);
        t.record(ip("198.51.100.1"), t0 + Duration::from_secs(11));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cap_evicts_least_recently_failing() {
        let t0 = Instant::now();
        let mut t = Tracker::with_max_hosts(3, Duration::from_secs(600), 3);
        let (a, b, c, d) = (
            ip("192.0.2.1"),
            ip("192.0.2.2"),
            ip("192.0.2.3"),
            ip("192.0.2.4"),
        );
        t.record(a, t0);
        t.record(b, t0 + Duration::from_secs(1));
        t.record(c, t0 + Duration::from_secs(2));
        // `a` fails again, so `b` is now the least recent.
        t.record(a, t0 + Duration::from_secs(3));
        t.record(d, t0 + Duration::from_secs(4));
        assert_eq!(t.len(), 3);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(t.failures(b, now), 0);
        assert_eq!(t.failures(a, now), 2);
        assert_eq!(t.failures(c, now), 1);
        assert_eq!(t.failures(d, now), 1);
        // A flood of distinct hosts stays within the cap.
        for i in 0..10_000u32 {
            t.record(IpAddr::from(i.to_be_bytes()), now);
        }
        assert_eq!(t.len(), 3);
    }
}
