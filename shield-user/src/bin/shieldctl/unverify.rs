//! `shieldctl unverify TARGET`.

use shield::control::protocol::{Unverify, UnverifyReply};

use super::fail::Fail;
use super::input::check_cidr;
use super::verb::{Ctx, Verb, QUICK};

#[derive(clap::Args)]
pub struct Args {
    /// Address or network, as verified (see `verified`).
    target: String,
}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        let call = Unverify {
            net: check_cidr(&self.target)?,
        };
        ctx.ask(call, QUICK, render)
    }
}

fn render(u: UnverifyReply) -> String {
    match u.removed {
        true => format!("unverified {}\n", u.net),
        false => format!("{} was not verified\n", u.net),
    }
}
