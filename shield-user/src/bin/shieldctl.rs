//! `shieldctl`: the operator's CLI (SPEC §5). Talks to `shieldd` over its
//! control socket. Exit codes: 0 ok, 1 daemon or system error, 2 bad usage
//! or bad input.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use shield::config::{format_duration, parse_cidr, parse_duration, DEFAULT_CONFIG_PATH};
use shield::control::client::{self, ClientError};
use shield::control::protocol::{
    BanInfo, BannedReply, DestinationReply, DetachReply, Lasts, Net, RefusedReply, SourceReply, ErrorBody,
    ErrorKind, ListOp, ListReply, ReloadReply, CrowdsecStatus, Request, Response, StatsReply, StatusReply,
    UnbanReply, UnverifyReply, VerifiedInfo, VerifiedReply,
};
// Everything the daemon sends may carry text from outside (a ban reason
// is a line from a log an attacker writes to): shown escaped, never raw.
use shield::text::{escaped, json_safe, Escaped};

// The command's own file, beside this one.
#[path = "shieldctl/watch.rs"]
mod watch;

const DEFAULT_SOCKET: &str = "/run/shield/control.sock";
const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/shield";

#[derive(Parser)]
#[command(name = "shieldctl", version, about = "Control the SIP Shield daemon")]
struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// Take the socket (and, for an offline detach, the pin path) from this
    /// configuration file [default: /etc/shield/shield.toml if it exists].
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Machine-readable output (JSON).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ban an address or network.
    Ban {
        /// Address (192.0.2.7, 2001:db8::7) or network (192.0.2.0/24).
        target: String,
        /// How long: 30s, 10m, 1h, 2d, 1w, or "forever" [default: [bans] bantime].
        #[arg(long, short = 'd')]
        duration: Option<String>,
        /// Why (shown by `banned`).
        #[arg(long, short = 'r')]
        reason: Option<String>,
        /// Ban a prefix wider than [bans] min_prefix_v4 / min_prefix_v6.
        #[arg(long)]
        force: bool,
    },
    /// Lift a ban, or all of them.
    Unban {
        /// Address or network, exactly as banned.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        target: Option<String>,
        /// Lift every ban.
        #[arg(long)]
        all: bool,
    },
    /// List bans: address, origin, reason, time left. With ADDR: that
    /// source's bans, how often it was banned, and its history.
    Banned {
        /// Address or network to look up.
        target: Option<String>,
    },
    /// Show or change the allowlist (always passes, beats bans).
    Allow {
        #[arg(value_enum)]
        op: Op,
        cidr: Option<String>,
        /// Add a prefix wider than [bans] min_prefix_v4 / min_prefix_v6.
        #[arg(long)]
        force: bool,
    },
    /// Show or change the denylist (always dropped unless allowlisted).
    Deny {
        #[arg(value_enum)]
        op: Op,
        cidr: Option<String>,
        /// Add a prefix wider than [bans] min_prefix_v4 / min_prefix_v6.
        #[arg(long)]
        force: bool,
    },
    /// Verified sources (a final 2xx from the server, an operator, the
    /// config) and the shared budget of everything else.
    Verified,
    /// Verify an address or network: it skips the unverified budget.
    Verify {
        /// Address (an IPv6 address verifies its [limits] ipv6_prefix) or network.
        target: String,
        /// How long: 30s, 10m, 1h, 2d, 1w, or "forever" [default: [verify] ttl].
        #[arg(long)]
        ttl: Option<String>,
        /// Verify a prefix wider than [bans] min_prefix_v4 / min_prefix_v6.
        #[arg(long)]
        force: bool,
    },
    /// End an address's or network's verification.
    Unverify {
        /// Address or network, as verified (see `verified`).
        target: String,
    },
    /// INVITEs refused by the destination policy (toll fraud), newest
    /// first: time, source, number, rule, reason, 403 sent, User-Agent.
    /// Numbers are masked to their last 4 digits unless --full; --json
    /// always carries them in full.
    Refused {
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
    },
    /// What the destination policy shieldd has loaded decides about a
    /// dialled number: normalised form, class, country code, deciding
    /// rule. Sends nothing.
    Destination {
        /// A dialled number (0033 1 23 45 67 89, +33123456789) or a
        /// sip:/sips:/tel: URI.
        #[arg(allow_hyphen_values = true)]
        number: String,
    },
    /// Packet counters by verdict and reason, top offending sources.
    Stats,
    /// Interfaces, attach mode, program id, enforcement, version.
    Status,
    /// Re-read the configuration file (nothing changes if it is invalid).
    Reload,
    /// Remove the shield from the kernel: program, links and pins. The
    /// daemon exits; bans stay in state_dir. Works without a daemon too.
    Detach,
    /// Live view of what XDP drops: drops per second by reason, top sources
    /// (ban time left, verified), sampled dropped packets decoded (source,
    /// method, Request-URI user masked, User-Agent, reason); --json: one
    /// JSON object a line; --pcap FILE: the sampled frames. Turns kernel
    /// sampling on while it runs (root: it opens the pinned maps).
    Watch(watch::WatchArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Op {
    Add,
    Del,
    List,
}

/// A failure and its exit code.
struct Fail {
    code: u8,
    message: String,
    details: Vec<String>,
    kind: ErrorKind,
}

impl Fail {
    fn usage(message: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            message: message.into(),
            details: Vec::new(),
            kind: ErrorKind::BadInput,
        }
    }
    fn system(message: impl Into<String>) -> Fail {
        Fail {
            code: 1,
            message: message.into(),
            details: Vec::new(),
            kind: ErrorKind::Failed,
        }
    }
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
        Err(f) => {
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
    }
}

/// Writes `text` to `out`. When the reader is gone (`shieldctl banned |
/// head`), ends the process by SIGPIPE, as coreutils do: quietly, and the
/// shell knows why. SIGPIPE itself stays ignored (Rust's default) until
/// then, so that a daemon closing the socket is an error handled, not a
/// death.
fn emit(out: &mut impl Write, text: &str) -> io::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => die_of_sigpipe(),
        r => r,
    }
}

fn die_of_sigpipe() -> ! {
    // SAFETY: setting a signal's default disposition and raising it have
    // no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached (SIGPIPE's default action ends the process); the
    // shell's code for it, should it be blocked.
    std::process::exit(128 + libc::SIGPIPE)
}

fn run(cli: Cli) -> Result<String, Fail> {
    let config = cli.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_PATH);
        (cli.socket.is_none() && default.exists()).then_some(default)
    });
    let socket = match (&cli.socket, &config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => {
            config_path_value(c, "control", "socket")?.unwrap_or_else(|| DEFAULT_SOCKET.into())
        }
        (None, None) => DEFAULT_SOCKET.into(),
    };
    if let Command::Watch(args) = &cli.command {
        return run_watch(args, &socket, config.as_deref(), cli.json);
    }
    let (req, timeout) = request(&cli.command)?;
    let resp = match client::request(&socket, &req, timeout) {
        Ok(r) => r,
        Err(ClientError::NotRunning { .. }) if matches!(cli.command, Command::Detach) => {
            return offline_detach(config.as_deref(), cli.json);
        }
        Err(e @ ClientError::NotRunning { .. }) | Err(e @ ClientError::PermissionDenied { .. }) => {
            return Err(Fail::system(e.to_string()))
        }
        Err(e) => return Err(Fail::system(format!("{e:#}"))),
    };
    if !resp.ok {
        let err = resp.error.unwrap_or(ErrorBody {
            kind: ErrorKind::Failed,
            message: "unknown error".into(),
            details: vec![],
        });
        let code = match err.kind {
            ErrorKind::BadInput | ErrorKind::BadRequest => 2,
            ErrorKind::Failed | ErrorKind::Busy => 1,
        };
        return Err(Fail {
            code,
            message: err.message,
            details: err.details,
            kind: err.kind,
        });
    }
    // Done, with a caveat (e.g. not saved to state_dir): still exit 0, the
    // change is in force; the caveat goes to stderr, and into the JSON.
    let mut resp = resp;
    if let Some(w) = &resp.warning {
        let _ = emit(
            &mut io::stderr(),
            &format!("shieldctl: warning: {}\n", Escaped(w)),
        );
        if let Some(obj) = resp.data.as_object_mut() {
            obj.insert("warning".into(), serde_json::Value::String(w.clone()));
        }
    }
    if cli.json {
        return Ok(format!("{}\n", json_text(&resp.data, true)));
    }
    render(&cli.command, resp).map_err(|e| Fail::system(format!("{e:#}")))
}

/// `shieldctl watch`: bad arguments exit 2, everything else 1.
fn run_watch(args: &watch::WatchArgs, socket: &Path, config: Option<&Path>, json: bool) -> Result<String, Fail> {
    watch::check(args).map_err(Fail::usage)?;
    let pin = match (&args.pin_path(), config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => config_path_value(c, "shield", "pin_path")?.unwrap_or_else(|| DEFAULT_PIN_PATH.into()),
        (None, None) => DEFAULT_PIN_PATH.into(),
    };
    watch::run(args, socket, &pin, json).map_err(|e| Fail::system(format!("watch: {e:#}")))?;
    Ok(String::new())
}

/// The request for a command (arguments checked here first, so bad input
/// is exit 2 whether or not a daemon runs) and how long to wait for it.
fn request(cmd: &Command) -> Result<(Request, Duration), Fail> {
    let quick = Duration::from_secs(30);
    let slow = Duration::from_secs(300);
    Ok(match cmd {
        // Not one request: see run_watch.
        Command::Watch(_) => return Err(Fail::usage("watch streams; it has no single request")),
        Command::Ban {
            target,
            duration,
            reason,
            force,
        } => {
            let net = check_cidr(target)?;
            let duration = lasts("--duration", duration.as_deref())?;
            (
                Request::Ban {
                    net,
                    duration,
                    reason: reason.clone(),
                    force: *force,
                },
                quick,
            )
        }
        Command::Unban {
            target: Some(t), ..
        } => (
            Request::Unban {
                net: Some(check_cidr(t)?),
                all: false,
            },
            quick,
        ),
        Command::Unban { target: None, .. } => (
            Request::Unban {
                net: None,
                all: true,
            },
            slow,
        ),
        Command::Banned { target } => (
            Request::Banned {
                net: target.as_deref().map(check_cidr).transpose()?,
            },
            quick,
        ),
        Command::Allow { op, cidr, force } => {
            let (op, net) = list_args("allow", *op, cidr)?;
            let force = *force;
            (Request::Allow { op, net, force }, quick)
        }
        Command::Deny { op, cidr, force } => {
            let (op, net) = list_args("deny", *op, cidr)?;
            let force = *force;
            (Request::Deny { op, net, force }, quick)
        }
        Command::Verified => (Request::Verified, quick),
        Command::Verify { target, ttl, force } => (
            Request::Verify {
                net: check_cidr(target)?,
                ttl: lasts("--ttl", ttl.as_deref())?,
                force: *force,
            },
            quick,
        ),
        Command::Unverify { target } => (
            Request::Unverify {
                net: check_cidr(target)?,
            },
            quick,
        ),
        Command::Refused {
            target,
            since,
            limit,
            ..
        } => (
            Request::Refused {
                net: target.as_deref().map(check_cidr).transpose()?,
                since: since.as_deref().map(since_secs).transpose()?,
                limit: *limit,
            },
            quick,
        ),
        Command::Destination { number } => {
            shield::dest::check_number(number)
                .map_err(|e| Fail::usage(format!("bad number {number:?}: {e}")))?;
            (
                Request::Destination {
                    number: number.clone(),
                },
                quick,
            )
        }
        Command::Stats => (Request::Stats, quick),
        Command::Status => (Request::Status, quick),
        Command::Reload => (Request::Reload, slow),
        Command::Detach => (Request::Detach, slow),
    })
}

/// A `--duration` / `--ttl` value: a duration of at least a second, or
/// `forever`; `None` when not given.
fn lasts(flag: &str, text: Option<&str>) -> Result<Option<Lasts>, Fail> {
    Ok(match text {
        None => None,
        Some("forever" | "permanent" | "0") => Some(Lasts::Forever),
        Some(d) => match parse_duration(d)
            .map_err(|e| Fail::usage(format!("bad {flag} {d:?}: {e}")))?
            .as_secs()
        {
            0 => return Err(Fail::usage(format!("bad {flag} {d:?}: under a second"))),
            s => Some(Lasts::Secs(s)),
        },
    })
}

/// A `--since` value in seconds (at least one).
fn since_secs(text: &str) -> Result<u64, Fail> {
    match parse_duration(text)
        .map_err(|e| Fail::usage(format!("bad --since {text:?}: {e}")))?
        .as_secs()
    {
        0 => Err(Fail::usage(format!("bad --since {text:?}: under a second"))),
        s => Ok(s),
    }
}

fn check_cidr(text: &str) -> Result<Net, Fail> {
    parse_cidr(text)
        .map(Net)
        .map_err(|e| Fail::usage(format!("bad address or CIDR {text:?}: {e}")))
}

fn list_args(list: &str, op: Op, cidr: &Option<String>) -> Result<(ListOp, Option<Net>), Fail> {
    match (op, cidr) {
        (Op::List, None) => Ok((ListOp::List, None)),
        (Op::List, Some(c)) => Err(Fail::usage(format!(
            "{list} list takes no CIDR (got {c:?})"
        ))),
        (Op::Add | Op::Del, None) => Err(Fail::usage(format!("{list} add/del needs a CIDR"))),
        (Op::Add, Some(c)) => Ok((ListOp::Add, Some(check_cidr(c)?))),
        (Op::Del, Some(c)) => Ok((ListOp::Del, Some(check_cidr(c)?))),
    }
}

/// Reads one path-valued key from a config file without validating the
/// rest of it (a broken config must not stop `shieldctl reload` from
/// reporting what is wrong with it). Relative paths are relative to the file.
fn config_path_value(config: &Path, table: &str, key: &str) -> Result<Option<PathBuf>, Fail> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| Fail::usage(format!("--config {}: {e}", config.display())))?;
    let doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Fail::usage(format!("--config {}: not TOML: {e}", config.display())))?;
    let Some(v) = doc.get(table).and_then(|t| t.get(key)) else {
        return Ok(None);
    };
    let s = v.as_str().ok_or_else(|| {
        Fail::usage(format!(
            "--config {}: {table}.{key} is not a string",
            config.display()
        ))
    })?;
    let p = PathBuf::from(s);
    Ok(Some(if p.is_relative() {
        config.parent().unwrap_or(Path::new(".")).join(p)
    } else {
        p
    }))
}

/// `shieldctl detach` with no daemon: remove the pins ourselves (the way
/// out when a daemon cannot start because of the pinned maps).
fn offline_detach(config: Option<&Path>, json: bool) -> Result<String, Fail> {
    let pin = match config {
        Some(c) => {
            config_path_value(c, "shield", "pin_path")?.unwrap_or_else(|| DEFAULT_PIN_PATH.into())
        }
        None => DEFAULT_PIN_PATH.into(),
    };
    let removed =
        shield::kernel::remove_all(&pin).map_err(|e| Fail::system(format!("detach: {e}")))?;
    let reply = DetachReply {
        interfaces: removed.links.clone(),
        pin_path: pin.display().to_string(),
    };
    if json {
        return Ok(format!("{}\n", json_text(&reply, true)));
    }
    if removed.links.is_empty() && removed.other == 0 {
        return Ok(format!(
            "shieldd is not running and nothing is pinned under {}\n",
            pin.display()
        ));
    }
    Ok(format!(
        "shieldd is not running; detached from {} and removed the pins under {}\n",
        list_or(&removed.links, "no interface"),
        Escaped(&pin.display().to_string())
    ))
}

/// `value` as JSON text (pretty or one line) that is safe on a terminal
/// (see [`json_safe`]; serde_json already escapes C0 controls).
fn json_text(value: &impl serde::Serialize, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    // Serialising a `Value` or one of our reply structs cannot fail.
    let text = text.unwrap_or_else(|e| format!("{{\"error\":\"encoding the reply: {e}\"}}"));
    json_safe(&text).into_owned()
}

/// The items, escaped and comma-separated, or `none` if there are none.
fn list_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        return none.into();
    }
    items
        .iter()
        .map(|i| escaped(i))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_verified(v: VerifiedReply) -> String {
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
        .map(|e| vec![e.net.clone(), e.how.clone(), left(e.expires_in_secs)])
        .collect();
    out.push_str(&table(&["SOURCE", "HOW", "TIME LEFT"], rows));
    if v.total > v.entries.len() {
        out.push_str(&format!("({} of {} shown)\n", v.entries.len(), v.total));
    }
    out
}

fn data<T: DeserializeOwned>(resp: Response) -> anyhow::Result<T> {
    serde_json::from_value(resp.data).context("unexpected reply from shieldd")
}

fn render(cmd: &Command, resp: Response) -> anyhow::Result<String> {
    Ok(match cmd {
        Command::Watch(_) => String::new(),
        Command::Ban { .. } => {
            let b: BanInfo = data(resp)?;
            let times = match b.times {
                Some(n) if n > 1 => format!("; banned {n} times"),
                _ => String::new(),
            };
            format!(
                "banned {} for {} ({}){times}\n",
                Escaped(&b.net),
                left(b.expires_in_secs),
                Escaped(&b.reason)
            )
        }
        Command::Unban { .. } => {
            let u: UnbanReply = data(resp)?;
            match u.removed.as_slice() {
                [one] => format!("unbanned {}\n", Escaped(one)),
                many => format!("unbanned {} ban(s)\n", many.len()),
            }
        }
        Command::Banned { target: Some(_) } => render_source(data(resp)?),
        Command::Banned { target: None } => {
            let b: BannedReply = data(resp)?;
            if b.bans.is_empty() {
                return Ok("no bans\n".into());
            }
            let rows = b
                .bans
                .iter()
                .map(|b| {
                    vec![
                        b.net.clone(),
                        b.origin.clone(),
                        left(b.expires_in_secs),
                        b.reason.clone(),
                    ]
                })
                .collect();
            table(&["ADDRESS", "ORIGIN", "TIME LEFT", "REASON"], rows)
        }
        Command::Allow { .. } | Command::Deny { .. } => {
            let l: ListReply = data(resp)?;
            let mut out = l
                .changed
                .map(|c| format!("{}\n", Escaped(&c)))
                .unwrap_or_default();
            if matches!(
                cmd,
                Command::Allow { op: Op::List, .. } | Command::Deny { op: Op::List, .. }
            ) {
                if l.entries.is_empty() {
                    out.push_str(&format!("the {}list is empty\n", Escaped(&l.list)));
                } else {
                    let rows = l
                        .entries
                        .into_iter()
                        .map(|e| vec![e.net, e.source])
                        .collect();
                    out.push_str(&table(&["CIDR", "FROM"], rows));
                }
            }
            out
        }
        Command::Verified => render_verified(data(resp)?),
        Command::Verify { .. } => {
            let v: VerifiedInfo = data(resp)?;
            format!(
                "verified {} for {}\n",
                Escaped(&v.net),
                left(v.expires_in_secs)
            )
        }
        Command::Unverify { .. } => {
            let u: UnverifyReply = data(resp)?;
            match u.removed {
                true => format!("unverified {}\n", Escaped(&u.net)),
                false => format!("{} was not verified\n", Escaped(&u.net)),
            }
        }
        Command::Refused { full, .. } => render_refused(data(resp)?, *full),
        Command::Destination { .. } => render_destination(data(resp)?),
        Command::Stats => {
            let s: StatsReply = data(resp)?;
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
            out.push_str(
                "\nTop sources (rate/scanner/malformed drops in the current escalation window)\n",
            );
            if s.top_sources.is_empty() {
                out.push_str("  none\n");
            } else {
                let rows = s
                    .top_sources
                    .iter()
                    .map(|t| vec![t.source.clone(), t.drops.to_string()])
                    .collect();
                out.push_str(&table(&["SOURCE", "DROPS"], rows));
            }
            if !s.recent_escalations.is_empty() {
                out.push_str("\nRecent escalations\n");
                let rows = s
                    .recent_escalations
                    .iter()
                    .map(|e| vec![e.source.clone(), e.reason.clone(), e.drops.to_string()])
                    .collect();
                out.push_str(&table(&["SOURCE", "REASON", "DROPS"], rows));
            }
            out
        }
        Command::Status => {
            let s: StatusReply = data(resp)?;
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
            if s.interfaces.is_empty() {
                out.push_str("interfaces none\n");
            } else {
                let rows = s
                    .interfaces
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.ifindex.to_string(),
                            i.mode.clone(),
                            i.link_id.to_string(),
                            i.egress.clone().unwrap_or_else(|| "none".into()),
                        ]
                    })
                    .collect();
                out.push('\n');
                out.push_str(&table(&["INTERFACE", "IFINDEX", "MODE", "LINK", "EGRESS"], rows));
            }
            if let Some(c) = &s.crowdsec {
                out.push_str(&crowdsec_status(c));
            }
            if let Some(n) = &s.store_notice {
                out.push_str(&format!("\nstore      {}\n", Escaped(n)));
            }
            out
        }
        Command::Reload => {
            let r: ReloadReply = data(resp)?;
            let mut out = format!("reloaded {}\n", Escaped(&r.config));
            for c in r.changes {
                out.push_str(&format!("  {}\n", Escaped(&c)));
            }
            for w in r.warnings {
                out.push_str(&format!("  warning: {}\n", Escaped(&w)));
            }
            out
        }
        Command::Detach => {
            let d: DetachReply = data(resp)?;
            format!(
                "detached from {}; pins under {} removed; shieldd exited\n",
                list_or(&d.interfaces, "no interface"),
                Escaped(&d.pin_path)
            )
        }
    })
}

/// `banned ADDR`.
fn render_source(s: SourceReply) -> String {
    let mut out = match s.bans.as_slice() {
        [] => format!("{} is not banned\n", Escaped(&s.source)),
        bans => {
            let rows = bans
                .iter()
                .map(|b| {
                    vec![
                        b.ban.net.clone(),
                        b.ban.origin.clone(),
                        left(b.ban.expires_in_secs),
                        b.ban.times.unwrap_or(0).to_string(),
                        b.ban.reason.clone(),
                    ]
                })
                .collect();
            let mut t = table(&["BANNED AS", "ORIGIN", "TIME LEFT", "TIMES", "REASON"], rows);
            for b in bans.iter().filter(|b| !b.detail.is_empty()) {
                t.push_str(&format!("{}: {}\n", Escaped(&b.ban.net), Escaped(&b.detail)));
            }
            t
        }
    };
    out.push_str(&format!(
        "{} was banned {} time(s) within the history kept\n",
        Escaped(&s.source),
        s.times_banned
    ));
    if !s.history.is_empty() {
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
        out.push_str("\nHistory (newest first)\n");
        out.push_str(&table(&["WHEN", "WHAT", "NET", "ORIGIN", "BY", "REASON"], rows));
    }
    out
}

/// `refused`.
fn render_refused(r: RefusedReply, full: bool) -> String {
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

/// `destination NUMBER`.
fn render_destination(d: DestinationReply) -> String {
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

fn left(lasts: Lasts) -> String {
    match lasts {
        Lasts::Forever => "forever".into(),
        Lasts::Secs(0) => "<1s".into(),
        Lasts::Secs(s) => format_duration(Duration::from_secs(s)),
    }
}

fn counter_table(rows: &[shield::control::protocol::CounterRow]) -> String {
    if rows.is_empty() {
        return "  no packets\n".into();
    }
    let rows = rows
        .iter()
        .map(|r| {
            vec![
                r.verdict.clone(),
                r.reason.clone(),
                r.packets.to_string(),
                r.bytes.to_string(),
            ]
        })
        .collect();
    table(&["VERDICT", "REASON", "PACKETS", "BYTES"], rows)
}

/// Left-aligned columns, two spaces apart, numbers right-aligned. Cells
/// are escaped (they come from the daemon), and measured as escaped.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.iter().map(|c| escaped(c).into_owned()).collect())
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| !rows.is_empty() && rows.iter().all(|r| r[i].parse::<u64>().is_ok()))
        .collect();
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let mut s = String::from("  ");
        for (i, c) in cells.into_iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if numeric[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(&c);
            } else {
                s.push_str(&c);
                if i != last {
                    s.push_str(&" ".repeat(pad));
                }
            }
            if i != last {
                s.push_str("  ");
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// The `[crowdsec]` part of `status`.
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
