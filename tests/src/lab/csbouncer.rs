//! Debian 12's `crowdsec-firewall-bouncer` (0.0.25) in nftables mode, run
//! inside a network namespace with a private configuration: its own API
//! key, tables, chains and sets (named [`TABLE4`] / [`TABLE6`]), logging
//! to stdout, not daemonized. For `fleetbench`, the comparison with
//! shieldd as a CrowdSec bouncer.
//!
//! The bouncer makes, per family, a table with a set of addresses (type
//! `ipv4_addr` / `ipv6_addr`, `flags timeout`) and a chain on the `input`
//! hook whose one rule drops `saddr @set` with a `counter`: that counter
//! is what it dropped. Its log says `N decisions added` after applying a
//! stream.
//!
//! On drop the process group is killed and both tables are deleted (the
//! bouncer removes them only when it stops on an error); deleting the
//! namespace would remove them as well.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::nft::nft;
use crate::process::{in_ns, Proc};
use crate::netns::Netns;

/// Debian's binary.
pub const BINARY: &str = "/usr/bin/crowdsec-firewall-bouncer";
/// The bench's own tables, chains and sets (nobody else's names).
pub const TABLE4: &str = "fleetbench";
pub const TABLE6: &str = "fleetbench6";
pub const CHAIN4: &str = "fleetbench-chain";
pub const CHAIN6: &str = "fleetbench6-chain";
pub const SET4: &str = "fleetbench-blacklists";
pub const SET6: &str = "fleetbench6-blacklists";

/// A running bouncer in a namespace.
pub struct CsBouncer<'a> {
    ns: &'a Netns,
    proc: Option<Proc>,
    log: PathBuf,
    /// When the process was spawned.
    pub started: Instant,
}

/// The private configuration: nftables mode, `api_url`, `api_key`, every
/// name private to the bench, no metrics endpoint.
pub fn config_text(api_url: &str, api_key: &str, pid_dir: &Path, every: Duration) -> String {
    format!(
        "mode: nftables\npid_dir: {pid}/\nupdate_frequency: {every}s\ndaemonize: false\n\
         log_mode: stdout\nlog_level: info\napi_url: {api_url}\napi_key: {api_key}\n\
         insecure_skip_verify: false\ndisable_ipv6: false\ndeny_action: DROP\ndeny_log: false\n\
         supported_decisions_types:\n  - ban\nblacklists_ipv4: {SET4}\nblacklists_ipv6: {SET6}\n\
         nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: {TABLE4}\n    chain: {CHAIN4}\n\
         \x20 ipv6:\n    enabled: true\n    set-only: false\n    table: {TABLE6}\n    chain: {CHAIN6}\n\
         prometheus:\n  enabled: false\n  listen_addr: 127.0.0.1\n  listen_port: 60601\n",
        pid = pid_dir.display(),
        every = every.as_secs().max(1),
    )
}

/// `crowdsec-firewall-bouncer -V`, first line.
pub fn version() -> String {
    std::process::Command::new(BINARY)
        .arg("-V")
        .output()
        .map(|o| {
            let t = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
            t.lines()
                .find(|l| l.to_ascii_lowercase().contains("version"))
                .unwrap_or_else(|| t.lines().next().unwrap_or(""))
                .trim()
                .to_string()
        })
        .unwrap_or_else(|_| "not found".into())
}

impl<'a> CsBouncer<'a> {
    /// Writes `dir/bouncer.yaml` and starts the bouncer in `ns` (nsenter
    /// --net, not `ip netns exec`); its log is `dir/bouncer.log` (emptied).
    pub fn start(ns: &'a Netns, dir: &Path, api_url: &str, api_key: &str, every: Duration) -> Result<CsBouncer<'a>> {
        if !Path::new(BINARY).is_file() {
            bail!("{BINARY} is missing: install Debian's crowdsec-firewall-bouncer (scripts/setup.sh does)");
        }
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let config = dir.join("bouncer.yaml");
        std::fs::write(&config, config_text(api_url, api_key, dir, every))
            .with_context(|| config.display().to_string())?;
        let log = dir.join("bouncer.log");
        std::fs::write(&log, "").with_context(|| log.display().to_string())?;
        let mut cmd = in_ns(ns, BINARY);
        cmd.arg("-c").arg(&config);
        let started = Instant::now();
        let proc = Proc::spawn("crowdsec-firewall-bouncer", cmd, Some(&log))?;
        Ok(CsBouncer { ns, proc: Some(proc), log, started })
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The sum of its `N decisions added` lines so far.
    pub fn added(&self) -> u64 {
        added_in(&self.log_text())
    }

    /// Polls the log every `poll` until its `decisions added` lines sum to
    /// at least `n` (or have stopped growing for 10 s: the time of the last
    /// growth then); the time since the start, `None` if it overran
    /// `within` (it keeps running). Fails if it exits.
    pub fn wait_added(&mut self, n: u64, poll: Duration, within: Duration) -> Result<Option<Duration>> {
        let mut last = (0, self.started.elapsed());
        loop {
            let added = self.added();
            if added >= n {
                return Ok(Some(self.started.elapsed()));
            }
            if added != last.0 {
                last = (added, self.started.elapsed());
            } else if added > 0 && self.started.elapsed() > last.1 + Duration::from_secs(10) {
                return Ok(Some(last.1));
            }
            let p = self.proc.as_mut().context("bouncer stopped")?;
            if !p.is_running() {
                bail!("crowdsec-firewall-bouncer exited; its log:\n{}", p.log_tail(20));
            }
            if self.started.elapsed() > within {
                return Ok(None);
            }
            std::thread::sleep(poll);
        }
    }

    /// Elements in its IPv4 and IPv6 sets.
    pub fn set_lens(&self) -> Result<(usize, usize)> {
        Ok((set_len(self.ns, "ip", TABLE4, SET4)?, set_len(self.ns, "ip6", TABLE6, SET6)?))
    }

    /// The elements of both sets, as text (`198.18.0.1`, `2001:db8:c:5::`).
    pub fn elements(&self) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for (family, table, set) in [("ip", TABLE4, SET4), ("ip6", TABLE6, SET6)] {
            let text = nft(self.ns, &["-j", "list", "set", family, table, set])?;
            let v: serde_json::Value = serde_json::from_str(&text).context("nft -j list set")?;
            for i in v["nftables"].as_array().into_iter().flatten() {
                for e in i["set"]["elem"].as_array().into_iter().flatten() {
                    let a = e["elem"]["val"].as_str().or_else(|| e.as_str());
                    if let Some(a) = a {
                        out.insert(a.to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Packets counted by its drop rules (IPv4 + IPv6).
    pub fn dropped(&self) -> Result<u64> {
        Ok(rule_counter(self.ns, "ip", TABLE4, CHAIN4)? + rule_counter(self.ns, "ip6", TABLE6, CHAIN6)?)
    }

    /// Stops the process (SIGTERM to its group, SIGKILL after 5 s) and
    /// deletes its tables.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
        let _ = nft(self.ns, &["delete", "table", "ip", TABLE4]);
        let _ = nft(self.ns, &["delete", "table", "ip6", TABLE6]);
    }
}

impl Drop for CsBouncer<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sum of the `N decisions added` of a bouncer log.
pub fn added_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let i = l.find(" decisions added")?;
            let head = &l[..i];
            let start = head.rfind(|c: char| !c.is_ascii_digit()).map_or(0, |s| s + 1);
            head[start..].parse::<u64>().ok()
        })
        .sum()
}

/// Elements of a set (`nft -j list set`).
pub fn set_len(ns: &Netns, family: &str, table: &str, set: &str) -> Result<usize> {
    // (an element with a timeout is {"elem": {"val": ..., "timeout": ...}})
    let text = nft(ns, &["-j", "list", "set", family, table, set])?;
    let v: serde_json::Value = serde_json::from_str(&text).context("nft -j list set")?;
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("set"))
        .map(|s| s["elem"].as_array().map_or(0, Vec::len))
        .sum())
}

/// The packets of every rule counter of a chain (`nft -j list chain`).
pub fn rule_counter(ns: &Netns, family: &str, table: &str, chain: &str) -> Result<u64> {
    let text = nft(ns, &["-j", "list", "chain", family, table, chain])?;
    let v: serde_json::Value = serde_json::from_str(&text).context("nft -j list chain")?;
    let mut n = 0;
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["rule"]["expr"].as_array().into_iter().flatten() {
            n += e["counter"]["packets"].as_u64().unwrap_or(0);
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_added_lines() {
        let log = "time=\"30-11-2026 08:01:39\" level=info msg=\"Processing new and deleted decisions . . .\"\n\
                   time=\"30-11-2026 08:01:39\" level=info msg=\"3 decisions added\"\n\
                   time=\"30-11-2026 08:01:41\" level=info msg=\"100000 decisions added\"\n";
        assert_eq!(added_in(log), 100_003);
    }

    #[test]
    fn config_names_are_private() {
        let c = config_text("http://192.0.2.5:8080/", "k", Path::new("/tmp/x"), Duration::from_secs(2));
        assert!(c.contains("table: fleetbench\n") && c.contains("table: fleetbench6\n"));
        assert!(c.contains("update_frequency: 2s") && c.contains("daemonize: false"));
        assert!(!c.contains("crowdsec-blacklists"));
    }
}
