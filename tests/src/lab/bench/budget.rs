//! The unverified budget (SPEC §8) as the spoofed-source section of the
//! benchmark and the demo's spoofed-source stage run it, and the lab's
//! sources it is about: the registered subscribers and the newcomers.

use std::net::Ipv4Addr;

use shield::control::protocol::VerifiedReply;

use crate::lab::shieldd::LabConfig;
use crate::lab::topology::{subscriber_ip, Topology, HOST_IF, SBC_CARRIER_IF, SUBSCRIBERS};

/// `[verify] unverified_per_second` of the demo and of the "SIP Shield,
/// [verify] on" set-up.
pub const BUDGET_PER_SECOND: u64 = 500;
/// `[verify] unverified_burst`: one second's worth.
pub const BUDGET_BURST: u64 = 500;
/// Subscribers registering for the first time during the flood, one each
/// from 203.0.113.32 and up (lab/kamailio/sbc.cfg counts their requests as
/// `newcomer_requests`).
pub const NEWCOMERS: usize = 8;
pub const NEWCOMER_BASE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 32);

/// The `i`-th newcomer's address.
pub fn newcomer_ip(i: usize) -> Ipv4Addr {
    assert!(i < NEWCOMERS);
    Ipv4Addr::from(u32::from(NEWCOMER_BASE) + i as u32)
}

/// Gives the carrier the newcomers' addresses and the SBC their neighbour
/// entries (once per topology; repeating it is harmless).
pub fn add_newcomers(topo: &Topology) {
    let addrs: Vec<Ipv4Addr> = (0..NEWCOMERS).map(newcomer_ip).collect();
    for a in &addrs {
        topo.carrier
            .ip(&["addr", "replace", &format!("{a}/32"), "dev", HOST_IF]);
    }
    let mac = topo.carrier.mac(HOST_IF);
    for a in addrs {
        topo.sbc.neighbour(a, &mac, SBC_CARRIER_IF);
    }
}

/// `cfg` with the unverified budget on.
pub fn with_budget(cfg: LabConfig) -> LabConfig {
    cfg.set(
        "verify",
        "unverified_per_second",
        &BUDGET_PER_SECOND.to_string(),
    )
    .set("verify", "unverified_burst", &BUDGET_BURST.to_string())
}

/// Unverified requests the budget lets through in `secs`: the burst plus
/// the rate.
pub fn allowance(secs: f64) -> f64 {
    BUDGET_BURST as f64 + BUDGET_PER_SECOND as f64 * secs
}

/// How many of the lab's registered subscribers `v` lists as verified.
pub fn subscribers_verified(v: &VerifiedReply) -> usize {
    (0..SUBSCRIBERS)
        .filter(|&i| {
            let ip = subscriber_ip(i).to_string();
            v.entries
                .iter()
                .any(|e| e.net.0.addr().to_string() == ip)
        })
        .count()
}
