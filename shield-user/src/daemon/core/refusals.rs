//! Destination refusals (SPEC §11) on the daemon's side: the reports the
//! kernel sends, logged and kept in the store; `shieldctl refused` and
//! `shieldctl destination`; the refusal counters' base across reloads.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::{Core, CtlError};
use crate::report::{DestinationReply, RefusalItem, RefusedReply};
use crate::dest::event::Refusal;
use crate::dest::{country_label, masked, show, Destinations};
use crate::store::{now_ms, RefusalQuery, RefusalRecord};

/// Refusals the store keeps: the newest this many ...
pub const REFUSALS_KEPT: u64 = 100_000;
/// ... of those no older than this.
pub const REFUSALS_KEPT_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the table is pruned (a delete by index: cheap, but not every
/// sweep).
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Records waiting for the store while it fails: 100 s of the kernel's
/// 100 reports a second. Beyond that the oldest go (and are counted):
/// memory stays bounded however long the disk is full.
const MAX_PENDING: usize = 10_000;
/// Rows `shieldctl refused` shows by default, and at most.
pub const REFUSED_SHOWN: usize = 100;
pub const MAX_REFUSED_SHOWN: usize = 10_000;

/// What the core keeps about refusals.
#[derive(Debug, Default)]
pub struct RefusalBook {
    /// Decoded reports not yet in the store, oldest first.
    pending: VecDeque<RefusalRecord>,
    /// Records dropped because the store failed for too long.
    lost: u64,
    /// The store is failing (logged once, not per batch).
    failing: bool,
    last_prune: Option<Instant>,
    /// Refusals counted under policies no longer in force, by (interface,
    /// rule, action): the kernel's counters are keyed by rule id, and the
    /// ids change with the entries, so a reload folds them in here and
    /// clears the kernel's (see [`Core::fold_refusal_counts`]).
    pub base: BTreeMap<(String, String, String), u64>,
}

impl Core {
    /// The ring buffer of refusal reports, for the task that reads it
    /// (once).
    pub fn take_refusal_events(&mut self) -> Option<crate::kernel::EventRing> {
        self.shield.maps.dest.events.take()
    }

    /// The destination policy in force (to decode reports with).
    pub fn destinations(&self) -> &Destinations {
        &self.config.destinations
    }

    /// A refusal the report bucket let through: logged (the number masked
    /// to its last four digits) and queued for the store, which
    /// [`Core::flush_refusals`] writes in one transaction per batch.
    pub fn on_refusal(&mut self, r: &Refusal) {
        tracing::warn!(
            source = %r.source.ip(),
            number = %masked(&r.number),
            rule = %r.rule,
            reason = r.reason.as_str(),
            user_agent = %r.user_agent,
            replied = r.reply,
            "INVITE refused by the destination policy"
        );
        let book = &mut self.refusals;
        if book.pending.len() >= MAX_PENDING {
            book.pending.pop_front();
            book.lost += 1;
        }
        book.pending.push_back(RefusalRecord {
            at_ms: now_ms(),
            source: r.source.ip(),
            number: r.number.clone(),
            rule: r.rule.clone(),
            reason: r.reason.as_str().into(),
            user_agent: r.user_agent.clone(),
            replied: r.reply,
        });
    }

    /// Writes the queued refusals. A failure is logged (once until the
    /// store works again) and the records kept for the next try: refusal
    /// records are not worth stopping or slowing the daemon for.
    pub fn flush_refusals(&mut self) {
        if self.refusals.pending.is_empty() {
            return;
        }
        match self.store.add_refusals(self.refusals.pending.make_contiguous()) {
            Ok(()) => {
                if std::mem::take(&mut self.refusals.failing) {
                    tracing::info!(lost = self.refusals.lost, "refusal records are written to the store again");
                }
                self.refusals.pending.clear();
            }
            Err(e) => {
                if !std::mem::replace(&mut self.refusals.failing, true) {
                    tracing::error!(
                        queued = self.refusals.pending.len(),
                        "cannot write refusal records to the store (kept in memory, up to {MAX_PENDING}, and retried): {e}"
                    );
                }
            }
        }
    }

    /// The sweeper's part: writes what is queued and, every
    /// [`PRUNE_EVERY`], bounds the table.
    pub fn sweep_refusals(&mut self) {
        self.flush_refusals();
        if self.refusals.last_prune.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.refusals.last_prune = Some(Instant::now());
        let before = now_ms().saturating_sub(REFUSALS_KEPT_FOR.as_millis() as u64);
        match self.store.prune_refusals(REFUSALS_KEPT, before) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "refusal records pruned"),
            Err(e) => tracing::warn!("pruning the store's refusal records failed: {e}"),
        }
    }

    /// `refused`: the kept refusals of sources in `net` (all without),
    /// refused within the last `since_secs` (all without), newest first.
    pub fn refused(
        &mut self,
        net: Option<IpNet>,
        since_secs: Option<u64>,
        limit: Option<u32>,
    ) -> Result<RefusedReply, CtlError> {
        let limit = match limit {
            None => REFUSED_SHOWN,
            Some(0) => return Err(CtlError::BadInput("limit: 0; ask for at least one row".into())),
            Some(n) => (n as usize).min(MAX_REFUSED_SHOWN),
        };
        // What is queued is shown too: written first.
        self.flush_refusals();
        let since_ms = since_secs.map_or(0, |s| now_ms().saturating_sub(s.saturating_mul(1000)));
        let q = RefusalQuery {
            net: net.map(|n| n.trunc()),
            since_ms,
            limit,
        };
        let rows = self
            .store
            .refusals(&q)
            .map_err(|e| CtlError::Failed(format!("reading the store: {e}")))?;
        Ok(RefusedReply {
            refusals: rows.into_iter().map(RefusalItem::from).collect(),
            limit,
            unsaved: self.refusals.pending.len() as u64,
            lost: self.refusals.lost,
        })
    }

    /// `destination NUMBER`: what the policy in force decides about it.
    pub fn destination(&self, number: &str) -> Result<DestinationReply, CtlError> {
        crate::dest::check_number(number).map_err(|e| CtlError::BadInput(format!("number: {e}")))?;
        let d = &self.config.destinations;
        let decision = d.decide(number);
        let code = shield_common::dest::country(&decision.dialled);
        let rate = d.international_per_minute;
        let rate_applies = decision.refused_by.is_none()
            && decision.dialled.class == shield_common::dest::DestClass::International
            && rate > 0;
        Ok(DestinationReply {
            number: show(&decision.dialled),
            class: decision.dialled.class.as_str().into(),
            country: (code != 0).then(|| country_label(code)),
            refused: decision.refused_by.is_some(),
            rule: decision.refused_by,
            allowed_by: decision.allowed_by,
            action: d.action.as_str().into(),
            international_per_minute: rate_applies.then_some(rate),
        })
    }

    /// Before a policy whose entries or action differ replaces the one in
    /// force: adds the kernel's refusal counters, named by the policy in
    /// force, to the base, and clears them (the new policy numbers its
    /// rules anew). Exported counts are base + kernel, so they never go
    /// backwards. A failure leaves the counters as they are (then a
    /// reload may rename some of them; logged).
    pub(super) fn fold_refusal_counts(&mut self) {
        let counted = match self.shield.maps.dest.refusals() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("reading DEST_REFUSED before a policy change failed; its counts may be renamed: {e}");
                return;
            }
        };
        let names: BTreeMap<u32, String> = self.slots().into_iter().map(|(n, s)| (s, n)).collect();
        let folded = fold(&counted, &names, &self.config.destinations);
        if let Err(e) = self.shield.maps.dest.clear_refusals() {
            tracing::warn!("clearing DEST_REFUSED before a policy change failed; its counts may be renamed: {e}");
            return;
        }
        for (k, n) in folded {
            *self.refusals.base.entry(k).or_insert(0) += n;
        }
    }

    /// `sipshield_destination_refused_total`: base + kernel, by
    /// (interface, rule, action).
    pub(super) fn refused_counts(&self) -> BTreeMap<(String, String, String), u64> {
        let mut out = self.refusals.base.clone();
        let names: BTreeMap<u32, String> = self.slots().into_iter().map(|(n, s)| (s, n)).collect();
        if let Ok(counted) = self.shield.maps.dest.refusals() {
            for (k, n) in fold(&counted, &names, &self.config.destinations) {
                *out.entry(k).or_insert(0) += n;
            }
        }
        out
    }
}

/// Kernel refusal counters by (slot, rule id) as (interface, rule name,
/// action) under `policy`; ids that share a name (an entry listed twice)
/// are summed.
fn fold(
    counted: &std::collections::HashMap<(u32, u32), u64>,
    names: &BTreeMap<u32, String>,
    policy: &Destinations,
) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for (&(slot, id), &n) in counted {
        let iface = names.get(&slot).cloned().unwrap_or_else(|| format!("slot {slot}"));
        let key = (iface, policy.rule_name(id), policy.action.as_str().to_string());
        *out.entry(key).or_insert(0) += n;
    }
    out
}

impl From<RefusalRecord> for RefusalItem {
    fn from(r: RefusalRecord) -> RefusalItem {
        RefusalItem {
            at_ms: r.at_ms,
            source: r.source.to_string(),
            number: r.number,
            rule: r.rule,
            reason: r.reason,
            user_agent: r.user_agent,
            replied: r.replied,
        }
    }
}
