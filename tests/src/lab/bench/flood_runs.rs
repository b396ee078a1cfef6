//! One measured point of the flood comparison: a defence, fresh; the
//! legitimate load from the carrier; a flood from the attacker at one rate;
//! everything counted over the flood's window. The spoofed-source section
//! ([`super::spoof`]) adds to a point with [`SpoofPlan`]: forged sources,
//! subscribers registered before the window, newcomers during it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::defence::{Armed, Defence};
use crate::lab::cpu::{backlog_drops, HostCpu, UdpCounters};
use crate::lab::flood::{Engine, FloodMethod, FloodOptions, FloodReport, Flooder};
use crate::lab::forger::{Forger, ForgeryReport};
use crate::lab::legit::{Legit, LegitLoad, LegitResult};
use crate::lab::signals;
use crate::lab::sipp::{Run, Sipp, Tally};
use crate::lab::topology::{
    subscriber_ip, LinkStats, Topology, FLOOD_SOURCES, SBC_PUBLIC_IF, SBC_SIP_IP, SUBSCRIBERS,
};

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
    /// Spoofed-source points only (0 / `None` elsewhere):
    /// first registrations from new addresses started during the flood;
    #[serde(default)]
    pub newcomers: u64,
    #[serde(default)]
    pub newcomers_ok: u64,
    /// requests from the forged sources and from the newcomers that
    /// reached Kamailio's script (its `spoofed_requests`,
    /// `newcomer_requests`);
    #[serde(default)]
    pub spoofed_at_kamailio: u64,
    #[serde(default)]
    pub newcomer_requests_at_kamailio: u64,
    /// subscribers registered (and, behind SIP Shield, verified) before the
    /// window: `shieldctl verified` total and the subscribers among them;
    #[serde(default)]
    pub preregistered_ok: u64,
    #[serde(default)]
    pub verified_before: Option<u64>,
    #[serde(default)]
    pub subscribers_verified: Option<u64>,
    /// whether `shieldctl verified` said `under_pressure` during the flood.
    #[serde(default)]
    pub under_pressure_seen: Option<bool>,
    /// The forger's run alongside the flood (SIP Shield, flooded points
    /// of the spoofed-source section only).
    #[serde(default)]
    pub forgeries: Option<ForgeryReport>,
}

/// What a spoofed-source point adds (the default: nothing, an ordinary
/// point).
#[derive(Clone, Debug, Default)]
pub struct SpoofPlan {
    /// Forge every flood packet's source from this prefix.
    pub net: Option<Ipv4Net>,
    /// Register every subscriber once before the window.
    pub preregister: bool,
    /// Subscribers registering for the first time, from new addresses
    /// ([`super::budget::newcomer_ip`]), started 1 s into the window.
    pub newcomers: usize,
    /// Flood processes sharing the rate ([`FloodOptions::processes`]; 0:
    /// one).
    pub processes: usize,
    /// Run the [`Forger`] during the flood (SIP Shield set-ups only).
    pub forger: bool,
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
    run_point_with(topo, dir, defence, rate, plan, &SpoofPlan::default())
}

/// Runs one point with the spoofed-source additions of `extra`.
pub fn run_point_with(
    topo: &Topology,
    dir: &Path,
    defence: Defence,
    rate: FloodRate,
    plan: &PointPlan,
    extra: &SpoofPlan,
) -> Result<Point> {
    signals::check()?;
    let armed = Armed::start(defence, topo, dir, &plan.kamailio_cpus)?;
    let preregistered_ok = if extra.preregister {
        preregister(topo, dir, plan.legit.subscribers)?
    } else {
        0
    };
    let verified = armed.verified().transpose()?;
    let legit = Legit::start(
        topo,
        dir,
        &LegitLoad {
            duration: plan.window,
            ..plan.legit
        },
    )?;
    let before = Snapshot::take(topo, &armed)?;
    let w = flood_window(topo, dir, rate, plan, extra, &armed)?;
    signals::check()?;
    // Let queued packets drain into the counters before reading them.
    std::thread::sleep(Duration::from_millis(200));
    let after = Snapshot::take(topo, &armed)?;
    let bans = armed.bans()?;
    let forgeries = forgeries_verified(w.forgeries, &armed)?;
    let result = legit
        .finish(Duration::from_secs(30))
        .context("legitimate clients")?;
    let mut newcomers = Tally::default();
    for s in w.newcomers {
        newcomers = newcomers.add(&s.finish(Duration::from_secs(30))?);
    }
    let mut p = point(defence, rate, w.flood, &result, &before, &after);
    p.sender_cpu_secs = w.sender_ticks as f64 / crate::lab::cpu::ticks_per_second();
    p.bans = bans;
    p.newcomers = newcomers.finished().max(newcomers.created);
    p.newcomers_ok = newcomers.successful;
    p.preregistered_ok = preregistered_ok;
    p.verified_before = verified.as_ref().map(|v| v.total as u64);
    p.subscribers_verified = verified
        .as_ref()
        .map(|v| super::budget::subscribers_verified(v) as u64);
    p.under_pressure_seen = armed.verified().map(|_| w.under_pressure);
    p.forgeries = forgeries;
    Ok(p)
}

/// The forger's report with how many of its addresses are verified now.
fn forgeries_verified(r: Option<ForgeryReport>, armed: &Armed) -> Result<Option<ForgeryReport>> {
    let Some(mut r) = r else { return Ok(None) };
    if let Some(v) = armed.verified() {
        r.count_verified(&v.context("shieldctl verified after the forgeries")?);
    }
    Ok(Some(r))
}

/// The first `subscribers` register once each (one sipp each, in
/// parallel); how many succeeded.
fn preregister(topo: &Topology, dir: &Path, subscribers: usize) -> Result<u64> {
    let sbc = std::net::SocketAddrV4::new(SBC_SIP_IP, 5060);
    let dir = dir.join("preregister");
    std::fs::create_dir_all(&dir)?;
    let runs: Vec<Sipp> = (0..subscribers.min(SUBSCRIBERS))
        .map(|i| Run::register(subscriber_ip(i), sbc, 1.0, 1).start(&topo.carrier, &dir))
        .collect::<Result<_>>()?;
    let mut ok = 0;
    for s in runs {
        ok += s.finish(Duration::from_secs(20))?.successful;
    }
    Ok(ok)
}

/// What the flood's window produced.
struct Window {
    flood: FloodReport,
    sender_ticks: u64,
    newcomers: Vec<Sipp>,
    under_pressure: bool,
    forgeries: Option<ForgeryReport>,
}

/// The flood (or, for [`FloodRate::Off`], the quiet window); newcomers
/// start 1 s in; SIP Shield's `verified` is polled once a second.
fn flood_window(
    topo: &Topology,
    dir: &Path,
    rate: FloodRate,
    plan: &PointPlan,
    extra: &SpoofPlan,
    armed: &Armed,
) -> Result<Window> {
    let t0 = Instant::now();
    let mut flood = match rate {
        FloodRate::Off => None,
        FloodRate::Max | FloodRate::Pps(_) => Some(Flooder::start(
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
                spoof: extra.net,
                processes: extra.processes,
            },
        )?),
    };
    let mut w = Window {
        flood: FloodReport::default(),
        sender_ticks: 0,
        newcomers: Vec::new(),
        under_pressure: false,
        forgeries: None,
    };
    // Forgeries only against SIP Shield, only while a flood runs.
    let forger = (extra.forger && flood.is_some() && armed.shieldd_pid().is_some())
        .then(|| Forger::start(topo, plan.window));
    let mut polled = t0;
    loop {
        let running = match flood.as_mut() {
            Some(f) => f.is_running(),
            None => t0.elapsed() < plan.window,
        };
        if !running {
            break;
        }
        if let Some(f) = &flood {
            if signals::interrupted() {
                f.interrupt();
            }
            let ticks: Vec<u64> = f
                .pids()
                .into_iter()
                .filter_map(|pid| crate::lab::cpu::process_ticks(pid).map(|(_, t)| t))
                .collect();
            if !ticks.is_empty() {
                w.sender_ticks = w.sender_ticks.max(ticks.iter().sum());
            }
        } else {
            signals::check()?;
        }
        if w.newcomers.is_empty() && extra.newcomers > 0 && t0.elapsed() >= Duration::from_secs(1) {
            w.newcomers = start_newcomers(topo, dir, extra.newcomers)?;
        }
        if polled.elapsed() >= Duration::from_secs(1) {
            polled = Instant::now();
            w.under_pressure |= armed
                .verified()
                .is_some_and(|v| v.is_ok_and(|v| v.under_pressure));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(f) = flood {
        w.flood = f.finish()?;
    }
    if let Some(f) = forger {
        w.forgeries = Some(f.finish().context("the forger")?);
    }
    Ok(w)
}

/// `n` newcomers, one first registration each.
fn start_newcomers(topo: &Topology, dir: &Path, n: usize) -> Result<Vec<Sipp>> {
    let sbc = std::net::SocketAddrV4::new(SBC_SIP_IP, 5060);
    (0..n)
        .map(|i| Run::register(super::budget::newcomer_ip(i), sbc, 1.0, 1).start(&topo.carrier, dir))
        .collect()
}

/// Counters read at the start and the end of a window.
struct Snapshot {
    drops: u64,
    host: HostCpu,
    kamailio: crate::lab::cpu::ProcessGroupCpu,
    shieldd_ticks: u64,
    udp: UdpCounters,
    backlog: u64,
    link: LinkStats,
    kamailio_stats: std::collections::BTreeMap<String, u64>,
    at: Instant,
}

impl Snapshot {
    fn take(topo: &Topology, armed: &Armed) -> Result<Snapshot> {
        Ok(Snapshot {
            drops: armed.dropped()?,
            host: HostCpu::read(),
            kamailio: armed.kamailio.cpu(),
            shieldd_ticks: armed
                .shieldd_pid()
                .and_then(crate::lab::cpu::process_ticks)
                .map_or(0, |(_, t)| t),
            udp: UdpCounters::read(&topo.sbc),
            backlog: backlog_drops(),
            link: LinkStats::read(&topo.sbc, SBC_PUBLIC_IF),
            kamailio_stats: armed.kamailio.stats()?,
            at: Instant::now(),
        })
    }

    /// Kamailio's counter `key`, `self - earlier`.
    fn kamailio_since(&self, earlier: &Snapshot, key: &str) -> u64 {
        let get = |s: &Snapshot| s.kamailio_stats.get(key).copied().unwrap_or(0);
        get(self).saturating_sub(get(earlier))
    }
}

/// The point from the window's counters (the caller fills in the rest).
fn point(
    defence: Defence,
    rate: FloodRate,
    flood: FloodReport,
    result: &LegitResult,
    b: &Snapshot,
    a: &Snapshot,
) -> Point {
    let tick = crate::lab::cpu::ticks_per_second();
    let link = a.link.since(&b.link);
    Point {
        defence,
        rate,
        window_secs: a.at.duration_since(b.at).as_secs_f64(),
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
        kamailio_cpu_secs: a.kamailio.secs_since(&b.kamailio),
        softirq_secs: b.host.softirq_secs(&a.host),
        host_busy_secs: b.host.busy_secs(&a.host),
        sender_cpu_secs: 0.0,
        shieldd_cpu_secs: a.shieldd_ticks.saturating_sub(b.shieldd_ticks) as f64 / tick,
        kamailio_requests: a.kamailio_since(b, "core:rcv_requests"),
        defence_drops: a.drops.saturating_sub(b.drops),
        overload_drops: a.udp.since(&b.udp).rcvbuf_errors + a.backlog.saturating_sub(b.backlog),
        bans: 0,
        newcomers: 0,
        newcomers_ok: 0,
        spoofed_at_kamailio: a.kamailio_since(b, "script:spoofed_requests"),
        newcomer_requests_at_kamailio: a.kamailio_since(b, "script:newcomer_requests"),
        preregistered_ok: 0,
        verified_before: None,
        subscribers_verified: None,
        under_pressure_seen: None,
        forgeries: None,
    }
}

/// CPU seconds per million packets the defence dropped, net of what the
/// same defence used with no flood (its baseline), if it dropped enough to
/// say.
pub fn cpu_per_million_dropped(p: &Point, baseline: Option<&Point>) -> Option<f64> {
    if p.defence_drops < 10_000 {
        return None;
    }
    let base = baseline.map_or(0.0, |b| b.sbc_cpu_secs() / b.window_secs * p.window_secs);
    Some(((p.sbc_cpu_secs() - base).max(0.0)) / p.defence_drops as f64 * 1e6)
}
