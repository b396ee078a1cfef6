//! Real fail2ban (Debian's 1.0.2) for the log-line-to-drop comparison:
//! `fail2ban-server` in the foreground inside the SBC's namespace, with a
//! private configuration directory, socket, pid file and log (nothing of the
//! system's fail2ban is touched), SIP Shield's Kamailio filter file
//! (fail2ban reads it as it is) and Debian's nftables action.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::paths::{lab_file, repo, system_tool};
use crate::process::{in_ns, Proc};
use crate::netns::Netns;

/// Debian's action file (the one fail2ban's packaged `nftables-*` actions
/// are built on).
const NFT_ACTION: &str = "/etc/fail2ban/action.d/nftables.conf";

/// A running fail2ban-server; stopped on drop (its table goes with the
/// namespace).
pub struct Fail2ban {
    proc: Proc,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Fail2ban {
    /// Starts it watching `logpath`, banning after `maxretry` failures;
    /// returns once its jail has started. Files go to `dir`.
    pub fn start(ns: &Netns, dir: &Path, logpath: &Path, maxretry: u32) -> Result<Fail2ban> {
        Fail2ban::start_with(ns, dir, logpath, maxretry, None)
    }

    /// Like [`Fail2ban::start`], for a log whose lines carry no date
    /// (Kamailio's own `-E` log): the filter's `datepattern` becomes
    /// `{NONE}`, so fail2ban dates each line when it reads it (without a
    /// date it would not count the line).
    pub fn start_undated(ns: &Netns, dir: &Path, logpath: &Path, maxretry: u32) -> Result<Fail2ban> {
        Fail2ban::start_with(ns, dir, logpath, maxretry, Some("{NONE}"))
    }

    fn start_with(ns: &Netns, dir: &Path, logpath: &Path, maxretry: u32, datepattern: Option<&str>) -> Result<Fail2ban> {
        let server = system_tool("fail2ban-server", "the Debian package fail2ban")?;
        let conf = dir.join("fail2ban-conf");
        std::fs::create_dir_all(conf.join("action.d"))?;
        std::fs::create_dir_all(conf.join("filter.d"))?;
        let rundir = dir.to_str().context("path")?;
        let main = std::fs::read_to_string(lab_file("fail2ban/fail2ban.conf"))?
            .replace("@RUNDIR@", rundir);
        std::fs::write(conf.join("fail2ban.conf"), main)?;
        let jail = std::fs::read_to_string(lab_file("fail2ban/jail.conf"))?
            .replace("@LOGPATH@", logpath.to_str().context("path")?)
            .replace("@MAXRETRY@", &maxretry.to_string());
        std::fs::write(conf.join("jail.conf"), jail)?;
        std::fs::copy(NFT_ACTION, conf.join("action.d/nftables.conf"))
            .with_context(|| format!("{NFT_ACTION} (the Debian package fail2ban)"))?;
        let filter = std::fs::read_to_string(repo().join("config/filters/kamailio.conf"))?;
        let filter = match datepattern {
            Some(p) => filter
                .lines()
                .map(|l| if l.starts_with("datepattern") { format!("datepattern = {p}") } else { l.to_string() })
                .map(|l| l + "\n")
                .collect::<String>(),
            None => filter,
        };
        std::fs::write(conf.join("filter.d/kamailio.conf"), filter)?;
        let log = dir.join("fail2ban.log");
        let mut cmd = in_ns(ns, server.to_str().context("path")?);
        cmd.args(["-f", "-x", "-c"]).arg(&conf);
        let mut proc = Proc::spawn("fail2ban-server", cmd, Some(&dir.join("fail2ban.out")))?;
        let t = Instant::now();
        loop {
            if !proc.is_running() {
                bail!(
                    "fail2ban-server exited during start-up:\n{}",
                    proc.log_tail(20)
                );
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Jail 'kamailio-auth' started") {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("fail2ban's jail did not start within 30 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Fail2ban {
            proc,
            dir: dir.to_path_buf(),
            log,
        })
    }

    /// The backend fail2ban chose for the log ("pyinotify", "polling", ...).
    pub fn backend(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .find_map(|l| {
                l.split("Initiated '")
                    .nth(1)
                    .and_then(|r| r.split('\'').next())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "unknown".into())
    }

    /// fail2ban-server's process (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.proc.stop_within(Duration::from_secs(10));
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        self.stop();
    }
}
