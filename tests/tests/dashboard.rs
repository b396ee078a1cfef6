//! The Grafana dashboard (`dist/sipshield-dashboard.json`): every panel's
//! every query runs against a real Prometheus scraping the real `shieldd`
//! of the lab while real traffic goes through it (registrations, national
//! and international calls through Kamailio to the PBX, premium calls the
//! shield refuses, a mistyped password, a ban). A query error fails the
//! test, and so does an empty result for a panel where that traffic must
//! show; a panel allowed to stay empty would say so in its description
//! ("Expected empty until ...": none does).
//!
//! Needs root, Kamailio, sipp and prometheus; fails, never skips, without
//! them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use shield_tests::daemon::METRICS_PORT;
use shield_tests::lab::kamailio::{Kamailio, Options};
use shield_tests::process::{in_ns, Proc};
use shield_tests::lab::shieldd::LabConfig;
use shield_tests::lab::sipp::Run;
use shield_tests::lab::topology::*;
use shield_tests::lab::Topology;
use shield_tests::netns::Netns;

/// Prometheus's port inside the SBC's namespace (the test's own).
const PROM_PORT: u16 = 19090;
/// What the test puts for Grafana's variables and macros.
const MACROS: [(&str, &str); 3] = [("$__rate_interval", "1m"), ("$__range", "5m"), ("$instance", ".*")];

fn sbc() -> SocketAddrV4 {
    SocketAddrV4::new(SBC_SIP_IP, 5060)
}

/// Every (panel title, may be empty, expression) of the dashboard.
fn queries() -> Result<Vec<(String, bool, String)>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/sipshield-dashboard.json");
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)
        .context("dist/sipshield-dashboard.json is not JSON")?;
    let mut out = Vec::new();
    for p in d["panels"].as_array().context("no panels")? {
        let title = p["title"].as_str().context("a panel without a title")?.to_string();
        let may_be_empty = p["description"].as_str().unwrap_or("").contains("Expected empty until");
        for t in p["targets"].as_array().context("a panel without targets")? {
            let mut expr = t["expr"].as_str().context("a target without expr")?.to_string();
            for (k, v) in MACROS {
                expr = expr.replace(k, v);
            }
            ensure!(!expr.contains('$'), "{title}: an unknown variable in {expr}");
            out.push((title.clone(), may_be_empty, expr));
        }
    }
    Ok(out)
}

fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` from Prometheus (inside `ns`): status line and body.
fn get(ns: &Netns, path: &str) -> Result<(String, String)> {
    ns.run(|| -> Result<(String, String)> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, PROM_PORT))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
        Ok((head.lines().next().unwrap_or_default().to_string(), body.to_string()))
    })
}

/// Starts Prometheus in `ns`, scraping shieldd every second.
fn prometheus(ns: &Netns, dir: &std::path::Path) -> Result<Proc> {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sipshield\n    \
             static_configs:\n      - targets: ['127.0.0.1:{METRICS_PORT}']\n"
        ),
    )?;
    let mut cmd = in_ns(ns, "prometheus");
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{PROM_PORT}"));
    let p = Proc::spawn("prometheus", cmd, Some(&dir.join("prometheus.log")))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(get(ns, "/-/ready"), Ok((s, _)) if s.contains(" 200")) {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!("prometheus did not get ready:\n{}", p.log_tail(20));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The result of an instant query: its series, or the error.
fn query(ns: &Netns, expr: &str) -> Result<Vec<serde_json::Value>> {
    let (status, body) = get(ns, &format!("/api/v1/query?query={}", percent_encoded(expr)))?;
    let v: serde_json::Value = serde_json::from_str(&body).with_context(|| format!("{status}: {body}"))?;
    ensure!(v["status"] == "success", "{expr}: {status}: {body}");
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

#[test]
fn every_panel_query_runs_and_shows_the_labs_traffic() -> Result<()> {
    shield_tests::kernel::require_root();
    let queries = queries()?;
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let topo = Topology::new();
    topo.warm_neighbours();
    let _kamailio = Kamailio::start(&topo.sbc, dir, &Options::default())?;
    let _pbx = Run::pbx().start(&topo.sbc, dir)?;
    let shield = LabConfig::new(dir)
        .set("destinations", "deny", "[\"00899\"]")
        .set("auth", "failures", "5")
        .start(&topo.sbc)?;
    let _prom = prometheus(&topo.sbc, dir)?;
    let sub = subscriber_ip(0);

    // Traffic: a registration (REGISTER responses, a verified source),
    // national and international calls through Kamailio to the PBX, two
    // premium calls refused, a ban.
    let reg = Run::register(sub, sbc(), 2.0, 1).start(&topo.carrier, dir)?.finish(Duration::from_secs(20))?;
    ensure!(reg.successful == 1, "registration: {reg:?}");
    // One wrong password: a proven digest failure (SPEC §12).
    let wrong = Run::brute_force(subscriber_ip(1), sbc(), 2.0, 1).start(&topo.carrier, dir)?.finish(Duration::from_secs(20))?;
    ensure!(wrong.successful == 1, "the mistype got another answer than 401: {wrong:?}");
    let national = Run::trunk_calls(TRUNK_IP, sbc(), 4.0, 3).start(&topo.carrier, dir)?.finish(Duration::from_secs(30))?;
    ensure!(national.successful == 3, "national calls: {national:?}");
    let intl = Run { service: Some("0033123456789".into()), name: "intl".into(), ..Run::trunk_calls(TRUNK_IP, sbc(), 4.0, 3) }
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(30))?;
    ensure!(intl.successful == 3, "international calls: {intl:?}");
    let premium = Run::premium_calls(sub, sbc(), "00899123456", 4.0, 2).start(&topo.carrier, dir)?.finish(Duration::from_secs(30))?;
    ensure!(premium.successful == 2, "premium calls (refused): {premium:?}");
    shield.ctl_ok(&["ban", "198.51.100.66", "--reason", "dashboard test"]);

    // A few scrapes after the traffic (every series seen twice or more).
    std::thread::sleep(Duration::from_secs(6));
    let mut problems = Vec::new();
    for (title, may_be_empty, expr) in &queries {
        match query(&topo.sbc, expr) {
            Err(e) => problems.push(format!("{title}: query error: {e:#}")),
            Ok(r) if r.is_empty() && !may_be_empty => problems.push(format!("{title}: empty result for {expr}")),
            Ok(r) => println!("{title}: {} series ({expr})", r.len()),
        }
    }
    ensure!(problems.is_empty(), "dashboard problems:\n{}", problems.join("\n"));
    println!("{} queries of the dashboard ran against the lab's Prometheus", queries.len());
    Ok(())
}

/// The file itself: valid JSON with the import input Grafana asks for,
/// a datasource on every panel and target, and no two panels with one id.
#[test]
fn the_dashboard_file_is_importable() -> Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/sipshield-dashboard.json");
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    ensure!(d["__inputs"][0]["name"] == "DS_PROMETHEUS", "no DS_PROMETHEUS input");
    let panels = d["panels"].as_array().context("panels")?;
    let mut ids: Vec<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    ids.sort_unstable();
    ids.dedup();
    ensure!(ids.len() == panels.len(), "panel ids missing or repeated");
    for p in panels {
        ensure!(p["datasource"]["uid"] == "${DS_PROMETHEUS}", "{}: datasource", p["title"]);
    }
    ensure!(queries()?.len() >= 12, "too few queries");
    Ok(())
}
