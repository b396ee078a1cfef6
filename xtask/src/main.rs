//! Project tasks: `cargo xtask test | bench | demo`.
//!
//! Run `scripts/setup.sh` first (or `make setup`): it installs the pinned
//! toolchain, bpf-linker and the packages the tests use.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "SIP Shield project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Every test: unit tests, the XDP program in the real kernel, traffic
    /// through network namespaces, the daemon and the real peers. As root.
    Test {
        /// Extra arguments for the test binaries (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The benchmarks, printed as tables (ratios against baselines).
    Bench,
    /// The lab: a namespace network with an SBC behind the shield, real
    /// traffic, a live report.
    Demo,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: the tests load XDP programs and create network namespaces");
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::Test { args } => {
            require_root()?;
            let mut a = vec!["test", "--workspace", "--exclude", "shield-ebpf", "--release", "--no-fail-fast"];
            if !args.is_empty() {
                a.push("--");
                a.extend(args.iter().map(String::as_str));
            }
            cargo(&a)
        }
        Task::Bench => {
            require_root()?;
            cargo(&["bench", "-p", "shield-tests", "--bench", "datapath"])
        }
        Task::Demo => {
            require_root()?;
            cargo(&["run", "--release", "-p", "shield-tests", "--bin", "demo"])
        }
    }
}
