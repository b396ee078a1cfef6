//! The one writer of [`Core`]: a dedicated OS thread owns it and runs the
//! requests it is sent, one at a time, in the order they came.
//!
//! Everyone else holds a [`CoreHandle`] and awaits the answer. No caller
//! can keep the core across an `.await`, and the core's blocking work
//! (`bpf(2)` calls, SQLite transactions, the verifier at start) never runs
//! on an async worker. A request is one closure: what must be all or
//! nothing (a reload's policy, a detach after a last save) is one request.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use tokio::sync::{mpsc, oneshot};

use super::core::Core;
use super::DaemonError;
use crate::config::Config;
use crate::kernel::EventRing;
use crate::store::Store;

/// Requests waiting for the core thread; a caller beyond it waits for
/// room. Every caller awaits its answer, so the queue holds at most one
/// request per task and control connection.
const QUEUE: usize = 256;

type Job = Box<dyn FnOnce(&mut Core) + Send>;

enum Msg {
    Run(Job),
    /// Ends the thread; the sender is told once `Core` has been dropped
    /// (the store closed, the maps' descriptors released).
    Stop(oneshot::Sender<()>),
}

/// A cheap, cloneable way to the core.
#[derive(Clone)]
pub struct CoreHandle {
    tx: mpsc::Sender<Msg>,
}

/// What a start-up sends back: the ring buffer of offender reports, or why
/// the shield could not be started.
type Started = Result<Option<EventRing>, DaemonError>;

impl CoreHandle {
    /// Starts the core thread, which loads (or adopts) the shield with
    /// [`Core::start`] and then serves requests. Returns once the start
    /// is done.
    pub async fn start(config: Config, store: Store) -> Result<(CoreHandle, Option<EventRing>), DaemonError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (started_tx, started_rx) = oneshot::channel::<Started>();
        std::thread::Builder::new()
            .name("shield-core".into())
            .spawn(move || match Core::start(config, store) {
                Ok((core, events)) => {
                    let _ = started_tx.send(Ok(events));
                    serve(core, rx);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            })
            .map_err(|e| DaemonError::Runtime(format!("starting the core thread: {e}")))?;
        let events = started_rx
            .await
            .map_err(|_| DaemonError::Runtime("the core thread panicked while starting the shield".into()))??;
        Ok((CoreHandle { tx }, events))
    }

    /// Runs `f` on the core thread and returns its result. A panic in `f`
    /// is raised again here, in the caller's task; the core thread goes on
    /// serving (every kernel write is a whole syscall: the maps are as they
    /// were). Dropping the returned future does not cancel `f` once sent:
    /// a change is made whole or not at all.
    ///
    /// Pends forever once the core has stopped (only at exit, see
    /// [`CoreHandle::stop`]).
    pub async fn call<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&mut Core) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<R, Box<dyn Any + Send>>>();
        let job: Job = Box::new(move |core| {
            let _ = reply_tx.send(catch_unwind(AssertUnwindSafe(|| f(core))));
        });
        if self.tx.send(Msg::Run(job)).await.is_err() {
            return std::future::pending().await;
        }
        match reply_rx.await {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => std::future::pending().await,
        }
    }

    /// Ends the core thread after the requests sent before, and waits
    /// until `Core` is dropped. Requests sent later never run.
    pub async fn stop(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

/// The core thread's loop: until told to stop, or every handle is gone.
fn serve(mut core: Core, mut rx: mpsc::Receiver<Msg>) {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Run(job) => job(&mut core),
            Msg::Stop(done) => {
                drop(rx);
                drop(core);
                let _ = done.send(());
                return;
            }
        }
    }
}
