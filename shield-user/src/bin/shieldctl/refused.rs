//! `shieldctl refused`: INVITEs the destination policy refused.

use shield::control::protocol::{Refused, RefusedReply};

use super::fail::Fail;
use super::input::{check_cidr, since_secs};
use super::out::table;
use super::verb::{Ctx, Verb, QUICK};

#[derive(clap::Args)]
pub struct Args {
    /// Address or network of the sources to show [default: all].
    target: Option<String>,
    /// Only those refused within this long: 30s, 10m, 1h, 2d, 1w.
    #[arg(long)]
    since: Option<String>,
    /// At most this many rows [default: 100; at most 10000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    /// Show the numbers in full.
    #[arg(long)]
    full: bool,
}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        let call = Refused {
            net: self.target.as_deref().map(check_cidr).transpose()?,
            since: self.since.as_deref().map(since_secs).transpose()?,
            limit: self.limit,
        };
        ctx.ask(call, QUICK, |r| render(r, self.full))
    }
}

fn render(r: RefusedReply, full: bool) -> String {
    let mut out = String::new();
    if r.unsaved > 0 || r.lost > 0 {
        out.push_str(&format!(
            "the store is failing: {} record(s) waiting for it, {} lost since start (see shieldd's log)\n",
            r.unsaved, r.lost
        ));
    }
    if r.refusals.is_empty() {
        out.push_str("no refusals kept\n");
        return out;
    }
    let rows = r
        .refusals
        .iter()
        .map(|x| {
            vec![
                shield::text::utc(x.at_ms / 1000),
                x.source.clone(),
                if full { x.number.clone() } else { shield::dest::masked(&x.number) },
                x.rule.clone(),
                x.reason.clone(),
                if x.replied { "403" } else { "-" }.into(),
                x.user_agent.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["WHEN", "SOURCE", "NUMBER", "RULE", "REASON", "REPLY", "USER AGENT"],
        rows,
    ));
    if r.refusals.len() == r.limit {
        out.push_str(&format!("(the newest {}; --limit for more)\n", r.limit));
    }
    out
}
