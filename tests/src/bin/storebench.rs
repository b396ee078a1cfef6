//! `storebench`: the ban store's figures (part of `cargo xtask bench`):
//! shieldd with a million bans on record, ban latency and throughput over
//! the control socket beside `status` on the same daemon, start and
//! restart times. As root; the lab is removed on exit.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use shield_tests::lab::bench::store;
use shield_tests::paths::repo;
use shield_tests::lab::Topology;

#[derive(Parser)]
#[command(about = "SIP Shield ban-store benchmark: ban latency and throughput with a million bans on record")]
struct Args {
    /// Bans on record.
    #[arg(long, default_value_t = 1_000_000)]
    bans: u32,
    /// Also write the table to this file (`cargo xtask bench` puts it in
    /// BENCHMARKS.md).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Only the start-up figures (empty store, fresh maps, adopting), then
    /// print them: for comparing builds side by side.
    #[arg(long)]
    starts_only: bool,
    /// Fresh and adopting starts measured, alternately (the figures
    /// printed are their medians).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storebench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let a = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("run as root: the bench creates a network namespace and loads XDP programs");
    }
    if let Some(line) = shield_tests::lab::sweep::stale().describe() {
        println!("{line}");
    }
    let topo = Topology::new();
    let dir = repo().join("lab-out/banstore");
    let r = store::run(&topo.sbc, &dir, a.bans.max(1), a.starts_only, a.rounds, &mut |s| {
        eprintln!("storebench: {s}")
    })?;
    if a.starts_only {
        print!("Start with {} bans, from spawning shieldd until its control socket answers `status`:\n{}", r.count, store::starts(&r));
        return Ok(());
    }
    let table = store::table(&r);
    print!("{table}");
    if let Some(out) = &a.out {
        std::fs::write(out, &table)?;
    }
    std::fs::write(dir.join("banstore.json"), serde_json::to_string_pretty(&r)?)?;
    Ok(())
}
