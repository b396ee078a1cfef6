//! The daemon's ban book: what is banned, by whom, why and until when, and
//! the repeat-offender history behind `[bans] increment`. Pure bookkeeping:
//! the kernel maps are written by the caller.
//!
//! Each ban carries its expiry in both clocks: monotonic nanoseconds for the
//! kernel (what `bpf_ktime_get_ns` compares against) and wall-clock
//! milliseconds for the ban store (what survives a reboot).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::kernel::monotonic_ns;
use crate::store::{self, BanRecord, OffenceRecord};

pub use crate::origin::{Origin, UnknownOrigin};

/// Now, in both clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub mono_ns: u64,
    pub wall_ms: u64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            mono_ns: monotonic_ns(),
            wall_ms: store::now_ms(),
        }
    }

    /// Expiry `d` from now in both clocks.
    pub fn after(&self, d: Duration) -> Expiry {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Expiry::At {
            mono_ns: self.mono_ns.saturating_add(ns).max(1),
            wall_ms: self.wall_ms.saturating_add(ms),
        }
    }

    /// A wall-clock time as a monotonic one (`None` if already past).
    pub fn wall_to_mono(&self, wall_ms: u64) -> Option<u64> {
        let left_ms = wall_ms.checked_sub(self.wall_ms).filter(|&l| l > 0)?;
        Some(
            self.mono_ns
                .saturating_add(left_ms.saturating_mul(1_000_000)),
        )
    }

    /// A monotonic time as a wall-clock one.
    pub fn mono_to_wall(&self, mono_ns: u64) -> u64 {
        let left_ms = mono_ns.saturating_sub(self.mono_ns) / 1_000_000;
        self.wall_ms.saturating_add(left_ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Never,
    At { mono_ns: u64, wall_ms: u64 },
}

impl Expiry {
    /// The kernel's `BanValue.expires_ns` (0 = never).
    pub fn kernel(&self) -> u64 {
        match self {
            Expiry::Never => 0,
            Expiry::At { mono_ns, .. } => *mono_ns,
        }
    }

    pub fn wall_ms(&self) -> Option<u64> {
        match self {
            Expiry::Never => None,
            Expiry::At { wall_ms, .. } => Some(*wall_ms),
        }
    }

    pub fn is_past(&self, now: &Clock) -> bool {
        matches!(self, Expiry::At { mono_ns, .. } if *mono_ns <= now.mono_ns)
    }

    /// Time left (`None`: never ends).
    pub fn left(&self, now: &Clock) -> Option<Duration> {
        match self {
            Expiry::Never => None,
            Expiry::At { mono_ns, .. } => {
                Some(Duration::from_nanos(mono_ns.saturating_sub(now.mono_ns)))
            }
        }
    }

    /// Later of the two.
    pub fn outlasts(&self, other: &Expiry) -> bool {
        match (self, other) {
            (Expiry::Never, _) => true,
            (_, Expiry::Never) => false,
            (Expiry::At { mono_ns: a, .. }, Expiry::At { mono_ns: b, .. }) => a >= b,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub origin: Origin,
    pub reason: Arc<str>,
    pub created_ms: u64,
    pub expiry: Expiry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct History {
    count: u32,
    until_ms: u64,
}

/// Rules for automatic bans (from `[bans]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Increment {
    pub enabled: bool,
    pub maxtime: Duration,
}

/// Ordered by network: a start builds it from records already in that
/// order (the snapshot keeps it) in one sequential pass, and compares it
/// with the kernel's sorted dump in another, where a hash map took a
/// random memory access per ban (a million of them, most of a start's
/// user-space time).
#[derive(Debug, Default)]
pub struct BanBook {
    bans: BTreeMap<IpNet, Ban>,
    history: HashMap<IpNet, History>,
}

/// What [`BanBook::restore`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub restored: usize,
    /// Records whose time was up: not restored.
    pub expired: Vec<IpNet>,
    /// Records whose origin this version cannot place: not restored (a
    /// kernel entry for them is adopted as the kernel's), each with why.
    pub unreadable: Vec<(IpNet, UnknownOrigin)>,
}

impl BanBook {
    pub(crate) fn len(&self) -> usize {
        self.bans.len()
    }

    pub fn get(&self, net: &IpNet) -> Option<&Ban> {
        self.bans.get(net)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpNet, &Ban)> {
        self.bans.iter()
    }

    pub fn insert(&mut self, net: IpNet, ban: Ban) -> Option<Ban> {
        self.bans.insert(net, ban)
    }

    pub fn remove(&mut self, net: &IpNet) -> Option<Ban> {
        self.bans.remove(net)
    }

    pub fn get_mut(&mut self, net: &IpNet) -> Option<&mut Ban> {
        self.bans.get_mut(net)
    }

    /// Keeps the bans of the networks `keep` accepts; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&IpNet) -> bool) -> usize {
        let before = self.bans.len();
        self.bans.retain(|n, _| keep(n));
        before - self.bans.len()
    }

    pub fn clear(&mut self) -> Vec<IpNet> {
        std::mem::take(&mut self.bans).into_keys().collect()
    }

    /// Every ban, in network order, to change in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&IpNet, &mut Ban)> {
        self.bans.iter_mut()
    }

    /// A banned network that contains `net` (for "not banned as such, but
    /// inside ..." messages).
    pub fn covering(&self, net: &IpNet) -> Option<IpNet> {
        self.bans
            .keys()
            .find(|b| *b != net && b.contains(net))
            .copied()
    }

    /// How long an automatic ban of `net` lasts: `base`, doubled for each
    /// earlier automatic ban still remembered, capped at `maxtime`.
    /// A source's history is forgotten `maxtime` after its last ban ended.
    pub fn auto_duration(
        &self,
        net: &IpNet,
        base: Duration,
        inc: Increment,
        now: &Clock,
    ) -> Duration {
        if !inc.enabled {
            return base;
        }
        let earlier = match self.history.get(net) {
            Some(h) if !forgotten(h, inc.maxtime, now) => h.count,
            _ => 0,
        };
        let factor = 1u32.checked_shl(earlier.min(31)).unwrap_or(u32::MAX);
        base.checked_mul(factor)
            .unwrap_or(inc.maxtime)
            .min(inc.maxtime.max(base))
    }

    /// Remembers an automatic ban of `net` ending at `until_ms`.
    pub fn record_offence(&mut self, net: IpNet, until_ms: u64, inc: Increment, now: &Clock) {
        let h = self.history.entry(net).or_insert(History {
            count: 0,
            until_ms: 0,
        });
        if forgotten(h, inc.maxtime, now) {
            h.count = 0;
        }
        h.count = h.count.saturating_add(1);
        h.until_ms = h.until_ms.max(until_ms);
    }

    /// Bans whose time is up.
    pub fn expired(&self, now: &Clock) -> Vec<IpNet> {
        self.bans
            .iter()
            .filter(|(_, b)| b.expiry.is_past(now))
            .map(|(n, _)| *n)
            .collect()
    }

    /// `net`'s automatic-ban count, as the store keeps it.
    pub fn offence(&self, net: &IpNet) -> Option<OffenceRecord> {
        self.history.get(net).map(|h| OffenceRecord {
            net: *net,
            count: h.count,
            until_ms: h.until_ms,
        })
    }

    pub fn prune_history(&mut self, maxtime: Duration, now: &Clock) {
        self.history.retain(|_, h| !forgotten(h, maxtime, now));
    }

    /// The book as store records.
    pub fn records(&self) -> (Vec<BanRecord>, Vec<OffenceRecord>) {
        let bans = self
            .bans
            .iter()
            .map(|(net, b)| BanRecord {
                net: *net,
                origin: b.origin.to_record(),
                reason: b.reason.to_string(),
                created_ms: b.created_ms,
                expires_ms: b.expiry.wall_ms(),
            })
            .collect();
        let history = self
            .history
            .iter()
            .map(|(net, h)| OffenceRecord {
                net: *net,
                count: h.count,
                until_ms: h.until_ms,
            })
            .collect();
        (bans, history)
    }

    /// Loads store records: expiries are converted to monotonic time
    /// (what is left of them), expired ones dropped. Records in network
    /// order (as the snapshot has them) make this one sequential pass;
    /// any other order is sorted first. Of two records of one network the
    /// later wins.
    pub fn restore(
        &mut self,
        bans: Vec<BanRecord>,
        history: Vec<OffenceRecord>,
        now: &Clock,
    ) -> Restored {
        let mut r = Restored::default();
        let mut texts = Texts::default();
        let mut book = Vec::with_capacity(bans.len());
        for rec in bans {
            let Some(expiry) = record_expiry(&rec, now) else {
                r.expired.push(rec.net);
                continue;
            };
            let origin = match texts.origin(&rec.origin) {
                Ok(o) => o,
                Err(e) => {
                    r.unreadable.push((rec.net, e));
                    continue;
                }
            };
            let ban = Ban {
                origin,
                reason: texts.reason(rec.reason),
                created_ms: rec.created_ms,
                expiry,
            };
            book.push((rec.net.trunc(), ban));
        }
        r.restored = book.len();
        if self.bans.is_empty() {
            // Sorts (a linear check when already in order), then builds
            // the tree bottom-up.
            self.bans = book.into_iter().collect();
        } else {
            self.bans.extend(book);
        }
        for h in history {
            self.history.insert(
                h.net.trunc(),
                History {
                    count: h.count,
                    until_ms: h.until_ms,
                },
            );
        }
        r
    }
}

/// The origin and reason texts of a restore: bulk bans share them, so a
/// run of equal texts is compared, not parsed or hashed again, and each
/// distinct reason is allocated once.
#[derive(Default)]
struct Texts {
    reasons: HashSet<Arc<str>>,
    last_reason: Option<Arc<str>>,
    last_origin: Option<(String, Origin)>,
}

impl Texts {
    fn reason(&mut self, text: String) -> Arc<str> {
        let reason = match &self.last_reason {
            Some(l) if **l == *text => l.clone(),
            _ => match self.reasons.get(text.as_str()) {
                Some(r) => r.clone(),
                None => {
                    let r: Arc<str> = text.into();
                    if self.reasons.len() < 4096 {
                        self.reasons.insert(r.clone());
                    }
                    r
                }
            },
        };
        self.last_reason = Some(reason.clone());
        reason
    }

    fn origin(&mut self, text: &str) -> Result<Origin, UnknownOrigin> {
        if let Some((t, o)) = &self.last_origin {
            if t == text {
                return Ok(o.clone());
            }
        }
        let o = Origin::from_record(text)?;
        self.last_origin = Some((text.to_string(), o.clone()));
        Ok(o)
    }
}

/// A store record's expiry in both clocks (what is left of it); `None`
/// once past.
pub fn record_expiry(rec: &BanRecord, now: &Clock) -> Option<Expiry> {
    match rec.expires_ms {
        None => Some(Expiry::Never),
        Some(ms) => now.wall_to_mono(ms).map(|mono_ns| Expiry::At {
            mono_ns,
            wall_ms: ms,
        }),
    }
}

fn forgotten(h: &History, maxtime: Duration, now: &Clock) -> bool {
    let keep_ms = u64::try_from(maxtime.as_millis()).unwrap_or(u64::MAX);
    h.until_ms.saturating_add(keep_ms) <= now.wall_ms
}

/// Whether `outer` contains all of `inner` (same family).
pub fn covers(outer: &IpNet, inner: &IpNet) -> bool {
    outer.contains(inner)
}

/// Whether the two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    fn clock(mono_s: u64, wall_s: u64) -> Clock {
        Clock {
            mono_ns: mono_s * 1_000_000_000,
            wall_ms: wall_s * 1000,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn increment_doubles_up_to_maxtime_and_forgets() {
        let inc = Increment {
            enabled: true,
            maxtime: Duration::from_secs(5 * 3600),
        };
        let mut book = BanBook::default();
        let n = net("198.51.100.9/32");
        let now = clock(100, 1_000_000);
        let mut got = Vec::new();
        for _ in 0..5 {
            let d = book.auto_duration(&n, H, inc, &now);
            got.push(d.as_secs() / 3600);
            book.record_offence(n, now.wall_ms + d.as_millis() as u64, inc, &now);
        }
        assert_eq!(got, [1, 2, 4, 5, 5]);
        // Another source starts at the base.
        assert_eq!(
            book.auto_duration(&net("198.51.100.10/32"), H, inc, &now),
            H
        );
        // maxtime after its last ban ended, the history is gone.
        let later = clock(100, 1_000_000 + 5 * 3600 + 5 * 3600 + 1);
        assert_eq!(book.auto_duration(&n, H, inc, &later), H);
        book.prune_history(inc.maxtime, &later);
        assert!(book.history.is_empty());
        // Off: always the base.
        let off = Increment {
            enabled: false,
            maxtime: inc.maxtime,
        };
        assert_eq!(book.auto_duration(&n, H, off, &now), H);
    }

    #[test]
    fn restore_converts_wall_to_monotonic_and_drops_expired() {
        // Written at wall 1000 s; restored after a "reboot": wall 1100 s,
        // monotonic 5 s.
        let now = clock(5, 1100);
        let recs = vec![
            BanRecord {
                net: net("192.0.2.1/32"),
                origin: "manual".into(),
                reason: "a".into(),
                created_ms: 0,
                expires_ms: Some(1_160_000),
            },
            BanRecord {
                net: net("192.0.2.2/32"),
                origin: "jail:kamailio".into(),
                reason: "b".into(),
                created_ms: 0,
                expires_ms: Some(1_099_000),
            },
            BanRecord {
                net: net("2001:db8::/64"),
                origin: "escalation".into(),
                reason: "c".into(),
                created_ms: 0,
                expires_ms: None,
            },
            // Written by some other version: not taken for the kernel's.
            BanRecord {
                net: net("192.0.2.9/32"),
                origin: "bogus".into(),
                reason: "d".into(),
                created_ms: 0,
                expires_ms: None,
            },
        ];
        let mut book = BanBook::default();
        assert_eq!(
            book.restore(recs, vec![], &now),
            Restored {
                restored: 2,
                expired: vec![net("192.0.2.2/32")],
                unreadable: vec![(net("192.0.2.9/32"), UnknownOrigin("bogus".into()))],
            }
        );
        let b = book.get(&net("192.0.2.1/32")).unwrap();
        assert_eq!(b.expiry.kernel(), 65 * 1_000_000_000);
        assert_eq!(b.expiry.left(&now), Some(Duration::from_secs(60)));
        let v6 = book.get(&net("2001:db8::/64")).unwrap();
        assert_eq!(v6.expiry, Expiry::Never);
        assert_eq!(v6.origin, Origin::Escalation);
        // Round trip through records.
        let (recs, _) = book.records();
        assert_eq!(recs.len(), 2);
        assert!(recs
            .iter()
            .any(|r| r.origin == "manual" && r.expires_ms == Some(1_160_000)));
    }

    /// Records in any order give the book in network order; of two
    /// records of one network the later wins (as inserting them one by
    /// one did); equal reasons share one allocation.
    #[test]
    fn restore_orders_the_book_and_the_later_record_wins() {
        let now = clock(5, 1100);
        let rec = |n: &str, reason: &str| BanRecord {
            net: net(n),
            origin: "manual".into(),
            reason: reason.into(),
            created_ms: 0,
            expires_ms: None,
        };
        let recs = vec![
            rec("203.0.113.9/32", "a"),
            rec("2001:db8::1/128", "a"),
            rec("192.0.2.1/32", "first"),
            rec("198.51.100.0/24", "a"),
            rec("192.0.2.1/32", "second"),
        ];
        let mut book = BanBook::default();
        let r = book.restore(recs, vec![], &now);
        assert_eq!(r.restored, 5);
        let order: Vec<String> = book.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(order, ["192.0.2.1/32", "198.51.100.0/24", "203.0.113.9/32", "2001:db8::1/128"]);
        assert_eq!(&*book.get(&net("192.0.2.1/32")).unwrap().reason, "second");
        let a = &book.get(&net("203.0.113.9/32")).unwrap().reason;
        assert!(Arc::ptr_eq(a, &book.get(&net("2001:db8::1/128")).unwrap().reason));
    }

    #[test]
    fn expiry_and_cover() {
        let now = clock(10, 10);
        let mut book = BanBook::default();
        let past = Ban {
            origin: Origin::Manual,
            reason: "x".into(),
            created_ms: 0,
            expiry: clock(0, 0).after(Duration::from_secs(5)),
        };
        book.insert(net("192.0.2.0/24"), past);
        assert_eq!(book.expired(&now), vec![net("192.0.2.0/24")]);
        assert_eq!(
            book.covering(&net("192.0.2.7/32")),
            Some(net("192.0.2.0/24"))
        );
        assert_eq!(book.covering(&net("192.0.2.0/24")), None);
        assert!(covers(&net("192.0.2.0/24"), &net("192.0.2.7/32")));
        assert!(!covers(&net("192.0.2.7/32"), &net("192.0.2.0/24")));
        assert!(overlaps(&net("192.0.2.7/32"), &net("192.0.2.0/24")));
        assert!(!overlaps(&net("192.0.2.0/24"), &net("2001:db8::/32")));
        assert!(Expiry::Never.outlasts(&now.after(H)));
        assert!(!now.after(H).outlasts(&Expiry::Never));
    }
}

