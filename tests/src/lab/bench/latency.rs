//! Log line to drop: SIP Shield's jail against real fail2ban with the same
//! filter file (config/filters/kamailio.conf) and Debian's nftables action.
//! Each trial appends `MAXRETRY` Kamailio failure lines for one address to
//! a log both would follow (syslog format: fail2ban needs a date) while a
//! prober sends from that address every millisecond; the latency is from
//! the moment the last line's `write(2)` returned to the first probe that
//! never arrived (see `lab::probe`). The two run one after the other on the
//! same lab, never at once.

use std::ffi::CString;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::lab::fail2ban::Fail2ban;
use crate::lab::probe::{wait_for_drop, ProbeSink, Prober};
use crate::lab::shieldd::{JailSettings, LabConfig};
use crate::lab::signals;
use crate::lab::topology::{probe_source, Topology, PROBE_SOURCES, SBC_SIP_IP};

pub const MAXRETRY: u32 = 3;
const PROBE_EVERY: Duration = Duration::from_millis(1);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub trials: usize,
    /// Log line to drop, ms, one per trial.
    pub shield_ms: Vec<f64>,
    /// shieldd's own log-to-map figure (its `latency_ms` log field).
    pub shieldd_logged_ms: Vec<f64>,
    pub fail2ban_ms: Vec<f64>,
    /// The first fail2ban ban, which also creates its nftables table
    /// (fail2ban starts its action on the first ban); not in `fail2ban_ms`.
    pub fail2ban_first_ms: Option<f64>,
    pub fail2ban_backend: String,
}

/// A Kamailio failure line as syslog writes it, dated now.
fn failure_line(addr: Ipv4Addr) -> String {
    format!("{} sbc kamailio[2215]: NOTICE: <script>: sipshield: auth failed for 1000 from {addr}:5062\n", syslog_now())
}

/// "Nov 27 01:04:34" in local time (what fail2ban's date detector reads).
fn syslog_now() -> String {
    // SAFETY: time/localtime_r/strftime with valid buffers.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        let mut buf = [0u8; 64];
        let fmt = CString::new("%b %e %H:%M:%S").expect("format");
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

fn append(log: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)?;
    f.write_all(line.as_bytes())?;
    Ok(())
}

/// One trial; the latency in ms.
fn trial(topo: &Topology, sink: &ProbeSink, log: &Path, addr: Ipv4Addr) -> Result<f64> {
    let mut prober = Prober::start(
        &topo.attacker,
        addr,
        SBC_SIP_IP,
        PROBE_EVERY,
        Duration::from_secs(30),
    );
    let t = Instant::now();
    while sink.received_up_to(addr) < 20 {
        if t.elapsed() > Duration::from_secs(5) {
            bail!("probes from {addr} do not arrive before any ban");
        }
        signals::sleep(Duration::from_millis(5))?;
    }
    for _ in 1..MAXRETRY {
        append(log, &failure_line(addr))?;
        signals::sleep(Duration::from_millis(100))?;
    }
    signals::sleep(Duration::from_millis(300))?;
    let line = failure_line(addr);
    append(log, &line)?;
    let t0 = Instant::now();
    let Some(first_lost) = wait_for_drop(
        sink,
        &prober,
        Duration::from_millis(300),
        Duration::from_secs(20),
    ) else {
        bail!("{addr} was not banned within 20 s of its failure line");
    };
    prober.stop();
    Ok(first_lost.saturating_duration_since(t0).as_secs_f64() * 1e3)
}

pub fn run(
    topo: &Topology,
    dir: &Path,
    trials: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Latency> {
    assert!(2 * trials < PROBE_SOURCES, "not enough probe addresses");
    let log = dir.join("auth.log");
    std::fs::create_dir_all(dir)?;
    std::fs::write(&log, "")?;
    let sink = ProbeSink::start(&topo.sbc);
    let mut r = Latency {
        trials,
        ..Default::default()
    };

    {
        let d = dir.join("shieldd");
        std::fs::create_dir_all(&d)?;
        let cfg = LabConfig::new(&d).with_jail(JailSettings {
            logpath: log.clone(),
            maxretry: MAXRETRY,
            findtime: "10m",
            bantime: "1h",
        });
        let shield = cfg.start(&topo.sbc)?;
        for i in 0..trials {
            progress(&format!("SIP Shield jail, trial {}/{trials}", i + 1));
            r.shield_ms.push(trial(topo, &sink, &log, probe_source(i))?);
        }
        r.shieldd_logged_ms = shield
            .log_text()
            .lines()
            .filter_map(|l| {
                l.split("latency_ms=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
    }

    {
        let d = dir.join("fail2ban");
        std::fs::create_dir_all(&d)?;
        let f2b = Fail2ban::start(&topo.sbc, &d, &log, MAXRETRY)?;
        r.fail2ban_backend = f2b.backend();
        progress("fail2ban, first ban (creates its nftables table)");
        r.fail2ban_first_ms = Some(trial(topo, &sink, &log, probe_source(trials))?);
        for i in 0..trials {
            progress(&format!("fail2ban, trial {}/{trials}", i + 1));
            r.fail2ban_ms
                .push(trial(topo, &sink, &log, probe_source(trials + 1 + i))?);
        }
    }
    Ok(r)
}
