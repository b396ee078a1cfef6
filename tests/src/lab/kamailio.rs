//! Kamailio (Debian's 5.6) as the SBC: `kamailio -DD -E` in the SBC's
//! namespace (entered with nsenter, so bpffs stays visible to everyone
//! else), with one of the configurations in `lab/kamailio/`, logging to a
//! file (the jail follows it). Its drops and auth failures are read from
//! the statistics module over the `ctl` socket with `kamcmd`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cpu::ProcessGroupCpu;
use crate::paths::{lab_file, system_tool};
use crate::process::{in_ns, pinned, run_ok, Proc};
use super::topology::{SBC_CARRIER_IP, SBC_PUBLIC_IP, TRUNK_IP};
use crate::netns::Netns;

/// Which routing script runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// `lab/kamailio/sbc.cfg`: registrar with digest auth, calls to the PBX,
    /// an auth-failure log line per failure; no flood defence of its own
    /// beyond the default configuration's scanner User-Agent check.
    Sbc,
    /// `lab/kamailio/sbc-antiflood.cfg`: the same plus pike and an htable
    /// ban list, as Kamailio's default configuration's WITH_ANTIFLOOD.
    SbcAntiflood,
    /// `lab/kamailio/sbc.cfg` with `WITH_DST_FILTER`: the script refuses
    /// initial INVITEs to the prefixes in [`Options::denied_prefixes`]
    /// with a 403 (SPEC §11's comparison; see the config for why not
    /// secfilter).
    SbcDstFilter,
}

impl Script {
    pub fn path(self) -> PathBuf {
        lab_file(match self {
            Script::Sbc => "kamailio/sbc.cfg",
            Script::SbcAntiflood => "kamailio/sbc-antiflood.cfg",
            Script::SbcDstFilter => "kamailio/sbc.cfg",
        })
    }
}

/// Start options.
#[derive(Clone, Debug)]
pub struct Options {
    pub script: Script,
    /// UDP worker processes per listening socket.
    pub workers: u32,
    /// CPUs Kamailio's processes are pinned to (empty: any).
    pub cpus: Vec<usize>,
    /// [`Script::SbcDstFilter`]'s denied prefixes (digits).
    pub denied_prefixes: Vec<String>,
    /// Switches of sbc.cfg passed as `-A NAME` (`ALLOW_SCANNERS`,
    /// `LOG_FORMAT_V2`).
    pub defines: Vec<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            script: Script::Sbc,
            workers: 4,
            cpus: Vec::new(),
            denied_prefixes: Vec::new(),
            defines: Vec::new(),
        }
    }
}

/// A running Kamailio; stopped (its whole process group) on drop.
pub struct Kamailio {
    proc: Proc,
    pub log: PathBuf,
    ctl: PathBuf,
    pub script: Script,
}

impl Kamailio {
    /// Starts Kamailio in `ns` with files under `dir`; returns once it
    /// answers an OPTIONS keepalive on 127.0.0.1:5060.
    pub fn start(ns: &Netns, dir: &Path, opts: &Options) -> Result<Kamailio> {
        let kamailio = system_tool("kamailio", "the Debian package kamailio")?;
        let run = dir.join("kamailio-run");
        std::fs::create_dir_all(&run)?;
        let log = dir.join("kamailio.log");
        let ctl = run.join("kamailio_ctl");
        let mut cmd = in_ns(ns, kamailio.to_str().context("path")?);
        cmd.args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-f")
            .arg(opts.script.path())
            .args(["-A", &format!("PUBLIC_IP={SBC_PUBLIC_IP}")])
            .args(["-A", &format!("CARRIER_IP={SBC_CARRIER_IP}")])
            .args(["-A", &format!("TRUNK_IP=\"{TRUNK_IP}\"")])
            .args(["-A", &format!("CTL_SOCKET=\"unix:{}\"", ctl.display())])
            .args(["-A", &format!("WORKERS={}", opts.workers)])
            .arg("-Y")
            .arg(&run)
            .arg("-P")
            .arg(run.join("kamailio.pid"))
            .arg("-w")
            .arg(&run);
        if opts.script == Script::SbcDstFilter {
            anyhow::ensure!(
                opts.denied_prefixes.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
                "denied prefixes must be digits: {:?}",
                opts.denied_prefixes
            );
            cmd.args(["-A", "WITH_DST_FILTER"])
                .args(["-A", &format!("DST_REGEX=\"^({})\"", opts.denied_prefixes.join("|"))]);
        }
        for d in &opts.defines {
            anyhow::ensure!(d.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'), "define {d:?}");
            cmd.args(["-A", d]);
        }
        if !opts.cpus.is_empty() {
            pinned(&mut cmd, opts.cpus.clone());
        }
        let mut proc = Proc::spawn("kamailio", cmd, Some(&log))?;
        let t = Instant::now();
        loop {
            if !proc.is_running() {
                bail!(
                    "kamailio exited during start-up; log:\n{}",
                    proc.log_tail(30)
                );
            }
            if ns.run(keepalive_answered) {
                break;
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!(
                    "kamailio does not answer after 20 s; log:\n{}",
                    proc.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Kamailio {
            proc,
            log,
            ctl,
            script: opts.script,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// CPU time of all of Kamailio's processes (main and workers).
    pub fn cpu(&self) -> ProcessGroupCpu {
        ProcessGroupCpu::read(self.pid())
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// The script's counters and Kamailio's own (`kamcmd
    /// stats.get_statistics all`), as name -> value.
    pub fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let kamcmd = system_tool("kamcmd", "the Debian package kamailio")?;
        let mut cmd = std::process::Command::new(kamcmd);
        cmd.arg("-s")
            .arg(format!("unix:{}", self.ctl.display()))
            .args(["stats.get_statistics", "all"]);
        let text = run_ok(cmd, Duration::from_secs(10))?;
        Ok(parse_stats(&text))
    }

    /// One script counter (`script:<name>`), 0 if absent.
    pub fn script_stat(&self, name: &str) -> Result<u64> {
        Ok(self
            .stats()?
            .get(&format!("script:{name}"))
            .copied()
            .unwrap_or(0))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }
}

/// Parses `group:name = value` lines.
fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Sends an OPTIONS keepalive to 127.0.0.1:5060 (from inside the SBC's
/// namespace) and waits briefly for `200`.
fn keepalive_answered() -> bool {
    let Ok(sock) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(300)));
    let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let msg = format!(
        "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-lab-ready\r\n\
         Max-Forwards: 70\r\nFrom: <sip:lab@127.0.0.1>;tag=ready\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: lab-ready@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    if sock
        .send_to(msg.as_bytes(), (Ipv4Addr::LOCALHOST, 5060))
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 2048];
    matches!(sock.recv(&mut buf), Ok(n) if buf[..n].starts_with(b"SIP/2.0 200"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_kamcmd_statistics() {
        let s = super::parse_stats("script:pike_drops = 12\nsl:failures = 3\ncore:bad = x\n");
        assert_eq!(s["script:pike_drops"], 12);
        assert_eq!(s["sl:failures"], 3);
        assert!(!s.contains_key("core:bad"));
    }
}
