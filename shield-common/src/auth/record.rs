//! The maps of SPEC §12 and what both programs and the model decide with
//! them: challenges learned on egress (`AUTH_NONCES`), proven attempts
//! remembered on ingress (`AUTH_ATTEMPTS`), outcomes to shieldd
//! (`AUTH_EVENTS`), counters (`AUTH_STATS`) and the switch (`AUTH_CONFIG`).

use super::USER_MAX;
use crate::maps::SrcKey;
use crate::sip::{byte, HEAD_LEN};
use crate::Method;

/// How long a learned nonce proves an attempt: servers expire nonces far
/// sooner (Kamailio: 5 min) and then answer `stale=true`.
pub const NONCE_TTL_NS: u64 = 3600 * 1_000_000_000;

/// `AUTH_CONFIG[0]`: written by shieldd; all zero (the loaded object)
/// means off, and neither program does any of this work.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub flags: u32,
    pub _pad: u32,
}

/// [`AuthConfig::flags`]: learn challenges, remember attempts, report.
pub const AUTH_ON: u32 = 1;

/// `AUTH_NONCES` key: a challenge's destination (keyed as bans are) and
/// its nonce hash. Keyed by both, so a NAT address with many clients keeps
/// a nonce for each.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NonceKey {
    pub src: SrcKey,
    pub nonce: u64,
}

/// `AUTH_NONCES` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NonceSeen {
    pub seen_ns: u64,
}

impl NonceSeen {
    /// Whether this challenge proves an attempt at `now_ns`.
    #[inline(always)]
    pub const fn proves(&self, now_ns: u64) -> bool {
        now_ns >= self.seen_ns && now_ns - self.seen_ns <= NONCE_TTL_NS
    }
}

/// `AUTH_ATTEMPTS` value (key: `crate::TxnKey`, source + Call-ID + CSeq).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempt {
    pub seen_ns: u64,
    pub user_hash: u64,
    /// The CSeq header's method index (the reply's must match).
    pub cseq_method: u32,
    /// The request line's method index (REGISTER or INVITE).
    pub method: u32,
    pub user_len: u32,
    pub _pad: u32,
    pub user: [u8; USER_MAX],
}

/// An attempt's result: the `result` label and `AUTH_STATS` slots.
pub const RESULT_SUCCESS: u32 = 0;
pub const RESULT_FAILURE: u32 = 1;
pub const RESULT_UNPROVEN: u32 = 2;
/// A 401/407 with `stale=true`: the client answers again, not a failure.
pub const RESULT_STALE: u32 = 3;
pub const AUTH_RESULTS: u32 = 4;
/// Methods that make attempts: REGISTER (0) and INVITE (1).
pub const AUTH_METHODS: u32 = 2;
pub const AUTH_STATS_PER_IFACE: u32 = AUTH_METHODS * AUTH_RESULTS;
pub const AUTH_STATS_ENTRIES: u32 = crate::MAX_IFACE_SLOTS * AUTH_STATS_PER_IFACE;

/// The attempt slot of a request-line method index, if it makes attempts.
#[inline(always)]
pub const fn auth_method(method: usize) -> Option<u32> {
    if method == Method::Register as usize {
        Some(0)
    } else if method == Method::Invite as usize {
        Some(1)
    } else {
        None
    }
}

/// The `AUTH_STATS` slot.
#[inline(always)]
pub const fn auth_stats_slot(iface_slot: u32, method: u32, result: u32) -> u32 {
    iface_slot * AUTH_STATS_PER_IFACE + method * AUTH_RESULTS + result
}

/// The three-digit status code of a status line already accepted by
/// `response::status_class`.
#[inline(always)]
pub fn status_code(head: &[u8; HEAD_LEN]) -> u16 {
    let d = |i| (byte(head, i).wrapping_sub(b'0') % 10) as u16;
    d(8) * 100 + d(9) * 10 + d(10)
}

/// Whether a status carries a challenge to learn.
#[inline(always)]
pub const fn challenges(status: u16) -> bool {
    status == 401 || status == 407
}

/// A final response's verdict on a proven attempt (SPEC §12): 2xx
/// success; 401, 403, 407 failure, unless the challenge says stale; any
/// other final status says nothing about the password.
#[inline(always)]
pub const fn outcome(status: u16, stale: bool) -> Option<u32> {
    match status {
        200..=299 => Some(RESULT_SUCCESS),
        401 | 407 if stale => Some(RESULT_STALE),
        401 | 403 | 407 => Some(RESULT_FAILURE),
        _ => None,
    }
}

/// `AUTH_EVENTS` record: one per settled proven attempt (success or
/// failure), never per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthEvent {
    pub ts_ns: u64,
    pub user_hash: u64,
    /// The requester's address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    pub family: u8,
    /// `AUTH_METHODS` slot: 0 REGISTER, 1 INVITE.
    pub method: u8,
    pub status: u16,
    /// `RESULT_SUCCESS` or `RESULT_FAILURE`.
    pub result: u32,
    pub ifindex: u32,
    pub user_len: u32,
    pub user: [u8; USER_MAX],
}

/// Ring-buffer bytes for `AUTH_EVENTS`.
pub const AUTH_EVENTS_BYTES: u32 = crate::maps::default_size::AUTH_EVENTS_BYTES;

// No byte of these records is padding: the sums of their fields' sizes.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<AuthConfig>() == 4 + 4);
    assert!(size_of::<NonceKey>() == 16 + 8);
    assert!(size_of::<NonceSeen>() == 8);
    assert!(size_of::<Attempt>() == 8 + 8 + 4 + 4 + 4 + 4 + USER_MAX);
    assert!(size_of::<AuthEvent>() == 8 + 8 + 16 + 1 + 1 + 2 + 4 + 4 + 4 + USER_MAX);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all five): repr(C), Copy, integers and byte arrays only, no
    // padding byte (the size assertions above): every byte pattern is a value.
    unsafe impl aya::Pod for super::AuthConfig {}
    unsafe impl aya::Pod for super::NonceKey {}
    unsafe impl aya::Pod for super::NonceSeen {}
    unsafe impl aya::Pod for super::Attempt {}
    unsafe impl aya::Pod for super::AuthEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(outcome(200, false), Some(RESULT_SUCCESS));
        assert_eq!(outcome(202, true), Some(RESULT_SUCCESS));
        assert_eq!(outcome(401, false), Some(RESULT_FAILURE));
        assert_eq!(outcome(407, false), Some(RESULT_FAILURE));
        assert_eq!(outcome(403, false), Some(RESULT_FAILURE));
        assert_eq!(outcome(403, true), Some(RESULT_FAILURE), "403 has no challenge");
        assert_eq!(outcome(401, true), Some(RESULT_STALE));
        assert_eq!(outcome(486, false), None);
        assert_eq!(outcome(500, false), None);
    }

    #[test]
    fn status_codes() {
        let mut h = [0u8; HEAD_LEN];
        h[..12].copy_from_slice(b"SIP/2.0 407 ");
        assert_eq!(status_code(&h), 407);
    }

    #[test]
    fn nonces_prove_for_an_hour() {
        let n = NonceSeen { seen_ns: 10 };
        assert!(n.proves(10) && n.proves(10 + NONCE_TTL_NS));
        assert!(!n.proves(11 + NONCE_TTL_NS) && !n.proves(9));
    }
}
