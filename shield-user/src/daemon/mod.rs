//! `shieldd`: owns the shield in the kernel and everything around it.
//!
//! ```text
//!             ┌──── Core (one thread, its only writer) ─┐
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
mod ctl;
mod fleet;
mod guard;
mod handle;
mod readers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use self::ctl::{Around, Ctl};
use self::handle::CoreHandle;
use crate::config::{Config, ConfigErrors};
use crate::control::protocol::{ErrorKind, Response};
use crate::control::server::{self, ControlError, Handler, HandlerFuture};
use crate::jails::{Jail, JailError, JailEvent, JailSpec};
use crate::kernel::KernelError;
use crate::metrics::http::{self as metrics_http, SnapshotFn};
use crate::store::{Store, StoreError};

/// How often expired bans are cleared out of the maps, and a store that
/// fell behind (failed writes) is rewritten.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(5);

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

pub(crate) use crate::text::chain;

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

/// Runs the daemon until a signal or `shieldctl detach`.
pub async fn run(config: Config) -> Result<Exit, DaemonError> {
    let t = std::time::Instant::now();
    let store = Store::open(&config.shield.state_dir)?;
    tracing::info!(ms = t.elapsed().as_millis() as u64, "store opened");
    let jails = compile_jails(&config.jails)?;
    let gid = server::group_id(&config.control.group)?;
    let control = server::bind(&config.control.socket, gid)?;
    let metrics = bind_metrics(&config).await?;
    let socket_path = config.control.socket.clone();

    let (core, events) = CoreHandle::start(config.clone(), store).await?;
    // Handled from here on: once the control socket or /metrics answers,
    // a SIGTERM must find its handler (not the default, which kills).
    let signals = signals()?;
    let (jail_tx, jail_rx) = mpsc::channel(4096);
    let mut jail_set = JailSet {
        running: Vec::new(),
        tx: jail_tx,
    };
    jail_set.update(&config.jails, jails);
    let mut tasks = Tasks::default();
    tasks.spawn("jail events", readers::jail_events(core.clone(), jail_rx));
    readers::spawn(&mut tasks, &core, events).await;
    tasks.spawn("ban sweeper", readers::sweeper(core.clone()));
    let mut fleet = fleet::Fleet::default();
    fleet.update(&core, config.crowdsec.as_ref()).await;
    let metrics = metrics.map(|l| spawn_metrics(l, core.clone()));
    if let Some(addr) = config.metrics.listen {
        tracing::info!(%addr, "metrics listening");
    }

    let ctl = Arc::new(Ctl {
        core: core.clone(),
        around: tokio::sync::Mutex::new(Around { jails: jail_set, fleet, metrics }),
        shutdown: Arc::new(Notify::new()),
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
    let interfaces = core.call(|c| c.attached()).await;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), interfaces = ?interfaces, "shieldd running");

    let exit = match until_exit(&ctl, &mut tasks, signals).await {
        Ok(exit) => exit,
        Err(dead) => {
            // A task that ends has lost its job (bans would stop
            // expiring, jails stop banning): not a zombie daemon but
            // a fatal error, so the supervisor restarts it. The kernel
            // keeps enforcing meanwhile (pinned).
            tasks.abort_all();
            ctl.around.lock().await.stop_all();
            ctl.end_core().await;
            let _ = std::fs::remove_file(&socket_path);
            return Err(DaemonError::Runtime(format!(
                "{dead}; exiting so the supervisor restarts shieldd (the shield stays attached and enforcing)"
            )));
        }
    };
    tasks.abort_all();
    ctl.stop(exit, &socket_path).await
}

/// Serves signals until one ends the daemon; `Err`: a task died (what and how).
async fn until_exit(ctl: &Ctl, tasks: &mut Tasks, signals: [Signal; 3]) -> Result<Exit, String> {
    let [mut hup, mut term, mut int] = signals;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let reply = ctl.reload().await;
                if !reply.ok {
                    tracing::error!("reload on SIGHUP refused; the running configuration stays");
                }
            }
            _ = term.recv() => return Ok(Exit::Signal { detached: false }),
            _ = int.recv() => return Ok(Exit::Signal { detached: false }),
            _ = ctl.shutdown.notified() => return Ok(Exit::Detached),
            dead = tasks.next_death() => return Err(dead),
        }
    }
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
fn signals() -> Result<[Signal; 3], DaemonError> {
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

fn spawn_metrics(listener: tokio::net::TcpListener, core: CoreHandle) -> JoinHandle<()> {
    let snap: SnapshotFn = Arc::new(move || {
        let core = core.clone();
        Box::pin(async move { core.call(|c| c.snapshot()).await })
    });
    tokio::spawn(async move {
        if let Err(e) = metrics_http::serve(listener, snap).await {
            tracing::error!("metrics server stopped: {e}");
        }
    })
}
