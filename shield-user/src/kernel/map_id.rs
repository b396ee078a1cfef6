//! The program's maps by name: [`MapId`], one variant per map in
//! `shield_common::maps::names`, and what kind of map each one is (the
//! tries and their `POLICY` flags, the hash maps' layouts).

use shield_common::{
    names, sip::UaKey, BanKey, BanValue, SrcKey, SrcState, Verified, F_ALLOW_V4, F_ALLOW_V6, F_BAN_NETS_V4, F_BAN_NETS_V6,
    F_DENY_V4, F_DENY_V6, F_VERIFY_NETS_V4, F_VERIFY_NETS_V6,
};

/// The program's maps. [`MapId::name`] is the kernel-side name (and pin
/// name) from [`names`]; a compile-time check keeps the two in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapId {
    Policy,
    Ports,
    IfaceSlot,
    AllowV4,
    AllowV6,
    DenyV4,
    DenyV6,
    Bans,
    BanNetsV4,
    BanNetsV6,
    Scanners,
    Sources,
    Stats,
    SipStats,
    Events,
    Scratch,
    Verified,
    VerifyNetsV4,
    VerifyNetsV6,
    Budget,
    Responses,
    EgressScratch,
    VerifiedHint,
    Txns,
    EventsLost,
    DestPolicy,
    DestRules,
    DestStats,
    DestRefused,
    DestEvents,
    DestBudget,
    DestSources,
    Samples,
    SampleCfg,
    SampleState,
    Calls,
    CallCounts,
    CallCfg,
    CallEvents,
    AuthConfig,
    AuthNonces,
    AuthAttempts,
    AuthEvents,
    AuthStats,
    AuthScratch,
}

impl MapId {
    /// Every map, in declaration order (`ALL[i] as usize == i`).
    pub const ALL: [MapId; 45] = [
        MapId::Policy,
        MapId::Ports,
        MapId::IfaceSlot,
        MapId::AllowV4,
        MapId::AllowV6,
        MapId::DenyV4,
        MapId::DenyV6,
        MapId::Bans,
        MapId::BanNetsV4,
        MapId::BanNetsV6,
        MapId::Scanners,
        MapId::Sources,
        MapId::Stats,
        MapId::SipStats,
        MapId::Events,
        MapId::Scratch,
        MapId::Verified,
        MapId::VerifyNetsV4,
        MapId::VerifyNetsV6,
        MapId::Budget,
        MapId::Responses,
        MapId::EgressScratch,
        MapId::VerifiedHint,
        MapId::Txns,
        MapId::EventsLost,
        MapId::DestPolicy,
        MapId::DestRules,
        MapId::DestStats,
        MapId::DestRefused,
        MapId::DestEvents,
        MapId::DestBudget,
        MapId::DestSources,
        MapId::Samples,
        MapId::SampleCfg,
        MapId::SampleState,
        MapId::Calls,
        MapId::CallCounts,
        MapId::CallCfg,
        MapId::CallEvents,
        MapId::AuthConfig,
        MapId::AuthNonces,
        MapId::AuthAttempts,
        MapId::AuthEvents,
        MapId::AuthStats,
        MapId::AuthScratch,
    ];

    /// The map's name in the object and under the pin directory.
    pub const fn name(self) -> &'static str {
        match self {
            MapId::Policy => names::POLICY,
            MapId::Ports => names::PORTS,
            MapId::IfaceSlot => names::IFACE_SLOT,
            MapId::AllowV4 => names::ALLOW_V4,
            MapId::AllowV6 => names::ALLOW_V6,
            MapId::DenyV4 => names::DENY_V4,
            MapId::DenyV6 => names::DENY_V6,
            MapId::Bans => names::BANS,
            MapId::BanNetsV4 => names::BAN_NETS_V4,
            MapId::BanNetsV6 => names::BAN_NETS_V6,
            MapId::Scanners => names::SCANNERS,
            MapId::Sources => names::SOURCES,
            MapId::Stats => names::STATS,
            MapId::SipStats => names::SIP_STATS,
            MapId::Events => names::EVENTS,
            MapId::Scratch => names::SCRATCH,
            MapId::Verified => names::VERIFIED,
            MapId::VerifyNetsV4 => names::VERIFY_NETS_V4,
            MapId::VerifyNetsV6 => names::VERIFY_NETS_V6,
            MapId::Budget => names::BUDGET,
            MapId::Responses => names::RESPONSES,
            MapId::EgressScratch => names::EGRESS_SCRATCH,
            MapId::VerifiedHint => names::VERIFIED_HINT,
            MapId::Txns => names::TXNS,
            MapId::EventsLost => names::EVENTS_LOST,
            MapId::DestPolicy => names::DEST_POLICY,
            MapId::DestRules => names::DEST_RULES,
            MapId::DestStats => names::DEST_STATS,
            MapId::DestRefused => names::DEST_REFUSED,
            MapId::DestEvents => names::DEST_EVENTS,
            MapId::DestBudget => names::DEST_BUDGET,
            MapId::DestSources => names::DEST_SOURCES,
            MapId::Samples => names::SAMPLES,
            MapId::SampleCfg => names::SAMPLE_CFG,
            MapId::SampleState => names::SAMPLE_STATE,
            MapId::Calls => names::CALLS,
            MapId::CallCounts => names::CALL_COUNTS,
            MapId::CallCfg => names::CALL_CFG,
            MapId::CallEvents => names::CALL_EVENTS,
            MapId::AuthConfig => names::AUTH_CONFIG,
            MapId::AuthNonces => names::AUTH_NONCES,
            MapId::AuthAttempts => names::AUTH_ATTEMPTS,
            MapId::AuthEvents => names::AUTH_EVENTS,
            MapId::AuthStats => names::AUTH_STATS,
            MapId::AuthScratch => names::AUTH_SCRATCH,
        }
    }

    /// Whether the map holds a varying number of entries (the tries and
    /// hash maps), unlike the arrays and the ring buffer.
    pub fn holds_entries(self) -> bool {
        trie_slot(self).is_some() || hash_layout(self).is_some()
    }
}

impl std::fmt::Display for MapId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `MapId::ALL` covers every variant once, in order, and its names are
/// exactly `names::ALL` (the set the XDP program asserts of its maps): a
/// map added on one side only fails the build.
const _: () = {
    const N: usize = MapId::ALL.len();
    let mut ids = [""; N];
    let mut i = 0;
    while i < N {
        assert!(MapId::ALL[i] as usize == i, "MapId::ALL out of order");
        ids[i] = MapId::ALL[i].name();
        i += 1;
    }
    assert!(
        names::are_all(&ids),
        "MapId must have exactly one variant per map in names::ALL"
    );
};

/// The LPM tries and the `POLICY` flag that tells the kernel to look each
/// one up; `occupancy` is indexed like this table.
pub(super) const TRIES: [(MapId, u32); 8] = [
    (MapId::AllowV4, F_ALLOW_V4),
    (MapId::AllowV6, F_ALLOW_V6),
    (MapId::DenyV4, F_DENY_V4),
    (MapId::DenyV6, F_DENY_V6),
    (MapId::BanNetsV4, F_BAN_NETS_V4),
    (MapId::BanNetsV6, F_BAN_NETS_V6),
    (MapId::VerifyNetsV4, F_VERIFY_NETS_V4),
    (MapId::VerifyNetsV6, F_VERIFY_NETS_V6),
];

/// `map`'s index in [`TRIES`]; `None` for maps that are not tries.
pub(super) fn trie_slot(map: MapId) -> Option<usize> {
    TRIES.iter().position(|(m, _)| *m == map)
}

/// `map`'s index in [`TRIES`], for a map known to be a trie.
pub(super) fn occ(map: MapId) -> usize {
    trie_slot(map).expect("a trie")
}

/// Key and value sizes of the hash maps (the ones [`ShieldMaps::scan`]
/// walks); `None` for every other kind.
pub(super) fn hash_layout(map: MapId) -> Option<(usize, usize)> {
    use std::mem::size_of;
    match map {
        MapId::Bans => Some((size_of::<BanKey>(), size_of::<BanValue>())),
        MapId::Scanners => Some((size_of::<UaKey>(), 1)),
        MapId::Sources => Some((size_of::<SrcKey>(), size_of::<SrcState>())),
        MapId::Verified => Some((size_of::<SrcKey>(), size_of::<Verified>())),
        _ => None,
    }
}