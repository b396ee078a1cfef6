//! `shieldctl`: the operator's CLI (SPEC §5). Talks to `shieldd` over its
//! control socket. Exit codes: 0 ok, 1 daemon or system error, 2 bad usage
//! or bad input.
//!
//! This file is the dispatch; `shieldctl/args.rs` the command line, and
//! each verb has its module beside it (its arguments, its request, its
//! rendering). A new verb: its module implementing [`Verb`] (usually one
//! `ctx.ask(call, timeout, render)`), a variant in `args.rs`, and a line in
//! [`verb`].

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use shield::config::DEFAULT_CONFIG_PATH;
use shield::control::protocol::ErrorBody;
use shield::text::Escaped;

// Module files beside this one (a `src/bin/` root looks in `src/bin/`).
#[path = "shieldctl/args.rs"]
mod args;
#[path = "shieldctl/fail.rs"]
mod fail;
#[path = "shieldctl/input.rs"]
mod input;
#[path = "shieldctl/out.rs"]
mod out;
#[path = "shieldctl/verb.rs"]
mod verb;

#[path = "shieldctl/ban.rs"]
mod ban;
#[path = "shieldctl/banned.rs"]
mod banned;
#[path = "shieldctl/calls.rs"]
mod calls;
#[path = "shieldctl/auth.rs"]
mod auth;
#[path = "shieldctl/destination.rs"]
mod destination;
#[path = "shieldctl/detach.rs"]
mod detach;
#[path = "shieldctl/lists.rs"]
mod lists;
#[path = "shieldctl/refused.rs"]
mod refused;
#[path = "shieldctl/reload.rs"]
mod reload;
#[path = "shieldctl/stats.rs"]
mod stats;
#[path = "shieldctl/status.rs"]
mod status;
#[path = "shieldctl/unban.rs"]
mod unban;
#[path = "shieldctl/unverify.rs"]
mod unverify;
#[path = "shieldctl/verified.rs"]
mod verified;
#[path = "shieldctl/verify.rs"]
mod verify;
#[path = "shieldctl/watch.rs"]
mod watch;

use args::{Cli, Command};
use fail::Fail;
use out::{emit, json_text};
use verb::{Ctx, Verb};

const DEFAULT_SOCKET: &str = "/run/shield/control.sock";
const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/shield";

/// The verb of a command that is one request and one reply; `None` for
/// `watch`, which streams.
fn verb(cmd: &Command) -> Option<&dyn Verb> {
    Some(match cmd {
        Command::Ban(a) => a,
        Command::Unban(a) => a,
        Command::Banned(a) => a,
        Command::Allow(a) => a,
        Command::Deny(a) => a,
        Command::Verified(a) => a,
        Command::Verify(a) => a,
        Command::Unverify(a) => a,
        Command::Refused(a) => a,
        Command::Auth(a) => a,
        Command::Destination(a) => a,
        Command::Calls(a) => a,
        Command::Stats(a) => a,
        Command::Status(a) => a,
        Command::Reload(a) => a,
        Command::Detach(a) => a,
        Command::Watch(_) => return None,
    })
}

fn main() -> ExitCode {
    // Build step (`cargo xtask docs`): man pages and completions.
    if let Some(code) = shield::docs::main_hook(Cli::command) {
        return code;
    }
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(out) => match emit(&mut io::stdout(), &out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = emit(
                    &mut io::stderr(),
                    &format!("shieldctl: writing the output: {e}\n"),
                );
                ExitCode::from(1)
            }
        },
        Err(f) => report(f, json),
    }
}

/// A failure on stderr (and, with `--json`, as JSON on stdout).
fn report(f: Fail, json: bool) -> ExitCode {
    if json {
        let body = ErrorBody {
            kind: f.kind,
            message: f.message.clone(),
            details: f.details.clone(),
        };
        let text = json_text(&serde_json::json!({ "error": body }), false);
        let _ = emit(&mut io::stdout(), &format!("{text}\n"));
    }
    let mut text = format!("shieldctl: {}\n", Escaped(&f.message));
    for d in &f.details {
        text.push_str(&format!("  {}\n", Escaped(d)));
    }
    let _ = emit(&mut io::stderr(), &text);
    ExitCode::from(f.code)
}

fn run(cli: Cli) -> Result<String, Fail> {
    let config = cli.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_PATH);
        (cli.socket.is_none() && default.exists()).then_some(default)
    });
    let socket = match (&cli.socket, &config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => input::config_path_value(c, "control", "socket")?
            .unwrap_or_else(|| DEFAULT_SOCKET.into()),
        (None, None) => DEFAULT_SOCKET.into(),
    };
    let ctx = Ctx {
        socket,
        config,
        json: cli.json,
    };
    match verb(&cli.command) {
        Some(v) => v.run(&ctx),
        None => match &cli.command {
            Command::Watch(args) => run_watch(args, &ctx),
            _ => unreachable!("every command but watch has a verb"),
        },
    }
}

/// `shieldctl watch`: bad arguments exit 2, everything else 1.
fn run_watch(args: &watch::WatchArgs, ctx: &Ctx) -> Result<String, Fail> {
    watch::check(args).map_err(Fail::usage)?;
    let pin = match (&args.pin_path(), &ctx.config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => input::config_path_value(c, "shield", "pin_path")?
            .unwrap_or_else(|| DEFAULT_PIN_PATH.into()),
        (None, None) => DEFAULT_PIN_PATH.into(),
    };
    watch::run(args, &ctx.socket, &pin, ctx.json).map_err(|e| Fail::system(format!("watch: {e:#}")))?;
    Ok(String::new())
}
