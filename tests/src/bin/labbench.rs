//! `labbench`: the end-to-end benchmark of `cargo xtask bench` (which runs
//! the data-path micro-benchmark first). SIP Shield against no protection,
//! Kamailio's pike and an equivalent nftables ruleset, in the lab of the
//! demo; a million bans; log-line-to-drop against fail2ban. Writes
//! BENCHMARKS.md, lab/results/flood.svg and lab/results/bench.json.
//!
//! As root. `--quick` runs a shorter version (for trying it out; its
//! numbers are not the ones to publish). `--only spoof` runs only the
//! spoofed-source section and puts it into the results of the last full
//! run (`lab/results/bench.json` under `--out`), rewriting BENCHMARKS.md
//! from them; the report says which sections come from which run.
//! Ctrl-C stops it and removes the lab.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use shield_tests::lab::bench::{self, fleet_report, plot, report, BenchOptions, Only};
use shield_tests::lab::flood::Engine;
use shield_tests::paths::repo;
use shield_tests::lab::progress::Progress;
use shield_tests::lab::signals;

#[derive(Parser)]
#[command(
    about = "SIP Shield lab benchmark: flood, bans and jail latency against nftables, pike and fail2ban"
)]
struct Args {
    /// Seconds per flood measurement.
    #[arg(long, default_value_t = 10)]
    window: u64,
    /// Paced flood rates, as divisors of the highest rate (comma list).
    #[arg(long, default_value = "64,16,4")]
    divisors: String,
    /// Bans to load.
    #[arg(long, default_value_t = 1_000_000)]
    bans: u32,
    /// Trials per jail in the latency comparison.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// A short run: 5 s windows, two paced rates, 200,000 bans, 5 trials.
    #[arg(long)]
    quick: bool,
    /// Flood engine: auto (xdp where the kernel allows live frames, else
    /// redirect), xdp (in-kernel generator), redirect (AF_PACKET into an
    /// XDP hop: frames arrive as XDP frames, as from a NIC) or packet
    /// (AF_PACKET + sendmmsg, frames arrive as socket buffers).
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Paced rates of the spoofed-source section, packets/s (comma list).
    #[arg(long, default_value = "50000,200000")]
    spoof_rates: String,
    /// Run one section only, merged into the results of the last full
    /// run: `spoof` (section 6, the spoofed-source flood) or `skb`
    /// (section 1b, the flood as socket buffers, per hook).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// The data-path benchmark's output to include (xtask writes it).
    #[arg(long)]
    datapath: Option<PathBuf>,
    /// The ban-store benchmark's table to include (xtask writes it).
    #[arg(long)]
    banstore: Option<PathBuf>,
    /// Where to write BENCHMARKS.md and lab/results/ (default: the repository).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not measure: rewrite BENCHMARKS.md and the figure from a
    /// bench.json an earlier run wrote.
    #[arg(long, value_name = "BENCH_JSON")]
    report_from: Option<PathBuf>,
}

fn main() -> ExitCode {
    signals::install();
    let result = real_main().map(|()| ExitCode::SUCCESS);
    signals::exit_code(result, "labbench", "lab", "lab-out/bench/")
}

fn real_main() -> Result<()> {
    let a = Args::parse();
    if let Some(json) = &a.report_from {
        let text = std::fs::read_to_string(json).with_context(|| json.display().to_string())?;
        let results: bench::Results = serde_json::from_str(&text).context("bench.json")?;
        let out = a.out.clone().unwrap_or_else(repo);
        return write_outputs(
            &out,
            &results,
            a.datapath.as_deref(),
            a.banstore.as_deref(),
            false,
        );
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("run as root: the lab creates network namespaces and loads XDP programs");
    }
    if let Some(line) = shield_tests::lab::sweep::stale().describe() {
        println!("{line}");
    }
    let opts = options(&a)?;
    let _ = std::fs::remove_dir_all(&opts.work_dir);
    std::fs::create_dir_all(&opts.work_dir)?;
    let out = a.out.clone().unwrap_or_else(repo);
    let spoof_points = (opts.spoof_rates.len() + 2) * bench::defence::Defence::SPOOF.len();
    let mut p = Progress::new(bench::steps(&opts));
    let results = match opts.only {
        Some(only) => {
            // Everything else comes from the last full run.
            let previous = last_full_run(&out)?;
            let (what, n) = match only {
                Only::Spoof => ("spoofed-source section (6)", spoof_points),
                Only::Skb => ("socket-buffer section (1b)", bench::SKB_DEFENCES.len() * bench::SKB_ROUNDS),
            };
            println!(
                "SIP Shield lab benchmark, {what} only: {n} measurements of {} s; \
                 the other sections stay as measured on {}.\n",
                opts.window.as_secs(),
                previous.date
            );
            match only {
                Only::Spoof => {
                    let mut r = bench::run_spoof_only(&opts, previous, &mut p)?;
                    if let Some(s) = r.spoof.as_mut() {
                        s.command = std::env::args().collect::<Vec<_>>().join(" ");
                    }
                    r
                }
                Only::Skb => bench::run_skb_only(&opts, previous, &mut p)?,
            }
        }
        None => {
            let points = (opts.rate_divisors.len() + 2) * 4 + 2 + spoof_points;
            println!(
                "SIP Shield lab benchmark: {points} flood measurements of {} s, {} bans, {} latency trials per jail.\n",
                opts.window.as_secs(),
                opts.bans,
                opts.latency_trials
            );
            bench::run(&opts, &mut p)?
        }
    };
    drop(p);
    write_outputs(
        &out,
        &results,
        a.datapath.as_deref(),
        a.banstore.as_deref(),
        true,
    )
}

/// The results of the last full run, which `--only` merges into.
fn last_full_run(out: &std::path::Path) -> Result<bench::Results> {
    let json = out.join("lab/results/bench.json");
    let text = std::fs::read_to_string(&json).with_context(|| {
        format!(
            "{} (--only merges into a full run's results)",
            json.display()
        )
    })?;
    serde_json::from_str(&text).context("bench.json")
}

/// The run's options from the command line (`--quick` shortens them).
fn options(a: &Args) -> Result<BenchOptions> {
    let mut opts = BenchOptions {
        window: Duration::from_secs(a.window.max(2)),
        rate_divisors: a
            .divisors
            .split(',')
            .map(|d| d.trim().parse())
            .collect::<Result<_, _>>()
            .context("--divisors")?,
        bans: a.bans.max(1),
        latency_trials: a.trials.clamp(1, 19),
        work_dir: repo().join("lab-out/bench"),
        engine: Engine::parse(&a.engine)?,
        spoof_rates: a
            .spoof_rates
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .map(|r| r.trim().parse())
            .collect::<Result<_, _>>()
            .context("--spoof-rates")?,
        only: a.only,
    };
    if a.quick {
        opts.window = Duration::from_secs(5);
        opts.rate_divisors = vec![16, 4];
        opts.bans = 200_000;
        opts.latency_trials = 5;
    }
    Ok(opts)
}

/// BENCHMARKS.md, the figure and (for a new run) bench.json under `out`.
fn write_outputs(
    out: &std::path::Path,
    results: &bench::Results,
    datapath: Option<&std::path::Path>,
    banstore: Option<&std::path::Path>,
    json: bool,
) -> Result<()> {
    let results_dir = out.join("lab/results");
    std::fs::create_dir_all(&results_dir)?;
    // Sections 4 and 5: this run's files, else what the results kept.
    let mut results = results.clone();
    let read = |p: Option<&std::path::Path>| p.and_then(|p| std::fs::read_to_string(p).ok());
    if let Some(t) = read(datapath) {
        results.datapath = Some(t);
    }
    if let Some(t) = read(banstore) {
        results.banstore = Some(t);
    }
    let results = &results;
    if json {
        std::fs::write(
            results_dir.join("bench.json"),
            serde_json::to_string_pretty(results)?,
        )?;
    }
    plot::draw(&results.points, &results_dir.join("flood.svg"))?;
    // Section 7 comes from fleetbench: carry over what stands there.
    let mut doc = report::markdown(
        results,
        results.datapath.as_deref(),
        results.banstore.as_deref(),
    );
    let old = std::fs::read_to_string(out.join("BENCHMARKS.md")).unwrap_or_default();
    if let Some(fleet) = fleet_report::existing(&old) {
        doc = fleet_report::splice(&doc, &fleet);
    }
    // Sections 8 and 9 come from tollbench and authbench.
    for heading in [shield_tests::lab::bench::toll::HEADING, shield_tests::lab::bench::auth::HEADING] {
        if let Some(section) = shield_tests::lab::bench::existing_section(&old, heading) {
            doc = shield_tests::lab::bench::splice_section(&doc, heading, &section);
        }
    }
    // And every other section this run did not write.
    let doc = shield_tests::lab::bench::carry_over(&doc, &old);
    std::fs::write(out.join("BENCHMARKS.md"), doc)?;
    println!("\nHeadlines:");
    for h in report::headlines(results) {
        println!("  - {h}");
    }
    println!(
        "\nWrote {} and {}.",
        out.join("BENCHMARKS.md").display(),
        results_dir.join("flood.svg").display()
    );
    if json {
        println!("Raw numbers: {}.", results_dir.join("bench.json").display());
    }
    Ok(())
}
