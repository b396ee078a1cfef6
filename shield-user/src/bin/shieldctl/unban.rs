//! `shieldctl unban TARGET` and `unban --all`.

use shield::control::protocol::{Unban, UnbanReply};

use super::fail::Fail;
use super::input::check_cidr;
use super::verb::{Ctx, Verb, QUICK, SLOW};

#[derive(clap::Args)]
pub struct Args {
    /// Address or network, exactly as banned.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    target: Option<String>,
    /// Lift every ban.
    #[arg(long)]
    all: bool,
}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        let (call, timeout) = match &self.target {
            Some(t) => (
                Unban {
                    net: Some(check_cidr(t)?),
                    all: false,
                },
                QUICK,
            ),
            None => (
                Unban {
                    net: None,
                    all: true,
                },
                SLOW,
            ),
        };
        ctx.ask(call, timeout, render)
    }
}

fn render(u: UnbanReply) -> String {
    match u.removed.as_slice() {
        [one] => format!("unbanned {one}\n"),
        many => format!("unbanned {} ban(s)\n", many.len()),
    }
}
