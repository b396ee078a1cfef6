//! `shieldctl status`: the daemon, its interfaces, CrowdSec.

use std::time::Duration;

use shield::config::format_duration;
use shield::control::protocol::{CrowdsecStatus, IfaceStatus, Status, StatusReply};
use shield::text::Escaped;

use super::fail::Fail;
use super::out::{list_or, table};
use super::verb::{Ctx, Verb, QUICK};

#[derive(clap::Args)]
pub struct Args {}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        ctx.ask(Status {}, QUICK, render)
    }
}

fn render(s: StatusReply) -> String {
    let mut out = format!(
        "shieldd {} (pid {}), up {}\nconfig     {}\nenforce    {}\nprogram    id {}\npins       {}\nstate      {}\nbans       {} in force\njails      {}\nmetrics    {}\n",
        Escaped(&s.version),
        s.pid,
        format_duration(Duration::from_secs(s.uptime_secs.max(1))),
        Escaped(&s.config),
        if s.enforce { "yes" } else { "no (dry run: drops are counted as would_drop)" },
        s.program_id,
        Escaped(&s.pin_path),
        Escaped(&s.state_dir),
        s.bans_active,
        list_or(&s.jails, "none"),
        Escaped(s.metrics.as_deref().unwrap_or("off")),
    );
    out.push_str(&interfaces(&s.interfaces));
    if let Some(c) = &s.crowdsec {
        out.push_str(&crowdsec_status(c));
    }
    if let Some(n) = &s.store_notice {
        out.push_str(&format!("\nstore      {}\n", Escaped(n)));
    }
    out
}

fn interfaces(ifaces: &[IfaceStatus]) -> String {
    if ifaces.is_empty() {
        return "interfaces none\n".into();
    }
    let rows = ifaces
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.ifindex.to_string(),
                i.mode.clone(),
                i.program_id.to_string(),
                i.link_id.to_string(),
                i.egress.clone().unwrap_or_else(|| "none".into()),
            ]
        })
        .collect();
    let mut out = String::from("\n");
    out.push_str(&table(&["INTERFACE", "IFINDEX", "MODE", "PROGRAM", "LINK", "EGRESS"], rows));
    out
}

/// The `[crowdsec]` part.
fn crowdsec_status(c: &CrowdsecStatus) -> String {
    let state = match (c.up, c.last_ok_secs_ago) {
        (true, Some(ago)) => format!("up (last answer {ago} s ago)"),
        (false, Some(ago)) => format!("DOWN (last answer {ago} s ago; enforcing what it had)"),
        (_, None) => "DOWN (never reached; enforcing what the maps hold)".into(),
    };
    let mut out = format!(
        "\ncrowdsec   {} {}\ndecisions  {} enforced{}\n",
        Escaped(&c.lapi_url),
        state,
        c.decisions,
        if c.synced { "" } else { " (no full list received yet)" },
    );
    if let Some(e) = &c.last_error {
        out.push_str(&format!("last error {}\n", Escaped(e)));
    }
    let rows: Vec<Vec<String>> = c
        .by_origin
        .iter()
        .map(|(k, n)| vec![k.clone(), n.to_string()])
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(&["ORIGIN/SCOPE", "DECISIONS"], rows));
    }
    let skipped: Vec<String> = c.skipped.iter().map(|(k, n)| format!("{k} {n}")).collect();
    if !skipped.is_empty() {
        out.push_str(&format!("skipped    {}\n", skipped.join(", ")));
    }
    if let Some(p) = &c.push {
        out.push_str(&format!(
            "push       as {}: {} pushed, {} deleted, {} queued, {} dropped{}\n",
            Escaped(&p.machine_id),
            p.pushed,
            p.deleted,
            p.queued,
            p.dropped,
            p.last_error
                .as_ref()
                .map(|e| format!(" (last error: {})", Escaped(e)))
                .unwrap_or_default(),
        ));
    }
    out
}
