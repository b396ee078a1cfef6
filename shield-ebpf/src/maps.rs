//! Every map of the XDP program and the egress classifier (the sampler
//! declares its own, in `sample`).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use shield_common::{
    default_size,
    dest::{self, DestPolicy, DestRule, DestSource},
    sip::UaKey,
    BanKey, BanValue, Budget, Counter, Policy, SrcKey, SrcState, Txn, TxnKey, Verified, MAX_IFACE_SLOTS,
    MAX_IFINDEX, PORTS_ENTRIES, RESPONSES_ENTRIES, SIP_STATS_ENTRIES, STATS_ENTRIES,
    VERIFIED_HINT_WORDS,
};

use crate::scratch::Scratch;

/// Declares the maps, and `MAP_NAMES`: their names as the object file has
/// them (a map is named after its static). User space pins the maps listed
/// in `names::ALL`; an assertion below keeps the two the same set.
macro_rules! maps {
    ($(static $name:ident: $ty:ty = $init:expr;)*) => {
        $(
            #[map]
            pub(crate) static $name: $ty = $init;
        )*
        pub(crate) const MAP_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

maps! {
    static POLICY: Array<Policy> = Array::with_max_entries(1, 0);
    static PORTS: Array<u8> = Array::with_max_entries(PORTS_ENTRIES, 0);
    static IFACE_SLOT: Array<u32> = Array::with_max_entries(MAX_IFINDEX, 0);

    static ALLOW_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(default_size::ALLOW, 0);
    static ALLOW_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(default_size::ALLOW, 0);
    static DENY_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(default_size::DENY, 0);
    static DENY_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(default_size::DENY, 0);

    // Not preallocated: the program only reads this map (and writes into
    // entries that exist); every ban is added by user space. Preallocation
    // pays off only for inserts by the program, and costs ~90 MiB per
    // million slots whether it holds one ban or a million. One map for
    // both families: an empty million-bucket table is 16 MiB.
    static BANS: HashMap<BanKey, BanValue> =
        HashMap::with_max_entries(default_size::BANS, BPF_F_NO_PREALLOC);
    static BAN_NETS_V4: LpmTrie<[u8; 4], BanValue> =
        LpmTrie::with_max_entries(default_size::BAN_NETS, 0);
    static BAN_NETS_V6: LpmTrie<[u8; 16], BanValue> =
        LpmTrie::with_max_entries(default_size::BAN_NETS, 0);

    static SCANNERS: HashMap<UaKey, u8> = HashMap::with_max_entries(default_size::SCANNERS, 0);
    static SOURCES: LruHashMap<SrcKey, SrcState> =
        LruHashMap::with_max_entries(default_size::SOURCES, 0);

    static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STATS_ENTRIES, 0);
    static SIP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SIP_STATS_ENTRIES, 0);
    static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
    static EVENTS: RingBuf = RingBuf::with_byte_size(default_size::EVENTS_BYTES, 0);

    // SPEC §8: sources verified by a final 2xx (learned by the egress
    // classifier, or set by the operator), keyed like `SOURCES`.
    // Not an LRU (an LRU is always preallocated: 92 MiB at a million
    // entries, idle or not): allocated on use. Only a real 2xx adds an
    // entry, which a forged source cannot get, so it fills with real
    // subscribers only; `shieldd` deletes the expired ones (see
    // `ShieldMaps::sweep_verified`). Full, a new source is not learned
    // until then: it keeps to the unverified budget meanwhile.
    static VERIFIED: HashMap<SrcKey, Verified> =
        HashMap::with_max_entries(default_size::VERIFIED, BPF_F_NO_PREALLOC);
    static VERIFY_NETS_V4: LpmTrie<[u8; 4], Verified> =
        LpmTrie::with_max_entries(default_size::VERIFY_NETS, 0);
    static VERIFY_NETS_V6: LpmTrie<[u8; 16], Verified> =
        LpmTrie::with_max_entries(default_size::VERIFY_NETS, 0);
    static BUDGET: Array<Budget> = Array::with_max_entries(1, 0);
    static RESPONSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(RESPONSES_ENTRIES, 0);
    static EGRESS_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
    static VERIFIED_HINT: Array<u64> = Array::with_max_entries(VERIFIED_HINT_WORDS, 0);
    // SPEC §8: requests that passed and may verify their source, so a
    // final 2xx verifies only a destination that really sent one.
    static TXNS: LruHashMap<TxnKey, Txn> = LruHashMap::with_max_entries(default_size::TXNS, 0);
    // Offender reports that found the ring buffer full (per CPU).
    static EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    // SPEC §11: the destination policy, its rules (deny and allow in one
    // trie: the longest match decides), INVITEs by class and country,
    // refusals by (interface, rule), refusal reports, and the host's reply
    // and report buckets.
    static DEST_POLICY: Array<DestPolicy> = Array::with_max_entries(1, 0);
    static DEST_RULES: LpmTrie<[u8; dest::KEY_BYTES], DestRule> =
        LpmTrie::with_max_entries(default_size::DEST_RULES, 0);
    static DEST_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(dest::DEST_STATS_ENTRIES, 0);
    static DEST_REFUSED: HashMap<u64, u64> =
        HashMap::with_max_entries(default_size::DEST_REFUSED, BPF_F_NO_PREALLOC);
    static DEST_EVENTS: RingBuf = RingBuf::with_byte_size(default_size::DEST_EVENTS_BYTES, 0);
    static DEST_BUDGET: Array<Budget> = Array::with_max_entries(2, 0);
    static DEST_SOURCES: LruHashMap<SrcKey, DestSource> =
        LruHashMap::with_max_entries(default_size::DEST_SOURCES, 0);
}

/// A counter slot from `IFACE_SLOT` (user space writes only valid ones)
/// masked into range for the verifier.
pub(crate) const IFACE_SLOT_MASK: u32 = MAX_IFACE_SLOTS - 1;
const _: () = assert!(MAX_IFACE_SLOTS.is_power_of_two());

#[inline(always)]
pub(crate) fn port_flags(port_be: [u8; 2]) -> u8 {
    match PORTS.get(u16::from_be_bytes(port_be) as u32) {
        Some(f) => *f,
        None => 0,
    }
}
