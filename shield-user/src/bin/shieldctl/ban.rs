//! `shieldctl ban TARGET`.

use shield::control::protocol::{Ban, BanInfo};
use shield::text::Escaped;

use super::fail::Fail;
use super::input::{check_cidr, lasts};
use super::out::left;
use super::verb::{Ctx, Verb, QUICK};

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
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        let call = Ban {
            net: check_cidr(&self.target)?,
            duration: lasts("--duration", self.duration.as_deref())?,
            reason: self.reason.clone(),
            force: self.force,
        };
        ctx.ask(call, QUICK, render)
    }
}

fn render(b: BanInfo) -> String {
    let times = match b.times {
        Some(n) if n > 1 => format!("; banned {n} times"),
        _ => String::new(),
    };
    format!(
        "banned {} for {} ({}){times}\n",
        b.net,
        left(b.expires_in_secs),
        Escaped(&b.reason)
    )
}
