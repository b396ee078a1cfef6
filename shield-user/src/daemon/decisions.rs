//! CrowdSec's decisions as this host enforces them (SPEC §9). Pure
//! bookkeeping, like [`super::bans`]: the caller writes the maps.
//!
//! LAPI is their source of truth, so they are not local bans and never
//! reach the ban store; they live here, by LAPI id and by network. A
//! network may carry several decisions (two scenarios, two SBCs pushing
//! the same brute-forcer) and local bans too: the kernel holds the
//! longest of all, and loses the entry only when none is left.
//!
//! Entries found in the pinned maps at start with no local record are
//! *held* (negative ids): most likely decisions enforced by the previous
//! shieldd. They keep being enforced while LAPI cannot be reached, and are
//! dropped by the first full (startup) stream that does not list them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ipnet::IpNet;

use super::bans::{Clock, Expiry};
use crate::config::Scope;

/// The origin shown for a held entry until LAPI confirms it.
pub const HELD_ORIGIN: &str = "unconfirmed";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// LAPI's decision id; negative for a held entry.
    pub id: i64,
    pub origin: Arc<str>,
    pub scenario: Arc<str>,
    pub expiry: Expiry,
}

#[derive(Debug, Default)]
pub struct DecisionBook {
    nets: HashMap<IpNet, Vec<Held>>,
    ids: HashMap<i64, IpNet>,
    next_held: i64,
}

impl DecisionBook {
    /// Records a decision (a repeat of a known id replaces it, wherever it
    /// was). Returns the networks whose kernel entry must be rewritten:
    /// `net` if its longest expiry changed, and the network a reused id
    /// named before (it may have nothing left to hold it).
    pub fn add(&mut self, net: IpNet, d: Held) -> Vec<IpNet> {
        let mut touched = Vec::new();
        let before = self.longest(&net);
        if let Some(old) = self.ids.insert(d.id, net) {
            self.drop_id(old, d.id);
            if old != net {
                touched.push(old);
            }
        }
        self.nets.entry(net).or_default().push(d);
        if before != self.longest(&net) {
            touched.push(net);
        }
        touched
    }

    /// An entry of the pinned maps to keep until LAPI says otherwise.
    pub fn hold(&mut self, net: IpNet, expiry: Expiry) {
        self.next_held -= 1;
        let held = Held {
            id: self.next_held,
            origin: HELD_ORIGIN.into(),
            scenario: "found in the pinned maps at start".into(),
            expiry,
        };
        self.add(net, held);
    }

    /// Forgets decision `id`; the network it was on, if known.
    pub fn remove(&mut self, id: i64) -> Option<IpNet> {
        let net = self.ids.remove(&id)?;
        self.drop_id(net, id);
        Some(net)
    }

    fn drop_id(&mut self, net: IpNet, id: i64) {
        if let Some(v) = self.nets.get_mut(&net) {
            v.retain(|h| h.id != id);
            if v.is_empty() {
                self.nets.remove(&net);
            }
        }
    }

    /// Forgets the decisions on `net` that `pred` picks; their ids.
    pub fn remove_where(&mut self, net: &IpNet, pred: impl Fn(&Held) -> bool) -> Vec<i64> {
        let ids: Vec<i64> = self
            .nets
            .get(net)
            .map(|v| v.iter().filter(|h| pred(h)).map(|h| h.id).collect())
            .unwrap_or_default();
        for id in &ids {
            self.remove(*id);
        }
        ids
    }

    /// After a full (startup) stream: forgets every decision whose id it
    /// did not list, held entries included. The networks touched.
    pub fn keep_only(&mut self, listed: &HashSet<i64>) -> Vec<IpNet> {
        let gone: Vec<i64> = self
            .ids
            .keys()
            .copied()
            .filter(|id| !listed.contains(id))
            .collect();
        let mut nets: Vec<IpNet> = gone.into_iter().filter_map(|id| self.remove(id)).collect();
        nets.sort();
        nets.dedup();
        nets
    }

    /// The decisions on `net`, longest first.
    pub fn on(&self, net: &IpNet) -> Vec<&Held> {
        let mut v: Vec<&Held> = self.nets.get(net).map(|v| v.iter().collect()).unwrap_or_default();
        v.sort_by(|a, b| {
            if a.expiry.outlasts(&b.expiry) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        v
    }

    /// The expiry the kernel must give `net` for its decisions.
    pub fn longest(&self, net: &IpNet) -> Option<Expiry> {
        self.nets.get(net)?.iter().map(|h| h.expiry).reduce(|a, b| {
            if b.outlasts(&a) {
                b
            } else {
                a
            }
        })
    }

    /// Forgets the decisions whose time is up; the networks touched.
    pub fn expire(&mut self, now: &Clock) -> Vec<IpNet> {
        let gone: Vec<(i64, IpNet)> = self
            .nets
            .iter()
            .flat_map(|(n, v)| v.iter().filter(|h| h.expiry.is_past(now)).map(|h| (h.id, *n)))
            .collect();
        let mut nets: Vec<IpNet> = gone
            .into_iter()
            .filter_map(|(id, _)| self.remove(id))
            .collect();
        nets.sort();
        nets.dedup();
        nets
    }

    /// Forgets everything; the networks that had decisions.
    pub fn clear(&mut self) -> Vec<IpNet> {
        self.ids.clear();
        self.nets.drain().map(|(n, _)| n).collect()
    }

    pub fn nets(&self) -> impl Iterator<Item = &IpNet> {
        self.nets.keys()
    }

    /// Decisions by (origin, scope).
    pub fn counts(&self) -> BTreeMap<(String, Scope), u64> {
        let mut out = BTreeMap::new();
        for (net, v) in &self.nets {
            let scope = if net.prefix_len() == net.max_prefix_len() {
                Scope::Ip
            } else {
                Scope::Range
            };
            for h in v {
                *out.entry((h.origin.to_string(), scope)).or_insert(0) += 1;
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn held(id: i64, secs: u64, now: &Clock) -> Held {
        Held {
            id,
            origin: "cscli".into(),
            scenario: "test".into(),
            expiry: now.after(Duration::from_secs(secs)),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn the_longest_decision_wins_and_deletions_are_exact() {
        let now = Clock::now();
        let mut b = DecisionBook::default();
        let n = net("192.0.2.7/32");
        assert_eq!(b.add(n, held(1, 60, &now)), [n]);
        assert_eq!(b.add(n, held(2, 600, &now)), [n]);
        // A shorter one changes nothing the kernel holds.
        assert!(b.add(n, held(3, 30, &now)).is_empty());
        assert_eq!(b.longest(&n), Some(now.after(Duration::from_secs(600))));
        assert_eq!(b.remove(2), Some(n));
        assert_eq!(b.longest(&n), Some(now.after(Duration::from_secs(60))));
        // Deleting twice, or an id never seen: nothing.
        assert_eq!(b.remove(2), None);
        assert_eq!(b.remove(99), None);
        // A repeat of an id replaces it, even on another network.
        let m = net("198.51.100.0/24");
        assert_eq!(b.add(m, held(1, 60, &now)), [n, m]);
        assert_eq!(b.on(&n).len(), 1);
        assert_eq!(b.len(), 2);
        assert_eq!(b.remove(3), Some(n));
        assert_eq!(b.longest(&n), None);
        assert!(b.nets().eq([&m]));
    }

    #[test]
    fn a_reused_id_moves_its_network_and_names_the_old_one() {
        let now = Clock::now();
        let mut b = DecisionBook::default();
        let (old, new) = (net("192.0.2.150/32"), net("192.0.2.151/32"));
        b.add(old, held(42, 60, &now));
        // The old network must be rewritten (here: lifted, nothing else
        // holds it), the new one written.
        assert_eq!(b.add(new, held(42, 60, &now)), [old, new]);
        assert_eq!(b.longest(&old), None);
        assert!(b.nets().eq([&new]));
        // Another decision still holding the old network keeps it.
        b.add(old, held(7, 600, &now));
        assert_eq!(b.add(old, held(42, 60, &now)), [new]);
        assert_eq!(b.longest(&old), Some(now.after(Duration::from_secs(600))));
        assert_eq!(b.longest(&new), None);
        // The same id again on the same network, longer: rewritten once.
        assert_eq!(b.add(old, held(42, 900, &now)), [old]);
    }

    #[test]
    fn a_full_stream_drops_what_it_does_not_list() {
        let now = Clock::now();
        let mut b = DecisionBook::default();
        b.hold(net("10.0.0.1/32"), now.after(Duration::from_secs(60)));
        b.add(net("10.0.0.2/32"), held(5, 60, &now));
        b.add(net("10.0.0.3/32"), held(6, 60, &now));
        let gone = b.keep_only(&HashSet::from([6]));
        assert_eq!(gone, vec![net("10.0.0.1/32"), net("10.0.0.2/32")]);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn counts_by_origin_and_scope_and_expiry() {
        let now = Clock::now();
        let mut b = DecisionBook::default();
        b.add(net("10.0.0.1/32"), held(1, 60, &now));
        b.add(net("2001:db8::/48"), held(2, 60, &now));
        let past = Clock {
            mono_ns: now.mono_ns + 61_000_000_000,
            wall_ms: now.wall_ms + 61_000,
        };
        let c = b.counts();
        assert_eq!(c[&("cscli".to_string(), Scope::Ip)], 1);
        assert_eq!(c[&("cscli".to_string(), Scope::Range)], 1);
        assert_eq!(b.expire(&past).len(), 2);
        assert!(b.is_empty());
    }
}
