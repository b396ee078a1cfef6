//! The maps of authentication seen on the wire (SPEC §12): the switch,
//! the counters by interface, method and result, the learned challenges
//! and pending attempts (cleared on demand), and the ring buffer of
//! settled attempts, decoded into our own [`AuthOutcome`].

use std::net::IpAddr;

use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    Ebpf,
};
use shield_common::auth::{
    auth_stats_slot, Attempt, AuthConfig, AuthEvent, NonceKey, NonceSeen, AUTH_METHODS, AUTH_ON,
    AUTH_RESULTS, RESULT_SUCCESS, USER_MAX,
};
use shield_common::{TxnKey, FAMILY_V4, MAX_IFACE_SLOTS};

use super::map_ops::take;
use super::{KernelError, MapId};

/// The maps, owned by [`super::ShieldMaps`].
pub struct AuthMaps {
    config: Array<MapData, AuthConfig>,
    stats: PerCpuArray<MapData, u64>,
    nonces: HashMap<MapData, NonceKey, NonceSeen>,
    attempts: HashMap<MapData, TxnKey, Attempt>,
    /// Settled attempts; the daemon takes it to read it.
    pub events: Option<super::EventRing>,
}

/// Attempts of one interface slot: `[method][result]`, methods REGISTER
/// and INVITE, results success, failure, unproven, stale.
pub type AuthCounts = [[u64; AUTH_RESULTS as usize]; AUTH_METHODS as usize];

/// One settled proven attempt (an `AUTH_EVENTS` record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthOutcome {
    pub addr: IpAddr,
    pub success: bool,
    /// "REGISTER" or "INVITE".
    pub method: &'static str,
    pub status: u16,
    pub ifindex: u32,
    /// The username's first bytes as sent (not escaped: hostile bytes).
    pub username: Vec<u8>,
    /// Whether the username was longer than what is kept.
    pub username_cut: bool,
    pub user_hash: u64,
    pub ts_ns: u64,
}

impl AuthOutcome {
    /// Decodes a ring-buffer record; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<AuthOutcome> {
        if bytes.len() < std::mem::size_of::<AuthEvent>() {
            return None;
        }
        // SAFETY: the length was checked; AuthEvent is plain old data
        // with no invalid bit patterns, read unaligned.
        let e: AuthEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let addr = if e.family == FAMILY_V4 {
            IpAddr::from([e.addr[0], e.addr[1], e.addr[2], e.addr[3]])
        } else {
            IpAddr::from(e.addr)
        };
        let n = (e.user_len as usize).min(USER_MAX);
        Some(AuthOutcome {
            addr,
            success: e.result == RESULT_SUCCESS,
            method: if e.method == 0 { "REGISTER" } else { "INVITE" },
            status: e.status,
            ifindex: e.ifindex,
            username: e.user[..n].to_vec(),
            username_cut: e.user_len as usize > USER_MAX,
            user_hash: e.user_hash,
            ts_ns: e.ts_ns,
        })
    }
}

impl AuthMaps {
    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> Result<AuthMaps, KernelError> {
        Ok(AuthMaps {
            config: take(ebpf, MapId::AuthConfig)?,
            stats: take(ebpf, MapId::AuthStats)?,
            nonces: take(ebpf, MapId::AuthNonces)?,
            attempts: take(ebpf, MapId::AuthAttempts)?,
            events: Some(super::EventRing(take(ebpf, MapId::AuthEvents)?)),
        })
    }

    /// Turns the kernel's part on or off.
    pub fn set_enabled(&mut self, on: bool) -> Result<(), KernelError> {
        let c = AuthConfig {
            flags: if on { AUTH_ON } else { 0 },
            _pad: 0,
        };
        self.config.set(0, &c, 0).map_err(|source| KernelError::Map {
            map: MapId::AuthConfig.name(),
            source,
        })
    }

    /// The counters of interface slot `slot`, summed over CPUs.
    pub fn counts(&self, slot: u32) -> Result<AuthCounts, MapError> {
        let mut out = AuthCounts::default();
        if slot >= MAX_IFACE_SLOTS {
            return Ok(out);
        }
        for (m, row) in out.iter_mut().enumerate() {
            for (r, v) in row.iter_mut().enumerate() {
                let i = auth_stats_slot(slot, m as u32, r as u32);
                *v = self.stats.get(&i, 0)?.iter().sum();
            }
        }
        Ok(out)
    }

    /// Challenges learned (LRU, bounded).
    pub fn nonces_held(&self) -> usize {
        self.nonces.keys().filter(|k| k.is_ok()).count()
    }

    /// Attempts awaiting their final reply.
    pub fn attempts_held(&self) -> usize {
        self.attempts.keys().filter(|k| k.is_ok()).count()
    }

    /// Forgets every learned challenge and pending attempt (tests).
    pub fn clear(&mut self) -> Result<(), MapError> {
        let keys: Vec<NonceKey> = self.nonces.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = self.nonces.remove(&k);
        }
        let keys: Vec<TxnKey> = self.attempts.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = self.attempts.remove(&k);
        }
        Ok(())
    }
}
