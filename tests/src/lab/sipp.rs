//! sipp (Debian's sip-tester, SIPp 3.6) as the lab's SIP clients and the
//! PBX: scenarios in `lab/sipp/`, one process per source address, results
//! from sipp's own statistics file (`-trace_stat`, rewritten every second,
//! so a running sipp can be watched too).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::paths::{lab_file, system_tool};
use crate::process::{in_ns, Proc};
use crate::netns::Netns;

/// What one sipp process does.
#[derive(Clone, Debug)]
pub struct Run {
    /// A name for files and messages ("register-203.0.113.20").
    pub name: String,
    /// Scenario file under `lab/sipp/`.
    pub scenario: &'static str,
    pub local: SocketAddrV4,
    /// `None` for a UAS.
    pub remote: Option<SocketAddrV4>,
    /// Injection file under `lab/sipp/` (users, credentials).
    pub inf: Option<&'static str>,
    /// Request-URI user (`-s`).
    pub service: Option<String>,
    /// New calls per second.
    pub rate: f64,
    /// Calls to place, then exit (0 = until stopped).
    pub calls: u64,
    /// Calls in progress at most.
    pub limit: u32,
    /// A call waiting longer than this for a message fails.
    pub recv_timeout: Duration,
    /// Over plain TCP, one connection (`-t t1`), instead of UDP.
    pub tcp: bool,
}

impl Run {
    /// A subscriber registering with digest auth from `local_ip`.
    pub fn register(local_ip: Ipv4Addr, sbc: SocketAddrV4, rate: f64, calls: u64) -> Run {
        Run {
            name: format!("register-{local_ip}"),
            scenario: "register.xml",
            local: SocketAddrV4::new(local_ip, 5060),
            remote: Some(sbc),
            inf: Some("subscribers.csv"),
            service: None,
            rate,
            calls,
            limit: 20,
            recv_timeout: Duration::from_secs(4),
            tcp: false,
        }
    }

    /// A password guesser: REGISTERs for subscriber 1000 with wrong passwords.
    pub fn brute_force(local_ip: Ipv4Addr, sbc: SocketAddrV4, rate: f64, calls: u64) -> Run {
        Run {
            name: format!("bruteforce-{local_ip}"),
            scenario: "register_bruteforce.xml",
            local: SocketAddrV4::new(local_ip, 5060),
            remote: Some(sbc),
            inf: Some("guesses.csv"),
            service: None,
            rate,
            calls,
            limit: 5,
            recv_timeout: Duration::from_secs(2),
            tcp: false,
        }
    }

    /// Calls from the carrier's trunk to extension 2000 (the PBX).
    pub fn trunk_calls(local_ip: Ipv4Addr, sbc: SocketAddrV4, rate: f64, calls: u64) -> Run {
        Run {
            name: format!("calls-{local_ip}"),
            scenario: "trunk_call.xml",
            local: SocketAddrV4::new(local_ip, 5060),
            remote: Some(sbc),
            inf: None,
            service: Some("2000".into()),
            rate,
            calls,
            limit: 200,
            recv_timeout: Duration::from_secs(4),
            tcp: false,
        }
    }

    /// A registered subscriber's authenticated calls to `number` (SPEC
    /// §11's national calls go on through Kamailio to the PBX).
    pub fn subscriber_calls(local_ip: Ipv4Addr, sbc: SocketAddrV4, number: &str, rate: f64, calls: u64) -> Run {
        Run {
            name: format!("calls-{number}-{local_ip}"),
            scenario: "subscriber_call.xml",
            local: SocketAddrV4::new(local_ip, 5060),
            remote: Some(sbc),
            inf: Some("subscribers.csv"),
            service: Some(number.into()),
            rate,
            calls,
            limit: 50,
            recv_timeout: Duration::from_secs(4),
            tcp: false,
        }
    }

    /// [`Run::subscriber_calls`] of a second each, whose INVITE with
    /// credentials may get the shield's 403 (SPEC §13's limit): those
    /// calls fail, so `failed` counts the 403s (`lab/sipp/limited_call.xml`).
    pub fn limited_calls(local_ip: Ipv4Addr, sbc: SocketAddrV4, number: &str, rate: f64, calls: u64) -> Run {
        Run {
            name: format!("limited-{number}-{local_ip}"),
            scenario: "limited_call.xml",
            ..Run::subscriber_calls(local_ip, sbc, number, rate, calls)
        }
    }

    /// Toll fraud: calls to the premium `number` that succeed when the
    /// shield answers 403 (see `lab/sipp/premium_call.xml`).
    pub fn premium_calls(local_ip: Ipv4Addr, sbc: SocketAddrV4, number: &str, rate: f64, calls: u64) -> Run {
        Run {
            name: format!("premium-{number}-{local_ip}"),
            scenario: "premium_call.xml",
            // Not 5060: the subscriber's own phone may be registering
            // from there meanwhile (the fraudster is elsewhere).
            local: SocketAddrV4::new(local_ip, 5064),
            remote: Some(sbc),
            inf: Some("subscribers.csv"),
            service: Some(number.into()),
            rate,
            calls,
            limit: 200,
            recv_timeout: Duration::from_secs(3),
            tcp: false,
        }
    }

    /// The PBX behind the SBC: answers every call on 127.0.0.1:5070.
    pub fn pbx() -> Run {
        Run {
            name: "pbx".into(),
            scenario: "pbx_uas.xml",
            local: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5070),
            remote: None,
            inf: None,
            service: None,
            rate: 0.0,
            calls: 0,
            limit: 0,
            recv_timeout: Duration::from_secs(60),
            tcp: false,
        }
    }

    /// The same over plain TCP: one connection for all its calls (sipp
    /// `-t t1`); the scenarios' `[transport]` says TCP in their Via.
    pub fn over_tcp(mut self) -> Run {
        self.tcp = true;
        self.name.push_str("-tcp");
        self
    }

    /// Starts it in `ns`; files (statistics, errors, output) go to `dir`.
    pub fn start(&self, ns: &Netns, dir: &Path) -> Result<Sipp> {
        let sipp = system_tool("sipp", "the Debian package sip-tester")?;
        let stat = dir.join(format!("sipp-{}.csv", self.name));
        let _ = std::fs::remove_file(&stat);
        let mut cmd = in_ns(ns, sipp.to_str().context("path")?);
        cmd.current_dir(dir);
        if let Some(r) = self.remote {
            cmd.arg(r.to_string());
        }
        cmd.arg("-sf")
            .arg(lab_file(&format!("sipp/{}", self.scenario)));
        cmd.args([
            "-i",
            &self.local.ip().to_string(),
            "-p",
            &self.local.port().to_string(),
        ]);
        // Media is not exchanged; keep sipp's RTP sockets off the SIP ports.
        // One media port range per (address, SIP port): several sipps may
        // share an address (a phone registering while its account is
        // abused from another port).
        let port_slot = u32::from(self.local.port().wrapping_sub(5060)) % 32;
        cmd.args([
            "-mp",
            &(6000 + u32::from(self.local.ip().octets()[3]) * 128 + port_slot * 4).to_string(),
        ]);
        if let Some(inf) = self.inf {
            cmd.arg("-inf").arg(lab_file(&format!("sipp/{inf}")));
        }
        if let Some(s) = &self.service {
            cmd.args(["-s", s]);
        }
        if self.remote.is_some() {
            cmd.args(["-r", &format!("{}", self.rate.max(0.001)), "-rp", "1000"]);
            cmd.args(["-l", &self.limit.to_string()]);
            // Like a phone, ignore a stray late message (a 180 Ringing that
            // a proxy relays after the 200 OK) instead of aborting the call.
            cmd.args(["-default_behaviors", "all,-abortunexp"]);
            if self.calls > 0 {
                cmd.args(["-m", &self.calls.to_string()]);
            }
        }
        if self.tcp {
            cmd.args(["-t", "t1"]);
        }
        cmd.args(["-recv_timeout", &self.recv_timeout.as_millis().to_string()]);
        cmd.args(["-nostdin", "-trace_err", "-trace_stat", "-fd", "1"])
            .arg("-stf")
            .arg(&stat);
        let log = dir.join(format!("sipp-{}.log", self.name));
        let proc = Proc::spawn(&format!("sipp {}", self.name), cmd, Some(&log))?;
        Ok(Sipp {
            proc,
            stat,
            run: self.clone(),
        })
    }
}

/// Calls (registrations, guesses) as sipp counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    pub created: u64,
    pub successful: u64,
    pub failed: u64,
    /// Requests sipp had to send again (lost or late answers).
    pub retransmissions: u64,
    /// Mean duration of a successful call (for a registration: first
    /// REGISTER to 200 OK), ms.
    pub mean_call_ms: f64,
}

impl Tally {
    pub fn finished(&self) -> u64 {
        self.successful + self.failed
    }

    /// Successful / finished, or `None` before anything finished.
    pub fn success_rate(&self) -> Option<f64> {
        (self.finished() > 0).then(|| self.successful as f64 / self.finished() as f64)
    }

    pub fn add(&self, o: &Tally) -> Tally {
        let n = self.successful + o.successful;
        Tally {
            created: self.created + o.created,
            successful: n,
            failed: self.failed + o.failed,
            retransmissions: self.retransmissions + o.retransmissions,
            mean_call_ms: if n == 0 {
                0.0
            } else {
                (self.mean_call_ms * self.successful as f64 + o.mean_call_ms * o.successful as f64)
                    / n as f64
            },
        }
    }
}

/// A running sipp.
pub struct Sipp {
    proc: Proc,
    stat: PathBuf,
    pub run: Run,
}

impl Sipp {
    /// The latest counts sipp wrote (zero before its first write).
    pub fn tally(&self) -> Tally {
        std::fs::read_to_string(&self.stat)
            .map(|t| parse_stat(&t))
            .unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Waits for sipp to finish its calls (it writes its final statistics
    /// on exit); stops it after `within`. The final counts.
    pub fn finish(mut self, within: Duration) -> Result<Tally> {
        self.finish_inner(within)
    }

    fn finish_inner(&mut self, within: Duration) -> Result<Tally> {
        if self.proc.wait_timeout(within).is_none() {
            // SIGUSR1 would dump; a UAC that overruns is stopped and the
            // calls it still had open count as failed below.
            self.proc.stop();
        }
        let mut t = self.tally();
        if t.created > t.finished() {
            t.failed += t.created - t.finished();
        }
        Ok(t)
    }

    /// Asks sipp to place no new calls and to exit once the calls in
    /// progress are done (SIGUSR1); stops it after `within`. The final
    /// counts.
    pub fn wind_down(mut self, within: Duration) -> Result<Tally> {
        self.request_wind_down();
        self.finish_inner(within)
    }

    /// Sends the SIGUSR1 of [`Sipp::wind_down`] without waiting.
    pub fn request_wind_down(&self) {
        self.proc.signal(libc::SIGUSR1);
    }

    /// Stops it now (a UAS, or a client no longer needed).
    pub fn stop(mut self) -> Tally {
        self.proc.stop();
        self.tally()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }
}

/// The last line of a `-trace_stat` file: cumulative created, successful
/// and failed calls.
fn parse_stat(text: &str) -> Tally {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let (Some(head), Some(last)) = (lines.first(), lines.get(1..).and_then(|l| l.last())) else {
        return Tally::default();
    };
    let cols: Vec<&str> = head.split(';').collect();
    let vals: Vec<&str> = last.split(';').collect();
    let field = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .and_then(|i| vals.get(i))
            .map(|v| v.trim())
    };
    let get = |name: &str| -> u64 { field(name).and_then(|v| v.parse().ok()).unwrap_or(0) };
    Tally {
        created: get("TotalCallCreated"),
        successful: get("SuccessfulCall(C)"),
        failed: get("FailedCall(C)"),
        retransmissions: get("Retransmissions(C)"),
        mean_call_ms: field("CallLength(C)")
            .and_then(parse_duration_ms)
            .unwrap_or(0.0),
    }
}

/// sipp's `hh:mm:ss:uuuuuu`, in ms.
fn parse_duration_ms(s: &str) -> Option<f64> {
    let p: Vec<f64> = s
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    match p[..] {
        [h, m, sec, us] => Some(((h * 60.0 + m) * 60.0 + sec) * 1e3 + us / 1e3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_cumulative_counts_from_the_last_line() {
        let text = "StartTime;TotalCallCreated;CurrentCall;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);\
                    Retransmissions(C);CallLength(C)\n\
                    x;3;1;1;1;0;0;0;00:00:00:001000\n\
                    y;9;0;2;7;1;2;4;00:00:01:250500\n";
        let t = super::parse_stat(text);
        assert_eq!(
            (t.created, t.successful, t.failed, t.retransmissions),
            (9, 7, 2, 4)
        );
        assert!((t.mean_call_ms - 1250.5).abs() < 1e-9, "{}", t.mean_call_ms);
        assert_eq!(
            super::parse_stat("only a header\n"),
            super::Tally::default()
        );
    }
}
