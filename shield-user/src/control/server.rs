//! The daemon's end of the control socket.
//!
//! Access control is the socket's own permissions (mode 0660, owner root,
//! group `[control] group`): the kernel refuses `connect()` to anyone else.
//! Every read is bounded in size and time, so a client that sends garbage,
//! too much, or nothing at all gets an error reply (or is dropped), and no
//! client can stall the others.
//!
//! Connections are bounded per peer uid and in total; root's are apart and
//! never refused: past [`MAX_ROOT`] of them a new one closes root's oldest
//! (between its requests). So neither the group nor a runaway script, not
//! even root's own, can lock the operator's `shieldctl` out by holding
//! connections open, and root's cannot grow without bound either. A
//! connection over a limit is refused at once with a `busy` reply, never
//! queued; an idle one is dropped after [`READ_TIMEOUT`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::stat::{umask, Mode};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use super::protocol::{ErrorKind, Request, Response, MAX_REQUEST_BYTES};

/// How long a client may take to send one request line. Requests are one
/// short line that `shieldctl` writes as soon as it is connected, so a
/// connection quiet for this long is idle, and it is dropped to free its
/// slot.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long writing a reply may take before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once to users other than root, in total.
/// A connection costs a task and a file descriptor, and operators run a
/// handful of commands at a time: 64 is far more than they need and far
/// below the daemon's descriptor limit.
pub const MAX_CLIENTS: usize = 64;
/// Connections served at once for one uid: enough for scripts running
/// several commands in parallel, few enough that it takes eight uids to
/// fill the socket.
pub const MAX_PER_PEER: usize = 8;
/// Root's connections served at once, apart from everyone else's; a newer
/// one closes the oldest instead of being refused.
pub const MAX_ROOT: usize = 64;
/// How often refusals are logged at most (each one would be a line an
/// attacker could make the daemon write).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("control socket {0}: another shieldd is listening there")]
    InUse(PathBuf),
    #[error("control socket {0}: exists and is not a socket; remove it or choose another [control] socket")]
    NotSocket(PathBuf),
    #[error("[control] group {0:?} does not exist")]
    NoGroup(String),
}

/// Who is on the other end (from `SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Response> + Send>>;
/// Turns one request into its response.
pub type Handler = Arc<dyn Fn(Request, Peer) -> HandlerFuture + Send + Sync>;

/// The gid of a group name (`""` is root's group, 0).
pub fn group_id(group: &str) -> Result<u32, ControlError> {
    if group.is_empty() {
        return Ok(0);
    }
    // getgrnam_r inside: getgrnam's static buffer is not thread-safe.
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(ControlError::NoGroup(group.into())),
    }
}

/// Creates the socket at `path`: mode 0660, owner root (the daemon's uid),
/// group `gid`. A stale socket from a dead daemon is replaced; a live one
/// means another daemon, which is refused.
pub fn bind(path: &Path, gid: u32) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        Ok(_) => return Err(ControlError::NotSocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    // The socket inode takes its mode from the umask at bind(): keep it
    // private until it has its group and final mode.
    let old = umask(Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    umask(old);
    let listener = listener.map_err(io)?;
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

/// The server's bounds (see the constants of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub read_timeout: Duration,
    /// Users other than root, in total.
    pub max_clients: usize,
    pub max_per_peer: usize,
    pub max_root: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            read_timeout: READ_TIMEOUT,
            max_clients: MAX_CLIENTS,
            max_per_peer: MAX_PER_PEER,
            max_root: MAX_ROOT,
        }
    }
}

/// Serves clients until the task is aborted.
pub async fn serve(listener: UnixListener, handler: Handler) {
    serve_with(listener, handler, Limits::default()).await
}

/// [`serve`] within other limits.
pub async fn serve_with(listener: UnixListener, handler: Handler, limits: Limits) {
    let slots = Arc::new(Slots::new(limits));
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(peer) = peer_of(&stream) else {
            continue;
        };
        let Some(slot) = slots.admit(peer.uid) else {
            log_refusal(&mut last_refusal_log, &peer);
            refuse(stream, &limits);
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let closed = slot.closed.clone();
            serve_client(stream, peer, handler, limits.read_timeout, closed).await;
            drop(slot);
        });
    }
}

/// Logs a refused connection, at most once per [`REFUSAL_LOG_EVERY`].
fn log_refusal(last: &mut Option<Instant>, peer: &Peer) {
    if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_EVERY) {
        return;
    }
    *last = Some(Instant::now());
    tracing::warn!(
        uid = peer.uid,
        pid = peer.pid,
        "control connection refused: too many open (logged once a minute at most)"
    );
}

/// Who is connected (`SO_PEERCRED`); `None` if the kernel cannot say, and
/// then the connection is dropped: limits and logs need the uid.
fn peer_of(stream: &UnixStream) -> Option<Peer> {
    let c = stream.peer_cred().ok()?;
    Some(Peer {
        uid: c.uid(),
        gid: c.gid(),
        pid: c.pid(),
    })
}

/// Answers a connection over the limits with a `busy` error and closes it,
/// without a task or a wait: the reply is one short line into an empty
/// socket buffer, which a non-blocking write always takes whole.
fn refuse(stream: UnixStream, limits: &Limits) {
    let reply = Response::error(
        ErrorKind::Busy,
        format!(
            "too many control connections open (at most {} per user, {} in all); try again",
            limits.max_per_peer, limits.max_clients
        ),
    );
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let _ = (&stream).write_all(&reply_line(&reply));
    // Closing with the client's request unread is fine: a Unix socket
    // still delivers our reply before reporting the reset.
}

/// Connection slots in use: other users' by uid, root's apart.
#[derive(Debug)]
struct Slots {
    limits: Limits,
    used: Mutex<SlotsUsed>,
}

#[derive(Debug, Default)]
struct SlotsUsed {
    /// Other users' slots in use, by uid.
    shared: HashMap<u32, usize>,
    shared_total: usize,
    /// Root's connections, oldest first: their numbers and what closes them.
    root: VecDeque<(u64, Arc<Notify>)>,
    next_root: u64,
}

/// A connection's hold on a slot; frees it when dropped.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    uid: u32,
    /// Root's connections: its number in [`SlotsUsed::root`].
    root: Option<u64>,
    /// Notified when this (root's) connection is to close for a newer one.
    closed: Arc<Notify>,
}

impl Slots {
    fn new(limits: Limits) -> Slots {
        Slots {
            limits,
            used: Mutex::new(SlotsUsed::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotsUsed> {
        // The counts stay consistent even if a holder panicked.
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `uid`: for root always (closing root's
    /// oldest connection when it has [`Limits::max_root`]), for others if
    /// within the per-peer and total limits.
    fn admit(self: &Arc<Self>, uid: u32) -> Option<Slot> {
        let mut used = self.lock();
        let closed = Arc::new(Notify::new());
        let root = if uid == 0 {
            if used.root.len() >= self.limits.max_root {
                if let Some((_, oldest)) = used.root.pop_front() {
                    // A permit: it closes at its next wait for a request.
                    oldest.notify_one();
                }
            }
            let n = used.next_root;
            used.next_root += 1;
            used.root.push_back((n, closed.clone()));
            Some(n)
        } else {
            let mine = used.shared.get(&uid).copied().unwrap_or(0);
            if used.shared_total >= self.limits.max_clients || mine >= self.limits.max_per_peer {
                return None;
            }
            *used.shared.entry(uid).or_insert(0) += 1;
            used.shared_total += 1;
            None
        };
        Some(Slot {
            slots: self.clone(),
            uid,
            root,
            closed,
        })
    }

    fn release(&self, uid: u32, root: Option<u64>) {
        let mut used = self.lock();
        if let Some(n) = root {
            used.root.retain(|(m, _)| *m != n);
            return;
        }
        used.shared_total -= 1;
        if let Some(n) = used.shared.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                used.shared.remove(&uid);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.uid, self.root);
    }
}

fn reply_line(reply: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    out.push(b'\n');
    out
}

/// Serves one connection until it ends, breaks the rules, idles, or
/// `closed` is notified (then between requests, without a reply).
async fn serve_client(
    stream: UnixStream,
    peer: Peer,
    handler: Handler,
    read_timeout: Duration,
    closed: Arc<Notify>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let request = tokio::select! {
            r = read_request(&mut reader, read_timeout) => r,
            () = closed.notified() => return,
        };
        let (reply, keep_going) = match request {
            Ok(None) => return,
            Ok(Some(line)) => match Request::parse(&line) {
                Ok(req) => (handler(req, peer).await, true),
                Err(reply) => (reply, true),
            },
            Err(reply) => (reply, false),
        };
        let out = reply_line(&reply);
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&out)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        if !keep_going {
            drain(&mut reader).await;
            return;
        }
    }
}

/// Swallows what a client that broke the rules is still sending, so that
/// its blocked write completes and it reads our reply. Bounded in bytes and
/// time, and it stops as soon as the client pauses: a silent client is not
/// kept (its slot is wanted).
async fn drain<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) {
    const MAX_BYTES: usize = 1 << 20;
    const MAX_TIME: Duration = Duration::from_secs(1);
    const PAUSE: Duration = Duration::from_millis(100);
    let start = Instant::now();
    let mut buf = [0u8; 8192];
    let mut total = 0;
    while total < MAX_BYTES && start.elapsed() < MAX_TIME {
        match tokio::time::timeout(PAUSE, reader.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => return,
        }
    }
}

/// One request line, without its newline. `Ok(None)` at a clean end of
/// stream; `Err(reply)` when the client broke the rules (the connection is
/// then closed: there is no way to find the next request boundary).
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, Response> {
    let mut line = Vec::new();
    let limit = MAX_REQUEST_BYTES as u64 + 1;
    let read = tokio::time::timeout(timeout, reader.take(limit).read_until(b'\n', &mut line)).await;
    match read {
        Err(_) => Err(Response::error(
            ErrorKind::BadRequest,
            format!("no complete request within {} ms", timeout.as_millis()),
        )),
        Ok(Err(e)) => Err(Response::error(
            ErrorKind::BadRequest,
            format!("reading the request: {e}"),
        )),
        Ok(Ok(0)) => Ok(None),
        Ok(Ok(_)) => {
            if line.last() == Some(&b'\n') {
                line.pop();
            } else if line.len() > MAX_REQUEST_BYTES {
                return Err(Response::error(
                    ErrorKind::BadRequest,
                    format!("request longer than {MAX_REQUEST_BYTES} bytes"),
                ));
            }
            Ok(Some(line))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    async fn start(dir: &Path) -> PathBuf {
        let path = dir.join("ctl.sock");
        let listener = bind(&path, 0).unwrap();
        let handler: Handler = Arc::new(|req, _peer| {
            Box::pin(async move { Response::ok(format!("{req:?}")) }) as HandlerFuture
        });
        tokio::spawn(serve_with(listener, handler, test_limits()));
        path
    }

    fn test_limits() -> Limits {
        Limits {
            read_timeout: Duration::from_millis(300),
            max_clients: 4,
            max_per_peer: 2,
            max_root: 2,
        }
    }

    async fn exchange(path: &Path, bytes: &[u8]) -> Vec<Response> {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn requests_malformed_lines_and_oversized_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = start(dir.path()).await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);

        let replies = exchange(
            &path,
            b"{\"cmd\":\"status\"}\nnot json\n{\"cmd\":\"stats\"}",
        )
        .await;
        assert_eq!(replies.len(), 3);
        assert!(replies[0].ok && replies[2].ok);
        assert_eq!(
            replies[1].error.as_ref().unwrap().kind,
            ErrorKind::BadRequest
        );

        let mut huge = vec![b'x'; MAX_REQUEST_BYTES * 4];
        huge.push(b'\n');
        let replies = exchange(&path, &huge).await;
        assert_eq!(replies.len(), 1);
        assert!(replies[0]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("longer than"));

        let replies = exchange(&path, &[0xff, 0xfe, b'\n']).await;
        assert_eq!(
            replies[0].error.as_ref().unwrap().kind,
            ErrorKind::BadRequest
        );
    }

    #[tokio::test]
    async fn a_silent_client_times_out_without_blocking_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = start(dir.path()).await;
        let mut silent = UnixStream::connect(&path).await.unwrap();
        silent.write_all(b"{\"cmd\":").await.unwrap();
        // Another client is served meanwhile.
        let t = Instant::now();
        let replies = exchange(&path, b"{\"cmd\":\"status\"}\n").await;
        assert!(replies[0].ok);
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        let mut text = String::new();
        silent.read_to_string(&mut text).await.unwrap();
        let reply: Response = serde_json::from_str(text.trim()).unwrap();
        assert!(reply.error.unwrap().message.contains("no complete request"));
    }

    /// The first line the server sends on `s`, and how long it took.
    async fn first_reply(s: &mut UnixStream) -> (Response, Duration) {
        let t = Instant::now();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        (serde_json::from_str(&line).unwrap(), t.elapsed())
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_refused_at_once_and_idle_ones_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = start(dir.path()).await;
        // Anyone but root holds two connections, and a third is refused;
        // root (the usual test user) holds two, and a third closes the
        // first, unanswered.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        let mut over = UnixStream::connect(&path).await.unwrap();
        if root {
            let mut first = idle.remove(0);
            let mut unanswered = Vec::new();
            first.read_to_end(&mut unanswered).await.unwrap();
            assert!(unanswered.is_empty(), "{unanswered:?}");
            idle.push(over);
        } else {
            let (reply, took) = first_reply(&mut over).await;
            assert_eq!(reply.error.unwrap().kind, ErrorKind::Busy);
            assert!(took < Duration::from_millis(250), "{took:?}");
        }
        // The idle ones are dropped after the read timeout, and their
        // slots serve others again.
        for s in &mut idle {
            let (reply, took) = first_reply(s).await;
            assert!(reply.error.unwrap().message.contains("no complete request"));
            assert!(took < Duration::from_secs(2), "{took:?}");
            s.read_to_end(&mut Vec::new())
                .await
                .expect("closed cleanly");
        }
        let replies = exchange(&path, b"{\"cmd\":\"status\"}\n").await;
        assert!(replies[0].ok);
    }

    #[tokio::test]
    async fn slots_are_bounded_for_others_and_root_is_never_refused() {
        let slots = Arc::new(Slots::new(test_limits()));
        let a1 = slots.admit(1000).expect("first of uid 1000");
        let _a2 = slots.admit(1000).expect("second of uid 1000");
        assert!(slots.admit(1000).is_none(), "per-peer limit");
        let _b = (slots.admit(1001).unwrap(), slots.admit(1001).unwrap());
        assert!(slots.admit(1002).is_none(), "limit in total");
        // Root's are apart: served with every other slot taken.
        let r1 = slots.admit(0).expect("root");
        let r2 = slots.admit(0).expect("root");
        // Past its limit, a new one closes root's oldest.
        let r3 = slots.admit(0).expect("root is never refused");
        tokio::time::timeout(Duration::from_secs(10), r1.closed.notified())
            .await
            .expect("root's oldest is told to close");
        let numbers = |s: &Slots| s.lock().root.iter().map(|(n, _)| *n).collect::<Vec<_>>();
        assert_eq!(numbers(&slots), [r2.root.unwrap(), r3.root.unwrap()]);
        drop((r1, r2));
        assert_eq!(numbers(&slots), [r3.root.unwrap()]);
        drop(a1);
        let _c = slots.admit(1002).expect("a freed slot serves another");
        let used = slots.lock();
        assert_eq!(used.shared_total, 4);
        assert_eq!(used.shared.get(&0), None);
    }

    #[test]
    fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _guard = rt.enter();
        let live = bind(&path, 0).unwrap();
        assert!(matches!(bind(&path, 0), Err(ControlError::InUse(_))));
        drop(live);
        bind(&path, 0).expect("stale socket replaced");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "x").unwrap();
        assert!(matches!(bind(&path, 0), Err(ControlError::NotSocket(_))));
        assert!(matches!(
            group_id("no-such-group-here"),
            Err(ControlError::NoGroup(_))
        ));
        assert_eq!(group_id("").unwrap(), 0);
    }
}
