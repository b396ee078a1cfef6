//! `authbench`: section 9 of BENCHMARKS.md, a password guesser (issue 20):
//! SIPVicious svcrack against Kamailio behind SIP Shield's `[auth]`, its
//! jail and fail2ban + nftables, several runs each
//! (`tests/src/lab/bench/auth.rs`). Rewrites section 9 of BENCHMARKS.md
//! and writes lab/results/auth.json. Run by the full `cargo xtask bench`,
//! alone by `cargo xtask bench -- --only auth`.
//!
//! As root. Namespaces and daemons are removed on every exit.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use shield_tests::lab::bench::{auth, auth_report, splice_section};
use shield_tests::paths::repo;
use shield_tests::lab::progress::Progress;
use shield_tests::lab::signals;

#[derive(Parser)]
#[command(about = "SIP Shield benchmark, section 9: svcrack against [auth], the jail and fail2ban")]
struct Args {
    /// Runs per defence.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Words in svcrack's dictionary.
    #[arg(long, default_value_t = 400)]
    words: usize,
    /// Do not measure: rewrite section 9 from an auth.json an earlier run
    /// wrote.
    #[arg(long, value_name = "AUTH_JSON")]
    report_from: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    signals::install();
    let result = run(Args::parse()).map(|()| ExitCode::SUCCESS);
    signals::exit_code(result, "authbench", "lab", "lab-out/auth/")
}

fn run(args: Args) -> Result<()> {
    if let Some(path) = &args.report_from {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let r: auth::AuthResults = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
        return write_section(&r);
    }
    shield_tests::kernel::require_root();
    let out = repo().join("lab-out/auth");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let opts = auth::AuthOptions { runs: args.runs, words: args.words, ..auth::AuthOptions::default() };
    let mut p = Progress::new(1);
    p.step(&format!("svcrack against [auth], the jail and fail2ban, {} runs each", opts.runs));
    let r = auth::run(&opts, &out, &mut |s| p.status(s))?;
    p.done(&format!("{} runs in {:.1} min", r.runs.len(), r.minutes));
    let results = repo().join("lab/results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join("auth.json"), serde_json::to_string_pretty(&r)?)?;
    write_section(&r)
}

/// Section 9 from `r`, printed and spliced into BENCHMARKS.md.
fn write_section(r: &auth::AuthResults) -> Result<()> {
    let section = auth_report::markdown(r);
    print!("{section}");
    let path = repo().join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, splice_section(&doc, auth::HEADING, &section)).with_context(|| path.display().to_string())?;
    Ok(())
}
