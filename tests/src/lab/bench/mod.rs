//! `cargo xtask bench`, end to end (the `labbench` binary): the same lab,
//! the same legitimate traffic and the same floods against four defences,
//! one run, side by side; a million bans loaded by SIP Shield and by
//! nftables; log-line-to-drop latency of SIP Shield's jail and fail2ban.
//! Writes BENCHMARKS.md, its figure and the raw numbers.

pub mod auth;
pub mod auth_capture;
pub mod auth_cpu;
pub mod auth_report;
pub mod bans;
pub mod budget;
pub mod defence;
pub mod fleet;
pub mod fleet_flood;
pub mod fleet_probe;
pub mod fleet_report;
pub mod fleet_setup;
pub mod fleet_spread;
pub mod flood_runs;
pub mod latency;
pub mod plot;
pub mod report;
pub mod spoof;
pub mod spoof_report;
pub mod store;
pub mod toll;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use self::defence::Defence;
use self::flood_runs::{run_point, FloodRate, Point, PointPlan};
use super::cpu::HostCpu;
use super::flood::{Engine, FloodMethod, FloodReport};
use super::legit::LegitLoad;
use super::progress::{thousands, Progress};
use super::signals;
use super::topology::{Topology, FLOOD_SOURCES, SUBSCRIBERS};

/// Rate of the socket-buffer comparison (what the AF_PACKET sender keeps up
/// with on this kind of machine).
pub const SKB_RATE: u64 = 100_000;

/// Progress steps of a run with these options.
pub fn steps(opts: &BenchOptions) -> usize {
    let spoof = spoof::steps(opts.spoof_rates.len());
    match opts.only {
        Some(Only::Spoof) => 1 + spoof,
        Some(Only::Skb) => 1 + SKB_STEPS,
        None => (opts.rate_divisors.len() + 2) * Defence::ALL.len() + 2 + SKB_STEPS + 2 + spoof,
    }
}

/// One section run on its own, merged into the last full run's results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// Section 6, the spoofed-source flood.
    Spoof,
    /// Section 1b, the flood as socket buffers, per hook.
    Skb,
}

/// Section 1b's set-ups, in the order they run (each round runs them all).
pub const SKB_DEFENCES: [Defence; 4] = [
    Defence::Nftables,
    Defence::Shield,
    Defence::ShieldGeneric,
    Defence::ShieldTc,
];
/// Rounds of section 1b: each set-up runs this often, interleaved, so
/// that a busy spell of the machine does not land on one set-up only.
pub const SKB_ROUNDS: usize = 3;
const SKB_STEPS: usize = SKB_DEFENCES.len() * SKB_ROUNDS;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Length of each flood point.
    pub window: Duration,
    /// Paced rates as divisors of the calibrated maximum (besides "max"
    /// itself and "no flood").
    pub rate_divisors: Vec<u64>,
    pub bans: u32,
    pub latency_trials: usize,
    /// Logs and per-run files.
    pub work_dir: PathBuf,
    /// How the flood is sent.
    pub engine: Engine,
    /// Paced rates of the spoofed-source section (packets/s), besides
    /// "max" and "no flood".
    pub spoof_rates: Vec<u64>,
    /// Run the spoofed-source section only ([`run_spoof_only`]).
    pub only: Option<Only>,
}

/// The machine the numbers come from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub versions: Vec<(String, String)>,
    /// Busy CPU (% of the whole machine) in the 3 s before the bench
    /// started, from other processes.
    pub busy_before_pct: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub date: String,
    pub minutes: f64,
    pub machine: Machine,
    pub window_secs: f64,
    pub legit: LegitPlan,
    pub flood_sources: usize,
    pub flood_engine: Engine,
    pub flood_methods: Vec<FloodMethod>,
    pub flood_cpus: Vec<usize>,
    pub calibration: FloodReport,
    pub points: Vec<Point>,
    /// The same flood sent as socket buffers (`flood --engine packet`) at
    /// `skb_rate`, against nftables and SIP Shield.
    #[serde(default)]
    pub skb_rate: u64,
    #[serde(default)]
    pub skb_points: Vec<Point>,
    /// When section 1b was measured on its own (`labbench --only skb`).
    #[serde(default)]
    pub skb_separate: Option<String>,
    pub bans: bans::BanLoad,
    pub latency: latency::Latency,
    /// Section 6, the spoofed-source flood (`None` in runs from before it).
    #[serde(default)]
    pub spoof: Option<spoof::SpoofResults>,
    /// Sections 4 and 5 as the data-path and ban-store benchmarks printed
    /// them in the same `cargo xtask bench` run (kept here so that a
    /// report rewritten from bench.json still has them).
    #[serde(default)]
    pub datapath: Option<String>,
    #[serde(default)]
    pub banstore: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct LegitPlan {
    pub subscribers: usize,
    pub registrations_per_subscriber: f64,
    pub calls_per_second: f64,
}

/// Runs everything; `p` shows progress.
pub fn run(opts: &BenchOptions, p: &mut Progress) -> Result<Results> {
    let started = Instant::now();
    let machine = machine();
    let cpus = machine.cpus.max(1);
    // The sender gets the last CPU to itself as far as pinning goes;
    // everything else is left to the scheduler.
    let flood_cpus = vec![cpus - 1];
    let mut plan = point_plan(opts, &flood_cpus);

    p.step("Lab: attacker, carrier and SBC namespaces");
    let topo = Topology::new();
    topo.warm_neighbours();
    plan.engine = decide_engine(&topo, opts.engine);
    p.done(&format!("ready; flood engine {}", plan.engine.as_str()));

    p.step("Calibration: the highest rate this machine sends (SIP Shield dropping, 4 s)");
    let calib_dir = opts.work_dir.join("calibration");
    let calibration = {
        let short = PointPlan {
            window: Duration::from_secs(4),
            ..plan.clone()
        };
        run_point(&topo, &calib_dir, Defence::Shield, FloodRate::Max, &short)?.flood
    };
    let max = calibration.rate.max(1000.0) as u64;
    p.done(&format!("{} packets/s", thousands(max)));

    let points = flood_points(opts, &topo, &plan, max, p)?;
    let (skb_rate, skb_points) = skb_points(opts, &topo, &plan, max, p)?;

    let spoof = spoof::run(&topo, &opts.work_dir.join("spoof"), &plan, &opts.spoof_rates, p)?;

    p.step(&format!(
        "Loading {} bans: SIP Shield vs nftables",
        thousands(u64::from(opts.bans))
    ));
    let bans = bans::run(&topo, &opts.work_dir.join("bans"), opts.bans, &mut |s| {
        p.status(s)
    })?;
    p.done(&format!(
        "SIP Shield batch {:.2} s, shieldd restart {:.2} s; nft -f {:.2} s",
        bans.shield_batch_secs, bans.shieldd_ready_with_bans_secs, bans.nft_secs
    ));

    p.step(&format!(
        "Log line to drop: SIP Shield jail vs fail2ban, {} trials each",
        opts.latency_trials
    ));
    let latency = latency::run(
        &topo,
        &opts.work_dir.join("latency"),
        opts.latency_trials,
        &mut |s| p.status(s),
    )?;
    p.done(&format!(
        "median: SIP Shield {:.1} ms, fail2ban {:.1} ms ({})",
        report::median(&latency.shield_ms),
        report::median(&latency.fail2ban_ms),
        latency.fail2ban_backend
    ));

    Ok(Results {
        date: date_now(),
        minutes: started.elapsed().as_secs_f64() / 60.0,
        machine,
        window_secs: opts.window.as_secs_f64(),
        legit: LegitPlan {
            subscribers: plan.legit.subscribers,
            registrations_per_subscriber: plan.legit.registrations_per_subscriber,
            calls_per_second: plan.legit.calls_per_second,
        },
        flood_sources: plan.flood_sources,
        flood_engine: plan.engine,
        flood_methods: plan.flood_methods,
        flood_cpus,
        calibration,
        points,
        skb_rate,
        skb_points,
        skb_separate: None,
        bans,
        latency,
        spoof: Some(spoof),
        datapath: None,
        banstore: None,
    })
}

/// Section 1: every defence at every rate (no flood, the paced fractions
/// of the calibrated `max`, then as fast as it goes).
fn flood_points(
    opts: &BenchOptions,
    topo: &Topology,
    plan: &PointPlan,
    max: u64,
    p: &mut Progress,
) -> Result<Vec<Point>> {
    let mut rates = vec![FloodRate::Off];
    let mut divisors = opts.rate_divisors.clone();
    divisors.sort_unstable_by(|a, b| b.cmp(a));
    rates.extend(divisors.iter().map(|d| FloodRate::Pps(max / d.max(&1))));
    rates.push(FloodRate::Max);

    let mut points = Vec::new();
    for (ri, rate) in rates.iter().enumerate() {
        for d in Defence::ALL {
            signals::check()?;
            p.step(&format!(
                "Flood {} ({}/{}), {}",
                rate.label(),
                ri + 1,
                rates.len(),
                d.label()
            ));
            let dir = opts.work_dir.join(format!("{}-{}", d.short(), ri));
            let pt = run_point(topo, &dir, d, *rate, plan)?;
            p.done(&format!(
                "sent {} ({} pps); legit {:.1} %; Kamailio {:.0} %, softirq {:.0} % of a CPU; dropped by defence {}",
                thousands(pt.flood.sent),
                thousands(pt.flood.rate as u64),
                100.0 * pt.legit_success(),
                100.0 * pt.kamailio_cpu_secs / pt.window_secs,
                100.0 * pt.softirq_secs / pt.window_secs,
                thousands(pt.defence_drops)
            ));
            points.push(pt);
        }
    }
    Ok(points)
}

/// Section 1b: nftables and SIP Shield against a flood of socket buffers.
pub(crate) fn skb_points(
    opts: &BenchOptions,
    topo: &Topology,
    plan: &PointPlan,
    max: u64,
    p: &mut Progress,
) -> Result<(u64, Vec<Point>)> {
    // When the frames are socket buffers from the start (as from a sender on
    // the same host, or a driver without XDP), XDP saves less.
    let skb_rate = SKB_RATE.min(max);
    let skb_plan = PointPlan {
        engine: Engine::Packet,
        ..plan.clone()
    };
    let mut skb_points = Vec::new();
    for (round, d) in (1..=SKB_ROUNDS).flat_map(|r| SKB_DEFENCES.map(|d| (r, d))) {
        signals::check()?;
        p.step(&format!(
            "Flood as socket buffers (AF_PACKET sender), {} packets/s, {} (round {round}/{SKB_ROUNDS})",
            thousands(skb_rate),
            d.label()
        ));
        let dir = opts.work_dir.join(format!("{}-skb-{round}", d.short()));
        let pt = run_point(topo, &dir, d, FloodRate::Pps(skb_rate), &skb_plan)?;
        p.done(&format!(
            "sent {} ({} pps); softirq {:.0} % of a CPU; dropped by defence {}",
            thousands(pt.flood.sent),
            thousands(pt.flood.rate as u64),
            100.0 * pt.softirq_secs / pt.window_secs,
            thousands(pt.defence_drops)
        ));
        skb_points.push(pt);
    }
    Ok((skb_rate, skb_points))
}

/// `engine` with `auto` decided once for the whole run, from the attacker
/// (every flood of it then uses, and the report names, the same one).
fn decide_engine(topo: &Topology, engine: Engine) -> Engine {
    let (engine, why) = engine.resolve(&topo.attacker, crate::lab::topology::HOST_IF);
    if let Some(why) = why {
        eprintln!("{why}");
    }
    engine
}

/// How every flood point of a run goes: the legitimate load, the flood's
/// engine, methods, sources and CPUs.
fn point_plan(opts: &BenchOptions, flood_cpus: &[usize]) -> PointPlan {
    PointPlan {
        window: opts.window,
        legit: LegitLoad {
            subscribers: SUBSCRIBERS,
            registrations_per_subscriber: 1.0,
            calls_per_second: 4.0,
            duration: opts.window,
        },
        engine: opts.engine,
        flood_methods: vec![FloodMethod::Invite, FloodMethod::Register],
        flood_sources: FLOOD_SOURCES,
        flood_cpus: flood_cpus.to_vec(),
        kamailio_cpus: Vec::new(),
    }
}

/// Only the spoofed-source section (`labbench --only spoof`), put into an
/// earlier run's results (every other section stays as that run measured
/// it).
pub fn run_spoof_only(
    opts: &BenchOptions,
    previous: Results,
    p: &mut Progress,
) -> Result<Results> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut plan = point_plan(opts, &[cpus - 1]);
    p.step("Lab: attacker, carrier and SBC namespaces");
    let topo = Topology::new();
    topo.warm_neighbours();
    plan.engine = decide_engine(&topo, opts.engine);
    p.done(&format!("ready; flood engine {}", plan.engine.as_str()));
    let mut s = spoof::run(&topo, &opts.work_dir.join("spoof"), &plan, &opts.spoof_rates, p)?;
    s.separate = true;
    Ok(Results {
        spoof: Some(s),
        ..previous
    })
}

/// Section 1b alone (`labbench --only skb`), at the rate the last full
/// run calibrated; everything else is `previous`.
pub fn run_skb_only(opts: &BenchOptions, previous: Results, p: &mut Progress) -> Result<Results> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = point_plan(opts, &[cpus - 1]);
    p.step("Lab: attacker, carrier and SBC namespaces");
    let topo = Topology::new();
    topo.warm_neighbours();
    p.done("ready");
    let max = previous.calibration.rate.max(1000.0) as u64;
    let (skb_rate, skb_points) = skb_points(opts, &topo, &plan, max, p)?;
    Ok(Results {
        skb_rate,
        skb_points,
        skb_separate: Some(date_now()),
        ..previous
    })
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_else(|_| "not found".into())
}

/// Describes the machine, and how busy it was before we started.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let before = HostCpu::read();
    std::thread::sleep(Duration::from_secs(3));
    let after = HostCpu::read();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let secs = after
        .at
        .zip(before.at)
        .map_or(3.0, |(a, b)| a.duration_since(b).as_secs_f64());
    Machine {
        cpu_model,
        cpus,
        kernel: first_line("uname", &["-r"]),
        memory_gib: mem_kib / 1024.0 / 1024.0,
        versions: vec![
            ("kamailio".into(), first_line("kamailio", &["-v"])),
            ("sipp".into(), first_line("sipp", &["-v"])),
            ("nftables".into(), first_line("nft", &["--version"])),
            (
                "fail2ban".into(),
                first_line("fail2ban-server", &["--version"]),
            ),
            (
                "sipvicious".into(),
                first_line("svmap", &["--version"]),
            ),
        ],
        busy_before_pct: 100.0 * before.busy_secs(&after) / (secs * cpus as f64),
    }
}

pub(crate) fn date_now() -> String {
    first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// `doc` with `section` in place of the section starting with `heading`,
/// or before its `## Caveats`, or at its end. The sections the benchmark
/// binaries after `labbench` write (7 fleet, 8 toll fraud, 9 password
/// guesser) go in this way.
pub fn splice_section(doc: &str, heading: &str, section: &str) -> String {
    let section = format!("{}\n\n", section.trim_end());
    if let Some(start) = doc.find(heading) {
        let rest = &doc[start + heading.len()..];
        let end = rest.find("\n## ").map_or(doc.len(), |e| start + heading.len() + e + 1);
        return format!("{}{section}{}", &doc[..start], &doc[end..]);
    }
    if let Some(at) = doc.find("\n## Caveats") {
        return format!("{}\n{section}{}", doc[..at].trim_end_matches('\n').to_string() + "\n", &doc[at + 1..]);
    }
    format!("{}\n\n{section}", doc.trim_end())
}

/// `doc` with every `## ` section of `old` whose heading it lacks spliced
/// in: what other binaries or people wrote (the calls and auth datapath
/// notes, say) survives `labbench` rewriting the rest.
pub fn carry_over(doc: &str, old: &str) -> String {
    let mut doc = doc.to_string();
    for heading in old.lines().filter(|l| l.starts_with("## ")) {
        if doc.lines().any(|l| l == heading) {
            continue;
        }
        if let Some(section) = existing_section(old, heading) {
            doc = splice_section(&doc, heading, &section);
        }
    }
    doc
}

/// The section starting with `heading` as it stands in `doc`, if any (to
/// carry it over when `labbench` rewrites the rest).
pub fn existing_section(doc: &str, heading: &str) -> Option<String> {
    let start = doc.find(heading)?;
    let rest = &doc[start + heading.len()..];
    let end = rest.find("\n## ").map_or(doc.len(), |e| start + heading.len() + e + 1);
    Some(doc[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::carry_over;

    #[test]
    fn sections_this_run_did_not_write_are_carried_over() {
        let old = "# B\n\n## 1. A\n\nold a\n\n## Caveats\n\n- c\n\n## Calls\n\nkept\n";
        let new = "# B\n\n## 1. A\n\nnew a\n\n## Caveats\n\n- c\n";
        let doc = carry_over(new, old);
        assert!(doc.contains("new a") && !doc.contains("old a"), "{doc}");
        assert!(doc.contains("## Calls\n\nkept"), "{doc}");
        assert!(doc.find("## Calls") < doc.find("## Caveats"), "{doc}");
        assert_eq!(doc.matches("## Caveats").count(), 1, "{doc}");
    }
}
