//! The policy record the daemon writes into the `POLICY` array (one entry)
//! and the XDP program reads on every packet.

use crate::bucket::Bucket;
use crate::sip::Method;

/// `enforce = true`: drops are drops. Cleared: dry run, counted `would_drop`.
pub const F_ENFORCE: u32 = 1 << 0;
/// `[allow] trunk_only`: protected ports only accept allowlisted sources.
pub const F_TRUNK_ONLY: u32 = 1 << 1;
/// `[sip] drop_malformed`.
pub const F_DROP_MALFORMED: u32 = 1 << 2;
/// `[bans] scope = "sip"`: deny and ban only on protected ports.
pub const F_SCOPE_SIP: u32 = 1 << 3;
/// `[sip] scanner_user_agents` is not empty: look for the User-Agent header.
pub const F_SCAN_UA: u32 = 1 << 4;
// Which LPM tries hold entries: an empty trie is not looked up at all.
pub const F_ALLOW_V4: u32 = 1 << 8;
pub const F_ALLOW_V6: u32 = 1 << 9;
pub const F_DENY_V4: u32 = 1 << 10;
pub const F_DENY_V6: u32 = 1 << 11;
pub const F_BAN_NETS_V4: u32 = 1 << 12;
pub const F_BAN_NETS_V6: u32 = 1 << 13;
pub const F_VERIFY_NETS_V4: u32 = 1 << 14;
pub const F_VERIFY_NETS_V6: u32 = 1 << 15;

/// A transport header further into the frame than this is not looked for
/// (only absurd IPv6 extension chains get there). A UDP or TCP header out of
/// this reach cannot be checked, so such a packet is dropped as `malformed`
/// rather than passed (an unchecked packet must not reach a protected port).
/// A power of two: the XDP program masks offsets with `2 * MAX_L4_OFFSET - 1`
/// (asserted there).
pub const MAX_L4_OFFSET: usize = 2048;

/// IPv6 extension headers (hop-by-hop, routing, destination options,
/// fragment) walked to find the transport. A chain that still goes on after
/// this many is not walked to its end: the packet is dropped as `malformed`
/// (after the allow, deny and ban checks), whatever its port.
pub const MAX_V6_EXT: usize = 8;

/// Methods that may have a bucket of their own (`[limits.methods]`).
pub const METHOD_BUCKETS: usize = 6;
/// Entries of [`Policy::method_slot`]: one per [`Method`], room to spare (a
/// fixed size: the record's layout is shared with user space).
pub const METHOD_SLOTS: usize = 16;
// Every method has a slot, and every bucket index fits a slot's `u8`.
const _: () = assert!(Method::COUNT <= METHOD_SLOTS);
const _: () = assert!(METHOD_BUCKETS < u8::MAX as usize);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub flags: u32,
    /// IPv6 sources are tracked per prefix of this length (1..=128).
    pub ipv6_prefix: u32,
    /// Every packet to a protected port.
    pub packet: Bucket,
    /// TCP SYN without ACK to a protected port.
    pub syn: Bucket,
    /// The buckets named in `[limits.methods]`.
    pub method: [Bucket; METHOD_BUCKETS],
    /// For each [`Method`], 1 + its index in `method`, or 0 for no bucket.
    pub method_slot: [u8; METHOD_SLOTS],
    /// Escalation: report a source after this many counted drops in a
    /// window (0 disables).
    pub escalate_drops: u32,
    /// Generation of the allow and deny lists, bumped by user space on every
    /// change; see [`crate::BanValue::acl_gen`]. Never 0.
    pub acl_gen: u32,
    pub escalate_window_ns: u64,
    /// SPEC §8: the one bucket every unverified source spends from (step
    /// 7b); unlimited: `[verify] unverified_per_second = 0`, no budget.
    pub unverified: Bucket,
    /// How long a final 2xx marks its destination verified.
    pub verify_ttl_ns: u64,
    /// Bit `1 << m` for each [`Method`] `m` in `[verify] methods`.
    pub verify_methods: u32,
    pub _pad: u32,
}

impl Policy {
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// The bucket for `m`, if `[limits.methods]` names it.
    #[inline(always)]
    pub fn method_bucket(&self, m: Method) -> Option<(usize, &Bucket)> {
        self.method_bucket_at(m as usize)
    }

    /// [`Self::method_bucket`] by method index (out of range: none).
    #[inline(always)]
    pub fn method_bucket_at(&self, method: usize) -> Option<(usize, &Bucket)> {
        let s = match self.method_slot.get(method) {
            Some(&s) if s != 0 => s as usize - 1,
            _ => return None,
        };
        match self.method.get(s) {
            Some(b) => Some((s, b)),
            None => None,
        }
    }

    /// Whether a final 2xx to a request of method index `method` verifies
    /// its destination (`[verify] methods`).
    #[inline(always)]
    pub const fn verifies(&self, method: usize) -> bool {
        method < Method::COUNT && self.verify_methods & (1 << method) != 0
    }
}

// `verify_methods` has a bit for every method.
const _: () = assert!(Method::COUNT <= 32);

impl Default for Policy {
    /// Everything off except enforcement: passes all SIP, drops nothing.
    fn default() -> Self {
        Policy {
            flags: F_ENFORCE,
            ipv6_prefix: 64,
            packet: Bucket::UNLIMITED,
            syn: Bucket::UNLIMITED,
            method: [Bucket::UNLIMITED; METHOD_BUCKETS],
            method_slot: [0; METHOD_SLOTS],
            escalate_drops: 0,
            acl_gen: 1,
            escalate_window_ns: 0,
            unverified: Bucket::UNLIMITED,
            verify_ttl_ns: 0,
            verify_methods: 0,
            _pad: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_no_padding() {
        // 4+4 + 16 + 16 + 6*16 + 16 + 4+4 + 8 + 16 + 8 + 4+4
        assert_eq!(core::mem::size_of::<Policy>(), 200);
    }

    #[test]
    fn method_slots() {
        let mut p = Policy::default();
        assert!(p.method_bucket(Method::Invite).is_none());
        p.method[2] = Bucket::new(5, 10);
        p.method_slot[Method::Register as usize] = 3;
        let (i, b) = p.method_bucket(Method::Register).unwrap();
        assert_eq!(i, 2);
        assert_eq!(*b, Bucket::new(5, 10));
        p.method_slot[Method::Bye as usize] = 200; // corrupt: ignored, not out of bounds
        assert!(p.method_bucket(Method::Bye).is_none());
    }
}
