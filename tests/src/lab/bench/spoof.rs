//! The spoofed-source section of the benchmark (BENCHMARKS.md section 6)
//! and what the demo's spoofed-source stage shares with it: every flood
//! packet comes from a random address of [`SPOOF_NET`], so per-source
//! buckets and bans cannot stop it; SIP Shield's `[verify]` lets verified
//! sources (those Kamailio sent a final 2xx to) through and gives all the
//! others one shared budget (SPEC §8).
//!
//! Five set-ups ([`Defence::SPOOF`]): no protection, Kamailio pike,
//! nftables with the trunk allowlisted and one global limit for everything
//! else (`lab/nft/global-limit.nft`: it cannot learn verified sources),
//! SIP Shield as configured today (`[verify]` off) and SIP Shield with the
//! budget on. Before each window every subscriber registers once (so SIP
//! Shield has seen their 200 OK); during the flood they keep registering,
//! and [`NEWCOMERS`](super::budget::NEWCOMERS) subscribers from addresses never seen before make
//! their first registration, competing with the flood for the budget.
//! During SIP Shield's floods a [`crate::lab::forger::Forger`] tries to get
//! its own addresses verified with forged 2xx (issue 18).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::budget::{add_newcomers, BUDGET_BURST, BUDGET_PER_SECOND, NEWCOMERS};
use super::defence::Defence;
use super::flood_runs::{run_point_with, FloodRate, Point, PointPlan, SpoofPlan};
use crate::lab::flood::{Engine, FloodOptions};
use crate::lab::forger;
use crate::lab::progress::{thousands, Progress};
use crate::lab::signals;
use crate::lab::topology::Topology;

pub use crate::lab::flood::SPOOF_NET;

/// How the section's floods are sent: the engine of section 1. With the
/// in-kernel generator: A token bucket of a few hundred per second refills in any gap
/// of the flood, and a legitimate request that arrives in a gap passes, so
/// how smooth the flood is matters to whoever competes for the budget. The
/// generator sends a chunk of frames per call and manages about 100 calls a
/// second on this machine, all processes together: paced, one process sends
/// 10 ms worth of frames per call ([`PACED_PROCESSES`]), in bursts with gaps
/// between them; as fast as it goes, [`MAX_PROCESSES`] processes overlap
/// their calls and the stream has no gaps (like many bots' packets).
pub const PACED_PROCESSES: usize = 1;
pub const MAX_PROCESSES: usize = 16;

/// The flood processes of the section's flood at `rate`.
pub fn processes(rate: FloodRate, engine: Engine) -> usize {
    match (rate, engine) {
        // The other engines send without waiting on the kernel: one
        // process, paced by the batch, has no gaps to fill.
        (_, Engine::Redirect | Engine::Packet) => 1,
        (FloodRate::Pps(_), _) => PACED_PROCESSES,
        (FloodRate::Off | FloodRate::Max, _) => MAX_PROCESSES,
    }
}

/// Requests from the forged sources and from the newcomers that reached
/// Kamailio's script so far (its `spoofed_requests`, `newcomer_requests`).
pub fn unverified_at_kamailio(kam: &crate::lab::kamailio::Kamailio) -> Result<(u64, u64)> {
    let s = kam.stats()?;
    let get = |k: &str| s.get(&format!("script:{k}")).copied().unwrap_or(0);
    Ok((get("spoofed_requests"), get("newcomer_requests")))
}

/// The spoofed-source section's results (BENCHMARKS.md section 6).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpoofResults {
    pub date: String,
    pub minutes: f64,
    /// Busy CPU (% of the machine) in the 3 s before the section, from
    /// other processes.
    pub busy_before_pct: f64,
    /// Run on its own (`labbench --only spoof`), not in a full bench run.
    pub separate: bool,
    /// The command line that produced it.
    pub command: String,
    pub prefix: String,
    pub budget_per_second: u64,
    pub budget_burst: u64,
    pub newcomers: usize,
    pub window_secs: f64,
    /// Flood sender processes, paced and as fast as possible.
    #[serde(default)]
    pub paced_processes: usize,
    #[serde(default)]
    pub max_processes: usize,
    /// The flood sender's engine (`auto` decided).
    #[serde(default)]
    pub engine: Engine,
    /// The forger during SIP Shield's floods ([`crate::lab::forger`]):
    /// addresses sending forgeries (0: no forger in this run) and the
    /// period at which each sends both kinds.
    #[serde(default)]
    pub forger_addresses: usize,
    #[serde(default)]
    pub forger_period_secs: f64,
    pub points: Vec<Point>,
}

/// Progress steps of the section with `paced` paced rates.
pub fn steps(paced: usize) -> usize {
    (paced + 2) * Defence::SPOOF.len()
}

/// Runs the section: every set-up of [`Defence::SPOOF`] with no flood, at
/// each of `paced` packets/s and as fast as the sender goes. Files go to
/// `dir`.
pub fn run(
    topo: &Topology,
    dir: &Path,
    plan: &PointPlan,
    paced: &[u64],
    p: &mut Progress,
) -> Result<SpoofResults> {
    let started = Instant::now();
    let busy_before_pct = super::machine().busy_before_pct;
    add_newcomers(topo);

    let mut paced = paced.to_vec();
    paced.sort_unstable();
    let mut rates = vec![FloodRate::Off];
    rates.extend(paced.iter().map(|&n| FloodRate::Pps(n)));
    rates.push(FloodRate::Max);
    let mut points = Vec::new();
    for (ri, rate) in rates.iter().enumerate() {
        for d in Defence::SPOOF {
            signals::check()?;
            p.step(&format!(
                "Spoofed-source flood {} ({}/{}), {}",
                rate.label(),
                ri + 1,
                rates.len(),
                d.label()
            ));
            let extra = SpoofPlan {
                net: Some(FloodOptions::spoof_net()),
                preregister: true,
                newcomers: NEWCOMERS,
                processes: processes(*rate, plan.engine),
                forger: true,
            };
            let at = dir.join(format!("{}-{}", d.short(), ri));
            let pt = run_point_with(topo, &at, d, *rate, plan, &extra)?;
            p.done(&summary(&pt));
            points.push(pt);
        }
    }
    Ok(SpoofResults {
        date: super::date_now(),
        minutes: started.elapsed().as_secs_f64() / 60.0,
        busy_before_pct,
        separate: false,
        command: String::new(),
        prefix: SPOOF_NET.to_string(),
        budget_per_second: BUDGET_PER_SECOND,
        budget_burst: BUDGET_BURST,
        newcomers: NEWCOMERS,
        window_secs: plan.window.as_secs_f64(),
        paced_processes: processes(FloodRate::Pps(1), plan.engine),
        max_processes: processes(FloodRate::Max, plan.engine),
        engine: plan.engine,
        forger_addresses: forger::FORGERS,
        forger_period_secs: forger::PERIOD.as_secs_f64(),
        points,
    })
}

/// One line per point for the progress display.
fn summary(pt: &Point) -> String {
    let forged = pt.forgeries.as_ref().map_or(String::new(), |f| {
        format!(
            "; forgeries {} sent, {} got a 2xx, {} of {} forger addresses verified",
            f.sent(),
            f.answered_2xx(),
            f.verified.map_or("?".into(), |n| n.to_string()),
            f.addresses
        )
    });
    let line = format!(
        "sent {} ({} pps); registered subs {}/{}, newcomers {}/{}, trunk {}/{}; Kamailio got {} \
         requests ({} unverified), {:.0} % CPU; softirq {:.0} %; dropped {}",
        thousands(pt.flood.sent),
        thousands(pt.flood.rate as u64),
        pt.registrations_ok,
        pt.registrations,
        pt.newcomers_ok,
        pt.newcomers,
        pt.calls_ok,
        pt.calls,
        thousands(pt.kamailio_requests),
        thousands(unverified_requests(pt)),
        100.0 * pt.kamailio_cpu_secs / pt.window_secs,
        100.0 * pt.softirq_secs / pt.window_secs,
        thousands(pt.defence_drops)
    );
    line + &forged
}

/// Requests from unverified sources (forged ones and newcomers) that
/// reached Kamailio during a point.
pub fn unverified_requests(pt: &Point) -> u64 {
    pt.spoofed_at_kamailio + pt.newcomer_requests_at_kamailio
}
