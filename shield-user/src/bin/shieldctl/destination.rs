//! `shieldctl destination NUMBER`: what the destination policy in force
//! decides about a number.

use shield::control::protocol::{Destination, DestinationReply};
use shield::text::Escaped;

use super::fail::Fail;
use super::verb::{Ctx, Verb, QUICK};

#[derive(clap::Args)]
pub struct Args {
    /// A dialled number (0033 1 23 45 67 89, +33123456789) or a
    /// sip:/sips:/tel: URI.
    #[arg(allow_hyphen_values = true)]
    number: String,
}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        let number = &self.number;
        shield::dest::check_number(number)
            .map_err(|e| Fail::usage(format!("bad number {number:?}: {e}")))?;
        let call = Destination {
            number: number.clone(),
        };
        ctx.ask(call, QUICK, render)
    }
}

fn render(d: DestinationReply) -> String {
    let class = match &d.country {
        Some(cc) => format!("{} (country code {})", d.class, cc),
        None => d.class.clone(),
    };
    let decision = match (&d.rule, &d.allowed_by) {
        (Some(rule), _) => format!(
            "refused by {} (action {}{})",
            rule,
            d.action,
            if d.action == "reject" { ": 403 Forbidden" } else { ": dropped, no reply" }
        ),
        (None, Some(entry)) => format!("allowed (allow_international entry {entry})"),
        (None, None) => "allowed".into(),
    };
    let mut out = format!(
        "number    {}\nclass     {}\ndecision  {}\n",
        Escaped(&d.number),
        Escaped(&class),
        Escaped(&decision)
    );
    if let Some(rate) = d.international_per_minute {
        out.push_str(&format!(
            "rate      each source may place {rate} international INVITE(s) a minute; beyond, refused (international_rate)\n"
        ));
    }
    out
}
