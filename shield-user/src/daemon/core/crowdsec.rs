//! CrowdSec decisions in the kernel, and what the fleet tasks report
//! (SPEC §9). The HTTP side is [`crate::crowdsec`]; the tasks that call it
//! are [`crate::daemon::fleet`].
//!
//! One rule keeps local bans and decisions apart in the maps: a network's
//! kernel entry carries the longest of its live local ban and its
//! decisions ([`Core::wanted`]), and is removed only when neither is
//! left. Every path that changes either side ends in [`Core::resync`].

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::Core;
use crate::report::{CrowdsecStatus, PushStatus};
use crate::crowdsec::client::{ApiError, Route};
use crate::crowdsec::{scope_value, Decision, Pull, Skip};
use crate::daemon::bans::{Clock, Expiry, Origin};
use crate::daemon::decisions::Held;
use crate::report::CrowdsecSnapshot;

/// What the fleet side of the daemon knows, beside the decisions.
#[derive(Debug, Default)]
pub struct FleetState {
    /// The last stream call succeeded.
    pub up: bool,
    pub last_ok: Option<Instant>,
    pub last_error: Option<String>,
    /// A full (startup) stream has been applied since the pull task
    /// started.
    pub synced: bool,
    /// (route, outcome) → requests.
    pub requests: BTreeMap<(Route, String), u64>,
    pub skipped: BTreeMap<Skip, u64>,
    /// The addresses `lapi_url` reaches LAPI at, as last resolved: never
    /// banned, since a ban would cut this host off the decisions that
    /// could lift it.
    pub lapi_hosts: Vec<IpAddr>,
    /// The push task's queue; `None` without `[crowdsec.push]`.
    pub push_tx: Option<tokio::sync::mpsc::UnboundedSender<PushOp>>,
    pub push: PushStatus,
}

/// Work for the push task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOp {
    /// A local ban to share: an alert with its decision.
    Ban {
        net: IpNet,
        scenario: String,
        reason: String,
        expiry: Expiry,
    },
    /// A pushed ban lifted here: delete its decisions on LAPI (`ids`: those
    /// this host saw come back in its own stream).
    Unban {
        net: IpNet,
        scenario: String,
        ids: Vec<i64>,
    },
}

/// What one stream reply changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pulled {
    pub added: usize,
    pub deleted: usize,
    pub skipped: usize,
}

impl Core {
    pub fn fleet_mut(&mut self) -> &mut FleetState {
        &mut self.fleet
    }

    /// The expiry `net`'s kernel entry must have, if any.
    pub(super) fn wanted(&self, net: &IpNet, now: &Clock) -> Option<Expiry> {
        let local = self
            .book
            .get(net)
            .filter(|b| !b.expiry.is_past(now))
            .map(|b| b.expiry);
        let decided = self.decisions.longest(net);
        match (local, decided) {
            (Some(a), Some(b)) => Some(if a.outlasts(&b) { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Writes the kernel entries of `nets` as [`Core::wanted`] says: one
    /// batch for those that stay, one delete for each that goes.
    pub(super) fn resync(&mut self, nets: &[IpNet]) -> Result<(), crate::kernel::KernelError> {
        let now = Clock::now();
        let mut keep = Vec::new();
        let mut drop = Vec::new();
        for n in nets {
            match self.wanted(n, &now) {
                Some(e) => keep.push((*n, e.kernel())),
                None => drop.push(*n),
            }
        }
        self.shield.maps.ban_batch(&keep)?;
        for n in drop {
            self.shield.maps.unban(n)?;
        }
        Ok(())
    }

    /// Applies one `GET /v1/decisions/stream` reply, read. A full
    /// (`startup`) reply also forgets every decision it does not list: one
    /// missed while LAPI was unreachable, or held since start. An entry
    /// that cannot be read or enforced is skipped and counted; the rest
    /// apply.
    pub fn crowdsec_pulled(&mut self, pull: Pull, startup: bool) -> Pulled {
        if self.config.crowdsec.is_none() {
            return Pulled::default();
        }
        let now = Clock::now();
        let mut out = Pulled::default();
        let mut touched = Vec::new();
        for id in pull.deleted {
            if let Some(net) = self.decisions.remove(id) {
                touched.push(net);
                out.deleted += 1;
            }
        }
        let mut listed = HashSet::new();
        let allow = self.effective(crate::kernel::List::Allow);
        for d in pull.new {
            let id = d.as_ref().ok().map(|d| d.id);
            match d.and_then(|d| self.take_decision(d, &allow, &now)) {
                Ok(nets) => {
                    listed.extend(id);
                    touched.extend(nets);
                    out.added += 1;
                }
                Err(why) => self.skip(why, &mut out),
            }
        }
        self.skip_unreadable(&pull.unreadable, &mut out);
        if startup {
            touched.extend(self.decisions.keep_only(&listed));
            self.fleet.synced = true;
        }
        touched.sort();
        touched.dedup();
        if let Err(e) = self.resync(&touched) {
            tracing::error!("writing CrowdSec decisions to the ban maps failed: {}", crate::text::chain(&e));
        }
        self.fleet.up = true;
        self.fleet.last_ok = Some(Instant::now());
        self.fleet.last_error = None;
        self.count_request(Route::Stream, "200".into());
        out
    }

    fn skip_unreadable(&mut self, unreadable: &[String], out: &mut Pulled) {
        if let Some(first) = unreadable.first() {
            tracing::warn!(
                skipped = unreadable.len(),
                "crowdsec: LAPI listed decisions that cannot be read; skipped, the rest applied; first: {}",
                crate::text::Escaped(first)
            );
        }
        for _ in unreadable {
            self.skip(Skip::Malformed, out);
        }
    }

    fn skip(&mut self, why: Skip, out: &mut Pulled) {
        *self.fleet.skipped.entry(why).or_insert(0) += 1;
        out.skipped += 1;
    }

    /// Books one listed decision if it can be enforced: the networks whose
    /// kernel entries must be rewritten (a reused id moves off another).
    fn take_decision(&mut self, d: Decision, allow: &[IpNet], now: &Clock) -> Result<Vec<IpNet>, Skip> {
        if let Some(why) = self.protected_by(&d.net, false, allow) {
            if self.fleet.lapi_hosts.iter().any(|a| d.net.contains(a)) {
                // Worth an operator's look: a decision that would cut the fleet off.
                tracing::warn!(id = d.id, "crowdsec decision not enforced: {why}");
            } else {
                tracing::debug!(net = %d.net, "decision not enforced: {why}");
            }
            return Err(Skip::Protected);
        }
        let held = Held {
            id: d.id,
            // Both are LAPI's text, shown and used as metric labels: bounded.
            origin: super::banning::clip(d.origin, 64).into(),
            scenario: super::banning::clip(d.scenario, 200).into(),
            expiry: now.after(d.lasts),
        };
        Ok(self.decisions.add(d.net, held))
    }

    /// The LAPI's addresses, just resolved. Decisions already booked on
    /// networks covering them (held since a restart, or enforced before
    /// this version) are lifted.
    pub fn crowdsec_lapi_hosts(&mut self, hosts: Vec<IpAddr>) {
        if hosts != self.fleet.lapi_hosts {
            tracing::info!(addresses = ?hosts, "crowdsec: the LAPI's addresses are never banned");
        }
        self.fleet.lapi_hosts = hosts;
        let covering: Vec<IpNet> = self
            .decisions
            .nets()
            .filter(|n| self.fleet.lapi_hosts.iter().any(|a| n.contains(a)))
            .copied()
            .collect();
        for net in &covering {
            let ids = self.decisions.remove_where(net, |_| true);
            tracing::warn!(net = %net, decisions = ?ids, "crowdsec: lifting decisions that ban the LAPI's own address");
        }
        if let Err(e) = self.resync(&covering) {
            tracing::error!("lifting decisions on the LAPI's address failed: {}", crate::text::chain(&e));
        }
    }

    /// A pull has had no answer for `waited`: LAPI is not up while it
    /// waits (a healthy LAPI answers in milliseconds; the request itself
    /// may take much longer to time out).
    pub fn crowdsec_stalled(&mut self, waited: Duration) {
        self.fleet.up = false;
        self.fleet.last_error = Some(format!(
            "{}: no answer from LAPI for {} s; still waiting",
            Route::Stream.as_str(),
            waited.as_secs()
        ));
    }

    /// A LAPI call failed (the pull task's or the push task's).
    pub fn crowdsec_failed(&mut self, e: &ApiError) {
        if let Some(route) = e.route() {
            self.count_request(route, e.outcome());
            if route == Route::Stream {
                self.fleet.up = false;
            }
        }
        self.fleet.last_error = Some(e.to_string());
    }

    pub fn count_request(&mut self, route: Route, outcome: String) {
        *self.fleet.requests.entry((route, outcome)).or_insert(0) += 1;
    }

    /// Decisions whose time is up leave the book and the maps.
    pub(super) fn expire_decisions(&mut self, now: &Clock) {
        let nets = self.decisions.expire(now);
        if let Err(e) = self.resync(&nets) {
            tracing::error!("removing expired CrowdSec decisions failed: {}", crate::text::chain(&e));
        }
    }

    /// `[crowdsec]` removed by a reload: its decisions go with it.
    pub(super) fn drop_decisions(&mut self) {
        let nets = self.decisions.clear();
        if !nets.is_empty() {
            tracing::info!(nets = nets.len(), "[crowdsec] removed: lifting its decisions");
        }
        if let Err(e) = self.resync(&nets) {
            tracing::error!("lifting CrowdSec decisions failed: {}", crate::text::chain(&e));
        }
        self.fleet = FleetState::default();
    }

    /// Hands a local ban to the push task, if `[crowdsec.push]` takes its
    /// origin. Bans from CrowdSec never get here: they are not local bans.
    pub(super) fn push_ban(&mut self, net: IpNet, origin: &Origin, reason: &str, expiry: Expiry) {
        let Some(push) = self.config.crowdsec.as_ref().and_then(|c| c.push.as_ref()) else {
            return;
        };
        if !push.origins.iter().any(|o| o == origin.kind()) {
            return;
        }
        let op = PushOp::Ban {
            net,
            scenario: scenario_of(origin),
            reason: reason.to_string(),
            expiry,
        };
        self.send_push(op);
    }

    /// After a local unban: the decisions this host pushed for `net`
    /// (their echoes in the pulled book) go from the book at once and
    /// from LAPI through the push task, so the fleet lifts them too.
    pub(super) fn push_unban(&mut self, net: IpNet, origin: &Origin) {
        let Some(push) = self.config.crowdsec.as_ref().and_then(|c| c.push.as_ref()) else {
            return;
        };
        if !push.origins.iter().any(|o| o == origin.kind()) {
            return;
        }
        let scenario = scenario_of(origin);
        let ids = self
            .decisions
            .remove_where(&net, |h| &*h.scenario == scenario.as_str() && h.id > 0);
        self.send_push(PushOp::Unban { net, scenario, ids });
    }

    fn send_push(&mut self, op: PushOp) {
        if let Some(tx) = &self.fleet.push_tx {
            if tx.send(op).is_err() {
                tracing::warn!("the CrowdSec push task is not running; the ban is not shared");
            }
        }
    }

    /// The `crowdsec` part of `shieldctl status`.
    pub(super) fn crowdsec_status(&self) -> Option<CrowdsecStatus> {
        let cfg = self.config.crowdsec.as_ref()?;
        Some(CrowdsecStatus {
            lapi_url: cfg.lapi_url.clone(),
            up: self.fleet.up,
            synced: self.fleet.synced,
            last_ok_secs_ago: self.fleet.last_ok.map(|t| t.elapsed().as_secs()),
            last_error: self.fleet.last_error.clone(),
            decisions: self.decisions.len() as u64,
            by_origin: self
                .decisions
                .counts()
                .into_iter()
                .map(|((o, s), n)| (format!("{o}/{}", s.as_str()), n))
                .collect(),
            skipped: self
                .fleet
                .skipped
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), *v))
                .collect(),
            push: cfg.push.as_ref().map(|p| PushStatus {
                machine_id: p.machine_id.clone(),
                ..self.fleet.push.clone()
            }),
        })
    }

    pub(super) fn crowdsec_snapshot(&self) -> Option<CrowdsecSnapshot> {
        self.config.crowdsec.as_ref()?;
        Some(CrowdsecSnapshot {
            up: self.fleet.up,
            decisions: self
                .decisions
                .counts()
                .into_iter()
                .map(|((o, s), n)| (o, s.as_str().to_string(), n))
                .collect(),
            requests: self
                .fleet
                .requests
                .iter()
                .map(|((r, o), n)| (r.as_str().to_string(), o.clone(), *n))
                .collect(),
            skipped: Skip::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), self.fleet.skipped.get(s).copied().unwrap_or(0)))
                .collect(),
            push_queued: self.fleet.push.queued,
        })
    }

    /// The decisions on `net` as `shieldctl banned` rows.
    pub(super) fn decision_rows(&self, net: &IpNet, now: &Clock) -> Vec<crate::report::BanInfo> {
        self.decisions
            .on(net)
            .into_iter()
            .map(|h| crate::report::BanInfo {
                net: crate::report::Net(*net),
                origin: Origin::Crowdsec(h.origin.clone()),
                reason: h.scenario.to_string(),
                created: 0,
                expires_in_secs: h
                    .expiry
                    .left(now)
                    .map_or(crate::report::Lasts::Forever, |d| {
                        crate::report::Lasts::Secs(d.as_secs())
                    }),
                times: None,
            })
            .collect()
    }

    /// Why `net` cannot be unbanned here: only CrowdSec bans it.
    pub(super) fn decided_elsewhere(&self, net: &IpNet) -> Option<String> {
        let d = self.decisions.on(net);
        let first = d.first()?;
        let (scope, value) = scope_value(net);
        Some(format!(
            "{net} is banned by CrowdSec (decision {}, origin {}, {:?}), which is the source of truth for it: \
             delete it on the LAPI (`cscli decisions delete --{} {value}`) or allowlist it",
            first.id,
            first.origin,
            &*first.scenario,
            if scope == crate::config::Scope::Ip { "ip" } else { "range" },
        ))
    }
}

/// The scenario a pushed ban carries: `sipshield/<origin>`, jails by name.
pub fn scenario_of(origin: &Origin) -> String {
    format!("sipshield/{}", origin.to_record())
}

/// Whole seconds left, at least one (LAPI refuses a zero duration).
pub fn secs_left(expiry: &Expiry, now: &Clock) -> Option<Duration> {
    match expiry.left(now) {
        None => Some(Duration::from_secs(10 * 365 * 86_400)),
        Some(d) if d.as_secs() >= 1 => Some(d),
        Some(_) => None,
    }
}
