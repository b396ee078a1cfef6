//! The control commands (`shieldctl`): most are one request to the core;
//! a reload is one request to the core (the whole policy or none of it)
//! and then the jails, the fleet's tasks and the metrics server around it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::core::{restart_only_changes, Core, CtlError};
use super::handle::CoreHandle;
use super::{compile_jails, fleet, load_config, spawn_metrics, DaemonError, Exit, JailSet};
use crate::config::Config;
use crate::control::protocol::{self as p, Call, ErrorKind, ReloadReply, Request, Response};
use crate::control::server::Peer;
use crate::kernel::List;

/// How long `detach` lets its reply reach the client before exiting.
const DETACH_REPLY_GRACE: Duration = Duration::from_millis(250);

/// What runs beside the core and a reload restarts.
pub(super) struct Around {
    pub(super) jails: JailSet,
    pub(super) fleet: fleet::Fleet,
    pub(super) metrics: Option<JoinHandle<()>>,
}

impl Around {
    pub(super) fn stop_all(&mut self) {
        self.fleet.stop();
        if let Some(t) = self.metrics.take() {
            t.abort();
        }
        self.jails.stop_all();
    }
}

/// The control commands.
pub(super) struct Ctl {
    pub(super) core: CoreHandle,
    /// Held for a whole reload, so two reloads (SIGHUP and shieldctl)
    /// never interleave their halves.
    pub(super) around: tokio::sync::Mutex<Around>,
    pub(super) shutdown: Arc<Notify>,
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

/// A request that only the core answers, on the core thread.
fn core_request(core: &mut Core, req: Request, who: &str) -> Response {
    match req {
        Request::Ban(b) => answer_warned::<p::Ban>(core.ban_manual(b.net.0, b.duration, b.reason, who, b.force)),
        Request::Unban(u) => answer_warned::<p::Unban>(match (u.net, u.all) {
            (None, true) => core.unban_all(who),
            (Some(n), false) => core.unban(n.0, who),
            _ => Err(CtlError::BadInput("unban: give either a CIDR or --all".into())),
        }),
        Request::Banned(p::Banned { net: None }) => answer::<p::BannedAll>(Ok(core.banned())),
        Request::Banned(p::Banned { net: Some(n) }) => answer::<p::BannedSource>(core.banned_source(n.0)),
        Request::Allow(p::Allow(l)) => {
            answer_warned::<p::Allow>(core.list_op(List::Allow, l.op, l.net.map(|n| n.0), who, l.force))
        }
        Request::Deny(p::Deny(l)) => {
            answer_warned::<p::Deny>(core.list_op(List::Deny, l.op, l.net.map(|n| n.0), who, l.force))
        }
        Request::Verified(_) => answer::<p::Verified>(core.verified()),
        Request::Verify(v) => answer::<p::Verify>(core.verify(v.net.0, v.ttl, who, v.force)),
        Request::Unverify(u) => answer::<p::Unverify>(core.unverify(u.net.0, who)),
        Request::Refused(r) => answer::<p::Refused>(core.refused(r.net.map(|n| n.0), r.since, r.limit)),
        Request::Destination(d) => answer::<p::Destination>(core.destination(&d.number)),
        Request::Calls(_) => answer::<p::Calls>(core.calls()),
        Request::Stats(_) => answer::<p::Stats>(core.stats()),
        Request::Status(_) => answer::<p::Status>(Ok(core.status())),
        Request::Auth(_) => answer::<p::Auth>(Ok(core.auth_report())),
        // Not core requests: [`Ctl::handle`] answers them before.
        Request::Reload(_) | Request::Detach(_) => {
            Response::error(ErrorKind::Failed, "reload and detach are not core requests")
        }
    }
}

/// What the core's half of a reload did: the changes, the warnings of
/// settings only a restart applies, and the metrics address before.
type Applied = (Vec<String>, Vec<String>, Option<SocketAddr>);

/// The core's half of a reload, as one request: the interfaces checked,
/// then the whole new policy applied, or none of it.
fn apply_reload(core: &mut Core, cfg: &Config) -> Result<Applied, Response> {
    let attached = core.attached();
    if let Some(missing) = cfg
        .shield
        .interfaces
        .iter()
        .find(|i| !attached.contains(i) && crate::kernel::ifindex(i).is_none())
    {
        tracing::error!(iface = %missing, "reload refused: interface does not exist");
        return Err(Response::error(
            ErrorKind::BadInput,
            format!("interface {missing:?} does not exist; nothing changed"),
        ));
    }
    let warnings = restart_only_changes(&core.runtime, cfg);
    let old_listen = core.config.metrics.listen;
    match core.apply(cfg) {
        Ok(changes) => Ok((changes, warnings, old_listen)),
        Err(e @ DaemonError::Unfit(_)) => {
            tracing::error!("reload refused: {e}");
            Err(Response::error(ErrorKind::BadInput, format!("{e}; nothing changed")))
        }
        Err(e) => {
            tracing::error!("reload failed: {e}");
            Err(Response::error(ErrorKind::Failed, format!("reload failed: {e}")))
        }
    }
}

impl Ctl {
    pub(super) async fn handle(&self, req: Request, peer: Peer) -> Response {
        let who = format!("uid {}", peer.uid);
        if req.changes_state() {
            tracing::debug!(uid = peer.uid, pid = peer.pid, request = ?req, "control request");
        }
        match req {
            Request::Reload(_) => self.reload().await,
            Request::Detach(_) => self.detach(peer).await,
            req => self.core.call(move |c| core_request(c, req, &who)).await,
        }
    }

    /// Re-reads the config file; applies it only if all of it is valid.
    pub(super) async fn reload(&self) -> Response {
        let mut around = self.around.lock().await;
        let path = self.core.call(|c| c.config.source_path.clone()).await;
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
        let (cfg, applied) = self
            .core
            .call(move |c| {
                let r = apply_reload(c, &cfg);
                (cfg, r)
            })
            .await;
        let (changes, mut warnings, old_listen) = match applied {
            Ok(a) => a,
            Err(refused) => return refused,
        };
        around.jails.update(&cfg.jails, jails);
        around.fleet.update(&self.core, cfg.crowdsec.as_ref()).await;
        if cfg.metrics.listen != old_listen {
            warnings.extend(self.rebind_metrics(&mut around, cfg.metrics.listen).await);
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
    async fn rebind_metrics(&self, around: &mut Around, listen: Option<SocketAddr>) -> Option<String> {
        if let Some(t) = around.metrics.take() {
            t.abort();
        }
        let addr = listen?;
        match crate::metrics::http::bind(addr).await {
            Ok(l) => {
                around.metrics = Some(spawn_metrics(l, self.core.clone()));
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
        let (unsaved, r) = self.core.call(|c| (c.retry_save().err(), c.detach())).await;
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

    /// After the tasks are stopped: the rest stopped, detached if
    /// `detach_on_exit`, the store saved a last time, the core ended, the
    /// socket removed.
    pub(super) async fn stop(&self, exit: Exit, socket_path: &std::path::Path) -> Result<Exit, DaemonError> {
        self.around.lock().await.stop_all();
        let exit = match exit {
            Exit::Signal { .. } => {
                let detached = self
                    .core
                    .call(|c| match c.config.shield.detach_on_exit {
                        true => c.detach().map(|_| true),
                        false => Ok(false),
                    })
                    .await?;
                Exit::Signal { detached }
            }
            e => e,
        };
        self.end_core().await;
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

    /// Before exiting: one more try at a store that fell behind, then the
    /// core dropped (the store closed). Quick either way (SQLite fails at
    /// once on a full disk); what is not saved stays in force in the
    /// pinned maps, which the next start adopts.
    pub(super) async fn end_core(&self) {
        if let Err(why) = self.core.call(|c| c.retry_save()).await {
            tracing::error!("the last changes were not saved to state_dir: {why}; they stay in force in the pinned maps");
        }
        self.core.stop().await;
    }
}
