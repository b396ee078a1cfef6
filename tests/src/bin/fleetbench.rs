//! `fleetbench`: section 7 of BENCHMARKS.md, CrowdSec decisions into the
//! kernel (`tests/src/lab/bench/fleet.rs`). A private LAPI with 100,000
//! decisions and three SBC namespaces: shieldd as a bouncer against
//! Debian's crowdsec-firewall-bouncer (nftables), whether sampled Range
//! and Ip decisions are enforced, CPU per million dropped packets of a
//! banned flood, and ban propagation across the fleet. Rewrites section 7
//! of BENCHMARKS.md (before `## Caveats`) and writes
//! lab/results/fleet.json. Run by `cargo xtask bench -- --only fleet` and
//! by the full `cargo xtask bench`.
//!
//! As root. Ctrl-C stops it; namespaces, daemons and the bouncer are
//! removed on every exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use shield_tests::lab::bench::fleet::{self, FleetOptions, FleetResults};
use shield_tests::lab::bench::fleet_report;
use shield_tests::paths::repo;
use shield_tests::lab::signals;

#[derive(Parser)]
#[command(about = "SIP Shield fleet benchmark: CrowdSec decisions into XDP maps against crowdsec-firewall-bouncer (nftables)")]
struct Args {
    /// Decisions in the LAPI (a quarter each: IPv4 Ip, IPv4 /28, IPv6 Ip, IPv6 /64).
    #[arg(long, default_value_t = 100_000)]
    decisions: usize,
    /// Range decisions probed from inside (half IPv4, half IPv6).
    #[arg(long, default_value_t = 1000)]
    range_probes: usize,
    /// Ip decisions probed.
    #[arg(long, default_value_t = 500)]
    ip_probes: usize,
    /// Packets per probed address.
    #[arg(long, default_value_t = 3)]
    probe_packets: u32,
    /// Banned flood: packets per second, seconds per flood, rounds per bouncer.
    #[arg(long, default_value_t = 200_000)]
    flood_rate: u64,
    #[arg(long, default_value_t = 10.0)]
    flood_seconds: f64,
    #[arg(long, default_value_t = 2)]
    flood_rounds: usize,
    /// Bans made on SBC 0 for the propagation figures (at least 20 count).
    #[arg(long, default_value_t = 30)]
    bans: usize,
    /// update_frequency of both bouncers, seconds.
    #[arg(long, default_value_t = 2)]
    every: u64,
    /// Seed of the samples and the ban moments.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where to write BENCHMARKS.md and lab/results/fleet.json (default: the repository).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not measure: rewrite section 7 from a fleet.json an earlier run wrote.
    #[arg(long, value_name = "FLEET_JSON")]
    report_from: Option<PathBuf>,
}

fn main() -> ExitCode {
    signals::install();
    let result = real_main().map(|()| ExitCode::SUCCESS);
    signals::exit_code(result, "fleetbench", "fleet", "lab-out/fleetbench/")
}

fn real_main() -> Result<()> {
    let a = Args::parse();
    let out = a.out.clone().unwrap_or_else(repo);
    if let Some(json) = &a.report_from {
        let text = std::fs::read_to_string(json).with_context(|| json.display().to_string())?;
        let r: FleetResults = serde_json::from_str(&text).context("fleet.json")?;
        return write_outputs(&out, &r, false);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("run as root: the bench creates network namespaces and loads XDP programs");
    }
    if let Some(line) = shield_tests::lab::sweep::stale().describe() {
        println!("{line}");
    }
    let o = FleetOptions {
        decisions: a.decisions.max(4),
        range_probes: a.range_probes,
        ip_probes: a.ip_probes,
        probe_packets: a.probe_packets.clamp(1, 100),
        flood_rate: a.flood_rate.clamp(1000, 5_000_000),
        flood_secs: a.flood_seconds.clamp(1.0, 60.0),
        flood_rounds: a.flood_rounds.clamp(1, 5),
        bans: a.bans.clamp(1, 200),
        every: Duration::from_secs(a.every.max(1)),
        work_dir: repo().join("lab-out/fleetbench"),
        seed: a.seed,
    };
    let _ = std::fs::remove_dir_all(&o.work_dir);
    std::fs::create_dir_all(&o.work_dir)?;
    let t = std::time::Instant::now();
    let mut say = |s: &str| println!("[{:6.1} s] {s}", t.elapsed().as_secs_f64());
    let mut r = fleet::run(&o, &mut say)?;
    r.command = std::env::args().collect::<Vec<_>>().join(" ");
    write_outputs(&out, &r, true)
}

fn write_outputs(out: &std::path::Path, r: &FleetResults, json: bool) -> Result<()> {
    let results = out.join("lab/results");
    std::fs::create_dir_all(&results)?;
    if json {
        std::fs::write(results.join("fleet.json"), serde_json::to_string_pretty(r)?)?;
    }
    let section = fleet_report::markdown(r);
    let doc_path = out.join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap_or_else(|_| "# Benchmarks\n".into());
    std::fs::write(&doc_path, fleet_report::splice(&doc, &section)).with_context(|| doc_path.display().to_string())?;
    println!("\n{section}");
    println!("Wrote section 7 of {}.", doc_path.display());
    Ok(())
}
