//! `shieldctl stats`: packet counters, bans, top sources.

use shield::control::protocol::{CounterRow, Stats, StatsReply};
use shield::text::Escaped;

use super::fail::Fail;
use super::out::table;
use super::verb::{Ctx, Verb, QUICK};

#[derive(clap::Args)]
pub struct Args {}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        ctx.ask(Stats {}, QUICK, render)
    }
}

fn render(s: StatsReply) -> String {
    let mut out = String::from("Totals\n");
    out.push_str(&counter_table(&s.totals));
    for i in &s.interfaces {
        out.push_str(&format!("\n{}\n", Escaped(&i.interface)));
        out.push_str(&counter_table(&i.counters));
    }
    out.push_str(&format!("\nBans in force: {}", s.bans_active));
    let made: Vec<String> = s
        .bans_total
        .iter()
        .map(|(o, n)| format!("{} {n}", Escaped(o)))
        .collect();
    if !made.is_empty() {
        out.push_str(&format!(" (made since start: {})", made.join(", ")));
    }
    out.push('\n');
    out.push_str(&sources(&s));
    out
}

/// Top sources and recent escalations.
fn sources(s: &StatsReply) -> String {
    let mut out = String::from(
        "\nTop sources (rate/scanner/malformed drops in the current escalation window)\n",
    );
    if s.top_sources.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows = s
            .top_sources
            .iter()
            .map(|t| vec![t.source.to_string(), t.drops.to_string()])
            .collect();
        out.push_str(&table(&["SOURCE", "DROPS"], rows));
    }
    if !s.recent_escalations.is_empty() {
        out.push_str("\nRecent escalations\n");
        let rows = s
            .recent_escalations
            .iter()
            .map(|e| vec![e.source.to_string(), e.reason.as_str().into(), e.drops.to_string()])
            .collect();
        out.push_str(&table(&["SOURCE", "REASON", "DROPS"], rows));
    }
    out
}

fn counter_table(rows: &[CounterRow]) -> String {
    if rows.is_empty() {
        return "  no packets\n".into();
    }
    let rows = rows
        .iter()
        .map(|r| {
            vec![
                r.verdict.as_str().into(),
                r.reason.as_str().into(),
                r.packets.to_string(),
                r.bytes.to_string(),
            ]
        })
        .collect();
    table(&["VERDICT", "REASON", "PACKETS", "BYTES"], rows)
}
