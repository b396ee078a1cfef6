//! The destination policy's maps (SPEC §11): the `DEST_POLICY` record, the
//! rule trie, the INVITE counters by class and country, the refusal
//! counters, and the ring buffer of refusal reports.
//!
//! A policy change writes the trie as a difference from what it holds
//! (new and changed keys first, then the removed ones, then the record),
//! so a reload never leaves the kernel without the rules both old and new
//! policy share.

use std::collections::{BTreeMap, HashMap as StdHashMap};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, MapData, MapError, PerCpuArray},
    Ebpf,
};
use shield_common::dest::{
    DestClass, DestPolicy, DestRule, DEST_CLASS_SLOT, DEST_STATS_PER_IFACE, KEY_BYTES,
};
use shield_common::{SrcKey, MAX_IFACE_SLOTS};

use super::map_ops::{take, trie_add, trie_del, Trie};
use super::{KernelError, MapId};
use crate::dest::TrieEntry;

/// The maps, owned by [`super::ShieldMaps`].
pub struct DestMaps {
    policy: Array<MapData, DestPolicy>,
    rules: Trie<[u8; KEY_BYTES], DestRule>,
    stats: PerCpuArray<MapData, u64>,
    refused: HashMap<MapData, u64, u64>,
    // Held for the test API (`clear_*`), which is all that reads it.
    #[cfg_attr(not(feature = "test-api"), allow(dead_code))]
    sources: HashMap<MapData, SrcKey, shield_common::dest::DestSource>,
    /// Refusal reports; the daemon takes it to read it.
    pub events: Option<super::EventRing>,
    /// What the trie holds, so a change writes only the difference.
    held: BTreeMap<(u32, [u8; KEY_BYTES]), DestRule>,
}

/// INVITEs of one interface slot by class and by country code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestCounts {
    pub by_class: [u64; DestClass::COUNT],
    /// Country code (1..=999) → INVITEs; codes never seen are absent.
    pub by_country: BTreeMap<u32, u64>,
}

impl DestMaps {
    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> Result<DestMaps, KernelError> {
        let mut maps = DestMaps {
            policy: take(ebpf, MapId::DestPolicy)?,
            rules: take(ebpf, MapId::DestRules)?,
            stats: take(ebpf, MapId::DestStats)?,
            refused: take(ebpf, MapId::DestRefused)?,
            sources: take(ebpf, MapId::DestSources)?,
            events: Some(super::EventRing(take(ebpf, MapId::DestEvents)?)),
            held: BTreeMap::new(),
        };
        // Adopted pins: learn what the trie already holds.
        let keys: Vec<Key<[u8; KEY_BYTES]>> = maps.rules.keys().collect::<Result<_, _>>().map_err(map_err)?;
        for k in keys {
            if let Ok(v) = maps.rules.get(&k, 0) {
                maps.held.insert((k.prefix_len(), k.data()), v);
            }
        }
        Ok(maps)
    }

    /// Installs `policy` and its rule trie `trie` (see the module's
    /// comment). On an error the record is not written: the kernel keeps
    /// deciding by the old one, with the rules both share.
    pub fn apply(&mut self, policy: &DestPolicy, trie: &[TrieEntry]) -> Result<(), KernelError> {
        let want: BTreeMap<(u32, [u8; KEY_BYTES]), DestRule> =
            trie.iter().map(|(l, k, r)| ((*l, *k), *r)).collect();
        for (&(len, data), rule) in &want {
            if self.held.get(&(len, data)) != Some(rule) {
                trie_add(&mut self.rules, Key::new(len, data), *rule)?;
                self.held.insert((len, data), *rule);
            }
        }
        let gone: Vec<(u32, [u8; KEY_BYTES])> =
            self.held.keys().filter(|k| !want.contains_key(k)).copied().collect();
        for (len, data) in gone {
            trie_del(&mut self.rules, Key::new(len, data))?;
            self.held.remove(&(len, data));
        }
        self.policy.set(0, policy, 0).map_err(KernelError::from)
    }

    /// Rules in the trie.
    pub fn rules_held(&self) -> usize {
        self.held.len()
    }

    /// INVITEs seen on interface slot `slot`, summed over CPUs.
    pub fn counts(&self, slot: u32) -> Result<DestCounts, KernelError> {
        let mut out = DestCounts::default();
        if slot >= MAX_IFACE_SLOTS {
            return Ok(out);
        }
        let base = slot * DEST_STATS_PER_IFACE;
        for class in DestClass::ALL {
            out.by_class[class as usize] = self.sum(base + DEST_CLASS_SLOT + class as u32)?;
        }
        for cc in 1..DEST_CLASS_SLOT {
            let n = self.sum(base + cc)?;
            if n != 0 {
                out.by_country.insert(cc, n);
            }
        }
        Ok(out)
    }

    fn sum(&self, i: u32) -> Result<u64, KernelError> {
        Ok(self.stats.get(&i, 0)?.iter().sum())
    }

    /// Refusals by (interface slot, rule id).
    pub fn refusals(&self) -> Result<StdHashMap<(u32, u32), u64>, KernelError> {
        let mut out = StdHashMap::new();
        for kv in self.refused.iter() {
            let (k, v) = kv?;
            out.insert(((k >> 32) as u32, k as u32), v);
        }
        Ok(out)
    }

    /// Forgets the refusal counters (the rule ids change with a policy).
    pub fn clear_refusals(&mut self) -> Result<(), KernelError> {
        let keys: Vec<u64> = self.refused.keys().collect::<Result<_, _>>()?;
        for k in keys {
            super::map_ops::hash_del(&mut self.refused, &k)?;
        }
        Ok(())
    }

    #[cfg(feature = "test-api")]
    /// Forgets every caller's international bucket and refusal window.
    pub fn clear_sources(&mut self) -> Result<(), KernelError> {
        let keys: Vec<SrcKey> = self.sources.keys().collect::<Result<_, _>>()?;
        for k in keys {
            super::map_ops::hash_del(&mut self.sources, &k)?;
        }
        Ok(())
    }
}

fn map_err(source: MapError) -> KernelError {
    KernelError::Map {
        map: MapId::DestRules.name(),
        source,
    }
}
