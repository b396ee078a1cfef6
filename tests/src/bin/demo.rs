//! `cargo xtask demo` (`make demo`): SIP Shield protecting a real Kamailio
//! in a throwaway three-host lab (see `tests/src/lab/mod.rs`).
//!
//! 1. attacker, carrier and SBC network namespaces, joined by veths;
//! 2. Kamailio 5.6 on the SBC (registrar, digest auth, calls to a PBX);
//! 3. the real `shieldd` with the example configuration (config/shield.toml,
//!    adapted only where a lab must be: interfaces, pin path, state dir,
//!    control socket, the jail's log file), attached natively to both SBC
//!    interfaces;
//! 4. legitimate traffic from the carrier for the whole demo: subscribers
//!    registering with digest auth, calls from the trunk (sipp);
//! 5. from the attacker: SIPVicious svmap and svwar, an INVITE/REGISTER flood
//!    from 64 addresses at the highest rate this machine sends, a sipp
//!    password guesser with an ordinary User-Agent, and last a
//!    spoofed-source flood (a random source of 10.64.0.0/12 per packet)
//!    after a reload that turns on `[verify]`'s unverified budget: the
//!    subscribers, verified by Kamailio's 200 OK to their REGISTERs, keep
//!    registering through it; between the two, subscriber 1000's account
//!    calls premium numbers (the shield's 403), then calls abroad that
//!    are allowed (answered, and tracked by country);
//! 6. a report: legitimate success rate, drops by reason, bans, the jail's
//!    log-to-kernel latency, where the metrics are. It checks what it
//!    reports and exits 1 if the shield did not do its job.
//!
//! Everything is removed at the end, also on Ctrl-C and on failure (drop
//! guards; the children run in their own process groups). `--hold` keeps
//! the lab running after the report until Ctrl-C, to look around.
//! Files (configs, logs, sipp statistics, a metrics snapshot) stay in
//! `lab-out/demo/`.
//!
//! `--fleet` runs a separate, shorter demo instead (about 35 s, see
//! `shield_tests::lab::fleet_demo`): three SBCs, each a real `shieldd`,
//! sharing bans through a real CrowdSec 1.4.6 LAPI. A jail ban on SBC 1 is
//! pushed and enforced on SBC 2 and 3; `cscli` IPv4 and IPv6 ranges reach
//! all three; a decision for the allowlisted trunk is skipped; LAPI is
//! stopped for 15 s (bans stay, a new ban is queued, the fleet converges
//! when it returns); `shieldctl unban` on SBC 1 lifts its ban fleet-wide.
//! It prints the propagation times and its checks, and exits 1 if one
//! failed. Files stay in `lab-out/fleet-demo/`; `--hold` works there too.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use shield_tests::daemon::{self, Shieldd, METRICS_PORT};
use shield_tests::lab::bench::{budget, spoof};
use shield_tests::lab::fleet_demo;
use shield_tests::lab::flood::{Engine, FloodOptions, Flooder};
use shield_tests::lab::kamailio::{self, Kamailio};
use shield_tests::lab::legit::{Legit, LegitLoad, LegitResult};
use shield_tests::lab::logwatch::LogWatch;
use shield_tests::paths::repo;
use shield_tests::lab::progress::{thousands, Progress};
use shield_tests::lab::scanners::{svmap, svwar};
use shield_tests::lab::shieldd::{JailSettings, LabConfig};
use shield_tests::lab::signals;
use shield_tests::lab::sipp::{Run, Tally};
use shield_tests::lab::topology::*;
use shield_tests::lab::toll::{self, TollStage};
use shield_tests::lab::Topology;

const FLOOD_SECONDS: u64 = 10;
const MAXRETRY: u32 = 5;
/// The toll-fraud stage's calls to each premium number.
const TOLL_CALLS_PER_NUMBER: u64 = 3;
/// Subscriber 1000's own calls abroad, allowed (not premium): the report's
/// calls by country (SPEC §13) show them.
const CALLS_ABROAD: [(&str, &str, u64); 2] = [("+33", "0033142685300", 2), ("+49", "00493022610", 1)];

#[derive(Parser)]
#[command(
    about = "SIP Shield protecting a real Kamailio in a three-host lab: legitimate \
             traffic, scanners, a flood and a password guesser, with a live report. As root. \
             With --fleet: three SBCs sharing bans through a real CrowdSec LAPI instead."
)]
struct Args {
    /// Keep the lab running after the report until Ctrl-C, to look around.
    #[arg(long)]
    hold: bool,
    /// Run the fleet demo instead (about 35 s): three SBCs, each a real
    /// shieldd, sharing bans through a real CrowdSec LAPI (jail ban pushed
    /// and pulled, cscli ranges, the allowlisted trunk, LAPI down for 15 s,
    /// unban fleet-wide). Files in lab-out/fleet-demo/.
    #[arg(long)]
    fleet: bool,
}

fn main() -> ExitCode {
    // Parse first: `--help` or a bad option must not start anything.
    let args = Args::parse();
    signals::install();
    if args.fleet {
        return fleet_demo::main(args.hold);
    }
    let t = Instant::now();
    let result = run(args.hold);
    let secs = t.elapsed().as_secs_f64();
    let result = result.map(|ok| {
        if ok {
            println!("\nLab removed (processes stopped, namespaces deleted, XDP detached, pins removed). {secs:.0} s in all.");
            ExitCode::SUCCESS
        } else {
            println!(
                "\nLab removed. The shield did NOT do everything it should (see the checks above)."
            );
            ExitCode::FAILURE
        }
    });
    signals::exit_code(result, "demo", "lab", "lab-out/demo/")
}

/// Runs the demo; `Ok(true)` when every check passed.
fn run(hold: bool) -> Result<bool> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("run as root: the lab creates network namespaces and loads XDP programs");
    }
    if let Some(line) = shield_tests::lab::sweep::stale().describe() {
        println!("{line}");
    }
    let out = repo().join("lab-out/demo");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    println!("SIP Shield demo: a real Kamailio behind shieldd, legitimate calls and registrations, attacks.\n");
    let mut p = Progress::new(10);

    p.step("Lab: attacker, carrier and SBC network namespaces, a veth from each host to the SBC");
    let topo = Topology::new();
    topo.warm_neighbours();
    p.done(&format!(
        "attacker {ATTACKER_IP} (+{} more addresses) -> {SBC_PUBLIC_IF} {SBC_PUBLIC_IP} | SBC | \
         {SBC_CARRIER_IF} {SBC_CARRIER_IP} <- carrier (trunk {TRUNK_IP}, {SUBSCRIBERS} subscribers)",
        FLOOD_SOURCES + PROBE_SOURCES + 2
    ));
    signals::check()?;

    p.step("Kamailio 5.6 on the SBC: registrar with digest auth, trunk calls to a PBX, an auth-failure log line");
    let kam = Kamailio::start(&topo.sbc, &out, &kamailio::Options::default())?;
    p.done(&format!(
        "running (pid {}), lab/kamailio/sbc.cfg, log lab-out/demo/kamailio.log",
        kam.pid()
    ));
    signals::check()?;

    let (cfg, shield) = shield_stage(&mut p, &topo, &out, &kam)?;
    signals::check()?;

    let legit = legit_stage(&mut p, &topo, &out, &shield)?;

    let lab = Lab {
        topo: &topo,
        out: &out,
        cfg: &cfg,
        shield: &shield,
        kam: &kam,
        legit: &legit,
    };
    let scanners_blind = scanner_stage(&mut p, &lab)?;
    let flood = flood_stage(&mut p, &lab)?;
    let jail_latency = brute_force_stage(&mut p, &lab)?;

    let toll = toll_stage(&mut p, &lab)?;
    let abroad = abroad_stage(&mut p, &lab)?;
    let spoofed = spoofed_stage(&mut p, &lab)?;

    p.step("Winding down the legitimate traffic; report");
    let result = legit.wind_down(Duration::from_secs(20))?;
    let stats = shield.stats()?;
    let banned = shield.banned()?;
    let metrics = shield.metrics(&topo.sbc).unwrap_or_default();
    std::fs::write(out.join("metrics.txt"), &metrics)?;
    p.done("done");

    let ok = report(&ReportInput {
        legit: result,
        stats: &stats,
        banned: &banned,
        metrics: &metrics,
        flood,
        scanners_blind,
        jail_latency,
        spoofed,
        toll,
        abroad,
        elapsed: p.elapsed(),
    });
    drop(p);

    if hold {
        hold_lab(&topo, &shield);
    }
    Ok(ok)
}

/// What the attack stages work with: the lab, its files, and what runs
/// in it.
#[derive(Clone, Copy)]
struct Lab<'a> {
    topo: &'a Topology,
    out: &'a std::path::Path,
    cfg: &'a LabConfig,
    shield: &'a Shieldd,
    kam: &'a Kamailio,
    legit: &'a Legit,
}

/// The carrier's legitimate load for the whole demo, flowing before the
/// attacks start.
fn legit_stage(
    p: &mut Progress,
    topo: &Topology,
    out: &std::path::Path,
    shield: &Shieldd,
) -> Result<Legit> {
    p.step("Legitimate traffic from the carrier, until the end: 8 subscribers registering, calls from the trunk");
    let load = LegitLoad {
        subscribers: SUBSCRIBERS,
        registrations_per_subscriber: 1.0,
        calls_per_second: 4.0,
        duration: Duration::from_secs(600),
    };
    let legit = Legit::start(topo, out, &load)?;
    let warmup = Instant::now();
    watch(p, shield, &legit, Duration::from_secs(10), || {
        Ok(warmup.elapsed() >= Duration::from_secs(3))
    })?;
    let r = legit.tally();
    p.done(&format!("flowing: {}", legit_line(&r)));
    Ok(legit)
}

/// The real shieldd with the example configuration, a jail on Kamailio's
/// log and the premium numbers denied.
fn shield_stage(
    p: &mut Progress,
    topo: &Topology,
    out: &std::path::Path,
    kam: &Kamailio,
) -> Result<(LabConfig, Shieldd)> {
    p.step("shieldd with config/shield.toml: interfaces pub0 + car0, jail `kamailio-auth` on Kamailio's log");
    let cfg = LabConfig::new(out)
        .with_jail(JailSettings {
            logpath: kam.log.clone(),
            maxretry: MAXRETRY,
            findtime: "10m",
            bantime: "1h",
        })
        .set("destinations", "deny", toll::PREMIUM);
    let shield = cfg.start(&topo.sbc)?;
    let status = shield.status()?;
    let ifaces: Vec<String> = status
        .interfaces
        .iter()
        .map(|i| format!("{} ({})", i.name, i.mode))
        .collect();
    p.done(&format!(
        "attached to {}; XDP program id {}; config lab-out/demo/shield.toml",
        ifaces.join(", "),
        status.program_id
    ));
    Ok((cfg, shield))
}

/// Subscriber 1000's account calling premium numbers: refused with a 403.
fn toll_stage(p: &mut Progress, lab: &Lab) -> Result<TollStage> {
    let Lab { topo, out, shield, kam, legit, .. } = *lab;
    p.step(&format!(
        "Toll fraud: subscriber 1000's account calls premium numbers ({}) from {}",
        toll::PREMIUM_NUMBERS.join(", "),
        subscriber_ip(1)
    ));
    let toll = toll::stage(topo, out, shield, kam, legit, TOLL_CALLS_PER_NUMBER)?;
    p.done(&format!(
        "{} of {} calls answered 403 by the shield, {} reached Kamailio; trunk calls meanwhile {}/{}",
        toll.refused.successful,
        toll.calls,
        toll.at_kamailio,
        toll.legit_calls.successful,
        toll.legit_calls.finished()
    ));
    Ok(toll)
}

/// Subscriber 1000's own calls abroad (allowed numbers), one sipp per
/// number, after the toll fraud: answered by the PBX, tracked by country.
fn abroad_stage(p: &mut Progress, lab: &Lab) -> Result<Tally> {
    let numbers: Vec<String> = CALLS_ABROAD.iter().map(|(c, n, k)| format!("{k} to {n} ({c})")).collect();
    p.step(&format!("Calls abroad, allowed: subscriber 1000 calls {}", numbers.join(", ")));
    let sbc = SocketAddrV4::new(SBC_SIP_IP, 5060);
    let mut total = Tally::default();
    for (i, (_, number, n)) in CALLS_ABROAD.iter().enumerate() {
        let mut run = Run::subscriber_calls(subscriber_ip(1), sbc, number, 2.0, *n);
        // Not 5060 (the subscriber's phone registers from there) nor the
        // premium calls' ports.
        run.local.set_port(5080 + 2 * i as u16);
        total = total.add(&run.start(&lab.topo.carrier, lab.out)?.finish(Duration::from_secs(30))?);
    }
    p.done(&format!("{} of {} answered", total.successful, total.finished()));
    Ok(total)
}

/// `--hold`: keeps the lab up until Ctrl-C, with hints to look around.
fn hold_lab(topo: &Topology, shield: &Shieldd) {
    println!(
        "\nThe lab stays up until Ctrl-C. Try:\n  \
         nsenter --net=/run/netns/{} curl -s 127.0.0.1:{METRICS_PORT}/metrics | grep '^sipshield_'\n  \
         target/release/shieldctl --socket {} stats",
        topo.sbc.name,
        shield.socket.display()
    );
    while signals::sleep(Duration::from_secs(1)).is_ok() {}
}

/// SIPVicious svmap and svwar against the SBC; `true` when both found
/// nothing (the shield dropped their probes).
fn scanner_stage(p: &mut Progress, lab: &Lab) -> Result<bool> {
    let Lab { topo, out, shield, legit, .. } = *lab;
    p.step(&format!(
        "Scanners from {SCANNER_IP}: SIPVicious svmap and svwar (extensions 1000-1099)"
    ));
    let home = out.join("sipvicious-home");
    let (topo_ref, home_ref) = (topo, &home);
    let scans = std::thread::scope(|s| -> Result<_> {
        let h = s.spawn(move || -> Result<_> {
            let m = svmap(&topo_ref.attacker, home_ref, SCANNER_IP, SBC_PUBLIC_IP)?;
            let w = svwar(
                &topo_ref.attacker,
                home_ref,
                SCANNER_IP,
                SBC_PUBLIC_IP,
                "1000-1099",
            )?;
            Ok((m, w))
        });
        watch(p, &shield, &legit, Duration::from_secs(120), || {
            Ok(h.is_finished())
        })?;
        h.join()
            .map_err(|_| anyhow::anyhow!("scanner thread panicked"))?
    })?;
    let scanner_drops = reason(&shield, "drop", "scanner")?;
    let scanners_blind = !scans.0.found && !scans.1.found;
    p.done(&format!(
        "svmap: {}; svwar: {}; {} scanner packets dropped in XDP",
        if scans.0.found {
            "FOUND the SBC"
        } else {
            "found nothing"
        },
        if scans.1.found {
            "FOUND extensions"
        } else {
            "found nothing"
        },
        thousands(scanner_drops)
    ));
    Ok(scanners_blind)
}

/// What the INVITE/REGISTER flood stage saw.
struct FloodSeen {
    sent: u64,
    passed: u64,
    /// Flood sources banned by escalation.
    escalated: usize,
}

/// The INVITE/REGISTER flood from `FLOOD_SOURCES` addresses.
fn flood_stage(p: &mut Progress, lab: &Lab) -> Result<FloodSeen> {
    let Lab { topo, out, shield, legit, .. } = *lab;
    p.step(&format!(
        "Flood from {FLOOD_SOURCES} attacker addresses: INVITE + REGISTER, {FLOOD_SECONDS} s, as fast as this machine sends"
    ));
    let before = shield.stats()?;
    let mut flood = Flooder::start(
        topo,
        out,
        &FloodOptions::new(Duration::from_secs(FLOOD_SECONDS)),
    )?;
    watch(
        p,
        shield,
        legit,
        Duration::from_secs(FLOOD_SECONDS + 30),
        || Ok(!flood.is_running()),
    )?;
    let sent = flood.finish()?;
    std::thread::sleep(Duration::from_millis(300));
    let after = shield.stats()?;
    let delta = counter_delta(&before, &after, SBC_PUBLIC_IF);
    let flood_dropped: u64 = delta
        .iter()
        .filter(|((v, _), _)| v == "drop")
        .map(|(_, n)| n)
        .sum();
    let flood_passed: u64 = delta
        .iter()
        .filter(|((v, _), _)| v == "pass")
        .map(|(_, n)| n)
        .sum();
    let escalated = shield
        .banned()?
        .bans
        .iter()
        .filter(|b| b.origin == shield::origin::Origin::Escalation)
        .count();
    p.done(&format!(
        "sent {} packets ({} per second, engine {}); dropped in XDP {} ({}), passed {}; {} flood sources banned by escalation",
        thousands(sent.sent),
        thousands(sent.rate as u64),
        sent.engine.as_str(),
        thousands(flood_dropped),
        delta
            .iter()
            .filter(|((v, _), n)| v == "drop" && **n > 0)
            .map(|((_, r), n)| format!("{r} {}", thousands(*n)))
            .collect::<Vec<_>>()
            .join(", "),
        thousands(flood_passed),
        escalated
    ));
    Ok(FloodSeen {
        sent: sent.sent,
        passed: flood_passed,
        escalated,
    })
}

/// The sipp password guesser; the time from Kamailio's `MAXRETRY`th
/// failure line to the ban in the kernel, if it was banned.
fn brute_force_stage(p: &mut Progress, lab: &Lab) -> Result<Option<Duration>> {
    let Lab { topo, out, shield, kam, legit, .. } = *lab;
    p.step(&format!(
        "Password guessing from {BRUTE_FORCE_IP}: sipp, wrong passwords for subscriber 1000, an ordinary User-Agent"
    ));
    let logwatch = LogWatch::start(&kam.log);
    let bans = shield.ban_map()?;
    let guesser = Run::brute_force(BRUTE_FORCE_IP, SocketAddrV4::new(SBC_SIP_IP, 5060), 2.0, 12)
        .start(&topo.attacker, out)?;
    // The ban's arrival in the kernel map, polled every 200 us on its own
    // thread (the status line below takes milliseconds to refresh).
    let poller = std::thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) && !signals::interrupted() {
            if bans.contains(BRUTE_FORCE_IP) {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        None
    });
    watch(p, shield, legit, Duration::from_secs(35), || {
        Ok(poller.is_finished())
    })?;
    let banned_at = poller
        .join()
        .map_err(|_| anyhow::anyhow!("ban poller panicked"))?;
    let needle = format!("sipshield: auth failed for 1000 from {BRUTE_FORCE_IP}:");
    let jail_latency = banned_at.and_then(|at| {
        logwatch
            .wait_for(&needle, MAXRETRY as usize, Duration::from_secs(2))
            .map(|l| at.saturating_duration_since(l.at))
    });
    let guesses = guesser.finish(Duration::from_secs(30))?;
    let failures_logged = logwatch.matching(&needle).len();
    match jail_latency {
        Some(l) => p.done(&format!(
            "banned by jail kamailio-auth after {failures_logged} failed guesses; failure line -> ban in the kernel: {:.1} ms; \
             {} later guesses went unanswered",
            l.as_secs_f64() * 1e3,
            guesses.failed
        )),
        None => p.done(&format!("NOT banned ({failures_logged} failures logged)")),
    }
    Ok(jail_latency)
}

/// What the spoofed-source stage saw.
struct Spoofed {
    /// `shieldctl verified` just before the flood: all entries, and how
    /// many of them are the registered subscribers.
    verified_total: usize,
    subscribers_verified: usize,
    sent: u64,
    rate: f64,
    seconds: f64,
    /// The flood sender's engine.
    engine: Engine,
    /// Drops on the public interface during the flood, reason `unverified`,
    /// and everything passed there.
    unverified_drops: u64,
    passed: u64,
    /// Requests from the forged sources that reached Kamailio's script.
    at_kamailio: u64,
    /// Legitimate registrations and calls that ended during the flood.
    registrations: Tally,
    calls: Tally,
    /// `under_pressure` in any `shieldctl verified` polled during the
    /// flood, and `sipshield_under_pressure 1` in any metrics scrape.
    under_pressure: bool,
    pressure_metric: bool,
}

impl Spoofed {
    /// Unverified requests the budget lets through in the flood's time.
    fn allowance(&self) -> f64 {
        budget::allowance(self.seconds)
    }

    /// The stage's line in the progress display.
    fn summary(&self) -> String {
        format!(
            "sent {} ({} per second); dropped unverified {}; reached Kamailio {} (budget {}); \
             subscribers' registrations meanwhile {}/{}; under pressure: {}",
            thousands(self.sent),
            thousands(self.rate as u64),
            thousands(self.unverified_drops),
            thousands(self.at_kamailio),
            thousands(self.allowance() as u64),
            self.registrations.successful,
            self.registrations.finished(),
            if self.under_pressure { "yes" } else { "no" }
        )
    }
}

/// Reloads shieldd with the unverified budget on; `shieldctl verified`
/// then, and how many registered subscribers it lists.
fn enable_budget(
    p: &mut Progress,
    cfg: &LabConfig,
    shield: &Shieldd,
) -> Result<(shield::control::protocol::VerifiedReply, usize)> {
    shield.write_config(&budget::with_budget(cfg.clone()).render(shield)?);
    shield.try_ctl_ok(&["reload"])?;
    let v = shield.verified()?;
    let subscribers_verified = budget::subscribers_verified(&v);
    p.note(&format!(
        "reloaded: unverified budget {}/s, burst {}; verified sources: {} ({subscribers_verified} of {SUBSCRIBERS} \
         subscribers, by Kamailio's 200 OK to their REGISTER; the trunk by its calls' 200 OK)",
        v.unverified_per_second,
        budget::BUDGET_BURST,
        v.total
    ));
    Ok((v, subscribers_verified))
}

/// The spoofed-source flood: a reload turns the unverified budget on, the
/// subscribers (verified by Kamailio's 200 OK earlier) keep registering
/// while every flood packet comes from another forged address.
fn spoofed_stage(p: &mut Progress, lab: &Lab) -> Result<Spoofed> {
    let Lab { topo, out, cfg, shield, kam, legit } = *lab;
    p.step(&format!(
        "Spoofed-source flood: reload with [verify] unverified_per_second = {}, then {FLOOD_SECONDS} s from a random \
         address of {} (1,048,576) per packet, as fast as this machine sends",
        budget::BUDGET_PER_SECOND,
        spoof::SPOOF_NET
    ));
    let (v, subscribers_verified) = enable_budget(p, cfg, shield)?;
    let (before, tally0, (k0, _)) = (
        shield.stats()?,
        legit.tally(),
        spoof::unverified_at_kamailio(kam)?,
    );
    let dir = out.join("spoofed");
    std::fs::create_dir_all(&dir)?;
    let mut flood = Flooder::start(
        topo,
        &dir,
        &FloodOptions {
            spoof: Some(FloodOptions::spoof_net()),
            ..FloodOptions::new(Duration::from_secs(FLOOD_SECONDS))
        },
    )?;
    let (mut under_pressure, mut pressure_metric, mut polled) = (false, false, Instant::now());
    watch(
        p,
        shield,
        legit,
        Duration::from_secs(FLOOD_SECONDS + 30),
        || {
            if polled.elapsed() >= Duration::from_millis(500) {
                polled = Instant::now();
                under_pressure |= shield.verified().is_ok_and(|v| v.under_pressure);
                pressure_metric |= shield
                    .metrics(&topo.sbc)
                    .is_ok_and(|m| m.lines().any(|l| l == "sipshield_under_pressure 1"));
            }
            Ok(!flood.is_running())
        },
    )?;
    let sent = flood.finish()?;
    std::thread::sleep(Duration::from_millis(300));
    let delta = counter_delta(&before, &shield.stats()?, SBC_PUBLIC_IF);
    let tally1 = legit.tally();
    let s = Spoofed {
        verified_total: v.total,
        subscribers_verified,
        sent: sent.sent,
        rate: sent.rate,
        seconds: sent.seconds,
        engine: sent.engine,
        unverified_drops: delta
            .get(&("drop".into(), "unverified".into()))
            .copied()
            .unwrap_or(0),
        passed: delta
            .iter()
            .filter(|((v, _), _)| v == "pass")
            .map(|(_, n)| n)
            .sum(),
        at_kamailio: spoof::unverified_at_kamailio(kam)?.0.saturating_sub(k0),
        registrations: since(&tally1.registrations, &tally0.registrations),
        calls: since(&tally1.calls, &tally0.calls),
        under_pressure,
        pressure_metric,
    };
    p.done(&s.summary());
    Ok(s)
}

/// The successes and failures of `a` since the earlier tally `b`.
fn since(a: &Tally, b: &Tally) -> Tally {
    Tally {
        successful: a.successful - b.successful.min(a.successful),
        failed: a.failed - b.failed.min(a.failed),
        ..Tally::default()
    }
}

/// Shows the live status line until `done()` says so (or `limit` passes).
fn watch(
    p: &mut Progress,
    shield: &Shieldd,
    legit: &Legit,
    limit: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let t = Instant::now();
    let mut last = Instant::now() - Duration::from_secs(1);
    loop {
        signals::check()?;
        if done()? {
            return Ok(());
        }
        if t.elapsed() > limit {
            bail!("step did not finish within {limit:?}");
        }
        if last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            let drops = shield
                .stats()
                .map(|s| {
                    let mut by: BTreeMap<String, u64> = BTreeMap::new();
                    for r in s.totals.iter().filter(|r| r.verdict == shield_common::Verdict::Drop) {
                        *by.entry(r.reason.as_str().to_string()).or_default() += r.packets;
                    }
                    let d: Vec<String> = by
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(r, n)| format!("{r} {}", thousands(*n)))
                        .collect();
                    format!(
                        "dropped: {} | bans {}",
                        if d.is_empty() {
                            "none".into()
                        } else {
                            d.join(", ")
                        },
                        s.bans_active
                    )
                })
                .unwrap_or_else(|e| format!("(stats: {e})"));
            p.status(&format!("legit {} | {drops}", legit_line(&legit.tally())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn legit_line(r: &LegitResult) -> String {
    let f = |t: &Tally| match t.success_rate() {
        Some(x) => format!("{}/{} ({:.1} %)", t.successful, t.finished(), x * 100.0),
        None => "0/0".into(),
    };
    format!(
        "registrations {}, calls {}",
        f(&r.registrations),
        f(&r.calls)
    )
}

fn reason(shield: &Shieldd, verdict: &str, reason: &str) -> Result<u64> {
    Ok(daemon::packets(&shield.stats()?, verdict, reason))
}

/// Per (verdict, reason) packet counts on one interface, `after - before`.
fn counter_delta(
    before: &shield::control::protocol::StatsReply,
    after: &shield::control::protocol::StatsReply,
    iface: &str,
) -> BTreeMap<(String, String), u64> {
    let get = |s: &shield::control::protocol::StatsReply| -> BTreeMap<(String, String), u64> {
        s.interfaces
            .iter()
            .filter(|i| i.interface == iface)
            .flat_map(|i| i.counters.iter())
            .map(|c| ((c.verdict.as_str().to_string(), c.reason.as_str().to_string()), c.packets))
            .collect()
    };
    let (b, a) = (get(before), get(after));
    a.into_iter()
        .map(|(k, v)| {
            let d = v.saturating_sub(b.get(&k).copied().unwrap_or(0));
            (k, d)
        })
        .collect()
}

struct ReportInput<'a> {
    legit: LegitResult,
    stats: &'a shield::control::protocol::StatsReply,
    banned: &'a shield::control::protocol::BannedReply,
    metrics: &'a str,
    flood: FloodSeen,
    scanners_blind: bool,
    jail_latency: Option<Duration>,
    spoofed: Spoofed,
    toll: TollStage,
    /// sipp's count of the calls abroad (`CALLS_ABROAD`).
    abroad: Tally,
    elapsed: Duration,
}

/// The spoofed-source stage's lines of the report.
fn spoofed_report(sp: &Spoofed) {
    let pct = |t: &Tally| {
        t.success_rate()
            .map_or("-".to_string(), |x| format!("{:.1} %", x * 100.0))
    };
    println!(
        "Spoofed-source flood ({} s, a random source of {} per packet; [verify] budget {}/s, burst {}):",
        FLOOD_SECONDS,
        spoof::SPOOF_NET,
        budget::BUDGET_PER_SECOND,
        budget::BUDGET_BURST
    );
    println!(
        "  verified before it (`shieldctl verified`)   {:>6} sources, {} of {SUBSCRIBERS} subscribers",
        sp.verified_total, sp.subscribers_verified
    );
    println!(
        "  registrations meanwhile (verified subs)     {:>6} of {:>6} succeeded  {}",
        sp.registrations.successful,
        sp.registrations.finished(),
        pct(&sp.registrations)
    );
    println!(
        "  calls from the trunk meanwhile              {:>6} of {:>6} succeeded  {}",
        sp.calls.successful,
        sp.calls.finished(),
        pct(&sp.calls)
    );
    println!(
        "  sent {} ({} per second, engine {}); dropped as unverified {} ({:.3} %); passed {}",
        thousands(sp.sent),
        thousands(sp.rate as u64),
        sp.engine.as_str(),
        thousands(sp.unverified_drops),
        100.0 * sp.unverified_drops as f64 / sp.sent.max(1) as f64,
        thousands(sp.passed)
    );
    println!(
        "  reached Kamailio from the forged sources: {} in {:.1} s = {:.0}/s; budget {} ({}/s x {:.1} s + burst {}): {:.2}x",
        thousands(sp.at_kamailio),
        sp.seconds,
        sp.at_kamailio as f64 / sp.seconds.max(1e-9),
        thousands(sp.allowance() as u64),
        budget::BUDGET_PER_SECOND,
        sp.seconds,
        budget::BUDGET_BURST,
        sp.at_kamailio as f64 / sp.allowance()
    );
    let seen = |b: bool| {
        if b {
            "seen during the flood"
        } else {
            "never seen"
        }
    };
    println!(
        "  under pressure: `shieldctl verified` under_pressure {}; sipshield_under_pressure 1 {}",
        seen(sp.under_pressure),
        seen(sp.pressure_metric)
    );
}

/// The toll-fraud stage in the report, with `shieldctl refused`.
fn toll_report(t: &TollStage) {
    println!(
        "Toll fraud (SPEC §11): {} calls to premium numbers, {} answered 403 by the shield, {} reached Kamailio; \
         `shieldctl refused`:",
        t.calls, t.refused.successful, t.at_kamailio
    );
    for l in t.listing.lines().take(8) {
        println!("  {l}");
    }
}

/// What the calls metrics (SPEC §13) say the demo's calls were.
struct CallsSeen {
    answered: f64,
    /// International calls ended, by country label (`+33`).
    countries: BTreeMap<String, f64>,
}

/// The value of every sample of `name` (text format) whose labels contain
/// `label`, keyed by that label's value.
fn by_label(metrics: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in metrics.lines() {
        let Some(rest) = l.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, v)) = rest.rsplit_once("} ") else {
            continue;
        };
        let key = labels.split(',').find_map(|kv| {
            kv.strip_prefix(label)?.strip_prefix("=\"")?.strip_suffix('"')
        });
        if let Some(key) = key {
            *out.entry(key.to_string()).or_default() += v.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    out
}

/// Prints the calls the shield saw on the wire (SPEC §13): count by
/// outcome, mean duration by class, international calls by country.
fn calls_report(metrics: &str) -> CallsSeen {
    let outcomes = by_label(metrics, "sipshield_calls_total", "outcome");
    let o: Vec<String> = outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("Calls seen on the wire (SPEC §13, `shieldctl calls`): {}", o.join(", "));
    let sums = by_label(metrics, "sipshield_call_duration_seconds_sum", "class");
    let counts = by_label(metrics, "sipshield_call_duration_seconds_count", "class");
    for (class, n) in counts.iter().filter(|(_, n)| **n > 0.0) {
        let mean = sums.get(class).copied().unwrap_or(0.0) / n;
        println!("  {class:<14} {n:>6} answered, mean duration {mean:.1} s");
    }
    let countries = by_label(metrics, "sipshield_calls_by_country_total", "country");
    if !countries.is_empty() {
        let c: Vec<String> = countries.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  international, by country: {}", c.join(", "));
    }
    CallsSeen {
        answered: outcomes.get("answered").copied().unwrap_or(0.0),
        countries,
    }
}

/// Prints the report; whether every check passed.
fn report(r: &ReportInput) -> bool {
    println!("\n=== Report ({:.0} s) ===", r.elapsed.as_secs_f64());
    println!("Legitimate traffic (sipp from the carrier, during all of the above):");
    let pct = |t: &Tally| {
        t.success_rate()
            .map_or("-".to_string(), |x| format!("{:.1} %", x * 100.0))
    };
    println!(
        "  registrations (digest auth, 8 subscribers)  {:>6} of {:>6} succeeded  {}",
        r.legit.registrations.successful,
        r.legit.registrations.finished(),
        pct(&r.legit.registrations)
    );
    println!(
        "  calls from the trunk (INVITE..BYE)          {:>6} of {:>6} succeeded  {}",
        r.legit.calls.successful,
        r.legit.calls.finished(),
        pct(&r.legit.calls)
    );
    spoofed_report(&r.spoofed);
    toll_report(&r.toll);
    let calls = calls_report(r.metrics);
    kernel_report(r);
    metrics_report(r.metrics);
    checks(r, &calls)
}

/// Packets by verdict and reason, bans by origin, the jail's latency.
fn kernel_report(r: &ReportInput) {
    println!(
        "Packets by verdict and reason (kernel counters, both interfaces; `shieldctl stats`):"
    );
    let totals = daemon::totals(r.stats);
    for ((verdict, reason), n) in totals.iter().filter(|(_, n)| **n > 0) {
        println!("  {verdict:<5} {reason:<12} {:>14}", thousands(*n));
    }
    let mut origins: BTreeMap<String, usize> = BTreeMap::new();
    for b in &r.banned.bans {
        *origins.entry(b.origin.to_string()).or_default() += 1;
    }
    let o: Vec<String> = origins.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "Bans (`shieldctl banned`): {} active: {}",
        r.banned.bans.len(),
        o.join(", ")
    );
    if let Some(b) = r.banned.bans.iter().find(|b| b.origin.to_string() == "kamailio-auth") {
        println!("  {} banned by the jail ({})", b.net, b.reason);
    }
    match r.jail_latency {
        Some(l) => println!(
            "Jail: Kamailio's failure line -> ban in the kernel map in {:.1} ms (target < 100 ms)",
            l.as_secs_f64() * 1e3
        ),
        None => println!("Jail: the password guesser was not banned"),
    }
}

/// Where the metrics are, and a few of them.
fn metrics_report(metrics: &str) {
    println!(
        "Metrics: GET http://127.0.0.1:{METRICS_PORT}/metrics inside the SBC's namespace (Prometheus text); \
         snapshot in lab-out/demo/metrics.txt, e.g."
    );
    for l in metrics
        .lines()
        .filter(|l| {
            (l.starts_with("sipshield_packets_total")
                && l.contains("verdict=\"drop\"")
                && !l.ends_with(" 0"))
                || l.starts_with("sipshield_bans_active")
                || l.starts_with("sipshield_verified_sources")
                || l.starts_with("sipshield_jail_failures_total{")
        })
        .take(7)
    {
        println!("  {l}");
    }
    println!(
        "Files: lab-out/demo/ (shield.toml, shieldd.log, kamailio.log, sipp statistics, flood.log)"
    );
}

/// The report's checks, printed; `true` when every one passed.
fn checks(r: &ReportInput, calls: &CallsSeen) -> bool {
    let all_legit = |t: &Tally| t.finished() > 0 && t.failed == 0;
    let checks = [
        (
            "every legitimate registration and call succeeded",
            all_legit(&r.legit.registrations) && all_legit(&r.legit.calls),
        ),
        (
            "the shield tracked the answered calls (SPEC §13)",
            calls.answered > 0.0,
        ),
        (
            "every call abroad was answered and counted by its country",
            all_legit(&r.abroad)
                && CALLS_ABROAD.iter().all(|(c, _, n)| calls.countries.get(*c) == Some(&(*n as f64))),
        ),
        ("the scanners found nothing", r.scanners_blind),
        (
            "less than 1 % of the flood got past XDP",
            r.flood.sent > 0 && (r.flood.passed as f64) < 0.01 * r.flood.sent as f64,
        ),
        (
            "every flood source was banned by escalation",
            r.flood.escalated >= FLOOD_SOURCES,
        ),
        (
            "the password guesser was banned within 100 ms of its failure line",
            r.jail_latency
                .is_some_and(|l| l < Duration::from_millis(100)),
        ),
    ];
    let sp = &r.spoofed;
    let spoof_checks = [
        (
            "every registered subscriber was verified before the spoofed flood",
            sp.subscribers_verified == SUBSCRIBERS,
        ),
        (
            "the subscribers' registrations during the spoofed flood all succeeded",
            all_legit(&sp.registrations),
        ),
        (
            "at least 99 % of the spoofed flood was dropped as unverified",
            sp.sent > 0 && sp.unverified_drops as f64 >= 0.99 * sp.sent as f64,
        ),
        (
            "the forged sources' requests reaching Kamailio stayed within the budget (+10 %)",
            sp.at_kamailio > 0 && (sp.at_kamailio as f64) <= 1.1 * sp.allowance(),
        ),
        (
            "shieldd reported under_pressure during the spoofed flood (shieldctl and metric)",
            sp.under_pressure && sp.pressure_metric,
        ),
    ];
    let t = &r.toll;
    let toll_checks = [
        (
            "every premium call got the shield's 403 and none reached Kamailio",
            t.refused.successful == t.calls && t.at_kamailio == 0,
        ),
        (
            "the trunk's calls went on during the toll fraud",
            t.legit_calls.finished() > 0 && t.legit_calls.failed == 0,
        ),
    ];
    let checks: Vec<(&str, bool)> = checks.into_iter().chain(spoof_checks).chain(toll_checks).collect();
    println!("Checks:");
    for (what, ok) in &checks {
        println!("  [{}] {what}", if *ok { "ok" } else { "FAILED" });
    }
    checks.iter().all(|(_, ok)| *ok)
}
