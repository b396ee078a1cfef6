//! SPEC §12 against the password guesser attackers really run: SIPVicious
//! `svcrack` guessing a subscriber's password on a real Kamailio with
//! digest auth, after an upgrade changed Kamailio's log line.
//!
//! Kamailio runs with `ALLOW_SCANNERS` (its default script drops
//! `friendly-scanner` silently, so svcrack would never be challenged) and
//! `LOG_FORMAT_V2` (the auth-failure line worded otherwise); the shield's
//! own scanner list is emptied for the same reason. `shieldd` has both the
//! `kamailio-auth` jail on Kamailio's log and `[auth]`. The jail no longer
//! recognises a failure; the wire still does: svcrack is banned by `[auth]`
//! (origin `auth`) after exactly `failures` proven failures, while the
//! jail counts none.
//!
//! Found on the way: Kamailio 5.6 refuses svcrack 0.3.3's `Authorization`
//! as malformed ("Credentials are not filled properly") before it checks
//! the password, so its script's failure route, and with it any jail's
//! log line in either format, never sees svcrack at all. The server's
//! reply on the wire is a rejection all the same.
//!
//! Needs root, Kamailio and sipvicious; fails, never skips, without them.
//! Bounded: 30 words, watched for at most `GUESS_TIME`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use shield_tests::lab::kamailio::{Kamailio, Options};
use shield_tests::lab::scanners::svcrack;
use shield_tests::lab::shieldd::{JailSettings, LabConfig};
use shield_tests::lab::topology::*;
use shield_tests::lab::Topology;

const FAILURES: u32 = 5;
const GUESS_TIME: Duration = Duration::from_secs(45);

/// The sum of the samples of `metric` (a name with its opening brace).
fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn svcrack_is_banned_by_the_wire_when_the_log_format_changed() -> Result<()> {
    shield_tests::kernel::require_root();
    let dir = tempfile::tempdir()?;
    let topo = Topology::new();
    topo.warm_neighbours();
    let opts = Options {
        defines: vec!["ALLOW_SCANNERS", "LOG_FORMAT_V2"],
        ..Options::default()
    };
    let kamailio = Kamailio::start(&topo.sbc, dir.path(), &opts)?;
    let shield = LabConfig::new(dir.path())
        .with_jail(JailSettings {
            logpath: kamailio.log.clone(),
            maxretry: FAILURES,
            findtime: "10m",
            bantime: "1h",
        })
        .set("sip", "scanner_user_agents", "[\"no-such-scanner\"]")
        .set("auth", "failures", &FAILURES.to_string())
        .set("auth", "window", "\"5m\"")
        .set("auth", "bantime", "\"1h\"")
        .start(&topo.sbc)?;

    let words: Vec<String> = (0..30).map(|i| format!("guess{i:02}")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let home = dir.path().join("svcrack");
    let guesser = svcrack(&topo.attacker, &home, ATTACKER_IP, SBC_SIP_IP, "1000", &words)?;
    let t = Instant::now();
    let ban = loop {
        if let Some(b) = shield.ban_of(&format!("{ATTACKER_IP}/32")) {
            break b;
        }
        ensure!(
            t.elapsed() < GUESS_TIME,
            "svcrack was never banned; svcrack said:\n{}\nshieldd:\n{}",
            std::fs::read_to_string(home.join("svcrack.log")).unwrap_or_default(),
            shield.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let banned_after = t.elapsed();
    drop(guesser);
    println!("svcrack banned {banned_after:?} after it started: {ban}");
    ensure!(ban["origin"] == "auth", "not banned by [auth]: {ban}");
    let reason = ban["reason"].as_str().unwrap_or_default();
    ensure!(reason.contains("auth_failures"), "reason: {reason}");

    std::thread::sleep(Duration::from_secs(1));
    let m = shield.metrics(&topo.sbc)?;
    let failed = metric_sum(&m, "sipshield_auth_attempts_total{interface=\"pub0\",method=\"REGISTER\",result=\"failure\"}");
    ensure!(failed == f64::from(FAILURES), "proven failures before the ban: {failed}, not {FAILURES}");
    let jail = metric_sum(&m, "sipshield_jail_failures_total{jail=\"kamailio-auth\"}");
    ensure!(jail == 0.0, "the jail matched {jail} lines of the changed format");
    let log = std::fs::read_to_string(&kamailio.log).context("kamailio.log")?;
    // A guess rejected: as a failure in the new wording (a password
    // checked), or as malformed credentials (svcrack 0.3.3, see above).
    let lines = log
        .lines()
        .filter(|l| {
            l.contains("auth: credentials rejected, user=1000") || l.contains("Credentials are not filled properly")
        })
        .count();
    ensure!(
        lines >= FAILURES as usize,
        "Kamailio logged {lines} rejected guesses: were svcrack's guesses challenged?\n{}",
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    println!("{failed} proven failures on the wire, {lines} rejections in Kamailio's log, 0 matched by the jail");
    Ok(())
}
