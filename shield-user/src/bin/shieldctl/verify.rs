//! `shieldctl verify TARGET`.

use shield::control::protocol::{VerifiedInfo, Verify};

use super::fail::Fail;
use super::input::{check_cidr, lasts};
use super::out::left;
use super::verb::{Ctx, Verb, QUICK};

#[derive(clap::Args)]
pub struct Args {
    /// Address (an IPv6 address verifies its [limits] ipv6_prefix) or network.
    target: String,
    /// How long: 30s, 10m, 1h, 2d, 1w, or "forever" [default: [verify] ttl].
    #[arg(long)]
    ttl: Option<String>,
    /// Verify a prefix wider than [bans] min_prefix_v4 / min_prefix_v6.
    #[arg(long)]
    force: bool,
}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        let call = Verify {
            net: check_cidr(&self.target)?,
            ttl: lasts("--ttl", self.ttl.as_deref())?,
            force: self.force,
        };
        ctx.ask(call, QUICK, render)
    }
}

fn render(v: VerifiedInfo) -> String {
    format!("verified {} for {}\n", v.net, left(v.expires_in_secs))
}
