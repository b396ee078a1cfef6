//! One measured point of the flood comparison: a defence, fresh; the
//! legitimate load from the carrier; a flood from the attacker at one rate;
//! everything counted over the flood's window.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::defence::{Armed, Defence};
use crate::lab::cpu::{backlog_drops, HostCpu, UdpCounters};
use crate::lab::flood::{Engine, FloodMethod, FloodOptions, FloodReport, Flooder};
use crate::lab::legit::{Legit, LegitLoad, LegitResult};
use crate::lab::signals;
use crate::lab::topology::{LinkStats, Topology, FLOOD_SOURCES, SBC_PUBLIC_IF};

/// The flood of one point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum FloodRate {
    /// No flood: the baseline.
    Off,
    /// As fast as the sender goes.
    Max,
    /// Paced to this many packets per second.
    Pps(u64),
}

impl FloodRate {
    pub fn label(self) -> String {
        match self {
            FloodRate::Off => "no flood".into(),
            FloodRate::Max => "max".into(),
            FloodRate::Pps(n) => format!("{} kpps", (n as f64 / 1000.0).round()),
        }
    }
}

/// How every point runs.
#[derive(Clone, Debug)]
pub struct PointPlan {
    pub window: Duration,
    pub legit: LegitLoad,
    pub engine: Engine,
    pub flood_methods: Vec<FloodMethod>,
    pub flood_sources: usize,
    /// CPUs the flood sender is pinned to.
    pub flood_cpus: Vec<usize>,
    /// CPUs Kamailio is pinned to (empty: any).
    pub kamailio_cpus: Vec<usize>,
}

/// What one point measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub defence: Defence,
    pub rate: FloodRate,
    pub window_secs: f64,
    /// What the sender put on the wire (packets, achieved rate).
    pub flood: FloodReport,
    /// Frames the SBC's public interface received (veth rx counter).
    pub delivered: u64,
    pub registrations_ok: u64,
    pub registrations: u64,
    pub calls_ok: u64,
    pub calls: u64,
    /// Requests the legitimate clients had to retransmit.
    pub legit_retransmissions: u64,
    /// Mean time of a successful registration (REGISTER, 401, REGISTER,
    /// 200), ms.
    pub registration_ms: f64,
    pub kamailio_cpu_secs: f64,
    pub softirq_secs: f64,
    /// All busy CPU time on the host (every process and the kernel).
    pub host_busy_secs: f64,
    /// CPU time of the flood sender (the attacker, not the SBC).
    pub sender_cpu_secs: f64,
    /// CPU time of shieldd (SIP Shield only).
    pub shieldd_cpu_secs: f64,
    /// Requests that reached Kamailio's script (`core:rcv_requests`).
    pub kamailio_requests: u64,
    /// Packets the defence dropped.
    pub defence_drops: u64,
    /// Packets lost to overload instead: full socket buffers (UDP
    /// RcvbufErrors in the SBC's namespace) and full CPU backlogs.
    pub overload_drops: u64,
    pub bans: u64,
}

impl Point {
    pub fn legit(&self) -> LegitResult {
        use crate::lab::sipp::Tally;
        LegitResult {
            registrations: Tally {
                created: self.registrations,
                successful: self.registrations_ok,
                failed: self.registrations - self.registrations_ok,
                ..Tally::default()
            },
            calls: Tally {
                created: self.calls,
                successful: self.calls_ok,
                failed: self.calls - self.calls_ok,
                ..Tally::default()
            },
        }
    }

    /// Legitimate success (registrations and calls together), 0..1.
    pub fn legit_success(&self) -> f64 {
        self.legit().success_rate().unwrap_or(0.0)
    }

    /// SBC-side CPU: Kamailio, the softirq receive path and shieldd.
    pub fn sbc_cpu_secs(&self) -> f64 {
        self.kamailio_cpu_secs + self.softirq_secs + self.shieldd_cpu_secs
    }
}

/// Runs one point.
pub fn run_point(
    topo: &Topology,
    dir: &Path,
    defence: Defence,
    rate: FloodRate,
    plan: &PointPlan,
) -> Result<Point> {
    signals::check()?;
    let armed = Armed::start(defence, topo, dir, &plan.kamailio_cpus)?;
    let legit = Legit::start(
        topo,
        dir,
        &LegitLoad {
            duration: plan.window,
            ..plan.legit
        },
    )?;

    let drops0 = armed.dropped()?;
    let host0 = HostCpu::read();
    let kam0 = armed.kamailio.cpu();
    let shieldd0 = armed
        .shieldd_pid()
        .and_then(crate::lab::cpu::process_ticks)
        .map_or(0, |(_, t)| t);
    let udp0 = UdpCounters::read(&topo.sbc);
    let backlog0 = backlog_drops();
    let link0 = LinkStats::read(&topo.sbc, SBC_PUBLIC_IF);
    let req0 = armed
        .kamailio
        .stats()?
        .get("core:rcv_requests")
        .copied()
        .unwrap_or(0);
    let t0 = Instant::now();

    let (flood, sender_ticks) = match rate {
        FloodRate::Off => {
            signals::sleep(plan.window)?;
            (FloodReport::default(), 0)
        }
        FloodRate::Max | FloodRate::Pps(_) => {
            let mut f = Flooder::start(
                topo,
                dir,
                &FloodOptions {
                    engine: plan.engine,
                    methods: plan.flood_methods.clone(),
                    rate: if let FloodRate::Pps(n) = rate { n } else { 0 },
                    duration: plan.window,
                    sources: plan.flood_sources.min(FLOOD_SOURCES),
                    cpus: plan.flood_cpus.clone(),
                    user_agent: None,
                },
            )?;
            let pid = f.pid();
            let mut ticks = 0;
            while f.is_running() {
                if signals::interrupted() {
                    f.interrupt();
                }
                if let Some((_, t)) = crate::lab::cpu::process_ticks(pid) {
                    ticks = t;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (f.finish()?, ticks)
        }
    };
    signals::check()?;
    // Let queued packets drain into the counters before reading them.
    std::thread::sleep(Duration::from_millis(200));
    let window = t0.elapsed();
    let host1 = HostCpu::read();
    let kam1 = armed.kamailio.cpu();
    let shieldd1 = armed
        .shieldd_pid()
        .and_then(crate::lab::cpu::process_ticks)
        .map_or(0, |(_, t)| t);
    let udp = UdpCounters::read(&topo.sbc).since(&udp0);
    let backlog = backlog_drops().saturating_sub(backlog0);
    let link = LinkStats::read(&topo.sbc, SBC_PUBLIC_IF).since(&link0);
    let drops = armed.dropped()?.saturating_sub(drops0);
    let req = armed
        .kamailio
        .stats()?
        .get("core:rcv_requests")
        .copied()
        .unwrap_or(0)
        .saturating_sub(req0);
    let bans = armed.bans()?;

    let result = legit
        .finish(Duration::from_secs(30))
        .context("legitimate clients")?;
    let tick = crate::lab::cpu::ticks_per_second();
    Ok(Point {
        defence,
        rate,
        window_secs: window.as_secs_f64(),
        flood,
        delivered: link.rx_packets + link.rx_dropped,
        registrations_ok: result.registrations.successful,
        registrations: result
            .registrations
            .finished()
            .max(result.registrations.created),
        calls_ok: result.calls.successful,
        calls: result.calls.finished().max(result.calls.created),
        legit_retransmissions: result.registrations.retransmissions + result.calls.retransmissions,
        registration_ms: result.registrations.mean_call_ms,
        kamailio_cpu_secs: kam1.secs_since(&kam0),
        softirq_secs: host0.softirq_secs(&host1),
        host_busy_secs: host0.busy_secs(&host1),
        sender_cpu_secs: sender_ticks as f64 / tick,
        shieldd_cpu_secs: shieldd1.saturating_sub(shieldd0) as f64 / tick,
        kamailio_requests: req,
        defence_drops: drops,
        overload_drops: udp.rcvbuf_errors + backlog,
        bans,
    })
}
