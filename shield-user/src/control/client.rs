//! `shieldctl`'s end of the control socket (blocking: one request, one
//! reply).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::protocol::{ErrorKind, Request, Response};

/// How long to keep retrying while the daemon answers `busy`. Its idle
/// connections are dropped after two seconds, so a slot frees up well
/// within this even when the socket is flooded.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(6);
const BUSY_RETRY_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("shieldd is not running (nothing listens on {path}: {source})")]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("permission denied on {path}: shieldctl needs root or membership in the socket's group ([control] group)")]
    PermissionDenied { path: PathBuf },
    #[error("talking to shieldd on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("shieldd sent a reply that is not valid: {0}")]
    Protocol(String),
}

/// Sends `req` and waits up to `timeout` for the reply. A `busy` refusal
/// is retried for a few seconds: the daemon sends it before reading the
/// request, so nothing was done and sending again is safe.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let start = Instant::now();
    loop {
        let reply = request_once(path, req, timeout)?;
        if !is_busy(&reply) || start.elapsed() >= BUSY_RETRY_FOR {
            return Ok(reply);
        }
        std::thread::sleep(BUSY_RETRY_EVERY);
    }
}

fn is_busy(reply: &Response) -> bool {
    reply
        .error
        .as_ref()
        .is_some_and(|e| e.kind == ErrorKind::Busy)
}

fn request_once(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    Session::connect(path, timeout)?.request(req)
}

/// One connection carrying many requests, each answered in turn (bulk
/// bans from a script: no connection set-up per request). The daemon
/// closes a connection idle for a few seconds.
pub struct Session {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Session {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Session, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning {
                    path: path.to_path_buf(),
                    source,
                }
            }
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: path.to_path_buf(),
            },
            _ => ClientError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let s = Session {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
        };
        let stream = s.reader.get_ref();
        stream.set_read_timeout(Some(timeout)).map_err(s.io())?;
        stream.set_write_timeout(Some(timeout)).map_err(s.io())?;
        Ok(s)
    }

    fn io(&self) -> impl Fn(io::Error) -> ClientError + '_ {
        |source| ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Sends `req` and reads its reply.
    pub fn request(&mut self, req: &Request) -> Result<Response, ClientError> {
        let mut line =
            serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        if let Err(e) = self.reader.get_ref().write_all(&line) {
            // A daemon refusing the connection replies and closes without
            // reading the request: the write fails, its reply is still there.
            if !matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                return Err(self.io()(e));
            }
        }
        let mut reply = String::new();
        let read = self.reader.read_line(&mut reply);
        read.map_err(self.io())?;
        if reply.is_empty() {
            return Err(ClientError::Protocol(
                "connection closed without a reply".into(),
            ));
        }
        serde_json::from_str(&reply).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}
