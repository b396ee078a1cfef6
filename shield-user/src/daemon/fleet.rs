//! The fleet's two tasks (SPEC §9): pulling CrowdSec decisions into the
//! maps, and pushing this host's own bans to LAPI. Neither ever ends on a
//! LAPI failure: what is enforced stays enforced (the kernel expires it),
//! calls are retried with a capped backoff, and a reload that changes
//! `[crowdsec]` restarts them ([`Fleet::update`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::core::crowdsec::{secs_left, PushOp};
use super::core::Core;
use super::handle::CoreHandle;
use crate::config::{Crowdsec, Push};
use crate::crowdsec::client::{ApiError, Bouncer, Route, Watcher};
use crate::crowdsec::wire::{go_duration, scope_value, Alert, AlertSource, StreamReply, WireDecision};
use crate::daemon::bans::Clock;

/// First retry after a failure; doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// A LAPI back from an outage is found within this long.
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How often the pull asks for the full list again. LAPI 1.4 streams one
/// decision per value (the longest), and deleting that one while a shorter
/// one remains sends nothing: only a full list shows the shorter one. It
/// also heals anything missed. Unchanged decisions cost no map write.
const FULL_RESYNC: Duration = Duration::from_secs(300);
/// A pull with no answer for this long marks LAPI down while it goes on
/// waiting: a healthy LAPI answers a poll in milliseconds, and a request
/// only times out after much longer.
const STALLED: Duration = Duration::from_secs(5);
/// Pushes waiting for LAPI; beyond it the oldest are dropped (counted).
const PUSH_QUEUE_MAX: usize = 10_000;
/// Alerts per `POST /v1/alerts`.
const PUSH_BATCH: usize = 100;
/// The `origin` pushed decisions carry, which other hosts show as
/// `crowdsec/sipshield`.
pub const PUSH_ORIGIN: &str = "sipshield";

/// The running tasks and the settings they run with.
#[derive(Default)]
pub struct Fleet {
    running: Option<(Crowdsec, Vec<JoinHandle<()>>)>,
}

impl Fleet {
    /// Starts, restarts or stops the tasks for `cfg` (unchanged settings:
    /// nothing happens).
    pub async fn update(&mut self, core: &CoreHandle, cfg: Option<&Crowdsec>) {
        if self.running.as_ref().map(|(c, _)| c) == cfg {
            return;
        }
        self.stop();
        let push_rx = match cfg.and_then(|c| c.push.as_ref()) {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                core.call(move |c| c.fleet_mut().push_tx = Some(tx)).await;
                Some(rx)
            }
            None => {
                core.call(|c| c.fleet_mut().push_tx = None).await;
                None
            }
        };
        let Some(cfg) = cfg else { return };
        let mut handles = vec![tokio::spawn(pull(core.clone(), cfg.clone()))];
        if let (Some(p), Some(rx)) = (&cfg.push, push_rx) {
            handles.push(tokio::spawn(push(core.clone(), cfg.clone(), p.clone(), rx)));
        }
        tracing::info!(lapi = %cfg.lapi_url, push = cfg.push.is_some(), every_s = cfg.update_frequency.as_secs(), "crowdsec bouncer started");
        self.running = Some((cfg.clone(), handles));
    }

    pub fn stop(&mut self) {
        if let Some((_, handles)) = self.running.take() {
            for h in handles {
                h.abort();
            }
        }
    }
}

/// Doubling waits between failed calls.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }

    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        now
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Pulls decisions: a full stream first (and after every failure, so a
/// deletion missed while LAPI was away is still applied, and every
/// [`FULL_RESYNC`]), then changes every `update_frequency`.
async fn pull(core: CoreHandle, cfg: Crowdsec) {
    let bouncer = match Bouncer::new(&cfg) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("[crowdsec]: {e}; no decisions are pulled");
            return std::future::pending().await;
        }
    };
    let mut backoff = Backoff::new();
    let mut startup = true;
    let mut last_full = Instant::now();
    loop {
        let t = Instant::now();
        if last_full.elapsed() >= FULL_RESYNC {
            startup = true;
        }
        if startup {
            resolve_lapi(&core, &cfg).await;
        }
        match stream_watched(&core, &bouncer, startup).await {
            Ok(reply) => {
                let listed = reply.new.as_ref().map_or(0, Vec::len);
                let fetched = t.elapsed();
                let pull = reply.read(&cfg);
                let p = core.call(move |c| c.crowdsec_pulled(pull, startup)).await;
                if startup || p.added + p.deleted > 0 {
                    tracing::info!(
                        startup, listed, added = p.added, deleted = p.deleted, skipped = p.skipped,
                        fetch_ms = fetched.as_millis() as u64,
                        apply_ms = (t.elapsed() - fetched).as_millis() as u64,
                        "crowdsec decisions pulled"
                    );
                }
                if startup {
                    last_full = t;
                }
                startup = false;
                backoff.reset();
                tokio::time::sleep(cfg.update_frequency).await;
            }
            Err(e) => {
                let wait = backoff.next();
                tracing::warn!(retry_in_s = wait.as_secs(), "crowdsec: {e}; enforcing what is in the maps meanwhile");
                core.call(move |c| c.crowdsec_failed(&e)).await;
                startup = true;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The LAPI's addresses, for the core to protect (before each full list,
/// so a name that moves is followed). A failure keeps the last ones.
async fn resolve_lapi(core: &CoreHandle, cfg: &Crowdsec) {
    match crate::crowdsec::client::lapi_addresses(&cfg.lapi_url).await {
        Ok(hosts) => {
            core.call(move |c| c.crowdsec_lapi_hosts(hosts)).await;
        }
        Err(e) => tracing::warn!("crowdsec: {e}; the LAPI addresses known before stay protected"),
    }
}

/// One stream call; if it has no answer after [`STALLED`], LAPI is marked
/// down while the call goes on.
async fn stream_watched(core: &CoreHandle, bouncer: &Bouncer, startup: bool) -> Result<StreamReply, ApiError> {
    let call = bouncer.stream(startup);
    tokio::pin!(call);
    tokio::select! {
        r = &mut call => r,
        () = tokio::time::sleep(STALLED) => {
            core.call(|c| c.crowdsec_stalled(STALLED)).await;
            tracing::warn!("crowdsec: no answer from LAPI for {} s; still waiting", STALLED.as_secs());
            call.await
        }
    }
}

/// Pushes local bans as alerts and deletes the decisions of pushed bans
/// lifted here. The queue survives LAPI outages (bounded, oldest dropped).
async fn push(core: CoreHandle, cfg: Crowdsec, p: Push, mut rx: mpsc::UnboundedReceiver<PushOp>) {
    let clients = Bouncer::new(&cfg)
        .and_then(|b| Ok((b, Watcher::new(&cfg, &p)?)));
    let (bouncer, mut watcher) = match clients {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("[crowdsec.push]: {e}; no bans are pushed");
            return std::future::pending().await;
        }
    };
    let mut queue = VecDeque::new();
    let mut backoff = Backoff::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(op) => queue.push_back(op),
                None => return std::future::pending().await,
            }
        }
        while let Ok(op) = rx.try_recv() {
            queue.push_back(op);
        }
        let dropped = queue.len().saturating_sub(PUSH_QUEUE_MAX);
        queue.drain(..dropped);
        let r = send_front(&bouncer, &mut watcher, &mut queue).await;
        let tally = Tally {
            logins: watcher.take_logins(),
            queued: queue.len(),
            dropped,
        };
        let r = core.call(move |c| tally.record(c, r)).await;
        if let Err(e) = r {
            let wait = backoff.next();
            tracing::warn!(queued = queue.len(), retry_in_s = wait.as_secs(), "crowdsec push: {e}");
            tokio::time::sleep(wait).await;
        } else {
            backoff.reset();
        }
    }
}

enum Sent {
    Pushed(usize),
    Deleted(usize),
}

/// A push round's figures beside its outcome, for the core's counters.
struct Tally {
    logins: u64,
    queued: usize,
    dropped: usize,
}

impl Tally {
    /// Counts the round into the push state and the LAPI request
    /// counters; gives the outcome back.
    fn record(self, c: &mut Core, r: Result<Sent, ApiError>) -> Result<Sent, ApiError> {
        for _ in 0..self.logins {
            c.count_request(Route::Login, "200".into());
        }
        let s = &mut c.fleet_mut().push;
        s.queued = self.queued as u64;
        s.dropped += self.dropped as u64;
        match &r {
            Ok(Sent::Pushed(n)) => s.pushed += *n as u64,
            Ok(Sent::Deleted(n)) => s.deleted += *n as u64,
            Err(_) => {}
        }
        s.last_error = r.as_ref().err().map(|e| e.to_string());
        match &r {
            Ok(Sent::Pushed(0)) => {}
            Ok(Sent::Pushed(_)) => c.count_request(Route::Alerts, "201".into()),
            Ok(Sent::Deleted(n)) => {
                c.count_request(Route::Lookup, "200".into());
                for _ in 0..*n {
                    c.count_request(Route::Delete, "200".into());
                }
            }
            // The pull's state (`up`, its last error) is not the push's.
            Err(e) => c.count_request(e.route().unwrap_or(Route::Alerts), e.outcome()),
        }
        r
    }
}

/// Sends the front of the queue (a run of bans as one request, or one
/// unban) and removes it once LAPI took it.
async fn send_front(
    bouncer: &Bouncer,
    watcher: &mut Watcher,
    queue: &mut VecDeque<PushOp>,
) -> Result<Sent, ApiError> {
    match queue.front() {
        Some(PushOp::Unban { net, scenario, ids }) => {
            let mut ids = ids.clone();
            for d in bouncer.decisions_on(net).await? {
                if d.scenario == *scenario && d.origin == PUSH_ORIGIN && !ids.contains(&d.id) {
                    ids.push(d.id);
                }
            }
            for id in &ids {
                match watcher.delete(*id).await {
                    Err(e) if !e.gone() => return Err(e),
                    _ => {}
                }
            }
            tracing::info!(net = %net, decisions = ids.len(), "crowdsec: pushed ban lifted on LAPI");
            queue.pop_front();
            Ok(Sent::Deleted(ids.len()))
        }
        Some(PushOp::Ban { .. }) => {
            let n = queue
                .iter()
                .take(PUSH_BATCH)
                .take_while(|op| matches!(op, PushOp::Ban { .. }))
                .count();
            let now = Clock::now();
            let alerts: Vec<Alert> = queue.iter().take(n).filter_map(|op| alert(op, &now)).collect();
            if !alerts.is_empty() {
                watcher.push(&alerts).await?;
            }
            queue.drain(..n);
            Ok(Sent::Pushed(alerts.len()))
        }
        None => Ok(Sent::Pushed(0)),
    }
}

/// The alert for a ban still in force (`None` once it is over).
fn alert(op: &PushOp, now: &Clock) -> Option<Alert> {
    let PushOp::Ban { net, scenario, reason, expiry } = op else {
        return None;
    };
    let left = secs_left(expiry, now)?;
    let (scope, value) = scope_value(net);
    let at = crate::text::rfc3339(now.wall_ms / 1000);
    Some(Alert {
        scenario: scenario.clone(),
        scenario_hash: String::new(),
        scenario_version: String::new(),
        message: format!("sipshield banned {net}: {reason}"),
        events_count: 1,
        events: Vec::new(),
        start_at: at.clone(),
        stop_at: at,
        capacity: 0,
        leakspeed: "0".into(),
        simulated: false,
        remediation: true,
        source: AlertSource {
            scope: scope.as_str().into(),
            value: value.clone(),
            ip: (scope == crate::config::Scope::Ip).then(|| value.clone()),
            range: (scope == crate::config::Scope::Range).then(|| value.clone()),
        },
        decisions: vec![WireDecision {
            id: 0,
            origin: PUSH_ORIGIN.into(),
            scenario: scenario.clone(),
            scope: scope.as_str().into(),
            kind: "ban".into(),
            value,
            duration: go_duration(left),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..6).map(|_| b.next().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 15, 15]);
        b.reset();
        assert_eq!(b.next(), BACKOFF_MIN);
    }
}
