//! The CrowdSec LAPI fixture and the fleet topology, end to end, before
//! any bouncer uses them: a private LAPI (Debian's crowdsec 1.4.6) in the
//! fleet's `lapi` namespace serves decisions added with cscli to every SBC
//! namespace over its own link; deletions show in the next poll's
//! `deleted`; a stopped LAPI does not answer and a restarted one keeps its
//! keys and decisions; spoofed SIP from chosen sources arrives on an SBC's
//! `pub0`. Also how long inserting 100,000 decisions takes.
//!
//! As root, with crowdsec installed (scripts/setup.sh): fails, never
//! skips, otherwise.

use std::collections::HashSet;
use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use ipnet::IpNet;
use shield_tests::crowdsec::{
    ban_alert, bench_decisions, decisions_stream, require_crowdsec, stream_values, Scope,
};
use shield_tests::fleet::{Fleet, SBC_PUB_V4, SBC_PUB_V6};

const SBCS: usize = 3;

fn has(list: &[(String, String)], scope: &str, value: &str) -> bool {
    list.iter().any(|(s, v)| s == scope && v == value)
}

#[test]
fn lapi_serves_decisions_to_every_sbc_and_survives_a_restart() -> Result<()> {
    shield_tests::kernel::require_root();
    require_crowdsec();
    let fleet = Fleet::new(SBCS);
    let mut lapi = fleet.start_lapi()?;
    let key = lapi.bouncer_key("sbc-fleet")?;
    lapi.add_machine("sbc0", "a-long-password-0")?;

    let ip: IpAddr = "198.51.100.50".parse()?;
    let range: IpNet = "203.0.113.0/24".parse()?;
    let ip6: IpAddr = "2001:db8:1::50".parse()?;
    let range6: IpNet = "2001:db8:2::/48".parse()?;
    lapi.add_decision_ip(ip, "1h", "fixture")?;
    lapi.add_decision_range(range, "2h", "fixture")?;
    lapi.add_decision_ip(ip6, "1h", "fixture")?;
    lapi.add_decision_range(range6, "1h", "fixture")?;
    let listed = lapi.decisions_json()?;
    ensure!(
        listed.as_array().map_or(0, Vec::len) == 4,
        "cscli decisions list: 4 alerts expected, got {listed}"
    );

    for i in 0..SBCS {
        let (code, v) = decisions_stream(fleet.sbc(i), &fleet.lapi_url(i), &key, true)?;
        ensure!(code == 200, "SBC {i}: stream answered {code}: {v}");
        let new = stream_values(&v, "new");
        for (scope, value) in [
            ("Ip", ip.to_string()),
            ("Range", range.to_string()),
            ("Ip", ip6.to_string()),
            ("Range", range6.to_string()),
        ] {
            ensure!(
                has(&new, scope, &value),
                "SBC {i}: {scope} {value} not in {v}"
            );
        }
        let d = &v["new"][0];
        ensure!(
            d["origin"] == "cscli" && d["type"] == "ban",
            "decision fields: {d}"
        );
    }

    // A watcher's alert (what a shieldd pushes) comes back with its origin.
    let token = lapi.login("sbc0", "a-long-password-0")?;
    let pushed = serde_json::json!([ban_alert(
        "Ip",
        "198.51.100.99",
        "30m",
        "sipshield",
        "sipshield/flood"
    )]);
    let (code, body) = lapi.post_alerts(&token, &pushed)?;
    ensure!(code == 201, "POST /v1/alerts: {code} {body}");
    let alerts = lapi.alerts_json()?;
    ensure!(
        alerts.to_string().contains("198.51.100.99"),
        "pushed alert not listed: {alerts}"
    );
    let (_, v) = decisions_stream(fleet.sbc(0), &fleet.lapi_url(0), &key, true)?;
    let pushed_back = v["new"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["value"] == "198.51.100.99");
    ensure!(
        pushed_back.is_some_and(|d| d["origin"] == "sipshield" && d["scope"] == "Ip"),
        "pushed decision not streamed with origin sipshield: {v}"
    );

    // A bad key is refused with 403.
    let (code, _) = decisions_stream(fleet.sbc(0), &fleet.lapi_url(0), "0000", true)?;
    ensure!(code == 403, "bad key: 403 expected, got {code}");

    // The polls above advanced each bouncer... all share one key, so poll
    // until the deletion shows rather than counting on one poll.
    lapi.delete_decisions_ip(ip)?;
    let sbc = fleet.sbc(1);
    let url = fleet.lapi_url(1);
    let (code, v) = decisions_stream(sbc, &url, &key, false)?;
    ensure!(code == 200, "stream answered {code}");
    let deleted = stream_values(&v, "deleted");
    ensure!(
        has(&deleted, "Ip", &ip.to_string()),
        "{ip} not in deleted: {v}"
    );
    ensure!(
        !has(&deleted, "Range", &range.to_string()),
        "{range} deleted too: {v}"
    );
    let (_, v) = decisions_stream(sbc, &url, &key, true)?;
    ensure!(
        !has(&stream_values(&v, "new"), "Ip", &ip.to_string()),
        "{ip} still active after delete: {v}"
    );

    // Down: nothing answers. Restarted: same key, same decisions.
    lapi.stop();
    let (code, _) = decisions_stream(fleet.sbc(2), &fleet.lapi_url(2), &key, true)?;
    ensure!(code == 0, "a stopped LAPI answered {code}");
    let t = Instant::now();
    lapi.restart()?;
    eprintln!("LAPI restart took {:?}", t.elapsed());
    let (code, v) = decisions_stream(fleet.sbc(2), &fleet.lapi_url(2), &key, true)?;
    ensure!(code == 200, "after restart the key got {code}");
    let new = stream_values(&v, "new");
    ensure!(
        has(&new, "Range", &range.to_string()),
        "{range} lost in restart: {v}"
    );
    ensure!(!has(&new, "Ip", &ip.to_string()), "{ip} came back: {v}");
    ensure!(lapi.is_running(), "LAPI not running");
    Ok(())
}

#[test]
fn spoofed_sip_arrives_on_pub0() -> Result<()> {
    shield_tests::kernel::require_root();
    let fleet = Fleet::new(2);
    let sbc = fleet.sbc(1);
    let sock4 = sbc.run(|| UdpSocket::bind((SBC_PUB_V4, 5060)))?;
    let sock6 = sbc.run(|| UdpSocket::bind((SBC_PUB_V6, 5060)))?;
    let sources: Vec<IpAddr> = ["198.51.100.50", "203.0.113.77", "2001:db8:1::50"]
        .iter()
        .map(|s| s.parse().expect("address"))
        .collect();
    for &src in &sources {
        fleet.send_sip_from(1, src, 3)?;
    }
    let mut seen = HashSet::new();
    let mut count = 0;
    for sock in [&sock4, &sock6] {
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            ensure!(from.port() == 5062, "from {from}");
            ensure!(buf[..n].starts_with(b"OPTIONS sip:"), "payload");
            seen.insert(from.ip());
            count += 1;
        }
    }
    ensure!(
        count == 9,
        "9 datagrams expected, {count} received from {seen:?}"
    );
    ensure!(
        seen == sources.iter().copied().collect(),
        "sources: {seen:?}"
    );
    Ok(())
}

#[test]
fn inserting_100k_decisions() -> Result<()> {
    shield_tests::kernel::require_root();
    require_crowdsec();
    let fleet = Fleet::new(1);
    let lapi = fleet.start_lapi()?;
    let key = lapi.bouncer_key("bench")?;
    let decisions = bench_decisions(100_000, "4h");
    let took = lapi.import_decisions(&decisions)?;
    let t = Instant::now();
    let (code, v) = decisions_stream(fleet.sbc(0), &fleet.lapi_url(0), &key, true)?;
    let fetch = t.elapsed();
    ensure!(code == 200, "stream answered {code}");
    let new = stream_values(&v, "new");
    eprintln!(
        "inserting {} decisions with cscli decisions import took {took:?}; \
         the startup stream ({} decisions) took {fetch:?}",
        decisions.len(),
        new.len()
    );
    ensure!(new.len() == decisions.len(), "{} in the stream", new.len());
    // Each with its own scope (cscli's import would file them all as Ip).
    let listed: HashSet<(&str, &str)> = new.iter().map(|(s, v)| (s.as_str(), v.as_str())).collect();
    for d in decisions.iter().step_by(997) {
        let scope = match d.scope {
            Scope::Ip => "Ip",
            Scope::Range => "Range",
        };
        ensure!(listed.contains(&(scope, d.value.as_str())), "{scope} {} missing", d.value);
    }
    Ok(())
}
