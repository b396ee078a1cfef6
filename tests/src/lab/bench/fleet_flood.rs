//! Section 7, part 3: CPU per million dropped packets of a flood from one
//! address a CrowdSec Ip decision bans. The lab's flood sender
//! (`target/release/flood --engine auto`: the in-kernel XDP generator, or
//! the redirect hop where the kernel refuses live frames; either way the
//! frames reach the SBC's `pub0` as XDP frames, as from a NIC) sends SIP INVITEs from
//! that one address at a fixed rate, pinned to CPU 1, at SBC 0 (shieldd:
//! dropped by XDP) and at SBC 1 (the nftables bouncer: dropped by its rule
//! in the `input` hook, after the IP stack). Rounds alternate between the
//! two. Measured: the host's softirq CPU (`/proc/stat`: a veth receives on
//! the sending CPU, so the SBC's receive path is softirq time) over the
//! flood, minus the same length of an idle window just before it; the
//! bouncer process's own CPU; packets each dropped (XDP counters, the nft
//! rule counters).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::fleet_setup::{FleetOptions, NFT_SBC, SHIELDD_SBC};
use crate::daemon::Shieldd;
use crate::fleet::{Fleet, ATT_IF, PUB_IF, SBC_PUB_V4};
use crate::lab::cpu::{process_ticks, ticks_per_second, HostCpu};
use crate::lab::csbouncer::CsBouncer;
use crate::lab::flood::{Engine, FloodReport};
use crate::paths::binary;
use crate::process::{in_ns, Proc};
use crate::lab::signals;

/// The banned flood source: the first Ip decision of
/// [`crate::crowdsec::bench_decisions`] (198.18.0.0/15 is a range the
/// flood sender may forge).
pub const FLOOD_SOURCE: &str = "198.18.0.0/32";
/// The flood sender's CPU.
const SENDER_CPU: &str = "1";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FloodRow {
    /// `shieldd` or `nftables`.
    pub bouncer: String,
    pub round: usize,
    pub sent: u64,
    pub secs: f64,
    pub rate: f64,
    pub dropped: u64,
    /// Host softirq CPU-s over the flood, and over the idle window before
    /// it (same length).
    pub softirq_secs: f64,
    pub idle_softirq_secs: f64,
    /// The bouncer process's utime + stime over the flood.
    pub process_secs: f64,
    /// The flood sender's engine (`auto` decided: xdp or redirect).
    #[serde(default)]
    pub engine: Engine,
}

impl FloodRow {
    /// Softirq CPU-s above idle per million dropped packets.
    pub fn per_million(&self) -> f64 {
        (self.softirq_secs - self.idle_softirq_secs).max(0.0) / (self.dropped.max(1) as f64 / 1e6)
    }
}

/// Every round: shieldd, then nftables.
pub fn run(fleet: &Fleet, sd: &Shieldd, b: &CsBouncer, o: &FleetOptions, say: &mut dyn FnMut(&str)) -> Result<Vec<FloodRow>> {
    // A veth takes XDP frames only with NAPI on: GRO does it where no XDP
    // program is attached (SBC 1); on SBC 0 shieldd's program does.
    for i in [SHIELDD_SBC, NFT_SBC] {
        fleet.sbc(i).run(|| crate::lab::xdpgen::enable_gro(PUB_IF)).context("GRO on pub0")?;
    }
    let mut rows = Vec::new();
    for round in 1..=o.flood_rounds.max(1) {
        for (i, name) in [(SHIELDD_SBC, "shieldd"), (NFT_SBC, "nftables")] {
            signals::check()?;
            let dropped = || -> Result<u64> {
                if i == SHIELDD_SBC {
                    Ok(crate::daemon::packets(&sd.stats()?, "drop", "ban"))
                } else {
                    b.dropped()
                }
            };
            let pid = if i == SHIELDD_SBC { sd.pid() } else { b.pid() };
            let row = one_flood(fleet, i, o, pid, &dropped)?;
            let row = FloodRow { bouncer: name.into(), round, ..row };
            say(&format!(
                "{name}, round {round}: {} sent, {} dropped, {:.2} CPU-s softirq per 1M dropped",
                row.sent, row.dropped, row.per_million()
            ));
            rows.push(row);
        }
    }
    Ok(rows)
}

/// An idle window, then one flood at SBC `i`.
fn one_flood(fleet: &Fleet, i: usize, o: &FleetOptions, pid: u32, dropped: &dyn Fn() -> Result<u64>) -> Result<FloodRow> {
    let window = Duration::from_secs_f64(o.flood_secs);
    let idle0 = HostCpu::read();
    signals::sleep(window)?;
    let idle1 = HostCpu::read();
    let d0 = dropped()?;
    let p0 = process_ticks(pid).context("bouncer's /proc stat")?.1;
    let h0 = HostCpu::read();
    let report = flood(fleet, i, o)?;
    std::thread::sleep(Duration::from_millis(200));
    let h1 = HostCpu::read();
    let p1 = process_ticks(pid).context("bouncer's /proc stat")?.1;
    let d1 = dropped()?;
    let secs = |a: &HostCpu, b: &HostCpu| a.at.zip(b.at).map_or(0.0, |(x, y)| y.duration_since(x).as_secs_f64());
    // The idle window scaled to the flood's measured window.
    let idle = idle0.softirq_secs(&idle1) * secs(&h0, &h1) / secs(&idle0, &idle1).max(1e-3);
    Ok(FloodRow {
        engine: report.engine,
        sent: report.sent,
        secs: report.seconds,
        rate: report.rate,
        dropped: d1.saturating_sub(d0),
        softirq_secs: h0.softirq_secs(&h1),
        idle_softirq_secs: idle,
        process_secs: p1.saturating_sub(p0) as f64 / ticks_per_second(),
        ..FloodRow::default()
    })
}

/// Runs the flood sender in attacker `i`'s namespace until it ends.
fn flood(fleet: &Fleet, i: usize, o: &FleetOptions) -> Result<FloodReport> {
    let exe = binary("flood")?;
    let mut cmd = in_ns(&fleet.sbcs[i].attacker, exe.to_str().context("path")?);
    let bound = (o.flood_rate as f64 * o.flood_secs * 1.2) as u64 + 1000;
    cmd.args(["--engine", "auto", "--iface", ATT_IF])
        .args(["--dst-mac", &fleet.sbc(i).mac(PUB_IF)])
        .args(["--dst", &format!("{SBC_PUB_V4}:5060")])
        .args(["--spoof", FLOOD_SOURCE, "--methods", "INVITE"])
        .args(["--rate", &o.flood_rate.to_string()])
        .args(["--seconds", &format!("{:.3}", o.flood_secs)])
        .args(["--max-packets", &bound.to_string(), "--cpus", SENDER_CPU]);
    let log = o.work_dir.join(format!("flood-sbc{i}.log"));
    let mut p = Proc::spawn_piped("flood", cmd, &log)?;
    let (status, out) = p.wait_output(Duration::from_secs_f64(o.flood_secs) + Duration::from_secs(30))?;
    if !status.success() {
        bail!("flood failed ({status}): {}", p.log_tail(10));
    }
    serde_json::from_str(out.trim()).with_context(|| format!("flood's summary {out:?}"))
}
