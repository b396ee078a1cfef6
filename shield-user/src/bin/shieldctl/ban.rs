//! `shieldctl ban TARGET`.

use shield::control::protocol::{BanInfo, Request};
use shield::text::Escaped;

use super::fail::Fail;
use super::input::{check_cidr, lasts};
use super::out::left;
use super::verb::{data, Verb};

#[derive(clap::Args)]
pub struct Args {
    /// Address (192.0.2.7, 2001:db8::7) or network (192.0.2.0/24).
    target: String,
    /// How long: 30s, 10m, 1h, 2d, 1w, or "forever" [default: [bans] bantime].
    #[arg(long, short = 'd')]
    duration: Option<String>,
    /// Why (shown by `banned`).
    #[arg(long, short = 'r')]
    reason: Option<String>,
    /// Ban a prefix wider than [bans] min_prefix_v4 / min_prefix_v6.
    #[arg(long)]
    force: bool,
}

impl Verb for Args {
    fn request(&self) -> Result<Request, Fail> {
        Ok(Request::Ban {
            net: check_cidr(&self.target)?,
            duration: lasts("--duration", self.duration.as_deref())?,
            reason: self.reason.clone(),
            force: self.force,
        })
    }

    fn render(&self, reply: serde_json::Value) -> anyhow::Result<String> {
        let b: BanInfo = data(reply)?;
        let times = match b.times {
            Some(n) if n > 1 => format!("; banned {n} times"),
            _ => String::new(),
        };
        Ok(format!(
            "banned {} for {} ({}){times}\n",
            Escaped(&b.net),
            left(b.expires_in_secs),
            Escaped(&b.reason)
        ))
    }
}
