//! What a verb that talks to the daemon does: build its request (a
//! [`Call`], which names the reply's type) from its checked arguments, ask
//! through a [`Ctx`], and render the typed reply for people (`--json`
//! prints the reply's data as it came).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use shield::control::client::{self, ClientError};
use shield::control::protocol::{Call, ErrorBody, ErrorKind, Response};
use shield::text::Escaped;

use super::fail::Fail;
use super::out::{emit, json_text};

/// Most requests answer at once.
pub const QUICK: Duration = Duration::from_secs(30);
/// Those touching every ban, the config or the kernel's attachments.
pub const SLOW: Duration = Duration::from_secs(300);

pub trait Verb {
    /// Checks the arguments (before anything is sent, so bad input is
    /// exit 2 whether or not a daemon runs), asks, and renders.
    fn run(&self, ctx: &Ctx) -> Result<String, Fail>;
}

/// Where and how to ask.
pub struct Ctx {
    pub socket: PathBuf,
    pub config: Option<PathBuf>,
    pub json: bool,
}

impl Ctx {
    /// Sends `call`, waits up to `timeout`, and renders its reply (or,
    /// with `--json`, prints it).
    pub fn ask<C: Call>(
        &self,
        call: C,
        timeout: Duration,
        render: impl FnOnce(C::Reply) -> String,
    ) -> Result<String, Fail> {
        let resp = client::request(&self.socket, &call.into(), timeout).map_err(|e| match e {
            ClientError::NotRunning { .. } => Fail::not_running(e.to_string()),
            ClientError::PermissionDenied { .. } => Fail::system(e.to_string()),
            e => Fail::system(format!("{e:#}")),
        })?;
        let resp = succeeded(resp)?;
        if self.json {
            return Ok(format!("{}\n", json_text(&resp.data, true)));
        }
        let reply = resp
            .into_reply::<C>()
            .map_err(|e| Fail::system(format!("unexpected reply from shieldd: {e}")))?;
        Ok(render(reply))
    }
}

/// The reply if it is a success. A caveat (e.g. not saved to state_dir)
/// still exits 0, the change is in force: it goes to stderr, and into the
/// JSON.
fn succeeded(mut resp: Response) -> Result<Response, Fail> {
    if !resp.ok {
        let err = resp.error.unwrap_or(ErrorBody {
            kind: ErrorKind::Failed,
            message: "unknown error".into(),
            details: vec![],
        });
        return Err(Fail::from_daemon(err));
    }
    if let Some(w) = &resp.warning {
        let _ = emit(
            &mut io::stderr(),
            &format!("shieldctl: warning: {}\n", Escaped(w)),
        );
        if let Some(obj) = resp.data.as_object_mut() {
            obj.insert("warning".into(), serde_json::Value::String(w.clone()));
        }
    }
    Ok(resp)
}
