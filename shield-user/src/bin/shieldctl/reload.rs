//! `shieldctl reload`: re-read the configuration file.

use shield::control::protocol::{Reload, ReloadReply};
use shield::text::Escaped;

use super::fail::Fail;
use super::verb::{Ctx, Verb, SLOW};

#[derive(clap::Args)]
pub struct Args {}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        ctx.ask(Reload {}, SLOW, render)
    }
}

fn render(r: ReloadReply) -> String {
    let mut out = format!("reloaded {}\n", Escaped(&r.config));
    for c in r.changes {
        out.push_str(&format!("  {}\n", Escaped(&c)));
    }
    for w in r.warnings {
        out.push_str(&format!("  warning: {}\n", Escaped(&w)));
    }
    out
}
