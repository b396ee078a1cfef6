//! `shieldctl auth`: failed digest authentications seen on the wire
//! (SPEC §12) within `[auth] window`: top usernames and their sources, and
//! the sources with failures.

use shield::control::protocol::{Auth, AuthReply};

use super::fail::Fail;
use super::out::table;
use super::verb::{Ctx, Verb, QUICK};

#[derive(clap::Args)]
pub struct Args {}

impl Verb for Args {
    fn run(&self, ctx: &Ctx) -> Result<String, Fail> {
        ctx.ask(Auth {}, QUICK, render)
    }
}

fn render(r: AuthReply) -> String {
    let mut out = String::new();
    if !r.enabled {
        out.push_str("[auth] is off (no [auth] section, or failures and user_failures both 0)\n");
    }
    out.push_str(&format!(
        "window {}s: a source is banned at {} failures, a username reported at {}\n",
        r.window_secs, r.failures, r.user_failures
    ));
    if r.users.is_empty() {
        out.push_str("no failed authentications in the window\n");
        return out;
    }
    let users = r
        .users
        .iter()
        .map(|u| vec![u.username.clone(), u.failures.to_string(), u.sources.join(" ")])
        .collect();
    out.push_str(&table(&["USERNAME", "FAILURES", "SOURCES"], users));
    let sources = r
        .sources
        .iter()
        .map(|s| vec![s.source.clone(), s.failures.to_string()])
        .collect();
    out.push_str(&table(&["SOURCE", "FAILURES"], sources));
    out
}
