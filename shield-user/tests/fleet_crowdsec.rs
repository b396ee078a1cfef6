//! A fleet (SPEC §9): a real CrowdSec 1.4.6 LAPI in its own namespace and
//! three SBCs, each a real `shieldd` on its own namespace's `pub0`, pulling
//! decisions as a bouncer and pushing its bans as a watcher. Enforcement is
//! checked with real packets from each SBC's attacker namespace: "dropped"
//! means counted `drop`/`ban` by the XDP program.
//!
//! Fails (never skips) without root or without CrowdSec (scripts/setup.sh
//! installs it).

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use shield_tests::crowdsec::Lapi;
use shield_tests::fleet::{auth_failure, member_config, Fleet, TRUNK};

/// `[crowdsec] update_frequency` of the fleet.
const EVERY: Duration = Duration::from_secs(2);
const PROBES: u32 = 20;

/// One SBC's daemon with its jail log.
struct Member {
    d: Shieldd,
    log: PathBuf,
}

/// SBC `i`'s daemon with its LAPI keys (see [`member_config`]), not started.
fn member(fleet: &Fleet, lapi: &Lapi, i: usize, push: bool) -> Member {
    let key = lapi.bouncer_key(&format!("shieldd-sbc{i}")).expect("bouncer key");
    let password = format!("sbc{i}-password-0123456789");
    if push {
        lapi.add_machine(&format!("sbc{i}"), &password).expect("machine");
    }
    let url = fleet.lapi_url_of(lapi, i);
    let d = Shieldd::with_config(bins(), fleet.sbc(i), |d| {
        std::fs::write(d.dir.join("crowdsec.key"), format!("{key}\n")).expect("key file");
        std::fs::write(d.dir.join("crowdsec.pass"), format!("{password}\n")).expect("password file");
        std::fs::write(d.dir.join("auth.log"), "").expect("jail log");
        let machine = format!("sbc{i}");
        member_config(d, &url, EVERY, push.then_some(machine.as_str()))
    });
    let log = d.dir.join("auth.log");
    Member { d, log }
}

impl Member {
    /// `n` Kamailio auth-failure lines from `ip` in the jail's log.
    fn fail(&self, ip: IpAddr, n: usize) {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.log).expect("log");
        for _ in 0..n {
            f.write_all(auth_failure(ip).as_bytes()).expect("write");
        }
        f.flush().expect("flush");
    }

    fn status(&self) -> serde_json::Value {
        self.d.ctl_json(&["status"])
    }
}

/// Whether SBC `i` drops [`PROBES`] packets from `src` as banned.
fn drops(fleet: &Fleet, m: &Member, i: usize, src: IpAddr) -> bool {
    let before = m.d.packets("drop", "ban");
    fleet.send_sip_from(i, src, PROBES).expect("send");
    // The counters are read after the packets went through XDP (same
    // CPU, synchronous veth transmit); a short wait covers the rest.
    let t = Instant::now();
    loop {
        let n = m.d.packets("drop", "ban") - before;
        if n >= u64::from(PROBES) || t.elapsed() > Duration::from_millis(300) {
            return n >= u64::from(PROBES);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every SBC drops (or passes) `src`; the time each took.
fn converge(fleet: &Fleet, ms: &[Member], src: IpAddr, dropped: bool, within: Duration, what: &str) -> Vec<Duration> {
    let t = Instant::now();
    ms.iter()
        .enumerate()
        .map(|(i, m)| {
            wait_for(&format!("SBC {i}: {what}"), within, || {
                (drops(fleet, m, i, src) == dropped).then(|| t.elapsed())
            })
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test literal")
}

#[test]
fn a_fleet_of_three_shares_bans_through_a_real_lapi() {
    let fleet = Fleet::new(3);
    let mut lapi = fleet.start_lapi().expect("LAPI");
    let mut ms: Vec<Member> = (0..3).map(|i| member(&fleet, &lapi, i, true)).collect();
    for m in &mut ms {
        m.d.start();
    }
    for m in &ms {
        wait_for("a first full stream", Duration::from_secs(10), || {
            (m.status()["crowdsec"]["synced"] == true).then_some(())
        });
    }

    // 1. A jail ban on SBC 0 is pushed, and the other two pull it.
    let brute = ip("198.51.100.50");
    std::thread::sleep(Duration::from_millis(300)); // the jail follows from the end
    ms[0].fail(brute, 3);
    let t_ban = wait_for("the jail ban on SBC 0", Duration::from_secs(5), || {
        ms[0].d.ban_of("198.51.100.50/32").map(|_| Instant::now())
    });
    let IpAddr::V4(brute4) = brute else { unreachable!() };
    let mut took = Vec::new();
    for (i, m) in ms.iter().enumerate().skip(1) {
        let map = m.d.ban_map().expect("pinned map");
        took.push(wait_for(&format!("SBC {i} enforcing the jail ban"), EVERY * 3, || {
            map.contains(brute4).then(|| t_ban.elapsed())
        }));
    }
    eprintln!("jail ban on SBC 0 enforced on SBC 1, 2 after {took:?} (update_frequency {EVERY:?})");
    for t in &took {
        assert!(*t <= EVERY + Duration::from_secs(1), "propagation took {t:?}");
    }
    for (i, m) in ms.iter().enumerate() {
        assert!(drops(&fleet, m, i, brute), "SBC {i} does not drop the brute-forcer");
    }
    let row = ms[1].d.ban_of("198.51.100.50/32").expect("listed on SBC 1");
    assert_eq!(row["origin"], "crowdsec/sipshield");
    assert_eq!(row["reason"], "sipshield/jail:sip-auth");
    // Never pushed back: SBC 1 holds it as a decision, not a local ban.
    assert_eq!(ms[1].status()["crowdsec"]["push"]["pushed"], 0);

    // 2. Operator ranges, IPv4 and IPv6, reach all three; deletion lifts them.
    lapi.add_decision_range("203.0.113.128/25".parse().unwrap(), "1h", "ops range").expect("range");
    lapi.add_decision_range("2001:db8:bad::/48".parse().unwrap(), "1h", "ops range v6").expect("range v6");
    let t = converge(&fleet, &ms, ip("203.0.113.200"), true, EVERY * 3, "the v4 range");
    eprintln!("v4 range enforced after {t:?}");
    converge(&fleet, &ms, ip("2001:db8:bad::5"), true, EVERY * 3, "the v6 range");
    lapi.delete_decisions_range("203.0.113.128/25".parse().unwrap()).expect("delete");
    let t = converge(&fleet, &ms, ip("203.0.113.200"), false, EVERY * 3, "the v4 range lifted");
    eprintln!("v4 range lifted after {t:?}");
    for (i, m) in ms.iter().enumerate() {
        assert!(drops(&fleet, m, i, ip("2001:db8:bad::ffff")), "SBC {i}: v6 range lifted with the v4 one");
    }

    // 3. A decision on the allowlisted trunk, and a range around it, never drop it.
    lapi.add_decision_ip(IpAddr::V4(TRUNK), "1h", "mistake").expect("trunk decision");
    lapi.add_decision_range("203.0.113.0/28".parse().unwrap(), "1h", "around the trunk").expect("range");
    converge(&fleet, &ms, ip("203.0.113.11"), true, EVERY * 3, "the range around the trunk");
    for (i, m) in ms.iter().enumerate() {
        assert!(!drops(&fleet, m, i, IpAddr::V4(TRUNK)), "SBC {i} drops the allowlisted trunk");
        let skipped = &m.status()["crowdsec"]["skipped"];
        assert!(skipped["protected"].as_u64().unwrap_or(0) >= 1, "SBC {i}: {skipped}");
    }

    // 4. LAPI down for 30 s: bans stay, expire on time, the fleet catches up.
    lapi.add_decision_ip(ip("198.51.100.60"), "20s", "short").expect("short decision");
    let t_short = Instant::now();
    converge(&fleet, &ms, ip("198.51.100.60"), true, EVERY * 3, "the short decision");
    lapi.stop();
    let t_down = Instant::now();
    ms[0].fail(ip("198.51.100.70"), 3);
    wait_for("SBC 0 noticing the outage", Duration::from_secs(10), || {
        (ms[0].status()["crowdsec"]["up"] == false).then_some(())
    });
    for (i, m) in ms.iter().enumerate() {
        assert!(drops(&fleet, m, i, brute), "SBC {i}: the pulled ban was lost with LAPI");
        assert!(drops(&fleet, m, i, ip("2001:db8:bad::1")), "SBC {i}: the v6 range was lost with LAPI");
    }
    for (i, m) in ms.iter_mut().enumerate() {
        assert!(m.d.is_running(), "SBC {i}: shieldd exited with LAPI down");
    }
    std::thread::sleep((t_short + Duration::from_secs(21)).saturating_duration_since(Instant::now()));
    for (i, m) in ms.iter().enumerate() {
        assert!(!drops(&fleet, m, i, ip("198.51.100.60")), "SBC {i}: the 20 s decision outlived its duration");
    }
    assert_eq!(ms[0].status()["crowdsec"]["push"]["queued"], 1, "the ban made while LAPI was down is queued");
    std::thread::sleep((t_down + Duration::from_secs(30)).saturating_duration_since(Instant::now()));
    lapi.restart().expect("LAPI back");
    let t_back = Instant::now();
    let t = converge(&fleet, &ms, ip("198.51.100.70"), true, Duration::from_secs(40), "the ban queued during the outage");
    eprintln!("after the outage: the queued ban enforced everywhere {t:?} after LAPI returned");
    for m in &ms {
        wait_for("up again", Duration::from_secs(20), || (m.status()["crowdsec"]["up"] == true).then_some(()));
    }
    eprintln!("fleet converged {:?} after LAPI returned", t_back.elapsed());

    // 5. Unban of a pushed ban on SBC 0 deletes its decision: lifted everywhere.
    ms[0].d.ctl_ok(&["unban", "198.51.100.50"]);
    let t = converge(&fleet, &ms, brute, false, EVERY * 4, "the unbanned brute-forcer");
    eprintln!("unban on SBC 0 lifted everywhere after {t:?}");
    // A decision from elsewhere is not SBC 1's to unban.
    let out = ms[1].d.ctl(&["unban", "198.51.100.70"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cscli decisions delete"), "{}", text(&out.stderr));

    let metrics = ms[2].d.metrics(fleet.sbc(2)).expect("metrics");
    for needle in [
        "sipshield_crowdsec_up 1",
        "sipshield_crowdsec_decisions{origin=\"cscli\",scope=\"Range\"}",
        "sipshield_crowdsec_requests_total{route=\"decisions_stream\",outcome=\"200\"}",
        "sipshield_crowdsec_requests_total{route=\"decisions_stream\",outcome=\"error\"}",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
}

/// The pinned `BANS` map of `d` holds the IPv4 address `a`.
fn in_map(d: &Shieldd, a: &str) -> bool {
    d.ban_map().expect("map").contains(a.parse().expect("v4"))
}

#[test]
fn one_bouncer_with_odd_decisions_a_restart_and_lapi_down_at_start() {
    let fleet = Fleet::new(1);
    // shieldd first, with no LAPI: it starts, enforces nothing, keeps running.
    let mut lapi = fleet.start_lapi().expect("LAPI");
    let m = member(&fleet, &lapi, 0, false);
    lapi.stop();
    let mut m = m;
    m.d.start();
    std::thread::sleep(Duration::from_secs(3));
    let st = m.status();
    assert_eq!(st["crowdsec"]["up"], false, "{st}");
    assert!(st["crowdsec"]["last_error"].as_str().unwrap_or("").contains("cannot reach LAPI"), "{st}");
    assert!(m.d.is_running());
    lapi.restart().expect("LAPI");
    wait_for("the first full stream", Duration::from_secs(20), || {
        (m.status()["crowdsec"]["synced"] == true).then_some(())
    });

    // Duplicates: the longest wins; deleting one leaves the other.
    lapi.add_decision_ip(ip("198.51.100.80"), "30s", "short").expect("d");
    lapi.add_decision_range("198.51.100.80/32".parse().unwrap(), "2h", "long").expect("d");
    lapi.add_decision_ip(ip("2001:db8::80"), "1h", "v6 host").expect("d");
    // Kinds XDP cannot enforce are counted, not applied.
    lapi.cscli(&["decisions", "add", "--scope", "username", "--value", "mallory", "--duration", "1h"]).expect("d");
    lapi.cscli(&["decisions", "add", "--ip", "198.51.100.81", "--type", "captcha", "--duration", "1h"]).expect("d");
    converge(&fleet, std::slice::from_ref(&m), ip("2001:db8::80"), true, EVERY * 3, "the v6 host");
    let rows: Vec<_> = m.d.bans().into_iter().filter(|b| b["net"] == "198.51.100.80/32").collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0]["expires_in_secs"].as_u64().unwrap_or(0) > 3600, "longest first: {rows:?}");
    assert!(in_map(&m.d, "198.51.100.80"));
    assert!(!drops(&fleet, &m, 0, ip("198.51.100.81")), "a captcha decision dropped packets");
    // (LAPI 1.4.6's stream lists only Ip and Range scopes unless asked:
    // the `username` decision never arrives; unknown scopes are counted by
    // the same path, unit-tested in crowdsec::wire.)
    let skipped = &m.status()["crowdsec"]["skipped"];
    assert!(skipped["type"].as_u64() >= Some(1), "{skipped}");
    assert!(!m.d.bans().iter().any(|b| b["net"].as_str().unwrap_or("").contains("mallory")));

    // A restart adopts the maps: decisions are held until LAPI confirms
    // them; one deleted while shieldd was down goes at the first stream.
    m.d.terminate();
    lapi.delete_decisions_ip(ip("2001:db8::80")).expect("delete");
    let mut lapi = lapi;
    lapi.stop();
    m.d.start();
    assert!(drops(&fleet, &m, 0, ip("2001:db8::80")), "held decisions are enforced while LAPI is down");
    lapi.restart().expect("LAPI");
    converge(&fleet, std::slice::from_ref(&m), ip("2001:db8::80"), false, Duration::from_secs(30), "the decision deleted while down");
    assert!(drops(&fleet, &m, 0, ip("198.51.100.80")), "a confirmed decision was dropped at restart");
    let st = m.status();
    assert_eq!(st["crowdsec"]["by_origin"].get("unconfirmed/Ip"), None, "{st}");
    assert_eq!(st["bans_active"], 0, "decisions became local bans: {st}");

    // A reload without [crowdsec] lifts what it enforced.
    let text_now = std::fs::read_to_string(&m.d.config).expect("config");
    let cut = text_now.find("[crowdsec]").expect("section");
    let jail = text_now.find("[[jail]]").expect("jail");
    m.d.write_config(&format!("{}{}", &text_now[..cut], &text_now[jail..]));
    m.d.ctl_ok(&["reload"]);
    assert!(!drops(&fleet, &m, 0, ip("198.51.100.80")), "decisions outlived [crowdsec]");
    assert!(m.status().get("crowdsec").is_none_or(|c| c.is_null()));
}

#[test]
fn a_decision_on_the_lapis_own_address_is_never_enforced() {
    let fleet = Fleet::new(1);
    let lapi = fleet.start_lapi().expect("LAPI");
    let mut m = member(&fleet, &lapi, 0, false);
    m.d.start();
    wait_for("the first full stream", Duration::from_secs(20), || {
        (m.status()["crowdsec"]["synced"] == true).then_some(())
    });
    // The address SBC 0 reaches LAPI at, and a range around it (not
    // around SBC 0's own 192.0.2.2): banning either would cut SBC 0 off
    // its LAPI, and with it the deletion that could lift the ban.
    let own = shield_tests::fleet::lapi_link_addr(0);
    lapi.add_decision_ip(IpAddr::V4(own), "1h", "ban the LAPI").expect("decision");
    lapi.add_decision_range("192.0.2.0/31".parse().unwrap(), "1h", "ban around the LAPI").expect("decision");
    lapi.add_decision_ip(ip("198.51.100.95"), "1h", "a marker after them").expect("decision");
    converge(&fleet, std::slice::from_ref(&m), ip("198.51.100.95"), true, EVERY * 3, "the marker");
    let st = m.status();
    assert!(!in_map(&m.d, &own.to_string()), "LAPI's own address is banned: {st}");
    for net in [format!("{own}/32"), "192.0.2.0/31".to_string()] {
        assert!(m.d.ban_of(&net).is_none(), "{net} is enforced: {:?}", m.d.bans());
    }
    assert!(st["crowdsec"]["skipped"]["protected"].as_u64() >= Some(2), "{st}");
    assert_eq!(st["crowdsec"]["up"], true, "{st}");
    // Nor may a manual ban cut it off.
    let out = m.d.ctl(&["ban", &own.to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("LAPI"), "{}", text(&out.stderr));
}

#[test]
fn a_ban_of_the_lapi_found_in_the_maps_at_start_is_lifted() {
    let fleet = Fleet::new(1);
    let lapi = fleet.start_lapi().expect("LAPI");
    let mut m = member(&fleet, &lapi, 0, false);
    let own = shield_tests::fleet::lapi_link_addr(0).to_string();
    // XDP on the LAPI link too: a ban of the LAPI's address really cuts
    // SBC 0 off it.
    let with_cs = std::fs::read_to_string(&m.d.config)
        .expect("config")
        .replace("interfaces = [\"pub0\"]", "interfaces = [\"pub0\", \"lapi0\"]");
    let cut = with_cs.find("[crowdsec]").expect("section");
    let jail = with_cs.find("[[jail]]").expect("jail");
    m.d.write_config(&format!("{}{}", &with_cs[..cut], &with_cs[jail..]));
    m.d.start();
    m.d.ctl_ok(&["ban", &own, "--duration", "1h"]);
    assert!(in_map(&m.d, &own));
    m.d.terminate();
    // The store is lost: the pinned entry is unknown at the next start,
    // and with [crowdsec] held as a decision of the previous shieldd,
    // which only LAPI's full list (that it blocks) could lift.
    for f in ["shield.db", "shield.db-wal", "shield.db-shm"] {
        let _ = std::fs::remove_file(m.d.state.join(f));
    }
    m.d.write_config(&with_cs);
    m.d.start();
    wait_for("a first full stream over the LAPI link", Duration::from_secs(30), || {
        (m.status()["crowdsec"]["synced"] == true).then_some(())
    });
    assert!(!in_map(&m.d, &own), "LAPI's own address is still banned");
}

/// A local ban acknowledged while the store could not be written (an
/// operator's `sqlite3` held it locked), then `kill -9`: the restart keeps
/// it as a local ban, which LAPI's first full list does not lift (SPEC
/// §10: never relabelled as an unconfirmed CrowdSec decision).
#[test]
fn an_unsaved_local_ban_is_not_relabelled_as_a_decision_after_kill_9() {
    let fleet = Fleet::new(1);
    let lapi = fleet.start_lapi().expect("LAPI");
    let mut m = member(&fleet, &lapi, 0, false);
    m.d.start();
    wait_for("the first full stream", Duration::from_secs(20), || {
        (m.status()["crowdsec"]["synced"] == true).then_some(())
    });
    // A write lock on the store, as an open `sqlite3` transaction holds it.
    let db = rusqlite::Connection::open(m.d.state.join("shield.db")).expect("open shield.db");
    db.execute_batch("BEGIN IMMEDIATE").expect("lock the store");
    let out = m.d.ctl(&["ban", "198.51.100.90", "--duration", "1h", "--reason", "by hand"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("NOT saved"), "{}", text(&out.stderr));
    m.d.kill9();
    drop(db);

    m.d.start();
    wait_for("the first full stream after the restart", Duration::from_secs(20), || {
        (m.status()["crowdsec"]["synced"] == true).then_some(())
    });
    let ban = m.d.ban_of("198.51.100.90/32").expect("the acknowledged ban is still in force");
    assert_ne!(ban["origin_kind"], "crowdsec", "relabelled: {ban}");
    assert!(in_map(&m.d, "198.51.100.90"));
    assert!(drops(&fleet, &m, 0, ip("198.51.100.90")), "the ban was lifted");
}

/// `d` trusts `ca` (`[crowdsec] ca_file`, the file copied beside its config).
fn trust(d: &Shieldd, ca: &Path) {
    let copy = d.dir.join("lapi-ca.pem");
    std::fs::copy(ca, &copy).expect("copy the CA");
    let text = std::fs::read_to_string(&d.config).expect("config");
    d.write_config(&text.replace("[crowdsec]\n", &format!("[crowdsec]\nca_file = \"{}\"\n", copy.display())));
}

#[test]
fn a_lapi_behind_tls_with_a_private_ca() {
    let fleet = Fleet::new(2);
    let lapi = fleet.start_lapi_tls().expect("LAPI with TLS");
    let ca = lapi.ca().expect("its CA").to_path_buf();
    let mut trusting = member(&fleet, &lapi, 0, true);
    trust(&trusting.d, &ca);
    let mut blind = member(&fleet, &lapi, 1, false);
    assert!(std::fs::read_to_string(&blind.d.config).expect("config").contains("https://"));
    trusting.d.start();
    blind.d.start();
    wait_for("SBC 0's first full stream over TLS", Duration::from_secs(10), || {
        (trusting.status()["crowdsec"]["synced"] == true).then_some(())
    });
    // Without the CA no answer is trusted, and the status says why.
    let why = wait_for("SBC 1 naming the certificate", Duration::from_secs(10), || {
        let st = blind.status();
        let e = st["crowdsec"]["last_error"].as_str().unwrap_or("").to_string();
        e.contains("certificate").then_some(e)
    });
    eprintln!("SBC 1 without the CA: {why}");
    assert!(why.contains("ca_file"), "the error does not say what to do: {why}");
    assert_eq!(blind.status()["crowdsec"]["up"], false);

    // Pull and push both go over TLS.
    lapi.add_decision_ip(ip("198.51.100.90"), "1h", "over tls").expect("decision");
    wait_for("SBC 0 enforcing a decision pulled over TLS", EVERY * 3, || {
        drops(&fleet, &trusting, 0, ip("198.51.100.90")).then_some(())
    });
    trusting.d.ctl_ok(&["ban", "198.51.100.91", "--duration", "1h"]);
    wait_for("the manual ban pushed over TLS", Duration::from_secs(10), || {
        let alerts = lapi.alerts_json().expect("alerts").to_string();
        alerts.contains("198.51.100.91").then_some(())
    });
    assert!(!drops(&fleet, &blind, 1, ip("198.51.100.90")), "SBC 1 enforces what it cannot trust");
    let metrics = trusting.d.metrics(fleet.sbc(0)).expect("metrics");
    for needle in [
        "sipshield_crowdsec_requests_total{route=\"watchers_login\",outcome=\"200\"} 1",
        "sipshield_crowdsec_requests_total{route=\"alerts\",outcome=\"201\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    // A reload with the CA: SBC 1 catches up with both.
    trust(&blind.d, &ca);
    blind.d.ctl_ok(&["reload"]);
    for a in ["198.51.100.90", "198.51.100.91"] {
        wait_for(&format!("SBC 1 enforcing {a} after the reload"), Duration::from_secs(10), || {
            drops(&fleet, &blind, 1, ip(a)).then_some(())
        });
    }
    assert_eq!(blind.status()["crowdsec"]["up"], true);
    for m in [&mut trusting, &mut blind] {
        assert!(m.d.is_running());
    }
}
