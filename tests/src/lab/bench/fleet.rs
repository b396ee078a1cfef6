//! Section 7 of BENCHMARKS.md (`fleetbench`): CrowdSec decisions into the
//! kernel. One real LAPI (Debian's crowdsec 1.4.6, [`crate::crowdsec`])
//! with 100,000 decisions, and a fleet of three SBCs ([`crate::fleet`]):
//!
//! 1. the first full stream: shieldd as a bouncer on SBC 0 against
//!    Debian's crowdsec-firewall-bouncer 0.0.25 (nftables) on SBC 1, one
//!    after the other (time and CPU);
//! 2. whether sampled decisions are enforced: packets from inside Range
//!    decisions, from their network address and from Ip decisions, counted
//!    by a UDP listener on each SBC ([`super::fleet_probe`]);
//! 3. CPU per million dropped packets of a flood from one banned address
//!    ([`super::fleet_flood`]);
//! 4. ban propagation: bans made on SBC 0, pushed to LAPI, pulled by SBCs
//!    1 and 2 ([`super::fleet_spread`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::fleet_flood::FloodRow;
use super::fleet_probe::ProbeResults;
use super::fleet_spread::Spread;
pub use super::fleet_setup::FleetOptions;
use super::fleet_setup::{crowdsec_section, new_shieldd, shieldd_config, tail, NFT_SBC, SHIELDD_SBC};
use crate::crowdsec::{bench_decisions, Decision, Lapi, Scope};
use crate::daemon::Shieldd;
use crate::fleet::Fleet;
use crate::lab::cpu::process_ticks;
use crate::lab::csbouncer::{self, CsBouncer};
use crate::process::run_ok;
use crate::lab::signals;

/// How long a first full stream may take, either bouncer.
const SYNC_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the bench waits for the nftables bouncer's (it goes on).
const BOUNCER_WAIT: Duration = Duration::from_secs(240);

/// The decision mix as loaded.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Mix {
    pub ip4: usize,
    pub range4: usize,
    pub ip6: usize,
    pub range6: usize,
}

/// LAPI's own answer to a full stream (curl, from the SBC's namespace).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LapiAnswer {
    pub first_byte_secs: f64,
    pub total_secs: f64,
    pub bytes: u64,
    pub listed: usize,
    /// The first Range decision of the answer, as LAPI sent it.
    pub range_sample: String,
}

/// shieldd's first full stream.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShielddSync {
    pub listed: u64,
    pub added: u64,
    pub skipped: u64,
    pub fetch_ms: u64,
    pub apply_ms: u64,
    /// From `shieldctl reload` (which starts the bouncer) to the log line.
    pub reload_to_logged_secs: f64,
    /// From `shieldctl reload` until `status` showed every decision.
    pub reload_to_confirmed_secs: f64,
    pub status_decisions: u64,
    pub by_origin: Vec<(String, u64)>,
    /// `status`'s reasons for decisions not enforced.
    pub skipped_by: Vec<(String, u64)>,
    /// utime + stime of shieldd from the reload to the log line.
    pub cpu_secs: f64,
}

/// The nftables bouncer's first full stream.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BouncerSync {
    pub version: String,
    /// From spawning it to its `decisions added` lines summing to the
    /// decisions listed.
    pub start_to_added_secs: f64,
    /// It had not finished when the bench stopped waiting (after
    /// `waited_secs`): the figures are what it had done by then.
    pub timed_out: bool,
    pub waited_secs: f64,
    pub logged_added: u64,
    pub set4: usize,
    pub set6: usize,
    /// utime + stime of the process at that moment (start-up included).
    pub cpu_secs: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FleetResults {
    pub date: String,
    pub command: String,
    pub minutes: f64,
    pub machine: String,
    pub busy_before_pct: f64,
    pub versions: Vec<(String, String)>,
    pub decisions: usize,
    pub mix: Mix,
    pub import_secs: f64,
    pub every_secs: u64,
    pub lapi: LapiAnswer,
    pub shieldd: ShielddSync,
    pub bouncer: BouncerSync,
    pub probes: ProbeResults,
    pub flood_rate: u64,
    pub floods: Vec<FloodRow>,
    pub spread: Spread,
}

pub fn mix_of(d: &[Decision]) -> Mix {
    let mut m = Mix::default();
    for x in d {
        let v6 = x.value.contains(':');
        match (x.scope, v6) {
            (Scope::Ip, false) => m.ip4 += 1,
            (Scope::Range, false) => m.range4 += 1,
            (Scope::Ip, true) => m.ip6 += 1,
            (Scope::Range, true) => m.range6 += 1,
        }
    }
    m
}

/// The whole section, on one fleet and one LAPI. `say` reports progress.
pub fn run(o: &FleetOptions, say: &mut dyn FnMut(&str)) -> Result<FleetResults> {
    let t = Instant::now();
    let (machine, busy_before_pct) = machine_line();
    let fleet = Fleet::new(3);
    let lapi = fleet.start_lapi().context("starting the LAPI")?;
    let decisions = bench_decisions(o.decisions, "4h");
    say(&format!("importing {} decisions into LAPI", decisions.len()));
    let import = lapi.import_decisions(&decisions).context("cscli decisions import")?;
    let mut r = FleetResults {
        date: super::date_now(),
        machine,
        busy_before_pct,
        versions: versions(),
        decisions: decisions.len(),
        mix: mix_of(&decisions),
        import_secs: import.as_secs_f64(),
        every_secs: o.every.as_secs(),
        flood_rate: o.flood_rate,
        ..FleetResults::default()
    };
    say(&format!("imported in {:.1} s; LAPI's answer to a full stream", r.import_secs));
    r.lapi = lapi_answer(&fleet, &lapi, &o.work_dir).context("LAPI's full stream")?;
    signals::check()?;
    say("shieldd's first full stream on SBC 0");
    let mut sd = bouncer_shieldd(&fleet, &lapi, o)?;
    r.shieldd = shieldd_sync(&sd, o, r.lapi.listed as u64)?;
    signals::check()?;
    say("crowdsec-firewall-bouncer's first full stream on SBC 1");
    let key = lapi.bouncer_key("cs-firewall-bouncer-sbc1")?;
    let mut b = CsBouncer::start(fleet.sbc(NFT_SBC), &o.work_dir.join("nft-bouncer"), &fleet.lapi_url(NFT_SBC), &key, o.every)?;
    r.bouncer = bouncer_sync(&mut b, r.lapi.listed as u64)?;
    say("probing sampled decisions on both");
    r.probes = super::fleet_probe::run(&fleet, &sd, &b, &decisions, o)?;
    say("floods from a banned address");
    r.floods = super::fleet_flood::run(&fleet, &sd, &b, o, say)?;
    drop(b);
    sd.stop();
    drop(sd);
    say("ban propagation across three SBCs");
    r.spread = super::fleet_spread::run(&fleet, &lapi, o, say)?;
    r.minutes = t.elapsed().as_secs_f64() / 60.0;
    Ok(r)
}

fn machine_line() -> (String, f64) {
    let m = super::machine();
    (
        format!("{} CPUs ({}), {:.1} GiB, Linux {}", m.cpus, m.cpu_model, m.memory_gib, m.kernel),
        m.busy_before_pct,
    )
}

fn versions() -> Vec<(String, String)> {
    let first = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| {
                let t = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
                t.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string()
            })
            .unwrap_or_else(|_| "not found".into())
    };
    let dpkg = |p: &str| first("dpkg-query", &["-W", "-f", "${Version}", p]);
    vec![
        ("crowdsec".into(), dpkg("crowdsec")),
        ("crowdsec-firewall-bouncer".into(), dpkg("crowdsec-firewall-bouncer")),
        ("nftables".into(), first("nft", &["--version"])),
    ]
}

/// A full stream fetched with curl from SBC 0's namespace with a key of
/// its own (so neither bouncer's state on LAPI changes).
fn lapi_answer(fleet: &Fleet, lapi: &Lapi, dir: &Path) -> Result<LapiAnswer> {
    std::fs::create_dir_all(dir)?;
    let key = lapi.bouncer_key("bench-curl")?;
    let body = dir.join("stream.json");
    let mut cmd = fleet.sbc(SHIELDD_SBC).command("curl");
    cmd.args(["-s", "--max-time", "120", "-o"])
        .arg(&body)
        .args(["-H", &format!("X-Api-Key: {key}")])
        .args(["-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"])
        .arg(format!("{}v1/decisions/stream?startup=true", fleet.lapi_url(SHIELDD_SBC)));
    let out = run_ok(cmd, Duration::from_secs(150))?;
    let f: Vec<&str> = out.split_whitespace().collect();
    if f.first() != Some(&"200") || f.len() < 4 {
        bail!("full stream: curl says {out:?}");
    }
    let text = std::fs::read_to_string(&body).context("stream.json")?;
    let v: serde_json::Value = serde_json::from_str(&text).context("stream.json is not JSON")?;
    let _ = std::fs::remove_file(&body);
    Ok(LapiAnswer {
        first_byte_secs: f[1].parse()?,
        total_secs: f[2].parse()?,
        bytes: f[3].parse()?,
        listed: v["new"].as_array().map_or(0, Vec::len),
        range_sample: v["new"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["value"].as_str().is_some_and(|s| s.contains('/'))))
            .map_or(String::new(), ToString::to_string),
    })
}

/// shieldd on SBC 0, started without `[crowdsec]` (so its program load is
/// not in the sync's figures); the section is added by [`shieldd_sync`].
fn bouncer_shieldd(fleet: &Fleet, lapi: &Lapi, o: &FleetOptions) -> Result<Shieldd> {
    let mut d = new_shieldd(fleet, SHIELDD_SBC, &o.work_dir.join("shieldd-sbc0"))?;
    d.write_config(&shieldd_config(&d, ""));
    d.try_start().context("starting shieldd on SBC 0")?;
    let cs = crowdsec_section(fleet, lapi, &d, SHIELDD_SBC, o.every, false)?;
    d.write_config(&shieldd_config(&d, &cs));
    Ok(d)
}

/// `key=value` of a log line (ANSI colours removed first).
pub fn log_field(line: &str, key: &str) -> Option<u64> {
    let plain = strip_ansi(line);
    let at = plain.find(&format!(" {key}="))? + key.len() + 2;
    let digits: String = plain[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The first `crowdsec decisions pulled startup=true` line of `log` after
/// byte `from`.
fn pulled_line(log: &str, from: usize) -> Option<String> {
    log.get(from..)?
        .lines()
        .map(strip_ansi)
        .find(|l| l.contains("crowdsec decisions pulled") && l.contains("startup=true"))
}

/// Reloads `d` into its `[crowdsec]` config and times the first stream.
fn shieldd_sync(d: &Shieldd, o: &FleetOptions, expected: u64) -> Result<ShielddSync> {
    let _ = o;
    let pid = d.pid();
    let from = d.log_text().len();
    let cpu0 = process_ticks(pid).context("shieldd's /proc stat")?.1;
    let t = Instant::now();
    d.try_ctl_ok(&["reload"]).context("shieldctl reload")?;
    let line = loop {
        if let Some(l) = pulled_line(&d.log_text(), from) {
            break l;
        }
        if t.elapsed() > SYNC_TIMEOUT {
            bail!("shieldd: no full stream applied after {SYNC_TIMEOUT:?}; log:\n{}", tail(&d.log_text(), 20));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let logged = t.elapsed();
    let cpu1 = process_ticks(pid).context("shieldd's /proc stat")?.1;
    let mut s = ShielddSync {
        listed: log_field(&line, "listed").unwrap_or(0),
        added: log_field(&line, "added").unwrap_or(0),
        skipped: log_field(&line, "skipped").unwrap_or(0),
        fetch_ms: log_field(&line, "fetch_ms").context("fetch_ms in the log line")?,
        apply_ms: log_field(&line, "apply_ms").context("apply_ms in the log line")?,
        reload_to_logged_secs: logged.as_secs_f64(),
        cpu_secs: cpu1.saturating_sub(cpu0) as f64 / crate::lab::cpu::ticks_per_second(),
        ..ShielddSync::default()
    };
    loop {
        let st = d.ctl_as::<serde_json::Value>(&["status"])?;
        let cs = &st["crowdsec"];
        s.status_decisions = cs["decisions"].as_u64().unwrap_or(0);
        if s.status_decisions >= expected.min(s.added) || t.elapsed() > SYNC_TIMEOUT {
            s.reload_to_confirmed_secs = t.elapsed().as_secs_f64();
            s.by_origin = counts(&cs["by_origin"]);
            s.skipped_by = counts(&cs["skipped"]);
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A JSON object of counts as pairs (zeros left out).
fn counts(v: &serde_json::Value) -> Vec<(String, u64)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (at most [`BOUNCER_WAIT`]) for the bouncer's first stream to be
/// in its sets.
fn bouncer_sync(b: &mut CsBouncer, expected: u64) -> Result<BouncerSync> {
    let took = b.wait_added(expected, Duration::from_millis(20), BOUNCER_WAIT)?;
    let waited = b.started.elapsed();
    let cpu = process_ticks(b.pid()).context("the bouncer's /proc stat")?.1;
    let (set4, set6) = b.set_lens()?;
    Ok(BouncerSync {
        version: csbouncer::version(),
        start_to_added_secs: took.unwrap_or(waited).as_secs_f64(),
        timed_out: took.is_none(),
        waited_secs: waited.as_secs_f64(),
        logged_added: b.added(),
        set4,
        set6,
        cpu_secs: cpu as f64 / crate::lab::cpu::ticks_per_second(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_of_a_coloured_line() {
        let l = "2026-11-30T08:00:00Z \u{1b}[32m INFO\u{1b}[0m shield: crowdsec decisions pulled \u{1b}[3mstartup\u{1b}[0m\u{1b}[2m=\u{1b}[0mtrue listed=100000 added=99990 deleted=0 skipped=10 fetch_ms=1234 apply_ms=56";
        assert_eq!(log_field(l, "listed"), Some(100_000));
        assert_eq!(log_field(l, "apply_ms"), Some(56));
        assert_eq!(log_field(l, "fetch_ms"), Some(1234));
        assert!(pulled_line(l, 0).is_some());
    }

    #[test]
    fn the_mix_is_counted() {
        let m = mix_of(&bench_decisions(100, "1h"));
        assert_eq!((m.ip4, m.range4, m.ip6, m.range6), (25, 25, 25, 25));
    }
}
