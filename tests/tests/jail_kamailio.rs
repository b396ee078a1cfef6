//! Jails end to end on a real Kamailio (issue 4): Kamailio 5.6 with digest
//! authentication runs in the SBC's namespace behind the real `shieldd`
//! (the example configuration with its `kamailio-auth` jail pointed at
//! Kamailio's log). From the attacker's namespace sipp guesses passwords
//! for subscriber 1000; from the carrier's namespace another sipp registers
//! a subscriber with the right password the whole time.
//!
//! Asserted: the guesser is banned after exactly `maxretry` failure lines,
//! its packets are then dropped in XDP (kernel counter `drop/ban` on the
//! public interface) and Kamailio logs no further failure from it; the
//! legitimate subscriber's registrations all succeed; the ban is listed with
//! the jail as its origin and the jail's failures are in the metrics; and
//! the time from the failure line being written to the ban being in the
//! kernel's map is measured, printed, and under the 100 ms of SPEC §4.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use shield_tests::lab::kamailio::{Kamailio, Options};
use shield_tests::lab::logwatch::LogWatch;
use shield_tests::lab::shieldd::{JailSettings, LabConfig};
use shield_tests::lab::sipp::Run;
use shield_tests::lab::topology::*;
use shield_tests::lab::Topology;

const MAXRETRY: u32 = 5;
/// Guesses per second: 4 REGISTERs/s, under the example's REGISTER bucket
/// (5/s), so rate limits cannot stop the guesser: only the jail can.
const GUESS_RATE: f64 = 2.0;
const GUESSES: u64 = 12;
const LEGIT_RATE: f64 = 2.0;
const LEGIT_REGISTRATIONS: u64 = 24;
const LATENCY_TARGET: Duration = Duration::from_millis(100);

#[test]
fn kamailio_password_guesser_is_banned_in_xdp_while_a_subscriber_registers() -> Result<()> {
    shield_tests::kernel::require_root();
    let dir = tempfile::tempdir()?;
    let topo = Topology::new();
    topo.warm_neighbours();

    let kamailio = Kamailio::start(&topo.sbc, dir.path(), &Options::default())?;
    let cfg = LabConfig::new(dir.path()).with_jail(JailSettings {
        logpath: kamailio.log.clone(),
        maxretry: MAXRETRY,
        findtime: "10m",
        bantime: "1h",
    });
    let shield = cfg.start(&topo.sbc)?;
    let bans = shield.ban_map()?;
    let watch = LogWatch::start(&kamailio.log);

    let legit = Run::register(
        subscriber_ip(0),
        SocketAddrV4::new(SBC_SIP_IP, 5060),
        LEGIT_RATE,
        LEGIT_REGISTRATIONS,
    )
    .start(&topo.carrier, dir.path())?;
    std::thread::sleep(Duration::from_secs(1));
    let guesser = Run::brute_force(
        BRUTE_FORCE_IP,
        SocketAddrV4::new(SBC_SIP_IP, 5060),
        GUESS_RATE,
        GUESSES,
    )
    .start(&topo.attacker, dir.path())?;

    // The ban's arrival in the kernel, polled on the pinned map.
    let t = Instant::now();
    let banned_at = loop {
        if bans.contains(BRUTE_FORCE_IP) {
            break Instant::now();
        }
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "no ban for {BRUTE_FORCE_IP} after 30 s; shieldd log:\n{}\nkamailio log:\n{}",
            shield.log_text(),
            kamailio.log_text()
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    let needle = format!("sipshield: auth failed for 1000 from {BRUTE_FORCE_IP}:");
    let fifth = watch
        .wait_for(&needle, MAXRETRY as usize, Duration::from_secs(2))
        .context("the failure lines that led to the ban")?;
    // The daemon's own count is in the ban's reason ("5 failures: ..."):
    // it banned at exactly the maxretry-th line. The test's 250 us file poll
    // can see that line after the ban is already in the kernel (a loaded
    // machine), so it only bounds from above: no line beyond maxretry was
    // needed.
    let before_ban = watch
        .matching(&needle)
        .iter()
        .filter(|l| l.at <= banned_at)
        .count();
    ensure!(
        before_ban <= MAXRETRY as usize,
        "banned only after {before_ban} failure lines, maxretry is {MAXRETRY}"
    );
    let reason = shield
        .banned()?
        .bans
        .into_iter()
        .find(|b| b.net.to_string() == format!("{BRUTE_FORCE_IP}/32"))
        .context("the jail ban listed")?
        .reason;
    ensure!(
        reason.starts_with(&format!("{MAXRETRY} failures: ")),
        "the jail banned after another count of failures: {reason}"
    );
    let latency = banned_at.saturating_duration_since(fifth.at);
    let daemon_figure = shield
        .log_text()
        .lines()
        .filter(|l| l.contains(&BRUTE_FORCE_IP.to_string()))
        .find_map(|l| {
            l.split("latency_ms=")
                .nth(1)
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        });
    println!(
        "log line -> ban in the kernel: {:.2} ms (line seen by a 250 us file poll, ban by polling the pinned map \
         every 200 us); shieldd's own figure: {} ms",
        latency.as_secs_f64() * 1e3,
        daemon_figure.as_deref().unwrap_or("not logged")
    );

    // The guesser keeps trying (sipp retransmits, then moves on to the
    // next guess); none of it reaches Kamailio any more.
    let guesses = guesser.finish(Duration::from_secs(60))?;
    let legit = legit.finish(Duration::from_secs(60))?;
    let stats = shield.stats()?;
    let public = stats
        .interfaces
        .iter()
        .find(|i| i.interface == SBC_PUBLIC_IF)
        .context("pub0 in stats")?;
    let ban_drops: u64 = public
        .counters
        .iter()
        .filter(|c| c.verdict.as_str() == "drop" && c.reason.as_str() == "ban")
        .map(|c| c.packets)
        .sum();
    let after_ban = watch
        .matching(&needle)
        .iter()
        .filter(|l| l.at > banned_at + Duration::from_millis(50))
        .count();
    println!(
        "guesser: {} guesses answered, {} unanswered; {ban_drops} of its packets dropped in XDP for `ban`; \
         subscriber: {}/{} registrations succeeded",
        guesses.successful,
        guesses.failed,
        legit.successful,
        legit.created
    );

    ensure!(
        latency < LATENCY_TARGET,
        "log line to kernel ban took {latency:?} (target {LATENCY_TARGET:?})"
    );
    ensure!(
        ban_drops > 0,
        "no packet of the banned guesser was dropped for `ban` on {SBC_PUBLIC_IF}: {stats:?}"
    );
    ensure!(
        after_ban == 0,
        "Kamailio still logged {after_ban} failures from the banned guesser"
    );
    ensure!(
        guesses.successful == u64::from(MAXRETRY),
        "the guesser got {} answers, expected {MAXRETRY}",
        guesses.successful
    );
    ensure!(
        legit.successful == LEGIT_REGISTRATIONS && legit.failed == 0,
        "the legitimate subscriber must register throughout: {legit:?}"
    );

    let banned = shield.banned()?;
    let ban = banned
        .bans
        .iter()
        .find(|b| b.net.to_string() == format!("{BRUTE_FORCE_IP}/32"))
        .context("ban listed by shieldctl")?;
    ensure!(
        ban.origin == shield::origin::Origin::Jail("kamailio-auth".into()),
        "ban origin: {ban:?}"
    );
    ensure!(
        banned.bans.len() == 1,
        "only the guesser is banned: {banned:?}"
    );

    let metrics = shield.metrics(&topo.sbc)?;
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("sipshield_jail_failures_total") && l.contains("kamailio-auth"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .context("sipshield_jail_failures_total{jail=\"kamailio-auth\"} in /metrics")?;
    ensure!(
        failures >= f64::from(MAXRETRY),
        "jail failures in metrics: {failures}"
    );
    Ok(())
}
