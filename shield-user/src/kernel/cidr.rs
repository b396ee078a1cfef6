//! Expiring CIDR entries in a pair of LPM tries (v4, v6): the CIDR bans
//! and the verified networks. One rule for both: an entry's trie value
//! carries its *effective* expiry, the latest of its own and of every
//! entry covering it, since the kernel's lookup returns only the longest
//! matching prefix (see [`effective_expiry`]). So every change rewrites
//! the entries nested inside it.

use std::collections::BTreeMap;

use ipnet::IpNet;
use shield_common::{BanValue, Verified};

use super::map_ops::{effective_expiry, nested, net_of_v4, net_of_v6, trie_add, trie_del, v4_key, v6_key, Trie};
use super::{KernelError, MapId};

/// A trie value with an expiry (monotonic ns; 0 = never).
pub(super) trait Expiring: aya::Pod {
    fn expires_ns(&self) -> u64;
    /// The value written to the trie when the effective expiry is `ns`.
    fn with_expires_ns(self, ns: u64) -> Self;
}

impl Expiring for BanValue {
    fn expires_ns(&self) -> u64 {
        self.expires_ns
    }
    fn with_expires_ns(self, ns: u64) -> BanValue {
        BanValue::until(ns)
    }
}

impl Expiring for Verified {
    fn expires_ns(&self) -> u64 {
        self.expires_ns
    }
    fn with_expires_ns(self, ns: u64) -> Verified {
        Verified {
            expires_ns: ns,
            ..self
        }
    }
}

/// Trie entries added (`true`) or removed, by trie: what the policy's
/// occupancy flags must follow.
pub(super) type Changed = Vec<(MapId, bool)>;

pub(super) struct ExpiringNets<V> {
    /// Each entry's own value (its own expiry).
    own: BTreeMap<IpNet, V>,
    v4: Trie<[u8; 4], V>,
    v6: Trie<[u8; 16], V>,
    ids: [MapId; 2],
}

impl<V: Expiring> ExpiringNets<V> {
    pub(super) fn new(v4: Trie<[u8; 4], V>, v6: Trie<[u8; 16], V>, ids: [MapId; 2]) -> Self {
        ExpiringNets {
            own: BTreeMap::new(),
            v4,
            v6,
            ids,
        }
    }

    pub(super) fn get(&self, net: &IpNet) -> Option<&V> {
        self.own.get(net)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&IpNet, &V)> {
        self.own.iter()
    }

    /// The tries' entry counts (v4, v6).
    pub(super) fn counts(&self) -> [usize; 2] {
        [self.v4.keys().count(), self.v6.keys().count()]
    }

    /// The trie holding `net`.
    pub(super) fn trie(&self, net: &IpNet) -> MapId {
        match net {
            IpNet::V4(_) => self.ids[0],
            IpNet::V6(_) => self.ids[1],
        }
    }

    /// Learns the entries of adopted tries: their effective expiries stand
    /// in for their own ones (a restore rewrites them).
    pub(super) fn adopt(&mut self) -> Result<(), KernelError> {
        let err = |map: MapId| move |source| KernelError::Map { map: map.name(), source };
        let mut nets = Vec::new();
        for kv in self.v4.iter() {
            let (k, v) = kv.map_err(err(self.ids[0]))?;
            nets.push((net_of_v4(&k), v));
        }
        for kv in self.v6.iter() {
            let (k, v) = kv.map_err(err(self.ids[1]))?;
            nets.push((net_of_v6(&k), v));
        }
        self.own.extend(nets);
        Ok(())
    }

    /// Sets `net`'s own value and writes it and the entries inside it.
    pub(super) fn set(&mut self, net: IpNet, v: V) -> Result<Changed, KernelError> {
        self.own.insert(net, v);
        let mut changed = Changed::new();
        self.write(net, &mut changed)?;
        self.rewrite_nested(net, &mut changed)?;
        Ok(changed)
    }

    /// Removes `net` (whether it was in the trie), and rewrites what it
    /// covered, which falls back to its own expiry.
    pub(super) fn remove(&mut self, net: IpNet) -> Result<(bool, Changed), KernelError> {
        self.own.remove(&net);
        let removed = match net {
            IpNet::V4(n) => trie_del(&mut self.v4, v4_key(n))?,
            IpNet::V6(n) => trie_del(&mut self.v6, v6_key(n))?,
        };
        let mut changed = Changed::new();
        if removed {
            changed.push((self.trie(&net), false));
        }
        self.rewrite_nested(net, &mut changed)?;
        Ok((removed, changed))
    }

    /// Writes one entry's trie value with its effective expiry.
    fn write(&mut self, net: IpNet, changed: &mut Changed) -> Result<(), KernelError> {
        let Some(own) = self.own.get(&net) else {
            return Ok(());
        };
        let v = own.with_expires_ns(effective_expiry(&self.own, net, V::expires_ns));
        let added = match net {
            IpNet::V4(n) => trie_add(&mut self.v4, v4_key(n), v)?,
            IpNet::V6(n) => trie_add(&mut self.v6, v6_key(n), v)?,
        };
        if added {
            changed.push((self.trie(&net), true));
        }
        Ok(())
    }

    fn rewrite_nested(&mut self, net: IpNet, changed: &mut Changed) -> Result<(), KernelError> {
        for n in nested(&self.own, net) {
            self.write(n, changed)?;
        }
        Ok(())
    }
}
