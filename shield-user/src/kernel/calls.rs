//! The call table's maps (SPEC §13): the calls in progress, the callers'
//! in-progress counts, the `[calls]` record and the ring buffer of ended
//! calls. The daemon only reads the table and the counts: every change to
//! them is the kernel's (the expiry too, through the `shield_calls_expire`
//! program, see [`super::Shield::expire_call`]), so a count is given back
//! exactly once.

use aya::{
    maps::{Array, HashMap, MapData, MapError},
    Ebpf,
};
use shield_common::calls::{Call, CallConfig, CallEvent};
use shield_common::SrcKey;

use super::map_ops::take;
use super::{KernelError, MapId};

/// The maps, owned by [`super::ShieldMaps`].
pub struct CallMaps {
    calls: HashMap<MapData, u64, Call>,
    counts: HashMap<MapData, SrcKey, u64>,
    cfg: Array<MapData, CallConfig>,
    /// Ended calls; the daemon takes it to read it.
    pub events: Option<super::EventRing>,
}

impl CallMaps {
    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> Result<CallMaps, KernelError> {
        Ok(CallMaps {
            calls: take(ebpf, MapId::Calls)?,
            counts: take(ebpf, MapId::CallCounts)?,
            cfg: take(ebpf, MapId::CallCfg)?,
            events: Some(super::EventRing(take(ebpf, MapId::CallEvents)?)),
        })
    }

    /// Writes `[calls]` (takes effect with the next INVITE).
    pub fn set_config(&mut self, cfg: &CallConfig) -> Result<(), KernelError> {
        Ok(self.cfg.set(0, cfg, 0)?)
    }

    /// The calls in progress, by Call-ID hash (a snapshot: calls may
    /// end while it is read; those are left out).
    pub fn calls(&self) -> Result<Vec<(u64, Call)>, KernelError> {
        let keys: Vec<u64> = self.calls.keys().collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match self.calls.get(&k, 0) {
                Ok(c) => out.push((k, c)),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// The Call-ID hashes in the table (cheaper than [`Self::calls`]).
    pub fn call_ids(&self) -> Result<Vec<u64>, KernelError> {
        Ok(self.calls.keys().collect::<Result<_, _>>()?)
    }

    /// Calls in progress of the caller keyed `key`.
    pub fn in_progress(&self, key: &SrcKey) -> Result<u64, KernelError> {
        match self.counts.get(key, 0) {
            Ok(n) => Ok(n),
            Err(MapError::KeyNotFound) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Every caller's count (zeros included).
    pub fn counts(&self) -> Result<Vec<(SrcKey, u64)>, KernelError> {
        Ok(self.counts.iter().collect::<Result<_, _>>()?)
    }

    /// Empties the table and the counts (tests: a fresh start between
    /// cases; never while the program runs on live traffic).
    pub fn clear(&mut self) -> Result<(), KernelError> {
        let ids: Vec<u64> = self.calls.keys().collect::<Result<_, _>>()?;
        for k in ids {
            super::map_ops::hash_del(&mut self.calls, &k)?;
        }
        let keys: Vec<SrcKey> = self.counts.keys().collect::<Result<_, _>>()?;
        for k in keys {
            super::map_ops::hash_del(&mut self.counts, &k)?;
        }
        Ok(())
    }
}

/// Decodes a `CALL_EVENTS` record; `None` if it is short.
pub fn decode_event(raw: &[u8]) -> Option<CallEvent> {
    if raw.len() < std::mem::size_of::<CallEvent>() {
        return None;
    }
    // SAFETY: the kernel wrote a whole CallEvent (size checked); it may be
    // unaligned in the ring.
    Some(unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<CallEvent>()) })
}
