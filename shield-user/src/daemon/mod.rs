//! `shieldd`: owns the shield in the kernel and everything around it.
//!
//! ```text
//!             ┌──────────── Core (one lock) ────────────┐
//!  control ──▶│ bans · lists · policy · attachments     │──▶ BPF maps, links, pins
//!  jails ────▶│ ban book · counters · escalations       │
//!  EVENTS ───▶│                                         │──▶ state_dir/shield.db
//!  sweeper ──▶└─────────────────────────────────────────┘──▶ /metrics (snapshots)
//! ```
//!
//! Start-up order is chosen so that a failure changes nothing in the
//! kernel: the state directory is locked, the jails compiled and both
//! sockets bound before the shield is loaded or adopted.

pub mod auth;
pub mod bans;
pub mod calls;
pub mod core;
pub mod decisions;
mod fleet;
mod guard;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shield_common::OffenderEvent;
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use self::core::{restart_only_changes, Core, CtlError};
use crate::config::{Config, ConfigErrors};
use crate::control::protocol::{self as p, Call, ErrorKind, ListReply, ReloadReply, Request, Response};
use crate::control::server::{self, ControlError, Handler, HandlerFuture, Peer};
use crate::jails::{Jail, JailError, JailEvent, JailSpec};
use crate::kernel::{EventRing, KernelError, List};
use crate::metrics::http::{self as metrics_http, SnapshotFn};
use crate::store::{Store, StoreError};

/// How often expired bans are cleared out of the maps, and a store that
/// fell behind (failed writes) is rewritten.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How long `detach` lets its reply reach the client before exiting.
const DETACH_REPLY_GRACE: Duration = Duration::from_millis(250);
/// Polling fallback for the ring buffer, should a wakeup ever be missed.
const EVENTS_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kernel(Box<KernelError>),
    #[error("{what}: {}", chain(.source))]
    Map {
        what: &'static str,
        source: KernelError,
    },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("metrics listen address {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Jail(#[from] JailError),
    #[error("{0}")]
    Runtime(String),
    /// A configuration that cannot be applied as a whole, found before
    /// anything was written.
    #[error("{0}")]
    Unfit(String),
    /// Applying a configuration failed part-way; the old one was put back
    /// (`left`: what could not be).
    #[error("{}", rolled_back(.failed, .left))]
    RolledBack { failed: String, left: Vec<String> },
}

fn rolled_back(failed: &str, left: &[String]) -> String {
    if left.is_empty() {
        format!("{failed}; rolled back, nothing changed: the previous configuration stays in force")
    } else {
        format!(
            "{failed}; rolling back failed too ({}): parts of the new configuration may be in force; \
             fix the cause and reload again",
            left.join("; ")
        )
    }
}

impl From<KernelError> for DaemonError {
    fn from(e: KernelError) -> Self {
        DaemonError::Kernel(Box::new(e))
    }
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT; the shield was left attached (or detached, with
    /// `detach_on_exit`).
    Signal { detached: bool },
    /// `shieldctl detach`.
    Detached,
}

type Shared = Arc<Mutex<Core>>;

pub(crate) use crate::text::chain;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the maps as they were (every
    // write is a whole syscall): keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The metrics listener, if `[metrics] listen` is set.
async fn bind_metrics(config: &Config) -> Result<Option<tokio::net::TcpListener>, DaemonError> {
    let Some(addr) = config.metrics.listen else {
        return Ok(None);
    };
    metrics_http::bind(addr)
        .await
        .map(Some)
        .map_err(|source| DaemonError::Metrics { addr, source })
}

/// One task per kernel ring buffer: offenders (SPEC §2), refusals (§11),
/// ended calls (§13), settled digest attempts (§12).
fn spawn_readers(tasks: &mut Tasks, core: &Shared, offenders: Option<EventRing>) {
    if let Some(rb) = offenders {
        tasks.spawn("offender events", offender_events(core.clone(), rb));
    }
    if let Some(rb) = lock(core).take_refusal_events() {
        tasks.spawn("refusal events", refusal_events(core.clone(), rb));
    }
    if let Some(rb) = lock(core).take_call_events() {
        tasks.spawn("call events", call_events(core.clone(), rb));
    }
    if let Some(rb) = lock(core).take_auth_events() {
        tasks.spawn("auth events", auth_events(core.clone(), rb));
    }
}

/// Runs the daemon until a signal or `shieldctl detach`.
pub async fn run(config: Config) -> Result<Exit, DaemonError> {
    let store = Store::open(&config.shield.state_dir)?;
    let jails = compile_jails(&config.jails)?;
    let gid = server::group_id(&config.control.group)?;
    let control = server::bind(&config.control.socket, gid)?;
    let metrics = bind_metrics(&config).await?;
    let socket_path = config.control.socket.clone();

    let (core, events) =
        tokio::task::block_in_place(|| Core::start(config.clone(), store))?;
    let core: Shared = Arc::new(Mutex::new(core));

    let (jail_tx, jail_rx) = mpsc::channel(4096);
    let mut jail_set = JailSet {
        running: Vec::new(),
        tx: jail_tx,
    };
    jail_set.update(&config.jails, jails);
    let jail_set = Arc::new(tokio::sync::Mutex::new(jail_set));
    let mut tasks = Tasks::default();
    tasks.spawn("jail events", jail_events(core.clone(), jail_rx));
    spawn_readers(&mut tasks, &core, events);
    tasks.spawn("ban sweeper", sweeper(core.clone()));
    let mut fleet = fleet::Fleet::default();
    fleet.update(&core, config.crowdsec.as_ref());
    let fleet = Arc::new(Mutex::new(fleet));
    let metrics_task = Arc::new(Mutex::new(metrics.map(|l| spawn_metrics(l, core.clone()))));
    if let Some(addr) = config.metrics.listen {
        tracing::info!(%addr, "metrics listening");
    }

    let shutdown = Arc::new(Notify::new());
    let ctl = Arc::new(Ctl {
        core: core.clone(),
        jails: jail_set.clone(),
        metrics: metrics_task.clone(),
        fleet: fleet.clone(),
        shutdown: shutdown.clone(),
    });
    let handler: Handler = {
        let ctl = ctl.clone();
        Arc::new(move |req, peer| {
            let ctl = ctl.clone();
            Box::pin(async move { ctl.handle(req, peer).await }) as HandlerFuture
        })
    };
    tasks.spawn("control socket", server::serve(control, handler));
    tracing::info!(socket = %socket_path.display(), "control socket listening");
    tracing::info!(version = env!("CARGO_PKG_VERSION"), interfaces = ?lock(&core).attached(), "shieldd running");

    let [mut hup, mut term, mut int] = signals()?;
    let exit = loop {
        tokio::select! {
            _ = hup.recv() => {
                let reply = ctl.reload().await;
                if !reply.ok {
                    tracing::error!("reload on SIGHUP refused; the running configuration stays");
                }
            }
            _ = term.recv() => break Exit::Signal { detached: false },
            _ = int.recv() => break Exit::Signal { detached: false },
            _ = shutdown.notified() => break Exit::Detached,
            dead = tasks.next_death() => {
                // A task that ends has lost its job (bans would stop
                // expiring, jails stop banning): not a zombie daemon but
                // a fatal error, so the supervisor restarts it. The kernel
                // keeps enforcing meanwhile (pinned).
                tasks.abort_all();
                lock(&fleet).stop();
                jail_set.lock().await.stop_all();
                final_save(&core);
                let _ = std::fs::remove_file(&socket_path);
                return Err(DaemonError::Runtime(format!(
                    "{dead}; exiting so the supervisor restarts shieldd (the shield stays attached and enforcing)"
                )));
            }
        }
    };

    tasks.abort_all();
    ctl.stop(exit, &socket_path).await
}

/// Reads the configuration at `path` off the async workers; a refusal
/// (every problem logged and listed) when it is invalid.
async fn load_config(path: &std::path::Path) -> Result<Config, Response> {
    let loaded = tokio::task::spawn_blocking({
        let path = path.to_path_buf();
        move || Config::load(&path)
    })
    .await;
    match loaded {
        Ok(Ok(cfg)) => Ok(cfg),
        Ok(Err(errors)) => {
            for e in errors.iter() {
                tracing::error!(config = %path.display(), "reload: {e}");
            }
            tracing::error!(config = %path.display(), problems = errors.len(), "reload refused: configuration invalid, nothing changed");
            Err(Response::error_with(
                ErrorKind::BadInput,
                format!("{} is invalid; nothing changed", path.display()),
                errors.iter().map(|e| e.to_string()).collect(),
            ))
        }
        Err(e) => Err(Response::error(ErrorKind::Failed, format!("reload: {e}"))),
    }
}

/// SIGHUP, SIGTERM and SIGINT, handled.
fn signals() -> Result<[tokio::signal::unix::Signal; 3], DaemonError> {
    let handle = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| DaemonError::Runtime(format!("{name} handler: {e}")))
    };
    Ok([
        handle(SignalKind::hangup(), "SIGHUP")?,
        handle(SignalKind::terminate(), "SIGTERM")?,
        handle(SignalKind::interrupt(), "SIGINT")?,
    ])
}

fn compile_jails(specs: &[JailSpec]) -> Result<Vec<Jail>, JailError> {
    specs.iter().map(Jail::new).collect()
}

/// The running jails, by spec: a reload restarts only those that changed
/// (a restarted jail forgets its failure counts).
struct JailSet {
    running: Vec<(JailSpec, JoinHandle<()>)>,
    tx: mpsc::Sender<JailEvent>,
}

impl JailSet {
    fn update(&mut self, specs: &[JailSpec], compiled: Vec<Jail>) {
        let mut next = Vec::new();
        for (spec, jail) in specs.iter().zip(compiled) {
            match self.running.iter().position(|(s, _)| s == spec) {
                Some(p) => next.push(self.running.swap_remove(p)),
                None => {
                    tracing::info!(jail = %spec.name, log = %spec.logpath.display(), "jail started");
                    next.push((spec.clone(), jail.spawn(self.tx.clone())));
                }
            }
        }
        for (spec, handle) in self.running.drain(..) {
            tracing::info!(jail = %spec.name, "jail stopped");
            handle.abort();
        }
        self.running = next;
    }

    fn stop_all(&mut self) {
        for (_, h) in self.running.drain(..) {
            h.abort();
        }
    }
}

/// Before exiting: one more try at a store that fell behind. Quick either
/// way (SQLite fails at once on a full disk); what is not saved stays in
/// force in the pinned maps, which the next start adopts.
fn final_save(core: &Shared) {
    if let Err(why) = lock(core).retry_save() {
        tracing::error!("the last changes were not saved to state_dir: {why}; they stay in force in the pinned maps");
    }
}

/// The daemon's long-running tasks, each named, none of which may end.
#[derive(Default)]
struct Tasks {
    set: tokio::task::JoinSet<()>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits for a task to end (panic or return) and says which and how.
    /// Pends forever when there are none.
    async fn next_death(&mut self) -> String {
        let Some(ended) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        match ended {
            Ok((id, ())) => format!("task {:?} ended unexpectedly", self.name(id)),
            Err(e) => {
                let name = self.name(e.id());
                match e.try_into_panic() {
                    Ok(p) => format!("task {name:?} panicked: {}", panic_text(&p)),
                    Err(e) => format!("task {name:?} failed: {e}"),
                }
            }
        }
    }

    fn name(&self, id: tokio::task::Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("unknown")
    }

    fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

/// A panic payload's message.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

async fn jail_events(core: Shared, mut rx: mpsc::Receiver<JailEvent>) {
    while let Some(ev) = rx.recv().await {
        lock(&core).on_jail_event(ev);
    }
}

/// Reads the kernel's offender reports from the `EVENTS` ring buffer.
async fn offender_events(core: Shared, ring: EventRing) {
    let mut reader = match ring.reader(EVENTS_POLL) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot watch the EVENTS ring buffer; escalation bans are off: {e}");
            return;
        }
    };
    loop {
        let batch: Vec<OffenderEvent> = reader.next_records().await;
        if !batch.is_empty() {
            let mut c = lock(&core);
            for ev in &batch {
                c.on_offender(ev);
            }
        }
    }
}

/// Reads the kernel's refusal reports (SPEC §11) from `DEST_EVENTS`:
/// answers those the reply bucket granted with a 403, from the address
/// and port the INVITE was sent to, and keeps those the report bucket
/// granted.
async fn refusal_events(core: Shared, ring: EventRing) {
    let mut reader = match ring.reader(EVENTS_POLL) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot watch the DEST_EVENTS ring buffer; no 403s or refusal records: {e}");
            return;
        }
    };
    let mut replier = crate::dest::reply::Replier::default();
    let mut replies: u64 = 0;
    loop {
        let raw = reader.next_batch().await;
        if raw.is_empty() {
            continue;
        }
        let batch: Vec<_> = {
            let c = lock(&core);
            raw.iter()
                .filter_map(|item| crate::dest::event::Refusal::decode(item, c.destinations()))
                .collect()
        };
        for r in batch.iter().filter(|r| r.reply) {
            replies += 1;
            let tag = format!("ss{:x}{replies:x}", crate::store::now_ms());
            let Some(reply) = crate::dest::reply::forbidden(&r.invite, &r.rule, &tag) else {
                continue;
            };
            if let Err(e) = replier.send(r.local, r.source, &reply) {
                tracing::warn!(to = %r.source, "cannot send the 403: {e}");
            }
        }
        if batch.iter().any(|r| r.report) {
            let mut c = lock(&core);
            for r in batch.iter().filter(|r| r.report) {
                c.on_refusal(r);
            }
            c.flush_refusals();
        }
    }
}

/// Reads the kernel's ended-call reports (SPEC §13) from `CALL_EVENTS`
/// into the call book.
async fn call_events(core: Shared, ring: EventRing) {
    let mut reader = match ring.reader(EVENTS_POLL) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot watch the CALL_EVENTS ring buffer; no call counters: {e}");
            return std::future::pending().await;
        }
    };
    loop {
        let batch: Vec<shield_common::calls::CallEvent> = reader.next_records().await;
        if !batch.is_empty() {
            lock(&core).on_call_events(&batch);
        }
    }
}

/// Reads settled digest attempts (SPEC §12): one record per attempt, never
/// per packet, decoded into our own type and handed to the core.
async fn auth_events(core: Shared, ring: EventRing) {
    let mut reader = match ring.reader(EVENTS_POLL) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot watch the AUTH_EVENTS ring buffer; no [auth] bans: {e}");
            return std::future::pending().await;
        }
    };
    loop {
        let raw = reader.next_batch().await;
        let batch: Vec<_> = raw.iter().filter_map(|item| crate::kernel::AuthOutcome::decode(item)).collect();
        if batch.is_empty() {
            continue;
        }
        let mut c = lock(&core);
        for o in &batch {
            c.on_auth(o);
        }
    }
}

async fn sweeper(core: Shared) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let mut c = lock(&core);
        c.sweep();
        c.sweep_verified();
        c.sweep_calls();
        if let Err(why) = c.retry_save() {
            tracing::error!("the store is still behind the kernel: {why}");
        }
    }
}

fn spawn_metrics(listener: tokio::net::TcpListener, core: Shared) -> JoinHandle<()> {
    let snap: SnapshotFn = Arc::new(move || lock(&core).snapshot());
    tokio::spawn(async move {
        if let Err(e) = metrics_http::serve(listener, snap).await {
            tracing::error!("metrics server stopped: {e}");
        }
    })
}

/// The control commands.
struct Ctl {
    core: Shared,
    jails: Arc<tokio::sync::Mutex<JailSet>>,
    metrics: Arc<Mutex<Option<JoinHandle<()>>>>,
    fleet: Arc<Mutex<fleet::Fleet>>,
    shutdown: Arc<Notify>,
}

/// The reply to a `C`: typed by the request, so a handler cannot answer
/// with another request's reply.
fn answer<C: Call>(r: Result<C::Reply, CtlError>) -> Response {
    match r {
        Ok(v) => Response::ok(v),
        Err(e) => refusal(e),
    }
}

/// A change in force, with the warning that it could not be saved.
fn answer_warned<C: Call>(r: Result<(C::Reply, Option<String>), CtlError>) -> Response {
    match r {
        Ok((v, warning)) => Response::ok(v).with_warning(warning),
        Err(e) => refusal(e),
    }
}

fn refusal(e: CtlError) -> Response {
    match e {
        CtlError::BadInput(m) => Response::error(ErrorKind::BadInput, m),
        CtlError::Failed(m) => Response::error(ErrorKind::Failed, m),
    }
}

impl Ctl {
    /// After the tasks are stopped: the rest stopped, detached if
    /// `detach_on_exit`, the store saved a last time, the socket removed.
    async fn stop(&self, exit: Exit, socket_path: &std::path::Path) -> Result<Exit, DaemonError> {
        lock(&self.fleet).stop();
        if let Some(t) = lock(&self.metrics).take() {
            t.abort();
        }
        self.jails.lock().await.stop_all();
        let exit = match exit {
            Exit::Signal { .. } if lock(&self.core).config.shield.detach_on_exit => {
                lock(&self.core).detach()?;
                Exit::Signal { detached: true }
            }
            e => e,
        };
        final_save(&self.core);
        let _ = std::fs::remove_file(socket_path);
        match exit {
            Exit::Signal { detached: false } => {
                tracing::info!("exiting; the shield stays attached and enforcing (pinned)")
            }
            Exit::Signal { detached: true } => tracing::info!("exiting; detached (detach_on_exit)"),
            Exit::Detached => tracing::info!("exiting after `shieldctl detach`"),
        }
        Ok(exit)
    }

    async fn handle(&self, req: Request, peer: Peer) -> Response {
        let who = format!("uid {}", peer.uid);
        if req.changes_state() {
            tracing::debug!(uid = peer.uid, pid = peer.pid, request = ?req, "control request");
        }
        let core = || lock(&self.core);
        match req {
            Request::Ban(b) => answer_warned::<p::Ban>(core().ban_manual(b.net.0, b.duration, b.reason, &who, b.force)),
            Request::Unban(u) => answer_warned::<p::Unban>(match (u.net, u.all) {
                (None, true) => core().unban_all(&who),
                (Some(n), false) => core().unban(n.0, &who),
                _ => Err(CtlError::BadInput("unban: give either a CIDR or --all".into())),
            }),
            Request::Banned(p::Banned { net: None }) => answer::<p::BannedAll>(Ok(core().banned())),
            Request::Banned(p::Banned { net: Some(n) }) => answer::<p::BannedSource>(core().banned_source(n.0)),
            Request::Allow(p::Allow(l)) => answer_warned::<p::Allow>(self.list(List::Allow, l, &who)),
            Request::Deny(p::Deny(l)) => answer_warned::<p::Deny>(self.list(List::Deny, l, &who)),
            Request::Verified(_) => answer::<p::Verified>(core().verified()),
            Request::Verify(v) => answer::<p::Verify>(core().verify(v.net.0, v.ttl, &who, v.force)),
            Request::Unverify(u) => answer::<p::Unverify>(core().unverify(u.net.0, &who)),
            Request::Refused(r) => answer::<p::Refused>(core().refused(r.net.map(|n| n.0), r.since, r.limit)),
            Request::Destination(d) => answer::<p::Destination>(core().destination(&d.number)),
            Request::Calls(_) => answer::<p::Calls>(core().calls()),
            Request::Stats(_) => answer::<p::Stats>(core().stats()),
            Request::Status(_) => answer::<p::Status>(Ok(core().status())),
            Request::Reload(_) => self.reload().await,
            Request::Detach(_) => self.detach(peer).await,
            Request::Auth(_) => answer::<p::Auth>(Ok(core().auth_report())),
        }
    }

    fn list(
        &self,
        list: List,
        l: p::ListChange,
        who: &str,
    ) -> Result<(ListReply, Option<String>), CtlError> {
        let net = l.net.map(|n| n.0);
        lock(&self.core).list_op(list, l.op, net, who, l.force)
    }

    /// Re-reads the config file; applies it only if all of it is valid.
    async fn reload(&self) -> Response {
        let path = lock(&self.core).config.source_path.clone();
        let cfg = match load_config(&path).await {
            Ok(cfg) => cfg,
            Err(refused) => return refused,
        };
        // Everything that can be checked without touching the kernel.
        let jails = match compile_jails(&cfg.jails) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("reload refused: {e}");
                return Response::error(ErrorKind::BadInput, format!("{e}; nothing changed"));
            }
        };
        let attached = lock(&self.core).attached();
        if let Some(missing) = cfg
            .shield
            .interfaces
            .iter()
            .find(|i| !attached.contains(i) && crate::kernel::ifindex(i).is_none())
        {
            tracing::error!(iface = %missing, "reload refused: interface does not exist");
            return Response::error(
                ErrorKind::BadInput,
                format!("interface {missing:?} does not exist; nothing changed"),
            );
        }
        let (changes, warnings, old_listen) = {
            let mut core = lock(&self.core);
            let warnings = restart_only_changes(&core.runtime, &cfg);
            let old_listen = core.config.metrics.listen;
            match tokio::task::block_in_place(|| core.apply(&cfg)) {
                Ok(changes) => (changes, warnings, old_listen),
                Err(e @ DaemonError::Unfit(_)) => {
                    tracing::error!("reload refused: {e}");
                    return Response::error(ErrorKind::BadInput, format!("{e}; nothing changed"));
                }
                Err(e) => {
                    tracing::error!("reload failed: {e}");
                    return Response::error(ErrorKind::Failed, format!("reload failed: {e}"));
                }
            }
        };
        self.jails.lock().await.update(&cfg.jails, jails);
        lock(&self.fleet).update(&self.core, cfg.crowdsec.as_ref());
        let mut warnings = warnings;
        if cfg.metrics.listen != old_listen {
            warnings.extend(self.rebind_metrics(cfg.metrics.listen).await);
        }
        for w in &warnings {
            tracing::warn!("reload: {w}");
        }
        tracing::info!(config = %path.display(), changes = ?changes, "reload");
        Response::ok(ReloadReply {
            config: path.display().to_string(),
            changes,
            warnings,
        })
    }

    /// Moves the metrics server to `listen` (off with `None`); a warning
    /// when the new address cannot be bound.
    async fn rebind_metrics(&self, listen: Option<std::net::SocketAddr>) -> Option<String> {
        if let Some(t) = lock(&self.metrics).take() {
            t.abort();
        }
        let addr = listen?;
        match metrics_http::bind(addr).await {
            Ok(l) => {
                *lock(&self.metrics) = Some(spawn_metrics(l, self.core.clone()));
                None
            }
            Err(e) => Some(format!(
                "metrics listen {addr}: {e}; metrics are off until the next reload"
            )),
        }
    }

    async fn detach(&self, peer: Peer) -> Response {
        // Who removed the shield is the first question afterwards.
        tracing::info!(
            uid = peer.uid,
            pid = peer.pid,
            "detach requested over the control socket"
        );
        // Saved first: once the pins are gone the store is the only copy.
        let unsaved = lock(&self.core).retry_save().err();
        let r = tokio::task::block_in_place(|| lock(&self.core).detach());
        match r {
            Ok(d) => {
                // The daemon exits once told; the reply is written by the
                // connection's task after this returns, and an exit first
                // would close the connection without it. The grace is
                // ample for one small write on a local socket.
                let shutdown = self.shutdown.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(DETACH_REPLY_GRACE).await;
                    shutdown.notify_one();
                });
                Response::ok(d).with_warning(unsaved.map(|why| {
                    format!("the latest bans were NOT saved to state_dir ({why}); with the pins removed they are lost")
                }))
            }
            Err(e) => Response::error(ErrorKind::Failed, format!("detach: {e}")),
        }
    }
}
