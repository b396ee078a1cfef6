//! `shieldd`: the SIP Shield daemon (SPEC §3). Runs in the foreground under
//! a supervisor; `--check` validates a configuration and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use shield::config::{Config, DEFAULT_CONFIG_PATH};
use shield::daemon::{self, Exit};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "shieldd",
    version,
    about = "SIP Shield daemon: XDP SIP flood shield"
)]
struct Args {
    /// Configuration file.
    #[arg(long, short = 'c', value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Validate the configuration, print every problem, and exit
    /// (0: valid, 1: not).
    #[arg(long)]
    check: bool,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    // Build step (`cargo xtask docs`): man pages and completions.
    if let Some(code) = shield::docs::main_hook(Args::command) {
        return code;
    }
    let args = Args::parse();
    if args.check {
        return check(&args.config);
    }
    init_logging(args.log_json);
    // One line, before anything else can fail less clearly (SPEC §3).
    if let Some(set) = shield::caps::effective() {
        let missing = shield::caps::missing_for_daemon(set);
        if !missing.0.is_empty() {
            eprintln!("shieldd: needs root or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (missing: {missing})");
            return ExitCode::from(1);
        }
    }
    match run(&args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            // The outermost message already carries the detail (the error
            // types put their cause in their text).
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Exit> {
    // Absolute, so reloads and messages name the file whatever the cwd.
    let path =
        std::path::absolute(&args.config).with_context(|| format!("{}", args.config.display()))?;
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("{e}");
            }
            anyhow::bail!(
                "{} has {} problem(s); nothing started",
                path.display(),
                errors.len()
            );
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("shieldd")
        .build()
        .context("starting the async runtime")?;
    let exit = rt.block_on(daemon::run(config))?;
    // Jail followers are blocking threads; do not wait for them.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(exit)
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            // The file is valid; now what the host must offer it.
            let problems = shield::preflight::check(&c);
            for p in &problems {
                println!("{}: {}: {}", path.display(), p.key, p.message);
            }
            if !problems.is_empty() {
                println!("{}: {} problem(s)", path.display(), problems.len());
                return ExitCode::from(1);
            }
            println!(
                "{}: OK ({} interface(s), {} jail(s), enforce = {}); {}",
                path.display(),
                c.shield.interfaces.len(),
                c.jails.len(),
                c.shield.enforce,
                shield::preflight::NEEDS_ROOT
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors.iter() {
                println!("{e}");
            }
            println!("{}: {} problem(s)", path.display(), errors.len());
            ExitCode::from(1)
        }
    }
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("SHIELD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if json {
        fmt.json().flatten_event(true).init();
    } else {
        fmt.init();
    }
}
