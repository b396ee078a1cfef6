//! Bans through a real `shieldd` with real traffic between two network
//! namespaces: manual bans and unbans (with the command-to-drop delay
//! measured), the allowlist beating a ban, escalation of a flooding source,
//! jail bans from a followed log, and dry runs.

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;

const EVERY: Duration = Duration::from_millis(1);

#[test]
fn ban_stops_a_source_within_the_command_and_unban_lets_it_back() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    let sink = Sink::start(&lab);
    let flood = Flood::start(&lab, PEER_IP, EVERY, 20_000, Duration::from_secs(20));
    wait_for("traffic", Duration::from_secs(5), || {
        (sink.from(PEER_IP).count > 100).then_some(())
    });

    let t0 = Instant::now();
    d.ctl_ok(&[
        "ban",
        "198.51.100.2",
        "--duration",
        "10m",
        "--reason",
        "test ban",
    ]);
    let returned = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let after = sink.from(PEER_IP);
    let last = after.last.expect("arrivals");
    // The first dropped packet is the one after the last arrival.
    let first_drop = (last + EVERY).saturating_duration_since(t0);
    eprintln!(
        "ban delay: shieldctl returned after {:.1} ms; first drop at most {:.1} ms after the command started",
        returned.as_secs_f64() * 1e3,
        first_drop.as_secs_f64() * 1e3
    );
    assert!(
        last <= t0 + returned + Duration::from_millis(20),
        "packets still arrived {:?} after shieldctl returned",
        last.saturating_duration_since(t0 + returned)
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sink.from(PEER_IP).count,
        after.count,
        "banned source got through"
    );

    let ban = d.ban_of("198.51.100.2/32").expect("listed");
    assert_eq!(ban["origin"], "manual");
    assert_eq!(ban["reason"], "test ban");
    let left = ban["expires_in_secs"].as_u64().expect("time left");
    assert!((590..=600).contains(&left), "time left {left}");
    let human = d.ctl_ok(&["banned"]);
    assert!(
        human.contains("198.51.100.2/32") && human.contains("manual") && human.contains("test ban"),
        "{human}"
    );
    assert!(d.packets("drop", "ban") > 0);

    d.ctl_ok(&["unban", "198.51.100.2"]);
    let before = sink.from(PEER_IP).count;
    wait_for("traffic after unban", Duration::from_secs(5), || {
        (sink.from(PEER_IP).count > before + 50).then_some(())
    });
    assert!(d.bans().is_empty());
    flood.stop();
    // Unbanning what is not banned is bad input, naming it.
    let out = d.ctl(&["unban", "198.51.100.2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("198.51.100.2/32 is not banned"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn allowlist_beats_a_ban_and_allowlisted_sources_cannot_be_banned() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    let sink = Sink::start(&lab);

    // A /31 around the peer (a net around the SBC's own .1 is never banned).
    d.ctl_ok(&["ban", "198.51.100.2/31", "--reason", "whole net"]);
    send(&lab, PEER_IP, 100, EVERY);
    settle();
    assert_eq!(sink.from(PEER_IP).count, 0, "CIDR ban must drop the peer");

    // Allowlisting the host lets it through although its network is banned.
    let out = d.ctl_ok(&["allow", "add", "198.51.100.2"]);
    assert!(out.contains("added 198.51.100.2/32"), "{out}");
    send(&lab, PEER_IP, 100, EVERY);
    settle();
    assert_eq!(
        sink.from(PEER_IP).count,
        100,
        "allowlisted source must pass every packet"
    );
    assert!(d.packets("pass", "allowlisted") >= 100);
    // The CIDR ban is still there: the allowlist overrides it, it does not lift it.
    assert!(d.ban_of("198.51.100.2/31").is_some());

    // A ban of the allowlisted host itself is refused, naming why.
    let out = d.ctl(&["ban", "198.51.100.2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("allowlisted"),
        "{}",
        text(&out.stderr)
    );

    let list = d.ctl_json(&["allow", "list"]);
    let entries = list["entries"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["net"] == "198.51.100.2/32" && e["source"] == "cli"),
        "{list}"
    );

    // Removing it from the allowlist brings the ban back into force.
    d.ctl_ok(&["allow", "del", "198.51.100.2"]);
    let before = sink.from(PEER_IP).count;
    send(&lab, PEER_IP, 100, EVERY);
    settle();
    assert_eq!(sink.from(PEER_IP).count, before);
}

#[test]
fn a_flooding_source_gets_an_escalation_ban() {
    let lab = Lab::new();
    let legit = Ipv4Addr::new(198, 51, 100, 10);
    lab.add_peer_addr(legit);
    let mut d = Shieldd::new(
        bins(),
        &lab.sbc,
        "[limits]\npackets_per_second = 20\nburst = 5\n\n[bans.escalate]\ndrops = 50\nwindow = \"10s\"\nbantime = \"2m\"\n",
    );
    d.start();
    let sink = Sink::start(&lab);
    // A well-behaved neighbour at 10 packets/s is never touched.
    let calm = Flood::start(
        &lab,
        legit,
        Duration::from_millis(100),
        100,
        Duration::from_secs(10),
    );
    let t0 = Instant::now();
    let flood = Flood::start(&lab, PEER_IP, EVERY, 10_000, Duration::from_secs(10));
    let ban = wait_for("an escalation ban", Duration::from_secs(8), || {
        d.bans()
            .into_iter()
            .find(|b| b["net"] == "198.51.100.2/32" && b["origin"] == "escalation")
    });
    eprintln!(
        "escalation ban {:?} after the flood started: {ban}",
        t0.elapsed()
    );
    let left = ban["expires_in_secs"].as_u64().expect("time left");
    assert!(
        (100..=120).contains(&left),
        "escalation bantime is 2m, left {left}"
    );
    assert!(
        ban["reason"].as_str().expect("reason").contains("rate"),
        "{ban}"
    );

    std::thread::sleep(Duration::from_millis(200));
    let at_ban = sink.from(PEER_IP).count;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sink.from(PEER_IP).count,
        at_ban,
        "escalation-banned source got through"
    );
    assert!(d.packets("drop", "ban") > 100);
    assert!(d.packets("drop", "rate") >= 50);
    flood.stop();
    let calm_sent = calm.stop();
    settle();
    assert_eq!(
        sink.from(legit).count,
        u64::from(calm_sent),
        "the calm neighbour must pass untouched"
    );
    assert!(d.ban_of("198.51.100.10/32").is_none());

    let stats = d.ctl_json(&["stats"]);
    let recent = stats["recent_escalations"].as_array().expect("recent");
    assert!(
        recent.iter().any(|e| e["source"] == "198.51.100.2/32"),
        "{stats}"
    );
    assert!(
        stats["bans_total"]["escalation"].as_u64() >= Some(1),
        "{stats}"
    );
    let human = d.ctl_ok(&["stats"]);
    assert!(
        human.contains("Recent escalations") && human.contains("198.51.100.2/32"),
        "{human}"
    );
}

#[test]
fn a_jail_bans_from_the_log_and_ignoreip_is_respected() {
    let lab = Lab::new();
    let ignored = Ipv4Addr::new(198, 51, 100, 20);
    lab.add_peer_addr(ignored);
    let mut d = Shieldd::new(bins(), &lab.sbc, "");
    let logpath = d.add_jail(
        "kamailio.log",
        "name = \"kam\"\nfilter = \"kamailio\"\nmaxretry = 3\nbantime = \"5m\"\n",
        &format!("{NO_LIMITS}\n[bans]\nignoreip = [\"198.51.100.20\"]\n"),
    );
    d.start();
    // The follower starts at the end of the file; give it a moment to be there.
    std::thread::sleep(Duration::from_millis(500));
    let sink = Sink::start(&lab);

    let line = |ip: &str| {
        format!("Mar 14 09:12:07 sbc1 /usr/sbin/kamailio[2215]: NOTICE: <script>: sipshield: auth failed for 100 from {ip}:5060\n")
    };
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&logpath)
        .expect("open log");
    for _ in 0..3 {
        log.write_all(line("198.51.100.20").as_bytes())
            .expect("write");
    }
    let t0 = Instant::now();
    for _ in 0..3 {
        log.write_all(line("198.51.100.2").as_bytes())
            .expect("write");
    }
    log.flush().expect("flush");
    let ban = wait_for("a jail ban", Duration::from_secs(5), || {
        d.ban_of("198.51.100.2/32")
    });
    eprintln!(
        "jail ban visible {:.1} ms after the log line was written",
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(ban["origin"], "kam");
    assert_eq!(ban["origin_kind"], "jail");
    let left = ban["expires_in_secs"].as_u64().expect("left");
    assert!((290..=300).contains(&left), "{ban}");

    send(&lab, PEER_IP, 50, EVERY);
    send(&lab, ignored, 50, EVERY);
    settle();
    assert_eq!(
        sink.from(PEER_IP).count,
        0,
        "jail-banned source got through"
    );
    assert_eq!(
        sink.from(ignored).count,
        50,
        "ignoreip source must not be banned"
    );
    assert!(d.ban_of("198.51.100.20/32").is_none());
    assert!(
        d.log_text().contains("not banning"),
        "the skipped ban is logged"
    );

    let stats = d.ctl_json(&["stats"]);
    assert_eq!(stats["bans_total"]["kam"], 1, "{stats}");
}

#[test]
fn dry_run_passes_everything_and_counts_would_drop() {
    let lab = Lab::new();
    let mut d = Shieldd::new(
        bins(),
        &lab.sbc,
        &format!("{NO_LIMITS}\n[deny]\ncidrs = [\"198.51.100.3\"]\n"),
    );
    let cfg = std::fs::read_to_string(&d.config).expect("config");
    d.write_config(&cfg.replace("[shield]\n", "[shield]\nenforce = false\n"));
    let denied = Ipv4Addr::new(198, 51, 100, 3);
    lab.add_peer_addr(denied);
    d.start();
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["enforce"], false);
    let sink = Sink::start(&lab);

    d.ctl_ok(&["ban", "198.51.100.2"]);
    send(&lab, PEER_IP, 200, EVERY);
    send(&lab, denied, 100, EVERY);
    settle();
    assert_eq!(
        sink.from(PEER_IP).count,
        200,
        "dry run must pass banned traffic"
    );
    assert_eq!(
        sink.from(denied).count,
        100,
        "dry run must pass denied traffic"
    );
    assert_eq!(d.packets("would_drop", "ban"), 200);
    assert_eq!(d.packets("would_drop", "deny"), 100);
    assert_eq!(d.packets("drop", "ban") + d.packets("drop", "deny"), 0);
}
