//! `shieldctl banned`: every ban; `banned ADDR`: one source's bans and
//! history.

use shield::control::protocol::{BannedAll, BannedReply, BannedSource, SourceReply};
use shield::text::Escaped;

use super::fail::Fail;
use super::input::check_cidr;
use super::out::{left, table};
use super::verb::{Ctx, Verb, QUICK};

#[derive(clap::Args)]
pub struct Args {
    /// Address or network to look up.
    target: Option<String>,
}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        match &self.target {
            Some(t) => ctx.ask(BannedSource { net: check_cidr(t)? }, QUICK, render_source),
            None => ctx.ask(BannedAll, QUICK, render_all),
        }
    }
}

/// `banned`.
fn render_all(b: BannedReply) -> String {
    if b.bans.is_empty() {
        return "no bans\n".into();
    }
    let rows = b
        .bans
        .iter()
        .map(|b| {
            vec![
                b.net.to_string(),
                b.origin.to_string(),
                left(b.expires_in_secs),
                b.reason.clone(),
            ]
        })
        .collect();
    table(&["ADDRESS", "ORIGIN", "TIME LEFT", "REASON"], rows)
}

/// `banned ADDR`.
fn render_source(s: SourceReply) -> String {
    let mut out = match s.bans.as_slice() {
        [] => format!("{} is not banned\n", s.source),
        bans => {
            let rows = bans
                .iter()
                .map(|b| {
                    vec![
                        b.ban.net.to_string(),
                        b.ban.origin.to_string(),
                        left(b.ban.expires_in_secs),
                        b.ban.times.unwrap_or(0).to_string(),
                        b.ban.reason.clone(),
                    ]
                })
                .collect();
            let mut t = table(&["BANNED AS", "ORIGIN", "TIME LEFT", "TIMES", "REASON"], rows);
            for b in bans.iter().filter(|b| !b.detail.is_empty()) {
                t.push_str(&format!("{}: {}\n", b.ban.net, Escaped(&b.detail)));
            }
            t
        }
    };
    if !s.auth_usernames.is_empty() {
        // Escaped by the daemon.
        out.push_str(&format!("usernames tried (digest, on the wire): {}\n", s.auth_usernames.join(", ")));
    }
    out.push_str(&format!(
        "{} was banned {} time(s) within the history kept\n",
        s.source,
        s.times_banned
    ));
    if !s.history.is_empty() {
        out.push_str("\nHistory (newest first)\n");
        out.push_str(&history(&s));
    }
    out
}

fn history(s: &SourceReply) -> String {
    let rows = s
        .history
        .iter()
        .map(|h| {
            let what = match (h.reason.is_empty(), h.detail.is_empty() || h.detail == h.reason) {
                (true, _) => String::new(),
                (false, true) => h.reason.clone(),
                (false, false) => format!("{} [{}]", h.reason, h.detail),
            };
            vec![
                shield::text::utc(h.at),
                format!("{:?}", h.action).to_lowercase(),
                h.net.clone(),
                h.origin.clone(),
                h.who.clone(),
                what,
            ]
        })
        .collect();
    table(&["WHEN", "WHAT", "NET", "ORIGIN", "BY", "REASON"], rows)
}
