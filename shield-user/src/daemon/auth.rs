//! Failed digest authentications seen on the wire (SPEC §12), as pure
//! bookkeeping: proven failures per source within `window` decide a ban;
//! failures per username across sources decide a report. No clock, no
//! I/O: the caller passes the time (`Instant`) and acts on the answer.
//! Memory is bounded: at most [`MAX_SOURCES`] sources and [`MAX_USERS`]
//! usernames are tracked (the oldest forgotten first).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::auth::Auth;

pub const MAX_SOURCES: usize = 100_000;
pub const MAX_USERS: usize = 100_000;
/// Sources remembered per username (for `shieldctl auth`).
const SOURCES_PER_USER: usize = 16;

/// What a settled attempt leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Nothing,
    /// `failures` reached: ban `addr`; `username` is the last one tried.
    Ban { addr: IpAddr, username: Vec<u8>, failures: usize },
    /// `user_failures` reached for this username (reported once per window).
    UserTargeted { username: Vec<u8>, failures: usize, sources: Vec<IpAddr> },
}

#[derive(Debug, Default)]
struct SourceEntry {
    failures: VecDeque<Instant>,
    /// Usernames tried (first bytes, most recent last, bounded).
    usernames: VecDeque<Vec<u8>>,
}

#[derive(Debug, Default)]
struct UserEntry {
    failures: VecDeque<Instant>,
    sources: VecDeque<IpAddr>,
    reported: Option<Instant>,
}

/// The book.
#[derive(Debug, Default)]
pub struct AuthBook {
    sources: HashMap<IpAddr, SourceEntry>,
    users: HashMap<Vec<u8>, UserEntry>,
    /// Insertion order, for bounded memory.
    source_order: VecDeque<IpAddr>,
    user_order: VecDeque<Vec<u8>>,
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|t| now.saturating_duration_since(*t) > window) {
        q.pop_front();
    }
}

impl AuthBook {
    /// A proven failure from `addr` for `username` at `now`.
    pub fn failure(&mut self, cfg: &Auth, addr: IpAddr, username: &[u8], now: Instant) -> Vec<Verdict> {
        let mut out = Vec::new();
        if !self.sources.contains_key(&addr) {
            if self.source_order.len() >= MAX_SOURCES {
                if let Some(old) = self.source_order.pop_front() {
                    self.sources.remove(&old);
                }
            }
            self.source_order.push_back(addr);
        }
        let s = self.sources.entry(addr).or_default();
        prune(&mut s.failures, now, cfg.window);
        s.failures.push_back(now);
        if s.usernames.back().map(Vec::as_slice) != Some(username) {
            s.usernames.push_back(username.to_vec());
            if s.usernames.len() > SOURCES_PER_USER {
                s.usernames.pop_front();
            }
        }
        if cfg.failures > 0 && s.failures.len() >= cfg.failures as usize {
            out.push(Verdict::Ban {
                addr,
                username: username.to_vec(),
                failures: s.failures.len(),
            });
            s.failures.clear();
        }
        if let Some(v) = self.user_failure(cfg, addr, username, now) {
            out.push(v);
        }
        out
    }

    fn user_failure(&mut self, cfg: &Auth, addr: IpAddr, username: &[u8], now: Instant) -> Option<Verdict> {
        if !self.users.contains_key(username) {
            if self.user_order.len() >= MAX_USERS {
                if let Some(old) = self.user_order.pop_front() {
                    self.users.remove(&old);
                }
            }
            self.user_order.push_back(username.to_vec());
        }
        let u = self.users.entry(username.to_vec()).or_default();
        prune(&mut u.failures, now, cfg.window);
        u.failures.push_back(now);
        if !u.sources.contains(&addr) {
            u.sources.push_back(addr);
            if u.sources.len() > SOURCES_PER_USER {
                u.sources.pop_front();
            }
        }
        let due = u.reported.is_none_or(|t| now.saturating_duration_since(t) > cfg.window);
        if cfg.user_failures > 0 && u.failures.len() >= cfg.user_failures as usize && due {
            u.reported = Some(now);
            return Some(Verdict::UserTargeted {
                username: username.to_vec(),
                failures: u.failures.len(),
                sources: u.sources.iter().copied().collect(),
            });
        }
        None
    }

    /// A proven success: the source's failures are forgiven (a subscriber
    /// who mistyped once and then got it right).
    pub fn success(&mut self, addr: IpAddr) {
        if let Some(s) = self.sources.get_mut(&addr) {
            s.failures.clear();
        }
    }

    /// Usernames `addr` tried (for `shieldctl banned ADDR`).
    pub fn usernames(&self, addr: IpAddr) -> Vec<Vec<u8>> {
        self.sources.get(&addr).map(|s| s.usernames.iter().cloned().collect()).unwrap_or_default()
    }

    /// Usernames with failures within the window, most failures first.
    pub fn top_users(&mut self, cfg: &Auth, now: Instant, n: usize) -> Vec<(Vec<u8>, usize, Vec<IpAddr>)> {
        let mut v: Vec<_> = self
            .users
            .iter_mut()
            .filter_map(|(name, u)| {
                prune(&mut u.failures, now, cfg.window);
                (!u.failures.is_empty()).then(|| (name.clone(), u.failures.len(), u.sources.iter().copied().collect()))
            })
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// Sources with failures within the window.
    pub fn failing_sources(&mut self, cfg: &Auth, now: Instant) -> BTreeSet<(IpAddr, usize)> {
        self.sources
            .iter_mut()
            .filter_map(|(a, s)| {
                prune(&mut s.failures, now, cfg.window);
                (!s.failures.is_empty()).then_some((*a, s.failures.len()))
            })
            .collect()
    }

    /// Usernames at or over `user_failures` within the window (the gauge).
    pub fn targeted_users(&mut self, cfg: &Auth, now: Instant) -> usize {
        if cfg.user_failures == 0 {
            return 0;
        }
        let mut n = 0;
        for u in self.users.values_mut() {
            prune(&mut u.failures, now, cfg.window);
            n += usize::from(u.failures.len() >= cfg.user_failures as usize);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Auth {
        Auth { failures: 3, window: Duration::from_secs(60), bantime: Duration::from_secs(600), user_failures: 4 }
    }

    #[test]
    fn exactly_failures_within_the_window_ban() {
        let (c, t0) = (cfg(), Instant::now());
        let a: IpAddr = "203.0.113.5".parse().unwrap();
        let mut b = AuthBook::default();
        assert!(b.failure(&c, a, b"100", t0).is_empty());
        assert!(b.failure(&c, a, b"101", t0 + Duration::from_secs(1)).is_empty());
        let v = b.failure(&c, a, b"102", t0 + Duration::from_secs(2));
        assert_eq!(v, vec![Verdict::Ban { addr: a, username: b"102".to_vec(), failures: 3 }]);
        assert_eq!(b.usernames(a), vec![b"100".to_vec(), b"101".to_vec(), b"102".to_vec()]);
        // Spread beyond the window: no ban.
        let z: IpAddr = "203.0.113.6".parse().unwrap();
        for i in 0..5 {
            assert!(b.failure(&c, z, b"x", t0 + Duration::from_secs(61 * i)).is_empty());
        }
    }

    #[test]
    fn a_success_forgives_a_mistype() {
        let (c, t0) = (cfg(), Instant::now());
        let a: IpAddr = "203.0.113.5".parse().unwrap();
        let mut b = AuthBook::default();
        b.failure(&c, a, b"u", t0);
        b.failure(&c, a, b"u", t0);
        b.success(a);
        assert!(b.failure(&c, a, b"u", t0).is_empty());
    }

    #[test]
    fn one_username_from_many_sources_is_reported_once_per_window() {
        let (c, t0) = (Auth { failures: 0, ..cfg() }, Instant::now());
        let mut b = AuthBook::default();
        let mut reports = 0;
        for i in 0..10u8 {
            let a = IpAddr::from([198, 51, 100, i]);
            for v in b.failure(&c, a, b"alice", t0) {
                assert!(matches!(v, Verdict::UserTargeted { .. }));
                reports += 1;
            }
        }
        assert_eq!(reports, 1);
        assert_eq!(b.targeted_users(&c, t0), 1);
        assert_eq!(b.top_users(&c, t0, 5)[0].1, 10);
        assert_eq!(b.targeted_users(&c, t0 + Duration::from_secs(61)), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let (c, t0) = (cfg(), Instant::now());
        let mut b = AuthBook::default();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            b.failure(&c, IpAddr::from(i.to_be_bytes()), &i.to_be_bytes(), t0);
        }
        assert!(b.sources.len() <= MAX_SOURCES && b.users.len() <= MAX_USERS);
    }
}
