//! Authentication seen on the wire (SPEC §12) against a real Kamailio 5.6
//! with digest authentication, behind the real `shieldd` with `[auth]`
//! on and NO jail (the example's jail reads a log nobody writes):
//!
//! 1. a subscriber that mistypes its password once, then registers, stays
//!    unbanned and becomes verified (a proven success verifies);
//! 2. REGISTERs carrying `Authorization` with nonces Kamailio never sent
//!    (answered 401) are counted `unproven` and never ban their source;
//! 3. a password guesser (the lab's sipp scenario, an ordinary phone's
//!    User-Agent) guessing subscriber 1000's password is banned, origin
//!    `auth`, reason `auth_failures`, the username in the detail, after
//!    `FAILURES` proven failures. (SIPVicious `svcrack` cannot be used:
//!    Kamailio's default configuration drops its User-Agent unanswered.)
//! 4. the same over plain TCP (SPEC §12 names it; Kamailio listens on TCP
//!    5060 with `-A WITH_TCP`): sipp on one real kernel TCP connection
//!    (`-t t1`) from a subscriber that mistypes once and then registers
//!    (not banned, verified), and from a guesser at another address,
//!    banned, origin `auth`, after `FAILURES` proven failures.
//!
//! Needs root, Kamailio and sipp; fails, never skips, without them.
//! Bounded: the guesser tries at most `GUESSES` passwords, watched for
//! `GUESS_TIME`.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use shield_tests::daemon::Shieldd;
use shield_tests::lab::kamailio::{Kamailio, Options};
use shield_tests::lab::shieldd::LabConfig;
use shield_tests::lab::sipp::Run;
use shield_tests::lab::topology::*;
use shield_tests::lab::Topology;

const FAILURES: u32 = 5;
const GUESSES: u32 = 12;
const GUESS_TIME: Duration = Duration::from_secs(30);

fn sbc() -> SocketAddrV4 {
    SocketAddrV4::new(SBC_SIP_IP, 5060)
}

fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

fn ban_of(shield: &Shieldd, ip: Ipv4Addr) -> Option<serde_json::Value> {
    shield.ban_of(&format!("{ip}/32"))
}

#[test]
fn digest_failures_on_the_wire_ban_with_no_jail() -> Result<()> {
    shield_tests::kernel::require_root();
    let dir = tempfile::tempdir()?;
    let topo = Topology::new();
    topo.warm_neighbours();
    let opts = Options { defines: vec!["WITH_TCP"], ..Options::default() };
    let kamailio = Kamailio::start(&topo.sbc, dir.path(), &opts)?;
    let shield = LabConfig::new(dir.path())
        .set("auth", "failures", &FAILURES.to_string())
        .set("auth", "window", "\"5m\"")
        .set("auth", "bantime", "\"1h\"")
        .set("auth", "user_failures", "20")
        .start(&topo.sbc)?;

    mistype_then_register(&topo, &shield, dir.path(), Transport::Udp)?;
    wrong_nonces_never_ban(&topo, &shield)?;
    guesser_is_banned(&topo, &shield, dir.path(), BRUTE_FORCE_IP, Transport::Udp)?;
    // Plain TCP: another subscriber, another guesser.
    let accepted = || -> Result<u64> { Ok(kamailio.stats()?.get("tcp:passive_open").copied().unwrap_or(0)) };
    let before = accepted()?;
    mistype_then_register(&topo, &shield, dir.path(), Transport::Tcp)?;
    guesser_is_banned(&topo, &shield, dir.path(), SCANNER_IP, Transport::Tcp)?;
    let conns = accepted()? - before;
    println!("Kamailio accepted {conns} TCP connections from the TCP runs");
    ensure!(conns >= 3, "the TCP runs went over TCP: Kamailio accepted {conns} connections");
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// `run` over this transport.
    fn apply(self, run: Run) -> Run {
        match self {
            Transport::Udp => run,
            Transport::Tcp => run.over_tcp(),
        }
    }
}

fn mistype_then_register(topo: &Topology, shield: &Shieldd, dir: &std::path::Path, t: Transport) -> Result<()> {
    let sub = subscriber_ip(if t == Transport::Udp { 1 } else { 3 });
    let line = |result: &str| {
        format!("sipshield_auth_attempts_total{{interface=\"car0\",method=\"REGISTER\",result=\"{result}\"}}")
    };
    let m0 = shield.metrics(&topo.sbc)?;
    let (ok0, failed0) = (metric_sum(&m0, &line("success")), metric_sum(&m0, &line("failure")));
    let wrong = t
        .apply(Run::brute_force(sub, sbc(), 2.0, 1))
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(20))?;
    ensure!(wrong.successful == 1, "the mistype ({t:?}) got another answer than 401: {wrong:?}");
    // Another local port: the first run's TCP connection may linger.
    let reg = Run { local: SocketAddrV4::new(sub, 5062), ..t.apply(Run::register(sub, sbc(), 2.0, 2)) }
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(20))?;
    ensure!(reg.successful == 2, "the subscriber's registrations: {reg:?}");
    std::thread::sleep(Duration::from_millis(500));
    ensure!(ban_of(shield, sub).is_none(), "{sub} banned for one mistype");
    let v: serde_json::Value = shield.ctl_as(&["verified"])?;
    let how = v["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .find(|e| e["net"] == format!("{sub}/32"))
        .map(|e| e["how"].as_str().unwrap_or("").to_string());
    ensure!(how.as_deref() == Some("reply"), "{sub} not verified after its 200 OK: {how:?}");
    let m = shield.metrics(&topo.sbc)?;
    let ok = metric_sum(&m, &line("success")) - ok0;
    let failed = metric_sum(&m, &line("failure")) - failed0;
    println!("mistype ({t:?}): {failed} proven failure(s), {ok} proven success(es), not banned, verified");
    ensure!(ok >= 2.0 && failed >= 1.0, "auth metrics ({t:?}): success {ok}, failure {failed}");
    Ok(())
}

/// REGISTERs with credentials whose nonce Kamailio never sent.
fn wrong_nonces_never_ban(topo: &Topology, shield: &Shieldd) -> Result<()> {
    let from = SocketAddrV4::new(subscriber_ip(2), 5064);
    let n = 3 * FAILURES;
    let answered = topo.carrier.run(|| -> Result<u32> {
        let sock = UdpSocket::bind(from)?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut answered = 0;
        for i in 0..n {
            let msg = format!(
                "REGISTER sip:sbc.lab SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-forged-{i}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:1000@sbc.lab>;tag=f{i}\r\nTo: <sip:1000@sbc.lab>\r\n\
                 Call-ID: forged-{i}@lab\r\nCSeq: 2 REGISTER\r\nContact: <sip:1000@{from}>\r\n\
                 Authorization: Digest username=\"1000\", realm=\"sbc.lab\", nonce=\"forged{i}\", \
                 uri=\"sip:sbc.lab\", response=\"00000000000000000000000000000000\"\r\n\
                 Expires: 300\r\nContent-Length: 0\r\n\r\n"
            );
            // Under the example's REGISTER bucket (5/s).
            std::thread::sleep(Duration::from_millis(300));
            sock.send_to(msg.as_bytes(), sbc())?;
            let mut buf = [0u8; 4096];
            if let Ok(k) = sock.recv(&mut buf) {
                if buf[..k].starts_with(b"SIP/2.0 4") {
                    answered += 1;
                }
            }
        }
        Ok(answered)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    ensure!(answered == n, "Kamailio answered {answered} of {n} forged REGISTERs with a 4xx");
    ensure!(ban_of(shield, subscriber_ip(2)).is_none(), "unproven attempts banned their source");
    let m = shield.metrics(&topo.sbc)?;
    let unproven = metric_sum(&m, "sipshield_auth_attempts_total{interface=\"car0\",method=\"REGISTER\",result=\"unproven\"}");
    println!("forged nonces: {n} REGISTERs answered 4xx, {unproven} counted unproven, no ban");
    ensure!(unproven >= n as f64, "unproven {unproven} < {n}");
    Ok(())
}

/// The lab's password guesser (sipp, an ordinary phone's User-Agent,
/// wrong passwords for 1000). SIPVicious `svcrack` cannot be used against
/// this Kamailio: it cannot change its `friendly-scanner` User-Agent and
/// the lab's sbc.cfg (Kamailio's default configuration) drops that
/// silently, so Kamailio never challenges it.
fn guesser_is_banned(
    topo: &Topology,
    shield: &Shieldd,
    dir: &std::path::Path,
    ip: Ipv4Addr,
    t: Transport,
) -> Result<()> {
    let line = "sipshield_auth_attempts_total{interface=\"pub0\",method=\"REGISTER\",result=\"failure\"}";
    let failed0 = metric_sum(&shield.metrics(&topo.sbc)?, line);
    let started = Instant::now();
    let run = t.apply(Run::brute_force(ip, sbc(), 2.0, GUESSES as u64)).start(&topo.attacker, dir)?;
    let banned_after = loop {
        if let Some(b) = ban_of(shield, ip) {
            break Some((started.elapsed(), b));
        }
        if started.elapsed() > GUESS_TIME {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = run.stop();
    let (after, ban) = banned_after.context("the guesser was never banned by [auth]")?;
    std::thread::sleep(Duration::from_millis(500));
    let failed = metric_sum(&shield.metrics(&topo.sbc)?, line) - failed0;
    println!("guesser ({t:?}): banned {after:?} after its first REGISTER, {failed} proven failures: {ban}");
    ensure!(ban["origin"] == "auth", "ban origin: {ban}");
    ensure!(ban["reason"] == "auth_failures", "ban reason: {ban}");
    // The detail (the last username, escaped) is in the ban's log line.
    let log = shield.log_text();
    let addr = ip.to_string();
    let named = log.lines().any(|l| l.contains(&addr) && l.contains("last username") && l.contains("1000"));
    if !named {
        for l in log.lines().filter(|l| l.contains(&addr)) {
            println!("log: {l}");
        }
    }
    ensure!(named, "no ban log line naming the username");
    let source = shield.ctl_json(&["banned", &addr]);
    ensure!(
        source["auth_usernames"].to_string().contains("1000"),
        "shieldctl banned ADDR does not show the usernames tried: {source}"
    );
    let report = shield.ctl_json(&["auth"]);
    println!("shieldctl auth: {report}");
    let users = report["users"].as_array().context("users")?;
    ensure!(
        users.iter().any(|u| u["username"] == "1000" && u["sources"].to_string().contains(&addr)),
        "shieldctl auth does not list 1000 from the guesser {addr}: {report}"
    );
    ensure!(
        failed >= FAILURES as f64 && failed <= FAILURES as f64 + 1.0,
        "{failed} proven failures (want {FAILURES}, one more in flight at most)"
    );
    Ok(())
}
