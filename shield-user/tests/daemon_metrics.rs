//! `/metrics` as Prometheus sees it: both exposition formats by content
//! negotiation, the classic one linted by promtool, and a real Prometheus
//! server scraping the daemon and answering a query about it.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

const METRICS: &str = "http://127.0.0.1:9814/metrics";
const PROM_PORT: u16 = 19090;

/// `curl` inside the SBC namespace: (content type, body).
fn curl(lab: &Lab, url: &str, accept: Option<&str>) -> (String, String) {
    let header = accept.map(|a| format!("Accept: {a}"));
    let mut args = header.iter().flat_map(|h| ["-H", h.as_str()]).collect::<Vec<_>>();
    args.push(url);
    let (ctype, body) = shield_tests::process::curl(&lab.sbc.name, &args, "%{content_type}")
        .unwrap_or_else(|e| panic!("curl {url}: {e:#}"));
    assert!(!ctype.is_empty(), "curl {url}: no answer");
    (ctype, format!("{body}\n").replace("\n\n", "\n"))
}

fn shield_with_traffic(lab: &Lab) -> Shieldd {
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    d.ctl_ok(&["ban", "198.51.100.2"]);
    send(lab, PEER_IP, 100, Duration::from_millis(1));
    settle();
    d
}

#[test]
fn metrics_negotiate_the_format_and_the_classic_one_passes_promtool() {
    let lab = Lab::new();
    let _d = shield_with_traffic(&lab);

    let (ctype, om) = curl(
        &lab,
        METRICS,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    for needle in [
        "# TYPE sipshield_packets counter",
        r#"sipshield_packets_total{interface="veth-s",verdict="drop",reason="ban"} 100"#,
        r#"sipshield_bytes_total{interface="veth-s",verdict="drop",reason="ban"} "#,
        r#"sipshield_sip_requests_total{interface="veth-s",method="OPTIONS",verdict="pass"} "#,
        "sipshield_bans_active 1",
        r#"sipshield_bans_total{origin="manual"} 1"#,
        r#"sipshield_map_entries{map="bans"} 1"#,
        r#"sipshield_map_capacity{map="bans"} 1000000"#,
        r#"sipshield_xdp_attached{interface="veth-s",mode="driver"} 1"#,
        r#"sipshield_build_info{version=""#,
        "# TYPE sipshield_jail_failures counter",
    ] {
        assert!(om.contains(needle), "missing {needle:?} in\n{om}");
    }

    let (ctype, classic) = curl(&lab, METRICS, None);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    assert!(
        classic.contains("# TYPE sipshield_packets_total counter"),
        "{classic}"
    );
    assert!(!classic.contains("# EOF"));
    if let Err(e) = shield_tests::promtool::check_metrics(&classic) {
        panic!("promtool: {e}");
    }
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_answers_queries() {
    let lab = Lab::new();
    let d = shield_with_traffic(&lab);
    let dir = &d.dir;
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sipshield\n    static_configs:\n      - targets: ['127.0.0.1:9814']\n",
    )
    .expect("write prometheus.yml");
    let mut c = lab.sbc.command("/usr/bin/prometheus");
    c.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{PROM_PORT}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .expect("start prometheus (Debian package prometheus)");
    let log = collect(child.stderr.take().expect("stderr"));
    let _prom = Guard(child);

    let query = |q: &str| -> serde_json::Value {
        let mut c = lab.sbc.command("curl");
        c.args(["-sS", "--max-time", "5", "-G", "--data-urlencode"])
            .arg(format!("query={q}"))
            .arg(format!("http://127.0.0.1:{PROM_PORT}/api/v1/query"));
        run_within(c, Duration::from_secs(10))
            .ok()
            .and_then(|out| serde_json::from_slice(&out.stdout).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let value = |v: &serde_json::Value| -> Option<f64> {
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };

    let q = r#"sipshield_packets_total{interface="veth-s",verdict="drop",reason="ban"}"#;
    let got = wait_for_or_log(&log, || value(&query(q)));
    assert_eq!(got, 100.0);
    assert_eq!(value(&query("sipshield_bans_active")), Some(1.0));
    assert_eq!(
        value(&query(r#"sipshield_xdp_attached{mode="driver"}"#)),
        Some(1.0)
    );
    let up = query(r#"up{job="sipshield"}"#);
    assert_eq!(value(&up), Some(1.0), "{up}");
    eprintln!("prometheus read back {q} = {got}");
}

fn wait_for_or_log<T>(
    log: &std::sync::Arc<std::sync::Mutex<String>>,
    f: impl FnMut() -> Option<T>,
) -> T {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "Prometheus to have scraped the shield",
            Duration::from_secs(60),
            f,
        )
    }));
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("---- prometheus log ----\n{}", log.lock().expect("lock"));
            std::panic::resume_unwind(e)
        }
    }
}
