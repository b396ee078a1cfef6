//! Verdicts, reasons and the layout of the per-CPU counter arrays.

/// Why a packet got its verdict. The discriminant is the counter slot.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Allowlisted = 0,
    Ok = 1,
    Deny = 2,
    Ban = 3,
    NotAllowed = 4,
    Malformed = 5,
    Scanner = 6,
    Rate = 7,
    /// SPEC §2 step 7b: the shared budget for unverified sources is spent.
    Unverified = 8,
    /// SPEC §11: the dialled number is denied (or outside
    /// `allow_international`).
    Destination = 9,
    /// SPEC §11: the source's international call rate is spent.
    DestinationRate = 10,
    /// SPEC §13: the source's concurrent-call limit.
    Calls = 11,
}

impl Reason {
    pub const COUNT: usize = 12;
    pub const ALL: [Reason; Self::COUNT] = [
        Reason::Allowlisted,
        Reason::Ok,
        Reason::Deny,
        Reason::Ban,
        Reason::NotAllowed,
        Reason::Malformed,
        Reason::Scanner,
        Reason::Rate,
        Reason::Unverified,
        Reason::Destination,
        Reason::DestinationRate,
        Reason::Calls,
    ];

    /// The name used in metrics, events and the CLI (SPEC §2 vocabulary).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Allowlisted => "allowlisted",
            Reason::Ok => "ok",
            Reason::Deny => "deny",
            Reason::Ban => "ban",
            Reason::NotAllowed => "not_allowed",
            Reason::Malformed => "malformed",
            Reason::Scanner => "scanner",
            Reason::Rate => "rate",
            Reason::Unverified => "unverified",
            Reason::Destination => "destination",
            Reason::DestinationRate => "destination_rate",
            Reason::Calls => "calls",
        }
    }

    pub const fn from_u8(v: u8) -> Option<Reason> {
        if (v as usize) < Self::COUNT {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// Reasons that mean "drop" (when enforcing).
    pub const fn drops(self) -> bool {
        !matches!(self, Reason::Allowlisted | Reason::Ok)
    }

    /// Drops that count towards a repeat-offender escalation ban. Not
    /// `Unverified`: its source address is whatever the spoofer wrote.
    pub const fn escalates(self) -> bool {
        matches!(self, Reason::Rate | Reason::Scanner | Reason::Malformed)
    }
}

/// What happened to the packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Pass = 0,
    Drop = 1,
    /// Dry run (`enforce = false`): would have been dropped, was passed.
    WouldDrop = 2,
}

impl Verdict {
    pub const COUNT: usize = 3;
    pub const ALL: [Verdict; Self::COUNT] = [Verdict::Pass, Verdict::Drop, Verdict::WouldDrop];

    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::WouldDrop => "would_drop",
        }
    }

    #[inline(always)]
    pub const fn of(reason: Reason, enforce: bool) -> Verdict {
        if !reason.drops() {
            Verdict::Pass
        } else if enforce {
            Verdict::Drop
        } else {
            Verdict::WouldDrop
        }
    }
}

// `Reason::ALL` and `Verdict::ALL` are indexed by discriminant: the counter
// slots are computed from discriminants and read back through these tables.
const _: () = {
    let mut i = 0;
    while i < Reason::COUNT {
        assert!(Reason::ALL[i] as usize == i);
        i += 1;
    }
    let mut i = 0;
    while i < Verdict::COUNT {
        assert!(Verdict::ALL[i] as usize == i);
        i += 1;
    }
};

/// Interfaces the counters distinguish. Slot 0 collects packets from an
/// ifindex the daemon did not register (and `BPF_PROG_TEST_RUN`).
pub const MAX_IFACE_SLOTS: u32 = 16;
/// Entries of the `IFACE_SLOT` array: ifindex -> counter slot.
pub const MAX_IFINDEX: u32 = 4096;

/// Slots per interface in `STATS`: one per (verdict, reason) pair.
pub const STATS_PER_IFACE: u32 = (Verdict::COUNT * Reason::COUNT) as u32;
pub const STATS_ENTRIES: u32 = MAX_IFACE_SLOTS * STATS_PER_IFACE;

#[inline(always)]
pub const fn stats_index(iface_slot: u32, verdict: Verdict, reason: Reason) -> u32 {
    iface_slot * STATS_PER_IFACE + verdict as u32 * Reason::COUNT as u32 + reason as u32
}

/// Slots per interface in `SIP_STATS`: (method, verdict).
pub const SIP_STATS_PER_IFACE: u32 = (crate::sip::Method::COUNT * Verdict::COUNT) as u32;
pub const SIP_STATS_ENTRIES: u32 = MAX_IFACE_SLOTS * SIP_STATS_PER_IFACE;

#[inline(always)]
pub const fn sip_stats_index(iface_slot: u32, method: crate::sip::Method, verdict: Verdict) -> u32 {
    sip_stats_slot(iface_slot, method as u32, verdict)
}

/// [`sip_stats_index`] by method index (`< Method::COUNT`).
#[inline(always)]
pub const fn sip_stats_slot(iface_slot: u32, method: u32, verdict: Verdict) -> u32 {
    iface_slot * SIP_STATS_PER_IFACE + method * Verdict::COUNT as u32 + verdict as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_slots_are_distinct_and_in_range() {
        let mut seen = [false; STATS_ENTRIES as usize];
        for s in 0..MAX_IFACE_SLOTS {
            for v in Verdict::ALL {
                for r in Reason::ALL {
                    let i = stats_index(s, v, r) as usize;
                    assert!(!seen[i], "slot {i} used twice");
                    seen[i] = true;
                }
            }
        }
        assert!(seen.iter().all(|&x| x));
    }

    #[test]
    fn verdict_follows_reason_and_enforce() {
        assert_eq!(Verdict::of(Reason::Ok, false), Verdict::Pass);
        assert_eq!(Verdict::of(Reason::Allowlisted, true), Verdict::Pass);
        assert_eq!(Verdict::of(Reason::Ban, true), Verdict::Drop);
        assert_eq!(Verdict::of(Reason::Rate, false), Verdict::WouldDrop);
        for r in Reason::ALL {
            assert_eq!(Reason::from_u8(r as u8), Some(r));
        }
        assert_eq!(Reason::from_u8(12), None);
        assert!(!Reason::Unverified.escalates() && Reason::Unverified.drops());
    }
}
