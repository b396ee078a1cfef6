//! Verified sources (SPEC §8): `shieldctl verified`, `verify` and
//! `unverify`, and the readouts behind the `sipshield_verified_sources` and
//! `sipshield_under_pressure` metrics. The kernel's maps are the record:
//! verified entries live in pinned maps (the egress classifier keeps adding
//! to them while no daemon runs), so there is nothing to store here.

use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::{Core, CtlError};
use crate::report::{
    Lasts, Net, UnverifyReply, VerifiedInfo, VerifiedReply, MAX_VERIFIED_SHOWN,
};
use crate::daemon::guard;
use crate::kernel::{monotonic_ns, VerifiedBy, VerifiedEntry};

/// The budget counts as under pressure while fewer tokens than this share
/// of its burst are left: a flood above the budget keeps it near empty,
/// traffic within it lets it refill.
const PRESSURE_SHARE: u64 = 10;

/// How often expired learned entries are deleted from `VERIFIED` (a walk
/// of up to a million entries; until then the kernel just ignores them).
const VERIFIED_SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Core {
    /// Deletes expired learned entries from `VERIFIED`, at most once per
    /// `VERIFIED_SWEEP_EVERY`: the map is not an LRU, so this is what
    /// makes room for new subscribers.
    pub fn sweep_verified(&mut self) {
        if self
            .verified_swept
            .is_some_and(|at| at.elapsed() < VERIFIED_SWEEP_EVERY)
        {
            return;
        }
        self.verified_swept = Some(Instant::now());
        match self.shield.maps.sweep_verified(monotonic_ns()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(n, "expired verified sources deleted"),
            Err(e) => tracing::warn!("sweeping VERIFIED failed: {}", crate::text::chain(&e)),
        }
    }

    /// Every live verified source and network, and the budget's state.
    pub fn verified(&self) -> Result<VerifiedReply, CtlError> {
        let now = monotonic_ns();
        let all = self
            .shield
            .maps
            .verified(now)
            .map_err(CtlError::map("reading VERIFIED"))?;
        let entries = all
            .iter()
            .take(MAX_VERIFIED_SHOWN)
            .map(|e| info(e, now))
            .collect();
        Ok(VerifiedReply {
            total: all.len(),
            entries,
            unverified_per_second: self.config.verify.unverified_per_second,
            budget_tokens: self.budget_tokens(now),
            under_pressure: self.under_pressure(),
        })
    }

    /// `shieldctl verify`: `net` is verified for `ttl` (default `[verify]
    /// ttl`). Never shortens: an entry that lasts longer is kept.
    /// An IPv6 address verifies its `/ipv6_prefix` (the kernel's key).
    pub fn verify(
        &mut self,
        net: IpNet,
        ttl: Option<Lasts>,
        who: &str,
        force: bool,
    ) -> Result<VerifiedInfo, CtlError> {
        let net = net.trunc();
        let b = &self.config.bans;
        if let Some(why) = guard::too_wide(&net, b.min_prefix_v4, b.min_prefix_v6).filter(|_| !force)
        {
            return Err(CtlError::BadInput(format!("not verified: {why}")));
        }
        let now = monotonic_ns();
        let expires_ns = match ttl.unwrap_or(Lasts::Secs(self.config.verify.ttl.as_secs())) {
            Lasts::Forever => 0,
            Lasts::Secs(s) => now
                .saturating_add(u64::try_from(Duration::from_secs(s).as_nanos()).unwrap_or(u64::MAX))
                .max(1),
        };
        let expires_ns = self
            .shield
            .maps
            .verify(net, expires_ns, VerifiedBy::Operator)
            .map_err(CtlError::map(format_args!("verifying {net}")))?;
        tracing::info!(net = %net, who, "verified");
        let entry = VerifiedEntry {
            net,
            expires_ns,
            by: VerifiedBy::Operator,
        };
        Ok(info(&entry, now))
    }

    /// `shieldctl unverify`.
    pub fn unverify(&mut self, net: IpNet, who: &str) -> Result<UnverifyReply, CtlError> {
        let net = net.trunc();
        if self.config.verify.cidrs.iter().any(|c| c.trunc() == net) {
            return Err(CtlError::BadInput(format!(
                "{net} is in [verify] cidrs: remove it there and reload"
            )));
        }
        let removed = self
            .shield
            .maps
            .unverify(net)
            .map_err(CtlError::map(format_args!("unverifying {net}")))?;
        if removed {
            tracing::info!(net = %net, who, "unverified");
        }
        Ok(UnverifyReply {
            net: Net(net),
            removed,
        })
    }

    /// Live verified entries (for the gauge).
    pub fn verified_count(&self) -> usize {
        self.shield
            .maps
            .verified(monotonic_ns())
            .map_or(0, |v| v.len())
    }

    /// Tokens left in the shared budget; `None` without one.
    fn budget_tokens(&self, now: u64) -> Option<u64> {
        self.shield.maps.budget_tokens(now).ok().flatten()
    }

    /// Whether the unverified budget is dropping (see [`PRESSURE_SHARE`]).
    pub fn under_pressure(&self) -> bool {
        let burst = u64::from(self.config.verify.unverified_burst);
        self.budget_tokens(monotonic_ns())
            .is_some_and(|left| left < (burst / PRESSURE_SHARE).max(1))
    }
}

fn info(e: &VerifiedEntry, now: u64) -> VerifiedInfo {
    VerifiedInfo {
        net: Net(e.net),
        how: e.by.as_str().to_string(),
        expires_in_secs: match e.expires_ns {
            0 => Lasts::Forever,
            t => Lasts::Secs(t.saturating_sub(now).div_ceil(1_000_000_000)),
        },
    }
}
