//! Section 8 of BENCHMARKS.md (`tollbench`): toll fraud (SPEC §11). The
//! shield's 403 timed at the caller, and a flood of premium-rate INVITEs
//! refused by SIP Shield's destination policy in XDP against the same
//! flood refused by Kamailio itself (the dialled number matched in its
//! script, 403; secfilter's `secf_check_dst` cannot be given `$rU` in
//! Kamailio 5.6, see lab/kamailio/sbc.cfg), one run, the CPU each spends
//! per million refusals.

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::lab::cpu::{process_ticks, ticks_per_second, HostCpu};
use crate::lab::flood::{Engine, FloodMethod, FloodOptions, Flooder};
use crate::lab::kamailio::{Kamailio, Options, Script};
use crate::lab::progress::thousands;
use crate::lab::shieldd::LabConfig;
use crate::lab::toll::{latencies, PREMIUM};
use crate::lab::topology::{subscriber_ip, Topology, FLOOD_SOURCES};

/// The heading every version of the section starts with.
pub const HEADING: &str = "## 8. Toll fraud: premium-rate INVITEs refused";

/// What to run.
#[derive(Clone, Debug)]
pub struct TollOptions {
    /// INVITEs timed from send to 403, one every `latency_gap`.
    pub latency_calls: usize,
    pub latency_gap: Duration,
    /// The premium flood: packets per second and seconds, per defence.
    pub flood_rate: u64,
    pub flood_seconds: u64,
}

impl Default for TollOptions {
    fn default() -> Self {
        TollOptions {
            latency_calls: 400,
            latency_gap: Duration::from_millis(15),
            flood_rate: 10_000,
            flood_seconds: 10,
        }
    }
}

/// One defence under the premium flood.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Refusing {
    pub defence: String,
    pub sent: u64,
    pub engine: Engine,
    /// Refusals counted by the defence itself.
    pub refused: u64,
    /// 403s sent (SIP Shield: `reject_per_second`; secfilter: one each).
    pub replies: u64,
    pub softirq_secs: f64,
    pub kamailio_secs: f64,
    pub shieldd_secs: f64,
}

impl Refusing {
    pub fn cpu_secs(&self) -> f64 {
        self.softirq_secs + self.kamailio_secs + self.shieldd_secs
    }

    /// CPU seconds per million refused INVITEs.
    pub fn per_million(&self) -> f64 {
        if self.refused == 0 {
            return f64::NAN;
        }
        self.cpu_secs() / self.refused as f64 * 1e6
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TollResults {
    pub latency_ms: Vec<f64>,
    pub latency_lost: usize,
    pub shield: Refusing,
    pub kamailio: Refusing,
}

/// Runs the section in a fresh lab; files under `dir`.
pub fn run(opts: &TollOptions, dir: &Path) -> Result<TollResults> {
    let topo = Topology::new();
    topo.warm_neighbours();
    let mut out = TollResults::default();
    {
        let kam = Kamailio::start(&topo.sbc, dir, &Options::default())?;
        let shield = LabConfig::new(dir)
            .set("destinations", "deny", PREMIUM)
            .set("destinations", "reject_per_second", "200")
            // Refusals measured as refusals: with escalation the flood's
            // sources would be banned after five and dropped as `ban`.
            .set("destinations", "escalate", "0")
            // And every INVITE reaches step 9b: no per-source bucket
            // stops the flood first (they would, cheaper still).
            .set("limits", "packets_per_second", "0")
            .set("limits.methods", "INVITE", "{ per_second = 1000000, burst = 1000000 }")
            .start(&topo.sbc)?;
        let from = SocketAddrV4::new(subscriber_ip(2), 5066);
        let (lat, lost) = latencies(&topo.carrier, from, opts.latency_calls, opts.latency_gap)?;
        out.latency_ms = lat.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        out.latency_lost = lost;
        let refused = || -> Result<u64> {
            let s = shield.stats()?;
            Ok(crate::daemon::packets(&s, "drop", "destination"))
        };
        let (b, kb, sb) = (HostCpu::read(), kam.cpu(), ticks(shield.pid()));
        let r0 = refused()?;
        let sent = flood(&topo, dir, opts)?;
        std::thread::sleep(Duration::from_millis(500));
        out.shield = Refusing {
            defence: "SIP Shield (XDP destination policy)".into(),
            sent: sent.0,
            engine: sent.1,
            refused: refused()? - r0,
            replies: 0,
            softirq_secs: b.softirq_secs(&HostCpu::read()),
            kamailio_secs: kam.cpu().secs_since(&kb),
            shieldd_secs: (ticks(shield.pid()) - sb) as f64 / ticks_per_second(),
        };
    }
    let opts_k = Options {
        script: Script::SbcDstFilter,
        denied_prefixes: ["00899", "00900", "001900", "00976"].map(String::from).to_vec(),
        ..Options::default()
    };
    let kam = Kamailio::start(&topo.sbc, dir, &opts_k)?;
    let stat = |k: &Kamailio| -> Result<u64> { k.script_stat("dst_refused") };
    let (b, kb, r0) = (HostCpu::read(), kam.cpu(), stat(&kam)?);
    let sent = flood(&topo, dir, opts)?;
    std::thread::sleep(Duration::from_millis(500));
    let refused = stat(&kam)? - r0;
    out.kamailio = Refusing {
        defence: "Kamailio (dialled number matched in its script, 403)".into(),
        sent: sent.0,
        engine: sent.1,
        refused,
        replies: refused,
        softirq_secs: b.softirq_secs(&HostCpu::read()),
        kamailio_secs: kam.cpu().secs_since(&kb),
        shieldd_secs: 0.0,
    };
    Ok(out)
}

fn ticks(pid: u32) -> u64 {
    process_ticks(pid).map_or(0, |(_, t)| t)
}

/// The premium flood from the attacker's flood addresses.
fn flood(topo: &Topology, dir: &Path, opts: &TollOptions) -> Result<(u64, Engine)> {
    let f = FloodOptions {
        methods: vec![FloodMethod::Premium],
        rate: opts.flood_rate,
        sources: FLOOD_SOURCES,
        ..FloodOptions::new(Duration::from_secs(opts.flood_seconds))
    };
    let t = Instant::now();
    let r = Flooder::start(topo, dir, &f)?.finish().context("the premium flood")?;
    anyhow::ensure!(t.elapsed() < Duration::from_secs(opts.flood_seconds * 6), "the flood overran");
    Ok((r.sent, r.engine))
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// The section's Markdown.
pub fn markdown(r: &TollResults, opts: &TollOptions) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "`cargo xtask bench` runs `tollbench` (also alone: `target/release/tollbench`, as root). The lab's \
         Kamailio and PBX; shieldd with the example config and `[destinations] deny = {PREMIUM}`.\n"
    );
    let (p50, p99) = (quantile(&r.latency_ms, 0.5), quantile(&r.latency_ms, 0.99));
    let _ = writeln!(
        s,
        "**403 at the caller.** {} INVITEs to premium numbers from a subscriber's address, one every {} ms, \
         each timed from `sendto` to the shield's 403 arriving (a Rust UDP client in the carrier's namespace): \
         p50 **{p50:.3} ms**, p99 **{p99:.3} ms** ({} without an answer). Goal p99 ≤ 1 ms: {}.\n",
        r.latency_ms.len() + r.latency_lost,
        opts.latency_gap.as_millis(),
        r.latency_lost,
        if p99 <= 1.0 { "met" } else { "not met" }
    );
    let _ = writeln!(
        s,
        "**A premium flood.** {} INVITEs/s to 00899… for {} s from {FLOOD_SOURCES} addresses against each \
         defence in turn (CPU: the SBC's softirq time plus Kamailio's and shieldd's processes):\n",
        thousands(opts.flood_rate),
        opts.flood_seconds
    );
    let _ = writeln!(s, "| defence | sent | refused | 403s sent | CPU-s | CPU-s per million refused |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for d in [&r.shield, &r.kamailio] {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} | {:.2} |",
            d.defence,
            thousands(d.sent),
            thousands(d.refused),
            if d.replies == 0 && d.defence.starts_with("SIP") { "≤ 200/s".to_string() } else { thousands(d.replies) },
            d.cpu_secs(),
            d.per_million()
        );
    }
    let ratio = r.kamailio.per_million() / r.shield.per_million();
    let _ = writeln!(
        s,
        "\nCPU per million refused INVITEs: Kamailio / SIP Shield = **{ratio:.1}×** (goal ≥ 10×: {}). \
         Kamailio answers every INVITE of the flood (a reflector at the flood's rate); the shield answers at \
         most `reject_per_second` and drops the rest silently. The issue asked for Kamailio's secfilter \
         (`secf_check_dst`): in Kamailio 5.6 that function takes its argument as literal text (no fixup), \
         so `secf_check_dst($rU)` never matches a number; the script's own match on `$rU` does the same \
         work.\n",
        if ratio >= 10.0 { "met" } else { "not met" }
    );
    s
}
