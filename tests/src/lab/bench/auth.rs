//! Section 9 of BENCHMARKS.md (`authbench`, issue 20's benchmark): the
//! password guesser attackers run, SIPVicious `svcrack`, against the lab's
//! Kamailio with digest auth, behind each of
//!
//! * SIP Shield's `[auth]` alone (failures seen on the wire, no jail),
//! * SIP Shield's `kamailio-auth` jail alone (Kamailio's log, `[auth]` off),
//! * fail2ban 1.0.2 with Debian's nftables action (the same filter file on
//!   the same log), no shieldd at all;
//! * and SIP Shield's jail again after Kamailio's failure line was reworded
//!   (as by an upgrade): it never bans, and every guess reaches Kamailio.
//!
//! Each run starts a fresh Kamailio and a fresh defence and guesses from a
//! fresh address (nothing carried over). What it measures:
//!
//! * guesses that reached Kamailio: its script's `auth_failures` counter
//!   (one per wrong password it checked), beside the guesses svcrack sent
//!   and the failures the attacker received ([`super::auth_capture`]);
//! * when the ban began: a prober sends from the guesser's address every
//!   millisecond to a sink on the SBC, and the first probe that never
//!   arrived is the ban ([`crate::lab::probe`], as in section 3), whatever
//!   enforces it (XDP or nftables);
//! * when each failure happened: the server's reply to a guess reaching
//!   the attacker, kernel-stamped; from the first one, the `failures`-th
//!   one and the last one before the ban to the ban;
//! * the defence's CPU: shieldd's or fail2ban-server's threads and the
//!   children it waited for (fail2ban's `nft` calls), from svcrack's start
//!   to `settle` after the ban ([`super::auth_cpu`]).
//!
//! Kamailio challenges with `qop="auth"` (`-A CHALLENGE_QOP`, see
//! lab/kamailio/sbc.cfg: svcrack 0.3.3's answers to a challenge without
//! qop are malformed, and Kamailio refuses them before checking the
//! password, so no jail would ever see a failure) and lets scanners' User-Agents
//! in (`ALLOW_SCANNERS`). shieldd runs the example configuration with
//! what would act before the ban under test switched off: the scanner list
//! (svcrack says `friendly-scanner`), the per-source packet bucket and the
//! REGISTER bucket (5/s would slow svcrack for the shield's rows only).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::auth_capture::{exchange, Capture, Exchange};
use super::auth_cpu::CpuMeter;
use crate::daemon::Shieldd;
use crate::lab::fail2ban::Fail2ban;
use crate::lab::kamailio::{Kamailio, Options};
use crate::lab::probe::{wait_for_drop, ProbeSink, Prober};
use crate::lab::scanners::svcrack;
use crate::lab::shieldd::{JailSettings, LabConfig};
use crate::lab::signals;
use crate::lab::topology::{probe_source, Topology, HOST_IF, PROBE_SOURCES, SBC_PUBLIC_IF, SBC_SIP_IP};

/// The heading every version of the section starts with.
pub const HEADING: &str = "## 9. A password guesser: `[auth]` against a log-driven jail and fail2ban";

/// Failures that ban, for every defence (`[auth] failures`, the jail's
/// and fail2ban's `maxretry`).
pub const FAILURES: u32 = 5;
/// The subscriber svcrack guesses for (lab/sipp/subscribers.csv).
const USER: &str = "1000";
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// Probes lost for this long, the prober still sending: banned.
const QUIET: Duration = Duration::from_millis(300);

/// The defence in front of Kamailio.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Guard {
    /// shieldd, `[auth]` only.
    #[default]
    Wire,
    /// shieldd, the `kamailio-auth` jail only.
    Jail,
    /// fail2ban + nftables.
    Fail2ban,
    /// shieldd's jail after Kamailio's failure line was reworded (as by an
    /// upgrade, `-A LOG_FORMAT_V2`): expected never to ban.
    Reworded,
}

impl Guard {
    pub const ALL: [Guard; 4] = [Guard::Wire, Guard::Jail, Guard::Fail2ban, Guard::Reworded];

    pub fn label(self) -> &'static str {
        match self {
            Guard::Wire => "SIP Shield `[auth]` (wire, no jail)",
            Guard::Jail => "SIP Shield jail (Kamailio's log, `[auth]` off)",
            Guard::Fail2ban => "fail2ban + nftables (Kamailio's log)",
            Guard::Reworded => "SIP Shield jail, Kamailio's failure line reworded",
        }
    }

    /// Who must have banned: shieldd's ban origin, or fail2ban; nobody
    /// for the reworded log.
    fn origin(self) -> Option<&'static str> {
        match self {
            Guard::Wire => Some("auth"),
            Guard::Jail => Some("kamailio-auth"),
            Guard::Fail2ban => Some("fail2ban"),
            Guard::Reworded => None,
        }
    }

    fn short(self) -> &'static str {
        match self {
            Guard::Wire => "wire",
            Guard::Jail => "jail",
            Guard::Fail2ban => "fail2ban",
            Guard::Reworded => "reworded",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct AuthOptions {
    /// Runs per defence (interleaved: wire, jail, fail2ban, wire, ...).
    pub runs: usize,
    /// Passwords in svcrack's dictionary (none of them right).
    pub words: usize,
    /// CPU is read this long after the ban (fail2ban's action included).
    pub settle: Duration,
    /// A run fails when no ban comes within this.
    pub ban_within: Duration,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions { runs: 7, words: 400, settle: Duration::from_secs(1), ban_within: Duration::from_secs(20) }
    }
}

/// One svcrack run against one defence.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GuessRun {
    pub guard: Guard,
    pub source: String,
    /// Guesses svcrack sent (requests with credentials leaving the attacker).
    pub guesses_sent: u64,
    /// Guesses Kamailio checked (its `auth_failures` counter).
    pub reached_kamailio: u64,
    /// Failures the attacker received, in all and before the ban began.
    pub failures_seen: u64,
    pub failures_before_ban: u64,
    /// Proven failures the kernel counted (`[auth]` row only).
    pub kernel_failures: Option<u64>,
    /// From the first failure, the `FAILURES`-th and the last one before
    /// the ban to the first probe that did not arrive, ms (negative: the
    /// ban began before that failure's answer reached the attacker).
    pub first_to_ban_ms: Option<f64>,
    pub nth_to_ban_ms: Option<f64>,
    pub last_to_ban_ms: Option<f64>,
    /// The defence's CPU over `cpu_window_secs`.
    pub cpu_secs: f64,
    pub cpu_window_secs: f64,
    /// Whether the guesser was banned, and by whom (shieldd's ban origin,
    /// or "fail2ban").
    pub banned: bool,
    pub origin: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuthResults {
    pub date: String,
    pub minutes: f64,
    pub failures: u32,
    pub words: usize,
    pub runs: Vec<GuessRun>,
    pub machine: super::Machine,
    pub fail2ban_backend: String,
}

/// Runs the section in a fresh lab; files under `dir`.
pub fn run(opts: &AuthOptions, dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<AuthResults> {
    ensure!(opts.runs * Guard::ALL.len() <= PROBE_SOURCES, "at most {} runs in all", PROBE_SOURCES);
    let started = Instant::now();
    let machine = super::machine();
    let topo = Topology::new();
    topo.warm_neighbours();
    let sink = ProbeSink::start(&topo.sbc);
    let mut out = AuthResults { failures: FAILURES, words: opts.words, machine, ..Default::default() };
    for round in 0..opts.runs {
        for (gi, guard) in Guard::ALL.into_iter().enumerate() {
            signals::check()?;
            let k = round * Guard::ALL.len() + gi;
            progress(&format!("{} run {}/{}", guard.short(), round + 1, opts.runs));
            let run_dir = dir.join(format!("{}-{round}", guard.short()));
            let r = one_run(&topo, &sink, &run_dir, guard, probe_source(k), opts, &mut out.fail2ban_backend)
                .with_context(|| format!("{} run {} (files in {})", guard.short(), round + 1, run_dir.display()))?;
            out.runs.push(r);
        }
    }
    out.date = super::date_now();
    out.minutes = started.elapsed().as_secs_f64() / 60.0;
    Ok(out)
}

/// A defence, running.
enum Defender {
    Shield(Shieldd),
    F2b(Fail2ban),
}

impl Defender {
    fn start(topo: &Topology, dir: &Path, guard: Guard, kamailio_log: &Path) -> Result<Defender> {
        let shield = LabConfig::new(dir)
            .set("sip", "scanner_user_agents", "[]")
            .set("limits", "packets_per_second", "0")
            .set("limits.methods", "REGISTER", "{ per_second = 1000000, burst = 1000000 }");
        Ok(match guard {
            Guard::Wire => Defender::Shield(
                shield
                    .set("auth", "failures", &FAILURES.to_string())
                    .set("auth", "window", "\"5m\"")
                    .set("auth", "bantime", "\"1h\"")
                    .start(&topo.sbc)?,
            ),
            Guard::Jail | Guard::Reworded => Defender::Shield(
                shield
                    .with_jail(JailSettings {
                        logpath: kamailio_log.to_path_buf(),
                        maxretry: FAILURES,
                        findtime: "10m",
                        bantime: "1h",
                    })
                    .start(&topo.sbc)?,
            ),
            Guard::Fail2ban => Defender::F2b(Fail2ban::start_undated(&topo.sbc, dir, kamailio_log, FAILURES)?),
        })
    }

    fn pid(&self) -> u32 {
        match self {
            Defender::Shield(s) => s.pid(),
            Defender::F2b(f) => f.pid(),
        }
    }

    /// Who banned `src` (if anyone), and the kernel's proven failures
    /// (shieldd).
    fn verdict(&self, topo: &Topology, src: Ipv4Addr) -> Result<(Option<String>, Option<u64>)> {
        match self {
            Defender::Shield(s) => {
                let origin = s
                    .ban_of(&format!("{src}/32"))
                    .map(|ban| ban["origin"].as_str().unwrap_or_default().to_string());
                let m = s.metrics(&topo.sbc)?;
                Ok((origin, Some(proven_failures(&m))))
            }
            Defender::F2b(f) => {
                let banned = f.log_text().contains(&format!("Ban {src}"));
                Ok((banned.then(|| "fail2ban".into()), None))
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = match self {
            Defender::Shield(s) => s.log_text(),
            Defender::F2b(f) => f.log_text(),
        };
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// `sipshield_auth_attempts_total{...result="failure"}` on the public
/// interface, summed.
fn proven_failures(metrics: &str) -> u64 {
    let prefix = format!("sipshield_auth_attempts_total{{interface=\"{SBC_PUBLIC_IF}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("result=\"failure\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// svcrack 0.3.3 does not bind to its `-b` address (its main never passes
/// it on): it sends from whatever source the route gives. This host route
/// to the SBC in the attacker's namespace gives `src`, so each run guesses
/// from a fresh address; removed on drop.
struct SourceRoute<'a> {
    ns: &'a crate::netns::Netns,
}

impl<'a> SourceRoute<'a> {
    fn new(ns: &'a crate::netns::Netns, src: Ipv4Addr) -> Result<SourceRoute<'a>> {
        let out = std::process::Command::new("ip")
            .args(["-n", &ns.name, "route", "replace", &format!("{SBC_SIP_IP}/32"), "dev", HOST_IF])
            .args(["src", &src.to_string()])
            .output()
            .context("ip route replace")?;
        ensure!(out.status.success(), "ip route replace: {}", String::from_utf8_lossy(&out.stderr));
        Ok(SourceRoute { ns })
    }
}

impl Drop for SourceRoute<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["-n", &self.ns.name, "route", "del", &format!("{SBC_SIP_IP}/32")])
            .output();
    }
}

/// Waits until Kamailio has checked every word of the dictionary (the run
/// that is not banned).
fn every_guess_checked(kam: &Kamailio, opts: &AuthOptions) -> Result<()> {
    let t = Instant::now();
    loop {
        let n = kam.script_stat("auth_failures")?;
        if n >= opts.words as u64 {
            return Ok(());
        }
        ensure!(t.elapsed() < opts.ban_within, "Kamailio checked {n} of {} guesses in {:?}", opts.words, opts.ban_within);
        signals::sleep(Duration::from_millis(100))?;
    }
}

/// Waits until probes from `src` arrive (nothing banned it yet).
fn probes_arrive(sink: &ProbeSink, src: Ipv4Addr) -> Result<()> {
    let t = Instant::now();
    while sink.received_up_to(src) < 20 {
        ensure!(t.elapsed() < Duration::from_secs(5), "probes from {src} do not arrive before any ban");
        signals::sleep(Duration::from_millis(5))?;
    }
    Ok(())
}

fn one_run(
    topo: &Topology,
    sink: &ProbeSink,
    dir: &Path,
    guard: Guard,
    src: Ipv4Addr,
    opts: &AuthOptions,
    backend: &mut String,
) -> Result<GuessRun> {
    std::fs::create_dir_all(dir)?;
    let mut defines = vec!["ALLOW_SCANNERS", "CHALLENGE_QOP"];
    if guard == Guard::Reworded {
        defines.push("LOG_FORMAT_V2");
    }
    let kopts = Options { defines, ..Options::default() };
    let kam = Kamailio::start(&topo.sbc, dir, &kopts)?;
    let defender = Defender::start(topo, dir, guard, &kam.log)?;
    if let Defender::F2b(f) = &defender {
        *backend = f.backend();
    }
    let mut prober = Prober::start(&topo.attacker, src, SBC_SIP_IP, PROBE_EVERY, opts.ban_within * 3);
    probes_arrive(sink, src)?;
    let capture = Capture::start(&topo.attacker, HOST_IF, src, SBC_SIP_IP, opts.ban_within * 3)?;
    let words: Vec<String> = (0..opts.words).map(|i| format!("guess{i:04}")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let meter = CpuMeter::start(defender.pid()).context("the defence has exited")?;
    let t0 = Instant::now();
    let home = dir.join("svcrack");
    let _route = SourceRoute::new(&topo.attacker, src)?;
    let guesser = svcrack(&topo.attacker, &home, src, SBC_SIP_IP, USER, &words)?;
    let banned_at = if guard.origin().is_some() {
        let Some(at) = wait_for_drop(sink, &prober, QUIET, opts.ban_within) else {
            bail!(
                "{src} was not banned within {:?}; svcrack said:\n{}\nthe defence:\n{}",
                opts.ban_within,
                std::fs::read_to_string(home.join("svcrack.log")).unwrap_or_default(),
                defender.log_tail()
            );
        };
        Some(at)
    } else {
        every_guess_checked(&kam, opts)?;
        ensure!(sink.received_up_to(src) + 100 >= prober.sent(), "probes from {src} stopped: banned after all?");
        None
    };
    signals::sleep(opts.settle)?;
    let cpu = meter.finish();
    let window = t0.elapsed();
    drop(guesser);
    prober.stop();
    let x = exchange(&capture.finish());
    let (origin, kernel_failures) = defender.verdict(topo, src)?;
    ensure!(origin.as_deref() == guard.origin(), "{src} banned by {origin:?}, expected {:?}", guard.origin());
    let reached_kamailio = kam.script_stat("auth_failures")?;
    summarize(guard, src, &x, banned_at, (origin, kernel_failures, reached_kamailio), (cpu, window))
}

/// ms from `t` to `ban`: negative when the ban began first.
fn signed_ms(ban: Instant, t: Instant) -> f64 {
    match ban.checked_duration_since(t) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(t.duration_since(ban).as_secs_f64() * 1e3),
    }
}

/// The run's figures from the exchange and the ban's moment. A failure is
/// timed when the server's answer reached the attacker; a jail reads the
/// log line the server writes just before it answers, so its ban may
/// begin before that answer arrives (a negative time).
fn summarize(
    guard: Guard,
    src: Ipv4Addr,
    x: &Exchange,
    banned_at: Option<Instant>,
    (origin, kernel_failures, reached_kamailio): (Option<String>, Option<u64>, u64),
    (cpu, window): (f64, Duration),
) -> Result<GuessRun> {
    let Some(first) = x.failures.first() else {
        bail!("no failure reached the attacker ({} guesses sent)", x.guesses.len());
    };
    let before = x.failures.iter().filter(|t| banned_at.is_none_or(|b| **t <= b)).count();
    let to_ban = |t: Option<&Instant>| Some(signed_ms(banned_at?, *t?));
    Ok(GuessRun {
        guard,
        source: src.to_string(),
        guesses_sent: x.guesses.len() as u64,
        reached_kamailio,
        failures_seen: x.failures.len() as u64,
        failures_before_ban: before as u64,
        kernel_failures,
        first_to_ban_ms: to_ban(Some(first)),
        nth_to_ban_ms: to_ban(x.failures.get(FAILURES as usize - 1)),
        last_to_ban_ms: to_ban(before.checked_sub(1).map(|i| &x.failures[i])),
        cpu_secs: cpu,
        cpu_window_secs: window.as_secs_f64(),
        banned: origin.is_some(),
        origin: origin.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_failures_to_the_ban_signed() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let x = Exchange { guesses: (0..6).map(|i| at(i * 6)).collect(), failures: (0..6).map(|i| at(i * 6 + 1)).collect() };
        // Failures at 1, 7, 13, 19, 25, 31 ms; the ban at 22 ms.
        let r = summarize(Guard::Jail, Ipv4Addr::new(198, 51, 100, 200), &x, Some(at(22)), (Some("kamailio-auth".into()), None, 6), (0.0, Duration::ZERO)).unwrap();
        assert_eq!((r.guesses_sent, r.failures_seen, r.failures_before_ban), (6, 6, 4));
        assert!(r.banned);
        assert!((r.first_to_ban_ms.unwrap() - 21.0).abs() < 1e-6);
        assert!((r.nth_to_ban_ms.unwrap() + 3.0).abs() < 1e-6, "the 5th answer came 3 ms after the ban");
        assert!((r.last_to_ban_ms.unwrap() - 3.0).abs() < 1e-6);
        let none = Exchange { guesses: vec![at(0)], failures: vec![] };
        assert!(summarize(Guard::Wire, Ipv4Addr::new(198, 51, 100, 200), &none, Some(at(22)), (None, None, 0), (0.0, Duration::ZERO)).is_err());
        let never = summarize(Guard::Reworded, Ipv4Addr::new(198, 51, 100, 200), &x, None, (None, Some(0), 6), (0.0, Duration::ZERO)).unwrap();
        assert!(!never.banned);
        assert_eq!((never.failures_before_ban, never.first_to_ban_ms, never.nth_to_ban_ms), (6, None, None));
    }

    #[test]
    fn sums_the_proven_failures_of_the_public_interface() {
        let m = "sipshield_auth_attempts_total{interface=\"pub0\",method=\"REGISTER\",result=\"failure\"} 5\n\
                 sipshield_auth_attempts_total{interface=\"pub0\",method=\"INVITE\",result=\"failure\"} 1\n\
                 sipshield_auth_attempts_total{interface=\"pub0\",method=\"REGISTER\",result=\"unproven\"} 7\n\
                 sipshield_auth_attempts_total{interface=\"car0\",method=\"REGISTER\",result=\"failure\"} 9\n";
        assert_eq!(proven_failures(m), 6);
    }
}
