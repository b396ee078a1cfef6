//! `shieldctl calls`: the calls in progress (source, destination country,
//! the number masked to its last 4 digits, state, age) and the
//! destinations called in the last hour (SPEC §13).

use shield::control::protocol::{Calls, CallsReply};

use super::fail::Fail;
use super::out::table;
use super::verb::{Ctx, Verb, QUICK};

#[derive(clap::Args)]
pub struct Args {}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        ctx.ask(Calls {}, QUICK, render)
    }
}

fn render(r: CallsReply) -> String {
    let mut out = String::new();
    if r.calls.is_empty() {
        out.push_str("no calls in progress\n");
    } else {
        let rows = r
            .calls
            .iter()
            .map(|c| {
                let dest = if c.country.is_empty() { c.class.clone() } else { c.country.clone() };
                vec![c.source.clone(), dest, c.number.clone(), c.state.clone(), age(c.age_secs), c.interface.clone()]
            })
            .collect();
        out.push_str(&format!("{} call(s) in progress\n", r.calls.len()));
        out.push_str(&table(&["SOURCE", "DESTINATION", "NUMBER", "STATE", "AGE", "INTERFACE"], rows));
    }
    if r.top.is_empty() {
        out.push_str("no calls in the last hour\n");
    } else {
        out.push_str("\ntop destinations, last hour\n");
        let rows = r.top.iter().map(|t| vec![t.destination.clone(), t.calls.to_string()]).collect();
        out.push_str(&table(&["DESTINATION", "CALLS"], rows));
    }
    out
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shield::control::protocol::{CallItem, TopDestination};

    #[test]
    fn renders_calls_and_destinations() {
        let r = CallsReply {
            calls: vec![CallItem {
                source: "192.0.2.30".into(),
                interface: "eth0".into(),
                country: "+33".into(),
                class: "international".into(),
                number: "+xxxxxxx6789".into(),
                state: "answered".into(),
                age_secs: 3_725,
            }],
            top: vec![TopDestination { destination: "+33".into(), calls: 4 }],
        };
        let text = render(r);
        assert!(text.contains("+xxxxxxx6789"), "{text}");
        assert!(text.contains("1h02m"), "{text}");
        assert!(text.contains("top destinations"), "{text}");
        let empty = render(CallsReply { calls: vec![], top: vec![] });
        assert!(empty.contains("no calls in progress"));
    }
}
