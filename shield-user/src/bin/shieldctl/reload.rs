//! `shieldctl reload`: re-read the configuration file.

use std::time::Duration;

use shield::control::protocol::{ReloadReply, Request};
use shield::text::Escaped;

use super::fail::Fail;
use super::verb::{data, Verb, SLOW};

#[derive(clap::Args)]
pub struct Args {}

impl Verb for Args {
    fn request(&self) -> Result<Request, Fail> {
        Ok(Request::Reload)
    }

    fn timeout(&self) -> Duration {
        SLOW
    }

    fn render(&self, reply: serde_json::Value) -> anyhow::Result<String> {
        let r: ReloadReply = data(reply)?;
        let mut out = format!("reloaded {}\n", Escaped(&r.config));
        for c in r.changes {
            out.push_str(&format!("  {}\n", Escaped(&c)));
        }
        for w in r.warnings {
            out.push_str(&format!("  warning: {}\n", Escaped(&w)));
        }
        Ok(out)
    }
}
