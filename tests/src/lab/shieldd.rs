//! The real `shieldd` in the SBC's namespace, configured from the example
//! configuration `config/shield.toml` with only what a lab must change:
//! the interfaces, the pin path, the state directory, the control socket,
//! the jail's log file (and, where a test says so, the jail's counts).
//! Everything else - limits, scanner list, escalation, the allowlisted
//! trunk 203.0.113.10 - is the example's. `shieldctl` talks to it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use shield::control::protocol::{BannedReply, StatsReply, StatusReply};
use shield::kernel::MapId;
use shield_common::BanValue;

use super::paths::{binary, example_config};
use super::process::{in_ns, run_within, Proc};
use super::topology::{SBC_CARRIER_IF, SBC_PUBLIC_IF};
use crate::netns::Netns;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Port of the metrics endpoint inside the SBC's namespace.
pub const METRICS_PORT: u16 = 9814;

/// A jail as the lab configures it (the example's `kamailio-auth` jail with
/// the lab's log file).
#[derive(Clone, Debug)]
pub struct JailSettings {
    pub logpath: PathBuf,
    pub maxretry: u32,
    pub findtime: &'static str,
    pub bantime: &'static str,
}

/// The example configuration adapted to a lab under `dir`.
#[derive(Clone, Debug)]
pub struct LabConfig {
    pub dir: PathBuf,
    pub pin_path: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub jail: Option<JailSettings>,
    /// Extra `key = value` changes, as (table path, key, TOML value).
    pub overrides: Vec<(String, String, String)>,
}

impl LabConfig {
    pub fn new(dir: &Path) -> LabConfig {
        let id = format!(
            "sipshield-lab-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        LabConfig {
            dir: dir.to_path_buf(),
            pin_path: PathBuf::from("/sys/fs/bpf").join(id),
            socket: dir.join("shield-ctl.sock"),
            state_dir: dir.join("shield-state"),
            jail: None,
            overrides: Vec::new(),
        }
    }

    pub fn with_jail(mut self, jail: JailSettings) -> LabConfig {
        self.jail = Some(jail);
        self
    }

    /// Sets `[table] key = value` (value in TOML syntax), e.g.
    /// `("bans.escalate", "drops", "0")`.
    pub fn set(mut self, table: &str, key: &str, value: &str) -> LabConfig {
        self.overrides
            .push((table.into(), key.into(), value.into()));
        self
    }

    /// The configuration text: config/shield.toml with the lab's changes
    /// (comments and every other value kept).
    pub fn render(&self) -> Result<String> {
        let example =
            std::fs::read_to_string(example_config()).context("reading config/shield.toml")?;
        let mut doc: toml_edit::DocumentMut =
            example.parse().context("parsing config/shield.toml")?;
        let path_str = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let shield = &mut doc["shield"];
        shield["interfaces"] =
            toml_edit::value(toml_edit::Array::from_iter([SBC_PUBLIC_IF, SBC_CARRIER_IF]));
        shield["pin_path"] = toml_edit::value(path_str(&self.pin_path));
        shield["state_dir"] = toml_edit::value(path_str(&self.state_dir));
        // The lab is thrown away: leave nothing attached.
        shield["detach_on_exit"] = toml_edit::value(true);
        doc["control"]["socket"] = toml_edit::value(path_str(&self.socket));
        doc["metrics"]["listen"] = toml_edit::value(format!("127.0.0.1:{METRICS_PORT}"));
        let jails = doc["jail"]
            .as_array_of_tables_mut()
            .context("config/shield.toml has no [[jail]]")?;
        match &self.jail {
            Some(j) => {
                let t = jails.get_mut(0).context("[[jail]]")?;
                t["logpath"] = toml_edit::value(path_str(&j.logpath));
                t["maxretry"] = toml_edit::value(i64::from(j.maxretry));
                t["findtime"] = toml_edit::value(j.findtime);
                t["bantime"] = toml_edit::value(j.bantime);
            }
            None => {
                for t in jails.iter_mut() {
                    t["enabled"] = toml_edit::value(false);
                    t["logpath"] = toml_edit::value(path_str(&self.dir.join("no-jail.log")));
                }
            }
        }
        for (table, key, value) in &self.overrides {
            let v: toml_edit::Value = value
                .parse()
                .with_context(|| format!("override {table}.{key} = {value}"))?;
            let mut item = &mut doc[table.split('.').next().unwrap_or_default()];
            for part in table.split('.').skip(1) {
                item = &mut item[part];
            }
            item[key.as_str()] = toml_edit::Item::Value(v);
        }
        Ok(doc.to_string())
    }
}

/// A running `shieldd`; stopped on drop (it detaches, `detach_on_exit`),
/// and its pins are removed whatever happened.
pub struct Shieldd {
    proc: Proc,
    pub cfg: LabConfig,
    pub config_file: PathBuf,
    pub log: PathBuf,
    shieldctl: PathBuf,
    /// Remove the pins when stopped (not when handing over to a restart).
    unpin: bool,
    /// From spawning the daemon to its first answer (`--check` excluded).
    pub ready_after: Duration,
}

impl Shieldd {
    /// Writes the config, runs `shieldd --check` on it, starts the daemon in
    /// `ns` and waits until `shieldctl status` answers.
    pub fn start(ns: &Netns, cfg: LabConfig) -> Result<Shieldd> {
        let shieldd = binary("shieldd")?;
        let shieldctl = binary("shieldctl")?;
        std::fs::create_dir_all(&cfg.dir)?;
        let config_file = cfg.dir.join("shield.toml");
        std::fs::write(&config_file, cfg.render()?)?;
        // In the SBC's namespace: --check looks for the interfaces there.
        let mut check = in_ns(ns, shieldd.to_str().context("path")?);
        check.arg("--check").arg("--config").arg(&config_file);
        let out = run_within(check, Duration::from_secs(30))?;
        if !out.status.success() {
            bail!(
                "shieldd --check rejects the lab config:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let log = cfg.dir.join("shieldd.log");
        let mut cmd = in_ns(ns, shieldd.to_str().context("path")?);
        cmd.arg("--config")
            .arg(&config_file)
            .env("SHIELD_LOG", "info");
        let proc = Proc::spawn("shieldd", cmd, Some(&log))?;
        let mut d = Shieldd {
            proc,
            cfg,
            config_file,
            log,
            shieldctl,
            unpin: true,
            ready_after: Duration::ZERO,
        };
        let t = Instant::now();
        loop {
            if !d.proc.is_running() {
                bail!(
                    "shieldd exited during start-up; log:\n{}",
                    d.proc.log_tail(30)
                );
            }
            if d.ctl(&["status"])
                .map(|o| o.status.success())
                .unwrap_or(false)
            {
                d.ready_after = t.elapsed();
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!(
                    "shieldd not ready after 120 s; log:\n{}",
                    d.proc.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// `shieldctl --socket SOCK args...`
    pub fn ctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut c = Command::new(&self.shieldctl);
        c.arg("--socket").arg(&self.cfg.socket).args(args);
        run_within(c, Duration::from_secs(60))
    }

    /// `shieldctl --json args...`, which must succeed.
    pub fn ctl_json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl(&a)?;
        if !out.status.success() {
            bail!(
                "shieldctl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("shieldctl {} output", args.join(" ")))
    }

    pub fn stats(&self) -> Result<StatsReply> {
        self.ctl_json(&["stats"])
    }

    pub fn status(&self) -> Result<StatusReply> {
        self.ctl_json(&["status"])
    }

    pub fn banned(&self) -> Result<BannedReply> {
        self.ctl_json(&["banned"])
    }

    /// Lifts every ban (between benchmark runs).
    pub fn unban_all(&self) -> Result<()> {
        let out = self.ctl(&["unban", "--all"])?;
        if !out.status.success() {
            bail!(
                "shieldctl unban --all: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The kernel's exact-address IPv4 ban map, opened from its pin: for
    /// polling "is this address banned yet" without the daemon in the way.
    pub fn ban_map(&self) -> Result<PinnedBans> {
        let path = self.cfg.pin_path.join(MapId::BansV4.name());
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let map = BpfHashMap::try_from(Map::HashMap(data)).context("BANS_V4 is a hash map")?;
        Ok(PinnedBans { map })
    }

    /// `GET /metrics` from inside the SBC's namespace.
    pub fn metrics(&self, ns: &Netns) -> Result<String> {
        ns.run(|| http_get(METRICS_PORT, "/metrics"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.proc.stop_within(Duration::from_secs(15));
        if self.unpin {
            let _ = shield::kernel::remove_all(&self.cfg.pin_path);
        }
    }

    /// Stops the daemon (SIGTERM) and starts it again on the same
    /// configuration; with `detach_on_exit = false` the new one adopts the
    /// pinned shield. Returns the time from spawning it to its answer.
    pub fn restart(&mut self, ns: &Netns) -> Result<Duration> {
        self.proc.stop_within(Duration::from_secs(15));
        let next = Shieldd::start(ns, self.cfg.clone())?;
        let mut old = std::mem::replace(self, next);
        old.unpin = false;
        Ok(self.ready_after)
    }
}

impl Drop for Shieldd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Packets by verdict and reason, summed over interfaces.
pub fn totals(stats: &StatsReply) -> BTreeMap<(String, String), u64> {
    stats
        .totals
        .iter()
        .map(|r| ((r.verdict.clone(), r.reason.clone()), r.packets))
        .collect()
}

/// Packets dropped (verdict `drop`), all reasons.
pub fn dropped(stats: &StatsReply) -> u64 {
    stats
        .totals
        .iter()
        .filter(|r| r.verdict == "drop")
        .map(|r| r.packets)
        .sum()
}

/// The pinned BANS_V4 map.
pub struct PinnedBans {
    map: BpfHashMap<MapData, [u8; 4], BanValue>,
}

impl PinnedBans {
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.map.get(&addr.octets(), 0).is_ok()
    }
}

/// A plain HTTP/1.0 GET to 127.0.0.1:`port` (in the calling thread's
/// namespace); the body.
fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("HTTP response without a header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}
