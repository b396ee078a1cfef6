//! The daemon's end of the control socket.
//!
//! Access control is the socket's own permissions (mode 0660, owner root,
//! group `[control] group`): the kernel refuses `connect()` to anyone else.
//! Every read is bounded in size and time, so a client that sends garbage,
//! too much, or nothing at all gets an error reply (or is dropped), and no
//! client can stall the others.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::protocol::{ErrorKind, Request, Response, MAX_REQUEST_BYTES};

/// How long a client may take to send one request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing a reply may take before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 32;

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
    let c = std::ffi::CString::new(group).map_err(|_| ControlError::NoGroup(group.into()))?;
    // getgrnam_r: getgrnam's static buffer is not thread-safe.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers valid for the call; buf's length passed.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(ControlError::NoGroup(group.into()));
    }
    Ok(grp.gr_gid)
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
    // SAFETY: umask has no failure mode.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = listener.map_err(io)?;
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

/// Serves clients until the task is aborted.
pub async fn serve(listener: UnixListener, handler: Handler) {
    serve_with_timeout(listener, handler, READ_TIMEOUT).await
}

/// [`serve`] with another per-request read timeout.
pub async fn serve_with_timeout(listener: UnixListener, handler: Handler, read_timeout: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            serve_client(stream, handler, read_timeout).await;
            drop(permit);
        });
    }
}

async fn serve_client(stream: UnixStream, handler: Handler, read_timeout: Duration) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        },
        Err(_) => return,
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let (reply, keep_going) = match read_request(&mut reader, read_timeout).await {
            Ok(None) => return,
            Ok(Some(line)) => match serde_json::from_slice::<Request>(&line) {
                Ok(req) => (handler(req, peer).await, true),
                Err(e) => (
                    Response::error(ErrorKind::BadRequest, format!("malformed request: {e}")),
                    true,
                ),
            },
            Err(reply) => (reply, false),
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        out.push(b'\n');
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&out)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        if !keep_going {
            // Swallow what the client is still sending (bounded), so it can
            // read the reply instead of getting a reset.
            let mut sink = tokio::io::sink();
            let mut rest = (&mut reader).take(1 << 20);
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::copy(&mut rest, &mut sink),
            )
            .await;
            return;
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
        tokio::spawn(serve_with_timeout(
            listener,
            handler,
            Duration::from_millis(300),
        ));
        path
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
