//! `shieldctl verified`: verified sources and the shared budget.

use shield::control::protocol::{Verified, VerifiedReply};

use super::fail::Fail;
use super::out::{left, table};
use super::verb::{Ctx, Verb, QUICK};

#[derive(clap::Args)]
pub struct Args {}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        ctx.ask(Verified {}, QUICK, render)
    }
}

fn render(v: VerifiedReply) -> String {
    let mut out = match (v.unverified_per_second, v.budget_tokens) {
        (0, _) | (_, None) => "unverified budget: off ([verify] unverified_per_second = 0)\n".into(),
        (rate, Some(left)) => format!(
            "unverified budget: {rate}/s, {left} token(s) left{}\n",
            if v.under_pressure { ", UNDER PRESSURE" } else { "" }
        ),
    };
    if v.entries.is_empty() {
        out.push_str("no verified sources\n");
        return out;
    }
    let rows = v
        .entries
        .iter()
        .map(|e| vec![e.net.to_string(), e.how.clone(), left(e.expires_in_secs)])
        .collect();
    out.push_str(&table(&["SOURCE", "HOW", "TIME LEFT"], rows));
    if v.total > v.entries.len() {
        out.push_str(&format!("({} of {} shown)\n", v.entries.len(), v.total));
    }
    out
}
