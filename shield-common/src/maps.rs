//! Map names, default sizes, and the key/value types of the maps.

/// Map names as they appear in the object file and under the pin path.
pub mod names {
    pub const POLICY: &str = "POLICY";
    pub const PORTS: &str = "PORTS";
    pub const IFACE_SLOT: &str = "IFACE_SLOT";
    pub const ALLOW_V4: &str = "ALLOW_V4";
    pub const ALLOW_V6: &str = "ALLOW_V6";
    pub const DENY_V4: &str = "DENY_V4";
    pub const DENY_V6: &str = "DENY_V6";
    /// Banned host addresses, IPv4 and IPv6 in one map (keyed by [`crate::BanKey`]).
    pub const BANS: &str = "BANS";
    pub const BAN_NETS_V4: &str = "BAN_NETS_V4";
    pub const BAN_NETS_V6: &str = "BAN_NETS_V6";
    pub const SCANNERS: &str = "SCANNERS";
    pub const SOURCES: &str = "SOURCES";
    pub const STATS: &str = "STATS";
    pub const SIP_STATS: &str = "SIP_STATS";
    pub const EVENTS: &str = "EVENTS";
    pub const SCRATCH: &str = "SCRATCH";
    pub const VERIFIED: &str = "VERIFIED";
    pub const VERIFY_NETS_V4: &str = "VERIFY_NETS_V4";
    pub const VERIFY_NETS_V6: &str = "VERIFY_NETS_V6";
    pub const BUDGET: &str = "BUDGET";
    pub const RESPONSES: &str = "RESPONSES";
    pub const EGRESS_SCRATCH: &str = "EGRESS_SCRATCH";
    pub const VERIFIED_HINT: &str = "VERIFIED_HINT";
    pub const TXNS: &str = "TXNS";
    pub const EVENTS_LOST: &str = "EVENTS_LOST";
    pub const DEST_POLICY: &str = "DEST_POLICY";
    pub const DEST_RULES: &str = "DEST_RULES";
    pub const DEST_STATS: &str = "DEST_STATS";
    pub const DEST_REFUSED: &str = "DEST_REFUSED";
    pub const DEST_EVENTS: &str = "DEST_EVENTS";
    pub const DEST_BUDGET: &str = "DEST_BUDGET";
    pub const DEST_SOURCES: &str = "DEST_SOURCES";
    // Sampled dropped packets (`shieldctl watch`; shield-ebpf/src/sample.rs).
    pub const SAMPLES: &str = "SAMPLES";
    pub const SAMPLE_CFG: &str = "SAMPLE_CFG";
    pub const SAMPLE_STATE: &str = "SAMPLE_STATE";
    // Calls seen on the wire (SPEC §13; shield-ebpf/src/calls.rs).
    pub const CALLS: &str = "CALLS";
    pub const CALL_COUNTS: &str = "CALL_COUNTS";
    pub const CALL_CFG: &str = "CALL_CFG";
    pub const CALL_EVENTS: &str = "CALL_EVENTS";
    // Authentication seen on the wire (SPEC §12; shield-ebpf/src/auth.rs).
    pub const AUTH_CONFIG: &str = "AUTH_CONFIG";
    pub const AUTH_NONCES: &str = "AUTH_NONCES";
    pub const AUTH_ATTEMPTS: &str = "AUTH_ATTEMPTS";
    pub const AUTH_EVENTS: &str = "AUTH_EVENTS";
    pub const AUTH_STATS: &str = "AUTH_STATS";
    pub const AUTH_SCRATCH: &str = "AUTH_SCRATCH";
    /// Every map, in pinning order.
    pub const ALL: [&str; 45] = [
        POLICY,
        PORTS,
        IFACE_SLOT,
        ALLOW_V4,
        ALLOW_V6,
        DENY_V4,
        DENY_V6,
        BANS,
        BAN_NETS_V4,
        BAN_NETS_V6,
        SCANNERS,
        SOURCES,
        STATS,
        SIP_STATS,
        EVENTS,
        SCRATCH,
        VERIFIED,
        VERIFY_NETS_V4,
        VERIFY_NETS_V6,
        BUDGET,
        RESPONSES,
        EGRESS_SCRATCH,
        VERIFIED_HINT,
        TXNS,
        EVENTS_LOST,
        DEST_POLICY,
        DEST_RULES,
        DEST_STATS,
        DEST_REFUSED,
        DEST_EVENTS,
        DEST_BUDGET,
        DEST_SOURCES,
        SAMPLES,
        SAMPLE_CFG,
        SAMPLE_STATE,
        CALLS,
        CALL_COUNTS,
        CALL_CFG,
        CALL_EVENTS,
        AUTH_CONFIG,
        AUTH_NONCES,
        AUTH_ATTEMPTS,
        AUTH_EVENTS,
        AUTH_STATS,
        AUTH_SCRATCH,
    ];

    /// Whether `names` is exactly the set in [`ALL`] (same length, each
    /// one in it, no repeats). The XDP program asserts it of its maps at
    /// compile time, so a map missing here fails the build instead of going
    /// unpinned.
    pub const fn are_all(names: &[&str]) -> bool {
        if names.len() != ALL.len() || !distinct(&ALL) || !distinct(names) {
            return false;
        }
        let mut i = 0;
        while i < names.len() {
            if !contains(&ALL, names[i]) {
                return false;
            }
            i += 1;
        }
        true
    }

    /// [`are_all`] of the two lists together: the XDP program declares
    /// the sampling maps in a file of their own (shield-ebpf/src/sample.rs).
    pub const fn are_all_of(a: &[&str], b: &[&str]) -> bool {
        if a.len() + b.len() != ALL.len() || !distinct(&ALL) || !distinct(a) || !distinct(b) {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if !contains(&ALL, a[i]) || contains(b, a[i]) {
                return false;
            }
            i += 1;
        }
        let mut j = 0;
        while j < b.len() {
            if !contains(&ALL, b[j]) {
                return false;
            }
            j += 1;
        }
        true
    }

    /// [`are_all`] of several lists together: the XDP program declares
    /// some maps in the files of their features (sample.rs, calls.rs).
    pub const fn are_all_in(parts: &[&[&str]]) -> bool {
        let mut total = 0;
        let mut i = 0;
        while i < parts.len() {
            if !distinct(parts[i]) {
                return false;
            }
            total += parts[i].len();
            i += 1;
        }
        if total != ALL.len() || !distinct(&ALL) {
            return false;
        }
        // Every name in ALL, and in exactly one part.
        let mut k = 0;
        while k < ALL.len() {
            let mut found = 0;
            let mut j = 0;
            while j < parts.len() {
                if contains(parts[j], ALL[k]) {
                    found += 1;
                }
                j += 1;
            }
            if found != 1 {
                return false;
            }
            k += 1;
        }
        true
    }

    const fn contains(set: &[&str], name: &str) -> bool {
        let mut i = 0;
        while i < set.len() {
            if str_eq(set[i], name) {
                return true;
            }
            i += 1;
        }
        false
    }

    const fn distinct(set: &[&str]) -> bool {
        let mut i = 0;
        while i < set.len() {
            let mut j = i + 1;
            while j < set.len() {
                if str_eq(set[i], set[j]) {
                    return false;
                }
                j += 1;
            }
            i += 1;
        }
        true
    }

    const fn str_eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    // No name listed twice (a copy-paste slip would leave one unpinned).
    const _: () = assert!(distinct(&ALL));

    /// Maps earlier versions pinned that this one no longer has: the host
    /// bans were one map per family (key: the 4- or 16-byte address). A
    /// start finds their pins in a directory an older shieldd left, reads
    /// the bans out of them and removes the pins (see `shieldd`'s restore).
    pub const OBSOLETE_BANS: [(&str, usize); 2] = [("BANS_V4", 4), ("BANS_V6", 16)];
}

/// Sizes compiled into the object; the loader overrides them from config.
pub mod default_size {
    pub const ALLOW: u32 = 100_000;
    pub const DENY: u32 = 100_000;
    pub const BANS: u32 = 1_000_000;
    pub const BAN_NETS: u32 = 65_536;
    pub const SOURCES: u32 = 1_000_000;
    pub const SCANNERS: u32 = 256;
    pub const EVENTS_BYTES: u32 = 256 * 1024;
    /// `SAMPLES`: about 250 samples of 1 KiB in flight.
    pub const SAMPLES_BYTES: u32 = 256 * 1024;
    pub const VERIFIED: u32 = 1_000_000;
    pub const VERIFY_NETS: u32 = 65_536;
    /// Requests that may verify, remembered for 32 s (SPEC §8): room for
    /// 2,000 a second, LRU beyond.
    pub const TXNS: u32 = 65_536;
    /// SPEC §11: `deny` and `allow_international` entries (at least 100,000).
    pub const DEST_RULES: u32 = 200_000;
    /// Refusal counters, one per (interface, rule) that refused something.
    pub const DEST_REFUSED: u32 = 65_536;
    /// Refusal reports (each carries the INVITE for the 403).
    pub const DEST_EVENTS_BYTES: u32 = 1024 * 1024;
    /// Sources with an international-call bucket or refusals (LRU): only
    /// callers, so far fewer than `SOURCES`.
    pub const DEST_SOURCES: u32 = 65_536;
    /// SPEC §13 `[calls] capacity`: calls tracked at once (a plain hash:
    /// a live call is never evicted, so no count leaks).
    pub const CALLS: u32 = 100_000;
    /// Callers' in-progress counts (LRU): at most one per tracked call.
    pub const CALL_COUNTS: u32 = 100_000;
    /// Ended-call reports (64 bytes each, plus the ring's 8-byte header).
    pub const CALL_EVENTS_BYTES: u32 = 256 * 1024;
    /// Challenges learned (SPEC §12), one per (destination, nonce), LRU.
    pub const AUTH_NONCES: u32 = 65_536;
    /// Proven attempts awaiting their final reply (LRU).
    pub const AUTH_ATTEMPTS: u32 = 65_536;
    /// Settled digest attempts (SPEC §12): 16k outcomes in flight.
    pub const AUTH_EVENTS_BYTES: u32 = 1024 * 1024;
}

/// `PORTS[port]` bits.
pub const PORT_UDP: u8 = 1;
pub const PORT_TCP: u8 = 2;
pub const PORTS_ENTRIES: u32 = 65_536;

/// Key of `BANS`: a banned host address with its family, so that an IPv4
/// ban and an IPv6 ban never share a key (not even `::ffff:a.b.c.d` and
/// `a.b.c.d`). IPv4 in the first four bytes, the rest zero. 20 bytes: the
/// kernel rounds a key to 8 bytes, and the element (48-byte header, key
/// 24, value 16, plus the allocator's 8-byte link) still fits the 96-byte
/// size class a 16-byte key would take.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BanKey {
    pub addr: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    pub _pad: [u8; 3],
}

impl BanKey {
    #[inline(always)]
    pub const fn v4(a: [u8; 4]) -> BanKey {
        BanKey {
            addr: [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            family: FAMILY_V4,
            _pad: [0; 3],
        }
    }

    #[inline(always)]
    pub const fn v6(a: [u8; 16]) -> BanKey {
        BanKey {
            addr: a,
            family: FAMILY_V6,
            _pad: [0; 3],
        }
    }
}

/// Value of the ban maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanValue {
    /// When the ban ends, in `CLOCK_MONOTONIC_COARSE` nanoseconds (what
    /// `bpf_ktime_get_coarse_ns` reads, the kernel compares it itself);
    /// 0 = never.
    pub expires_ns: u64,
    /// The [`crate::Policy::acl_gen`] under which `acl` was filled in by the
    /// kernel; 0 = not yet. Lets a banned flood cost one hash lookup instead
    /// of two trie lookups per packet, and never a stale answer: user space
    /// bumps the generation whenever the allow or deny list changes.
    pub acl_gen: u32,
    /// `ACL_ALLOW` / `ACL_DENY` bits of the banned address.
    pub acl: u32,
}

/// [`BanValue::acl`]: the address is allowlisted.
pub const ACL_ALLOW: u32 = 1;
/// [`BanValue::acl`]: the address is denied.
pub const ACL_DENY: u32 = 2;

impl BanValue {
    /// A ban until `expires_ns`, allow/deny bits not cached yet.
    pub const fn until(expires_ns: u64) -> BanValue {
        BanValue {
            expires_ns,
            acl_gen: 0,
            acl: 0,
        }
    }

    #[inline(always)]
    pub const fn active(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || now_ns < self.expires_ns
    }
}

/// Key of `SOURCES`: an IPv4 address as `::ffff:a.b.c.d`, or an IPv6 address
/// masked to `ipv6_prefix`.
pub type SrcKey = [u8; 16];

/// One per-CPU counter slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Ring-buffer record: a source crossed the escalation threshold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffenderEvent {
    /// IPv4 in the first four bytes, or the IPv6 prefix.
    pub addr: [u8; 16],
    pub family: u8,
    /// 32 for IPv4, `ipv6_prefix` for IPv6.
    pub prefix_len: u8,
    /// The [`crate::Reason`] of the drop that crossed the threshold.
    pub reason: u8,
    pub _pad: u8,
    pub drops: u32,
    pub ts_ns: u64,
}

/// Bytes of the refused INVITE a [`RefusalEvent`] carries: a frame's
/// UDP payload on a 1500-byte link. A larger INVITE (fragmented) gets no
/// 403, only its report.
pub const REFUSAL_PAYLOAD: usize = 1472;
const _: () = assert!(REFUSAL_PAYLOAD < 2048);

/// [`RefusalEvent::flags`]: send the 403 (the reply bucket granted it).
pub const REFUSAL_REPLY: u32 = 1;
/// [`RefusalEvent::flags`]: record and log it (the report bucket granted it).
pub const REFUSAL_REPORT: u32 = 2;

/// Ring-buffer record (`DEST_EVENTS`): an initial INVITE refused by the
/// destination policy (SPEC §11), with what the daemon needs to answer it
/// from where it was sent to and to keep it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusalEvent {
    pub ts_ns: u64,
    /// The INVITE's source and destination (IPv4 in the first four bytes).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    /// The [`crate::Reason`]: `Destination` or `DestinationRate`.
    pub reason: u8,
    pub _pad: u16,
    /// `REFUSAL_*` bits.
    pub flags: u32,
    /// The deciding rule's id (`crate::dest::DestRule::id` or a reserved one).
    pub rule: u32,
    pub ifindex: u32,
    /// Bytes of the UDP payload in `payload` (0: too large to carry).
    pub len: u32,
    pub payload: [u8; REFUSAL_PAYLOAD],
}

/// `DEST_REFUSED` key: refusals by interface slot and rule.
#[inline(always)]
pub const fn refused_key(iface_slot: u32, rule: u32) -> u64 {
    (iface_slot as u64) << 32 | rule as u64
}

/// Masks an IPv6 address to its first `prefix` bits (values above 128 mean
/// 128). Two 64-bit halves: no per-byte shifts for the verifier to doubt.
#[inline(always)]
pub fn mask_v6(addr: &[u8; 16], prefix: u32) -> [u8; 16] {
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    let (mh, ml) = if prefix >= 128 {
        (u64::MAX, u64::MAX)
    } else if prefix > 64 {
        (u64::MAX, u64::MAX << (128 - prefix))
    } else if prefix == 64 {
        (u64::MAX, 0)
    } else if prefix > 0 {
        (u64::MAX << (64 - prefix), 0)
    } else {
        (0, 0)
    };
    let (h, l) = ((hi & mh).to_be_bytes(), (lo & ml).to_be_bytes());
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}

/// The `SOURCES` key of an IPv4 address.
#[inline(always)]
pub const fn src_key_v4(a: [u8; 4]) -> SrcKey {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Value of `VERIFIED` and the `VERIFY_NETS` tries (SPEC §8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// When the source stops being verified, in `CLOCK_MONOTONIC_COARSE`
    /// ns (the kernel checks it itself); 0 = never. In a trie: the latest expiry of
    /// the entry and every entry covering it (as for CIDR bans).
    pub expires_ns: u64,
    /// How the entry got there: one of `VERIFIED_BY_*`.
    pub how: u32,
    pub _pad: u32,
}

/// [`Verified::how`]: a final 2xx the egress classifier saw.
pub const VERIFIED_BY_REPLY: u32 = 1;
/// [`Verified::how`]: `shieldctl verify`.
pub const VERIFIED_BY_OPERATOR: u32 = 2;
/// [`Verified::how`]: `[verify] cidrs`.
pub const VERIFIED_BY_CONFIG: u32 = 3;

impl Verified {
    #[inline(always)]
    pub const fn active(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || now_ns < self.expires_ns
    }
}

/// The shared unverified bucket's state: one GCRA TAT, alone on its
/// cache line. Only a granted token writes it (a compare-and-swap); the
/// drop path of a flood only reads, so the line stays shared across CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    pub tat: u64,
    pub _pad: [u64; 7],
}

/// Bits of `VERIFIED_HINT`: a bit per hash slot of a source key, set by
/// the egress classifier when it adds the key to `VERIFIED` (and never
/// cleared). A clear bit proves the key is not there, so the flood path of
/// a spoofed flood reads one word of a 128 KiB array (cache-resident)
/// instead of missing in the million-slot `VERIFIED` hash (a cache miss
/// per packet). Only the kernel writes both, with an atomic OR for the
/// bit, so no update is lost.
pub const VERIFIED_HINT_BITS: u32 = 1 << 20;
pub const VERIFIED_HINT_WORDS: u32 = VERIFIED_HINT_BITS / 64;
// The slot is the hash's top bits: exact only for a power of two.
const _: () = assert!(VERIFIED_HINT_BITS.is_power_of_two() && VERIFIED_HINT_BITS >= 64);

/// The `VERIFIED_HINT` word index and bit of a source key.
#[inline(always)]
pub const fn verified_hint(key: &SrcKey) -> (u32, u64) {
    let hi = u64::from_le_bytes([
        key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
    ]);
    let lo = u64::from_le_bytes([
        key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15],
    ]);
    let h = (hi ^ lo.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let slot = (h >> (64 - VERIFIED_HINT_BITS.trailing_zeros())) as u32;
    (slot / 64, 1 << (slot % 64))
}

/// Slots per interface in `RESPONSES`: (CSeq method, status class).
pub const RESPONSES_PER_IFACE: u32 =
    (crate::sip::Method::COUNT * crate::RESPONSE_CLASSES) as u32;
pub const RESPONSES_ENTRIES: u32 = crate::MAX_IFACE_SLOTS * RESPONSES_PER_IFACE;

/// The `RESPONSES` slot of a response of `class` (1..=6) to a request of
/// method index `method` (`< Method::COUNT`).
#[inline(always)]
pub const fn responses_slot(iface_slot: u32, method: u32, class: u32) -> u32 {
    iface_slot * RESPONSES_PER_IFACE + method * crate::RESPONSE_CLASSES as u32 + (class - 1)
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for BanValue {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for BanKey {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for crate::SrcState {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for Counter {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for OffenderEvent {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for crate::policy::Policy {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for Verified {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for Budget {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for crate::dest::DestPolicy {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for crate::dest::DestRule {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for crate::dest::DestSource {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (sizes_without_padding).
    unsafe impl aya::Pod for RefusalEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn v6_masks() {
        let a = [0xffu8; 16];
        assert_eq!(mask_v6(&a, 128), a);
        assert_eq!(mask_v6(&a, 0), [0; 16]);
        let m = mask_v6(&a, 64);
        assert_eq!(&m[..8], &[0xff; 8]);
        assert_eq!(&m[8..], &[0; 8]);
        let m = mask_v6(&a, 60);
        assert_eq!(m[7], 0xf0);
        assert_eq!(m[8], 0);
        let m = mask_v6(&a, 1);
        assert_eq!(m[0], 0x80);
    }

    #[test]
    fn map_name_set() {
        assert!(names::are_all(&names::ALL));
        let mut dup = names::ALL;
        dup[0] = names::PORTS;
        assert!(!names::are_all(&dup));
        assert!(!names::are_all(&names::ALL[1..]));
        assert!(names::are_all_of(&names::ALL[..3], &names::ALL[3..]));
        assert!(!names::are_all_of(&names::ALL[..3], &names::ALL[2..]));
        assert!(!names::are_all_of(&names::ALL[..3], &names::ALL[4..]));
        assert!(names::are_all_in(&[&names::ALL[..3], &names::ALL[3..9], &names::ALL[9..]]));
        assert!(!names::are_all_in(&[&names::ALL[..3], &names::ALL[2..]]));
        assert!(!names::are_all_in(&[&names::ALL[..3], &names::ALL[4..]]));
        let mut other = names::ALL;
        other[16] = "SCRATCH2";
        assert!(!names::are_all(&other));
        let mut other = names::ALL;
        other[23] = "HINT";
        assert!(!names::are_all(&other));
    }

    #[test]
    fn hints_are_in_range_and_spread() {
        let mut seen = [false; 4096];
        for i in 0..4096u32 {
            let (w, b) = verified_hint(&src_key_v4(i.to_be_bytes()));
            assert!(w < VERIFIED_HINT_WORDS && b.count_ones() == 1);
            seen[(w as usize * 64 + b.trailing_zeros() as usize) % 4096] = true;
        }
        // Consecutive addresses do not pile up in a few slots.
        assert!(seen.iter().filter(|s| **s).count() > 2000);
    }

    #[test]
    fn ban_expiry() {
        assert!(BanValue::until(0).active(u64::MAX));
        assert!(BanValue::until(10).active(9));
        assert!(!BanValue::until(10).active(10));
        assert_eq!(core::mem::size_of::<BanValue>(), 16);
    }

    #[test]
    fn ban_keys_of_the_two_families_never_meet() {
        assert_eq!(core::mem::size_of::<BanKey>(), 20);
        let v4 = BanKey::v4([192, 0, 2, 7]);
        // The IPv4-mapped and the IPv4-compatible forms of the same address.
        let mapped = BanKey::v6(src_key_v4([192, 0, 2, 7]));
        let mut compat = [0u8; 16];
        compat[..4].copy_from_slice(&[192, 0, 2, 7]);
        assert_ne!(v4, mapped);
        assert_ne!(v4, BanKey::v6(compat));
        assert_eq!(v4.addr[..4], [192, 0, 2, 7]);
        assert_eq!(v4.addr[4..], [0; 12]);
    }
}
