//! The lab's `shieldd`: the example configuration `config/shield.toml`
//! with only what a lab must change: the interfaces, the pin path, the
//! state directory, the control socket, the jail's log file (and, where a
//! test says so, the jail's counts). Everything else - limits, scanner
//! list, escalation, the allowlisted trunk 203.0.113.10 - is the example's.
//! The daemon itself is [`crate::daemon::Shieldd`], run from the built
//! [`Binaries`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::paths::{example_config, path_str};
use super::topology::{SBC_CARRIER_IF, SBC_PUBLIC_IF};
use crate::daemon::{Binaries, Shieldd, METRICS_PORT};
use crate::netns::Netns;

/// Pin directories of the lab: `/sys/fs/bpf/sipshield-lab-<pid>-<n>`
/// ([`super::sweep`] removes those of a process that no longer exists).
pub const LAB_PINS: &str = "sipshield-lab";

/// A jail as the lab configures it (the example's `kamailio-auth` jail with
/// the lab's log file).
#[derive(Clone, Debug)]
pub struct JailSettings {
    pub logpath: PathBuf,
    pub maxretry: u32,
    pub findtime: &'static str,
    pub bantime: &'static str,
}

/// The example configuration adapted to a lab daemon with its files under
/// `dir`.
#[derive(Clone, Debug)]
pub struct LabConfig {
    pub dir: PathBuf,
    pub jail: Option<JailSettings>,
    /// Extra `key = value` changes, as (table path, key, TOML value).
    pub overrides: Vec<(String, String, String)>,
}

impl LabConfig {
    pub fn new(dir: &Path) -> LabConfig {
        LabConfig {
            dir: dir.to_path_buf(),
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

    /// The daemon in `ns` with this configuration written, not started
    /// (to prepare its state directory first): then `check()` and
    /// `try_start()` it.
    pub fn daemon(&self, ns: &Netns) -> Result<Shieldd> {
        let d = Shieldd::in_dir(Binaries::built()?, ns, &self.dir, LAB_PINS)?;
        std::fs::write(&d.config, self.render(&d)?)
            .with_context(|| format!("writing {}", d.config.display()))?;
        Ok(d)
    }

    /// Writes the config, runs `shieldd --check` on it, starts the daemon
    /// in `ns` and waits until `shieldctl status` answers.
    pub fn start(&self, ns: &Netns) -> Result<Shieldd> {
        let mut d = self.daemon(ns)?;
        d.check()?;
        d.try_start()?;
        Ok(d)
    }

    /// The configuration text for `d`: config/shield.toml with the lab's
    /// changes (comments and every other value kept).
    pub fn render(&self, d: &Shieldd) -> Result<String> {
        let example =
            std::fs::read_to_string(example_config()).context("reading config/shield.toml")?;
        let mut doc: toml_edit::DocumentMut =
            example.parse().context("parsing config/shield.toml")?;
        let shield = &mut doc["shield"];
        shield["interfaces"] =
            toml_edit::value(toml_edit::Array::from_iter([SBC_PUBLIC_IF, SBC_CARRIER_IF]));
        shield["pin_path"] = toml_edit::value(path_str(&d.pin));
        shield["state_dir"] = toml_edit::value(path_str(&d.state));
        // The lab is thrown away: leave nothing attached.
        shield["detach_on_exit"] = toml_edit::value(true);
        doc["control"]["socket"] = toml_edit::value(path_str(&d.socket));
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
                    t["logpath"] = toml_edit::value(path_str(&d.dir.join("no-jail.log")));
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
