//! What a verb that is one request and one reply provides: its request,
//! built from its checked arguments, how long to wait, and the reply as
//! text for people (`--json` prints the reply's data as it came).

use std::time::Duration;

use anyhow::Context;
use serde::de::DeserializeOwned;
use shield::control::protocol::Request;

use super::fail::Fail;

/// Most requests answer at once.
pub const QUICK: Duration = Duration::from_secs(30);
/// Those touching every ban, the config or the kernel's attachments.
pub const SLOW: Duration = Duration::from_secs(300);

pub trait Verb {
    /// The request. Arguments are checked here, before anything is sent,
    /// so bad input is exit 2 whether or not a daemon runs.
    fn request(&self) -> Result<Request, Fail>;

    /// How long to wait for the reply.
    fn timeout(&self) -> Duration {
        QUICK
    }

    /// The reply's data, for people.
    fn render(&self, data: serde_json::Value) -> anyhow::Result<String>;
}

/// The reply's data as the type the verb expects.
pub fn data<T: DeserializeOwned>(data: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(data).context("unexpected reply from shieldd")
}
