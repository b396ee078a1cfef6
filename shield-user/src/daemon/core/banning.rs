//! Bans: made by an operator, a jail or the kernel's offender reports;
//! lifted by an operator or by expiry. Each change goes to the kernel
//! first, then to the store (a failed store write is a warning, see
//! [`super::not_persisted`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use shield_common::{OffenderEvent, Reason, FAMILY_V4, FAMILY_V6};

use super::{Core, CtlError};
use crate::config::format_duration;
use crate::report::{BanInfo, Escalation, Lasts, Net, UnbanReply};
use crate::daemon::bans::{covers, overlaps, Ban, Clock, Expiry, Increment, Origin};
use crate::daemon::guard;
use crate::jails::JailEvent;
use crate::kernel::List;
use crate::store::{Action, BanEvent, BanRecord};
use crate::text::Escaped;

/// Longest reason text kept with a ban.
const MAX_REASON: usize = 200;
/// Longest detail (a jail's log line) kept in the history.
const MAX_DETAIL: usize = 1000;
const RECENT_ESCALATIONS: usize = 20;

/// A ban being made, with what only the store's history keeps.
pub(super) struct Request<'a> {
    net: IpNet,
    ban: Ban,
    detail: &'a str,
    who: &'a str,
}

impl<'a> Request<'a> {
    pub(super) fn new(net: IpNet, ban: Ban, detail: &'a str, who: &'a str) -> Self {
        Request { net, ban, detail, who }
    }
}

/// What [`Core::put_ban`] did.
struct Put {
    /// The ban in force now (the new one, or an active one that outlasts
    /// it).
    ban: Ban,
    action: Action,
    times: Option<u32>,
    warning: Option<String>,
}

impl Core {
    /// Why `net` must not be banned, if it must not (see [`guard`]).
    /// `force` (shieldctl's `--force`) admits prefixes wider than the
    /// configured minimum, nothing else.
    pub(super) fn protected(&mut self, net: &IpNet, force: bool) -> Option<String> {
        let allow = self.effective(List::Allow);
        self.protected_by(net, force, &allow)
    }

    /// [`Core::protected`] with the effective allowlist given (computed
    /// once for a whole list of CrowdSec decisions).
    pub(super) fn protected_by(&mut self, net: &IpNet, force: bool, allow: &[IpNet]) -> Option<String> {
        if let Some(why) = guard::never_ban(net, self.own.get()) {
            return Some(why);
        }
        if self.config.crowdsec.is_some() {
            if let Some(a) = self.fleet.lapi_hosts.iter().find(|a| net.contains(*a)) {
                return Some(format!(
                    "{net} covers {a}, the CrowdSec LAPI's address ([crowdsec] lapi_url): \
                     banning it would cut this host off the fleet's decisions"
                ));
            }
        }
        if !force {
            let b = &self.config.bans;
            if let Some(why) = guard::too_wide(net, b.min_prefix_v4, b.min_prefix_v6) {
                return Some(why);
            }
        }
        if let Some(a) = allow.iter().find(|a| covers(a, net)) {
            return Some(format!("{net} is allowlisted ({a})"));
        }
        // A ban of a prefix must not sweep up an ignored host.
        self.config
            .bans
            .ignoreip
            .iter()
            .find(|i| overlaps(i, net))
            .map(|i| format!("{net} overlaps [bans] ignoreip ({i})"))
    }

    /// `shieldctl ban`. A network already banned stays banned until the
    /// later of the two expiries, and the ban is counted.
    pub fn ban_manual(
        &mut self,
        net: IpNet,
        duration: Option<Lasts>,
        reason: Option<String>,
        who: &str,
        force: bool,
    ) -> Result<(BanInfo, Option<String>), CtlError> {
        let net = net.trunc();
        if let Some(why) = self.protected(&net, force) {
            return Err(CtlError::BadInput(format!("not banned: {why}")));
        }
        let now = Clock::now();
        let expiry = match duration {
            Some(Lasts::Forever) => Expiry::Never,
            Some(Lasts::Secs(s)) => now.after(Duration::from_secs(s)),
            None => now.after(self.config.bans.bantime),
        };
        let reason = clip(reason.unwrap_or_else(|| format!("banned by {who}")), MAX_REASON);
        let ban = Ban {
            origin: Origin::Manual,
            reason: reason.into(),
            created_ms: now.wall_ms,
            expiry,
        };
        let capacity = self.runtime.capacity;
        let req = Request { net, ban, detail: "", who };
        let put = self.put_ban(req, &now, None).map_err(|e| {
            if e.is_map_full() {
                CtlError::Failed(format!(
                    "banning {net}: the ban map is full (capacity.bans = {}, capacity.ban_nets = {})",
                    capacity.bans, capacity.ban_nets
                ))
            } else {
                CtlError::map(format!("banning {net}"))(e)
            }
        })?;
        let mut info = self.ban_info(&net, &put.ban, &now);
        info.times = put.times;
        Ok((info, put.warning))
    }

    /// A jail's or the kernel's ban: skipped for protected sources;
    /// `increment` applies to bans that are new or extended.
    pub(super) fn ban_auto(&mut self, req: Request<'_>, base: Duration, latency: Option<Duration>) {
        let net = req.net.trunc();
        let origin = req.ban.origin.clone();
        if let Some(why) = self.protected(&net, false) {
            tracing::info!(net = %net, origin = %Escaped(&origin.label()), "not banning: {why}");
            return;
        }
        let now = Clock::now();
        let inc = Increment {
            enabled: self.config.bans.increment,
            maxtime: self.config.bans.maxtime,
        };
        let expiry = now.after(self.book.auto_duration(&net, base, inc, &now));
        let req = Request {
            net,
            ban: Ban { expiry, created_ms: now.wall_ms, ..req.ban },
            ..req
        };
        match self.put_ban(req, &now, latency) {
            Ok(put) if put.action == Action::Ban || put.ban.expiry == expiry => {
                self.book
                    .record_offence(net, expiry.wall_ms().unwrap_or(u64::MAX), inc, &now);
                if let Some(o) = self.book.offence(&net) {
                    let r = self.store.offence(&o);
                    self.saved(r);
                }
            }
            Ok(_) => {}
            Err(e) if e.is_map_full() => {
                tracing::error!(net = %net, capacity = self.runtime.capacity.bans, "ban failed: the ban map is full")
            }
            Err(e) => tracing::error!(net = %net, "ban failed: {}", crate::text::chain(&e)),
        }
    }

    /// Puts a ban in force and records it. A network banned already keeps
    /// whichever ban lasts longer; either way the ban is counted.
    fn put_ban(
        &mut self,
        req: Request<'_>,
        now: &Clock,
        latency: Option<Duration>,
    ) -> Result<Put, crate::kernel::KernelError> {
        let Request { net, ban, detail, who } = req;
        let active = self.book.get(&net).filter(|b| !b.expiry.is_past(now)).cloned();
        let in_kernel = self.wanted(&net, now);
        let (kept, action) = match active {
            Some(old) if old.expiry.outlasts(&ban.expiry) => (old, Action::Reban),
            Some(_) => (ban.clone(), Action::Reban),
            None => (ban.clone(), Action::Ban),
        };
        // A CrowdSec decision on the same network may outlast it.
        let want = match self.decisions.longest(&net) {
            Some(d) if d.outlasts(&kept.expiry) => d,
            _ => kept.expiry,
        };
        // The kernel already holds a ban that outlasts this one.
        if in_kernel != Some(want) {
            self.shield.maps.ban(net, want.kernel())?;
        }
        let left = kept
            .expiry
            .left(now)
            .map(format_duration)
            .unwrap_or_else(|| "forever".into());
        tracing::info!(
            net = %net,
            // A jail's reason quotes a log line an attacker may have
            // written: escaped, so reading this log cannot drive a terminal.
            origin = %Escaped(&ban.origin.label()),
            duration = %left,
            reason = %Escaped(&ban.reason),
            latency_ms = latency.map(|l| l.as_secs_f64() * 1000.0),
            "{}",
            if action == Action::Ban { "ban" } else { "reban" }
        );
        *self
            .bans_total
            .entry(ban.origin.label().to_string())
            .or_insert(0) += 1;
        self.book.insert(net, kept.clone());
        if kept.expiry == ban.expiry {
            // New or made longer: the fleet gets the new end too.
            self.push_ban(net, &ban.origin, &ban.reason, ban.expiry);
        }
        let record = BanRecord {
            net,
            origin: kept.origin.to_record(),
            reason: kept.reason.to_string(),
            created_ms: kept.created_ms,
            expires_ms: kept.expiry.wall_ms(),
        };
        let cause_origin = ban.origin.to_record();
        let r = self.store.ban(&BanEvent {
            record: &record,
            origin: &cause_origin,
            reason: &ban.reason,
            detail,
            who,
            action,
        });
        let times = r.as_ref().ok().copied();
        let warning = self.saved(r.map(drop));
        Ok(Put { ban: kept, action, times, warning })
    }

    pub fn unban(&mut self, net: IpNet, who: &str) -> Result<(UnbanReply, Option<String>), CtlError> {
        let net = net.trunc();
        if self.book.get(&net).is_none() {
            if let Some(why) = self.decided_elsewhere(&net) {
                return Err(CtlError::BadInput(format!("not unbanned: {why}")));
            }
        }
        let removed = self.book.remove(&net);
        let in_book = removed.is_some();
        if let Some(b) = &removed {
            self.push_unban(net, &b.origin);
        }
        let in_kernel = if self.decisions.longest(&net).is_some() {
            self.resync(&[net])
                .map_err(CtlError::map(format!("unbanning {net}")))?;
            true
        } else {
            self.shield
                .maps
                .unban(net)
                .map_err(CtlError::map(format!("unbanning {net}")))?
        };
        if !in_book && !in_kernel {
            let hint = match self.book.covering(&net) {
                Some(c) => format!(" (it is inside the banned network {c}: unban that)"),
                None => String::new(),
            };
            return Err(CtlError::BadInput(format!("{net} is not banned{hint}")));
        }
        tracing::info!(net = %net, by = who, "unban");
        let r = self.store.unban(&[net], Action::Unban, who);
        let warning = self.saved(r).or_else(|| self.decided_elsewhere(&net).map(|why| {
            format!("the local ban is lifted, but {why}")
        }));
        Ok((
            UnbanReply {
                removed: vec![Net(net)],
            },
            warning,
        ))
    }

    pub fn unban_all(&mut self, who: &str) -> Result<(UnbanReply, Option<String>), CtlError> {
        let origins: Vec<(IpNet, Origin)> =
            self.book.iter().map(|(n, b)| (*n, b.origin.clone())).collect();
        let mut nets = self.book.clear();
        // And anything in the kernel the book never knew.
        let kernel = self
            .shield
            .maps
            .bans_dump()
            .map_err(CtlError::map("reading the ban maps"))?;
        nets.extend(kernel.into_iter().map(|(n, _)| n));
        nets.sort();
        nets.dedup();
        for n in &nets {
            self.shield
                .maps
                .unban(*n)
                .map_err(CtlError::map(format!("unbanning {n}")))?;
        }
        for (n, origin) in origins {
            self.push_unban(n, &origin);
        }
        // LAPI's decisions are not this host's to lift: back in.
        let decided: Vec<IpNet> = self.decisions.nets().copied().collect();
        self.resync(&decided)
            .map_err(CtlError::map("restoring CrowdSec decisions"))?;
        tracing::info!(count = nets.len(), by = who, "unban all");
        let r = self.store.unban(&nets, Action::Unban, who);
        let warning = self.saved(r).or_else(|| {
            (!decided.is_empty()).then(|| {
                format!(
                    "{} networks stay banned by CrowdSec decisions (delete them on the LAPI)",
                    decided.len()
                )
            })
        });
        Ok((
            UnbanReply {
                removed: nets.iter().copied().map(Net).collect(),
            },
            warning,
        ))
    }

    /// Removes bans whose time is up from the maps (the kernel already
    /// ignores them; this keeps the maps from filling up) and history
    /// older than `[bans] history`.
    pub fn sweep(&mut self) -> usize {
        // A store deleted or replaced while nothing is written is noticed
        // here; one that cannot be rewritten is retried like a failed save.
        let r = self.store.check();
        self.saved(r);
        let now = Clock::now();
        let mut lifted = Vec::new();
        for net in self.book.expired(&now) {
            // The expired ban no longer counts: a decision may keep the
            // entry, else it goes.
            if let Err(e) = self.resync(&[net]) {
                tracing::error!(net = %net, "removing an expired ban failed: {}", crate::text::chain(&e));
                continue;
            }
            if let Some(b) = self.book.remove(&net) {
                tracing::info!(net = %net, origin = %Escaped(&b.origin.label()), "unban (expired)");
            }
            lifted.push(net);
        }
        if !lifted.is_empty() {
            let r = self.store.unban(&lifted, Action::Expire, "expiry");
            self.saved(r);
        }
        self.expire_decisions(&now);
        let maxtime = self.config.bans.maxtime;
        self.book.prune_history(maxtime, &now);
        let forgotten_before = now
            .wall_ms
            .saturating_sub(u64::try_from(maxtime.as_millis()).unwrap_or(u64::MAX));
        if let Err(e) = self.store.prune(self.config.bans.history, forgotten_before) {
            tracing::warn!("pruning the store's history failed: {e}");
        }
        self.sweep_refusals();
        lifted.len()
    }

    pub fn on_jail_event(&mut self, ev: JailEvent) {
        match ev {
            JailEvent::Failure { jail, .. } => *self.jail_failures.entry(jail).or_insert(0) += 1,
            JailEvent::Ban {
                jail,
                host,
                bantime,
                failures,
                line,
                seen_at,
            } => {
                let line = line.trim();
                let reason = clip(format!("{failures} failures: {line}"), MAX_REASON);
                let detail = clip(line.to_string(), MAX_DETAIL);
                let who = format!("jail {jail}");
                let req = Request {
                    net: IpNet::from(host),
                    ban: ban_now(Origin::Jail(jail.into()), reason),
                    detail: &detail,
                    who: &who,
                };
                self.ban_auto(req, bantime, Some(seen_at.elapsed()));
            }
        }
    }

    /// A repeat offender reported by the kernel.
    pub fn on_offender(&mut self, ev: &OffenderEvent) {
        let Some(net) = offender_net(ev) else {
            tracing::warn!(
                family = ev.family,
                prefix = ev.prefix_len,
                "ignoring a malformed offender report"
            );
            return;
        };
        let Some(reason) = Reason::from_u8(ev.reason) else {
            tracing::warn!(net = %net, reason = ev.reason, "ignoring an offender report with an unknown reason");
            return;
        };
        let esc = self.config.bans.escalate;
        // Reports queued while no daemon ran may be old: a ban that would
        // already have ended is not made now.
        let age = Duration::from_nanos(crate::kernel::monotonic_ns().saturating_sub(ev.ts_ns));
        if age >= esc.bantime {
            tracing::debug!(net = %net, age_s = age.as_secs(), "ignoring a stale offender report");
            return;
        }
        self.escalations.push_front(Escalation {
            source: Net(net),
            reason,
            drops: ev.drops,
            at: crate::store::now_ms() / 1000,
        });
        self.escalations.truncate(RECENT_ESCALATIONS);
        let text = format!(
            "{} {} drops within {}",
            ev.drops,
            reason.as_str(),
            format_duration(esc.window)
        );
        let req = Request {
            net,
            ban: ban_now(Origin::Escalation, text.clone()),
            detail: &text,
            who: "kernel",
        };
        self.ban_auto(req, esc.bantime, None);
    }
}

/// A ban of `origin` made now; its expiry is set by the caller.
pub(super) fn ban_now(origin: Origin, reason: String) -> Ban {
    Ban {
        origin,
        reason: reason.into(),
        created_ms: 0,
        expiry: Expiry::Never,
    }
}

/// The network a kernel offender report names.
pub fn offender_net(ev: &OffenderEvent) -> Option<IpNet> {
    match ev.family {
        FAMILY_V4 => {
            let a = Ipv4Addr::new(ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]);
            IpNet::new(IpAddr::V4(a), 32).ok()
        }
        FAMILY_V6 => IpNet::new(IpAddr::V6(Ipv6Addr::from(ev.addr)), ev.prefix_len)
            .ok()
            .map(|n| n.trunc()),
        _ => None,
    }
}

/// `s` cut to at most `max` bytes (on a char boundary), marked as cut.
pub(super) fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offender_reports_become_networks() {
        let mut ev = OffenderEvent {
            family: FAMILY_V4,
            prefix_len: 32,
            ..Default::default()
        };
        ev.addr[..4].copy_from_slice(&[198, 51, 100, 2]);
        assert_eq!(offender_net(&ev), Some("198.51.100.2/32".parse().unwrap()));
        let mut ev6 = OffenderEvent {
            family: FAMILY_V6,
            prefix_len: 64,
            ..Default::default()
        };
        ev6.addr = "2001:db8:1:2:3:4:5:6".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            offender_net(&ev6),
            Some("2001:db8:1:2::/64".parse().unwrap())
        );
        ev6.prefix_len = 200;
        assert_eq!(offender_net(&ev6), None);
        ev6.family = 9;
        assert_eq!(offender_net(&ev6), None);
    }

    #[test]
    fn reasons_are_clipped_on_a_char_boundary() {
        let s = clip("é".repeat(300), MAX_REASON);
        assert!(s.len() <= MAX_REASON + '…'.len_utf8());
        assert!(s.ends_with('…'));
        assert_eq!(clip("short".into(), MAX_REASON), "short");
    }
}
