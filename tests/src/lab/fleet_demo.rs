//! `cargo xtask demo -- --fleet`: three SBCs sharing bans through a real
//! CrowdSec LAPI, in about 35 s. The scenario of
//! `shield-user/tests/fleet_crowdsec.rs`, narrated:
//!
//! 1. a [`Fleet`] of three SBC namespaces (each with its attacker on
//!    `pub0`) and a `lapi` namespace running a private CrowdSec 1.4.6 LAPI;
//! 2. a real `shieldd` on each SBC, a bouncer (`[crowdsec]`, pulling every
//!    2 s) and a watcher (`[crowdsec.push]`), with a Kamailio-format jail
//!    and the trunk 203.0.113.10 allowlisted;
//! 3. stages, each timed: a jail ban on SBC 1 pushed and enforced on SBC 2
//!    and 3; operator ranges (IPv4 and IPv6) from `cscli`; a decision for
//!    the allowlisted trunk, which keeps passing; LAPI down for 15 s (bans
//!    stay, a new ban is queued, the fleet converges when LAPI returns);
//!    `shieldctl unban` on SBC 1 lifting the ban fleet-wide;
//! 4. a table of the propagation times and the checks; the run fails if a
//!    check does.
//!
//! "Enforced" is shown with packets: SIP OPTIONS from the address, sent
//! from the SBC's attacker namespace, counted `drop`/`ban` by the XDP
//! program. SBCs are numbered from 1 here (the fleet's indices from 0).
//! Files (configs, jail logs, shieldd logs) stay in `lab-out/fleet-demo/`.
//! Everything else is removed by drop guards, also on Ctrl-C
//! ([`signals`]) and on failure.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use shield::control::protocol::{CrowdsecStatus, StatsReply};

use crate::paths::{path_str, repo};
use super::progress::Progress;
use super::shieldd::LAB_PINS;
use super::signals;
use crate::crowdsec::Lapi;
use crate::daemon::{Binaries, PinnedBans, Shieldd};
use crate::fleet::{auth_failure, member_config, Fleet, TRUNK};

const SBCS: usize = 3;
/// `[crowdsec] update_frequency` of the fleet.
const EVERY: Duration = Duration::from_secs(2);
/// The allowlisted trunk (as in config/shield.toml).
/// Packets per probe.
const PROBES: u32 = 20;
/// How long LAPI is down in stage (d).
const OUTAGE: Duration = Duration::from_secs(15);
const BRUTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
/// The brute-forcer that strikes while LAPI is down.
const LATE_BRUTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 70);
const V4_RANGE: &str = "203.0.113.128/25";
const V4_PROBE: &str = "203.0.113.200";
const V6_RANGE: &str = "2001:db8:bad::/48";
const V6_PROBE: &str = "2001:db8:bad::5";

/// Runs the fleet demo (after [`signals::install`]); prints the report and
/// the outcome, removes everything. `hold` keeps the fleet up after the
/// report until Ctrl-C.
pub fn main(hold: bool) -> ExitCode {
    let t = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(hold)))
        .unwrap_or_else(|_| Err(anyhow!("the demo panicked (see above)")));
    let secs = t.elapsed().as_secs_f64();
    let result = result.map(|ok| {
        if ok {
            println!("\nFleet removed (shieldd x{SBCS} and LAPI stopped, namespaces deleted, pins removed). {secs:.0} s in all.");
            ExitCode::SUCCESS
        } else {
            println!("\nFleet removed. The fleet did NOT do everything it should (see the checks above).");
            ExitCode::FAILURE
        }
    });
    signals::exit_code(result, "fleet demo", "fleet", "lab-out/fleet-demo/")
}

/// One SBC: its daemon and its jail's log.
struct Member {
    d: Shieldd,
    log: PathBuf,
}

impl Member {
    /// `n` Kamailio auth-failure lines from `ip` in the jail's log.
    fn fail(&self, ip: IpAddr, n: usize) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        for _ in 0..n {
            f.write_all(auth_failure(ip).as_bytes())
                .context("writing the jail log")?;
        }
        f.flush().context("writing the jail log")
    }

    fn crowdsec(&self) -> Result<CrowdsecStatus> {
        self.d
            .status()?
            .crowdsec
            .context("shieldctl status has no crowdsec part")
    }
}

/// SBC `i`'s daemon (0-based; named from 1, as in the narrative),
/// registered with LAPI as bouncer `shieldd-sbc<n>` and machine `sbc<n>`,
/// files in `out/sbc<n>/`; started.
fn start_member(fleet: &Fleet, lapi: &Lapi, i: usize, out: &Path) -> Result<Member> {
    let n = i + 1;
    let key = lapi
        .bouncer_key(&format!("shieldd-sbc{n}"))
        .context("cscli bouncers add")?;
    let password = format!("sbc{n}-password-0123456789");
    lapi.add_machine(&format!("sbc{n}"), &password)
        .context("cscli machines add")?;
    let dir = out.join(format!("sbc{n}"));
    let mut d = Shieldd::in_dir(Binaries::built()?, fleet.sbc(i), &dir, LAB_PINS)?;
    let files = [
        ("crowdsec.key", format!("{key}\n")),
        ("crowdsec.pass", format!("{password}\n")),
        ("auth.log", String::new()),
        ("shield.toml", member_config(&d, &fleet.lapi_url(i), EVERY, Some(&format!("sbc{n}")))),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    d.check()?;
    d.try_start()
        .with_context(|| format!("starting shieldd on SBC {n}"))?;
    let log = dir.join("auth.log");
    Ok(Member { d, log })
}

/// What one probe of [`PROBES`] packets saw.
#[derive(Clone, Copy, Debug, Default)]
struct Probe {
    /// Counted `drop`/`ban`.
    banned: u64,
    /// Counted `pass` (any reason).
    passed: u64,
    /// Counted `pass`/`allowlisted`.
    allowlisted: u64,
}

impl Probe {
    fn dropped(&self) -> bool {
        self.banned >= u64::from(PROBES)
    }

    fn all_passed(&self) -> bool {
        self.banned == 0 && self.passed >= u64::from(PROBES)
    }
}

/// Propagation times of one event: per SBC, from the event to enforcement
/// (`None`: not seen in time, or not measured).
type Times = Vec<Option<Duration>>;

/// The fleet, its daemons, and what the report will show.
struct Demo<'a> {
    fleet: &'a Fleet,
    ms: Vec<Member>,
    p: Progress,
    rows: Vec<(String, Times)>,
    checks: Vec<(String, bool)>,
    /// The live status line's last refresh.
    shown: Instant,
}

/// Runs the demo; `Ok(true)` when every check passed.
fn run(hold: bool) -> Result<bool> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: the demo creates network namespaces and loads XDP programs");
    }
    if let Some(line) = super::sweep::stale().describe() {
        println!("{line}");
    }
    let out = repo().join("lab-out/fleet-demo");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    println!("SIP Shield fleet demo: three SBCs, each a real shieldd, sharing bans through a real CrowdSec LAPI.\n");
    let mut p = Progress::new(9);

    p.step("Fleet: a `lapi` namespace and 3 SBC namespaces, each with an attacker on its public interface pub0");
    let fleet = Fleet::new(SBCS);
    p.done("SBC i reaches LAPI at http://192.0.2.(4i+1):8080/ over its own link; attackers send from any source address");
    signals::check()?;

    p.step("CrowdSec LAPI (Debian's crowdsec 1.4.6, API only, private database) in `lapi`");
    let mut lapi = fleet.start_lapi().context("starting the LAPI")?;
    p.done(&format!(
        "answering on 0.0.0.0:8080 (crowdsec {})",
        crowdsec_version()
    ));
    signals::check()?;

    let mut demo = Demo::start(&fleet, &lapi, &out, p)?;
    demo.jail_ban()?;
    demo.ranges(&lapi)?;
    demo.trunk(&lapi)?;
    demo.outage(&mut lapi)?;
    demo.unban()?;
    demo.show_status()?;
    let ok = demo.report();
    if hold {
        demo.hold(&lapi);
    }
    Ok(ok)
}

impl<'a> Demo<'a> {
    /// Starts the three daemons and waits for their first full list.
    fn start(fleet: &'a Fleet, lapi: &Lapi, out: &Path, mut p: Progress) -> Result<Demo<'a>> {
        p.step(&format!(
            "shieldd on each SBC: XDP on pub0, [crowdsec] pulling every {} s, [crowdsec.push] as machines sbc1..sbc3, \
             jail sip-auth (3 failures), trunk {TRUNK} allowlisted",
            EVERY.as_secs()
        ));
        let mut ms = Vec::new();
        for i in 0..SBCS {
            ms.push(start_member(fleet, lapi, i, out)?);
            signals::check()?;
        }
        let mut demo = Demo {
            fleet,
            ms,
            p,
            rows: Vec::new(),
            checks: Vec::new(),
            shown: Instant::now() - Duration::from_secs(1),
        };
        let synced = demo.wait_all(Duration::from_secs(15), |m, _| Ok(m.crowdsec()?.synced))?;
        let ready: Vec<String> = demo
            .ms
            .iter()
            .map(|m| format!("{:.1} s", m.d.ready_after.as_secs_f64()))
            .collect();
        demo.p.done(&format!(
            "ready in {}; first full decision list from LAPI: {}; configs in lab-out/fleet-demo/sbc{{1,2,3}}/",
            ready.join(", "),
            times_line(&synced)
        ));
        demo.check(
            "every shieldd synced with LAPI at start",
            synced.iter().all(Option::is_some),
        );
        Ok(demo)
    }

    fn check(&mut self, what: &str, ok: bool) {
        self.checks.push((what.to_string(), ok));
    }

    /// Sends [`PROBES`] SIP OPTIONS from `src` to SBC `i` (0-based).
    fn probe(&self, i: usize, src: IpAddr) -> Result<Probe> {
        let d = &self.ms[i].d;
        let before = d.stats()?;
        self.fleet.send_sip_from(i, src, PROBES)?;
        // Counted when XDP ran (synchronous veth transmit); a short wait
        // covers the rest.
        let t = Instant::now();
        loop {
            let after = d.stats()?;
            let delta = |v: &str, r: Option<&str>| {
                let n = |s: &StatsReply| {
                    s.totals
                        .iter()
                        .filter(|c| c.verdict.as_str() == v && r.is_none_or(|r| c.reason.as_str() == r))
                        .map(|c| c.packets)
                        .sum::<u64>()
                };
                n(&after).saturating_sub(n(&before))
            };
            let probe = Probe {
                banned: delta("drop", Some("ban")),
                passed: delta("pass", None),
                allowlisted: delta("pass", Some("allowlisted")),
            };
            if probe.banned + probe.passed >= u64::from(PROBES)
                || t.elapsed() > Duration::from_millis(500)
            {
                return Ok(probe);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Probes `src` on every SBC; whether each dropped (or passed) all.
    fn probe_all(&self, src: IpAddr, dropped: bool) -> Result<(Vec<Probe>, bool)> {
        let probes = (0..SBCS)
            .map(|i| self.probe(i, src))
            .collect::<Result<Vec<_>>>()?;
        let ok = probes
            .iter()
            .all(|p| if dropped { p.dropped() } else { p.all_passed() });
        Ok((probes, ok))
    }

    /// Refreshes the live status line (at most every 500 ms): each SBC's
    /// view of LAPI, its decisions and its bans.
    fn status_line(&mut self, lead: &str) {
        if self.shown.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.shown = Instant::now();
        let parts: Vec<String> = self
            .ms
            .iter()
            .enumerate()
            .map(|(i, m)| match m.d.status() {
                Ok(s) => {
                    let c = s.crowdsec.unwrap_or_default();
                    let queued = c.push.map_or(0, |p| p.queued);
                    format!(
                        "SBC {}: LAPI {}, {} decisions, {} bans{}",
                        i + 1,
                        if c.up { "up" } else { "DOWN" },
                        c.decisions,
                        s.bans_active,
                        if queued > 0 {
                            format!(", {queued} queued")
                        } else {
                            String::new()
                        }
                    )
                }
                Err(e) => format!("SBC {}: {e}", i + 1),
            })
            .collect();
        let line = format!("{lead}{}", parts.join(" | "));
        self.p.status(&line);
    }

    /// Polls `f(member, index)` on every SBC (every 20 ms, with the status
    /// line) until it holds on all of them or `within` passes; when it
    /// first held on each.
    fn wait_all(
        &mut self,
        within: Duration,
        mut f: impl FnMut(&Member, usize) -> Result<bool>,
    ) -> Result<Times> {
        self.wait_some(&[0, 1, 2], Instant::now(), within, |d, i| f(&d.ms[i], i))
    }

    /// [`Demo::wait_all`] for the SBCs `which`, timed from `t0`, with
    /// access to the whole demo (for probes).
    fn wait_some(
        &mut self,
        which: &[usize],
        t0: Instant,
        within: Duration,
        mut f: impl FnMut(&Demo, usize) -> Result<bool>,
    ) -> Result<Times> {
        let mut times: Times = vec![None; SBCS];
        loop {
            signals::check()?;
            for &i in which {
                if times[i].is_none() && f(self, i)? {
                    times[i] = Some(t0.elapsed());
                }
            }
            if which.iter().all(|&i| times[i].is_some()) || t0.elapsed() > within {
                return Ok(times);
            }
            self.status_line("");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `addr` is in (or out of) the kernel ban map of the SBCs
    /// `which`; the times from `t0`.
    fn wait_map(
        &mut self,
        maps: &[PinnedBans],
        addr: Ipv4Addr,
        present: bool,
        which: &[usize],
        t0: Instant,
    ) -> Result<Times> {
        self.wait_some(which, t0, EVERY * 4, |_, i| {
            Ok(maps[i].contains(addr) == present)
        })
    }

    fn ban_maps(&self) -> Result<Vec<PinnedBans>> {
        self.ms.iter().map(|m| m.d.ban_map()).collect()
    }

    /// (a) A jail ban on SBC 1, pushed, enforced on SBC 2 and 3.
    fn jail_ban(&mut self) -> Result<()> {
        self.p.step(&format!(
            "A password guesser at SBC 1: Kamailio logs 3 auth failures from {BRUTE} (the jail's maxretry)"
        ));
        let maps = self.ban_maps()?;
        let t0 = Instant::now();
        self.ms[0].fail(BRUTE.into(), 3)?;
        let local = self.wait_map(&maps, BRUTE, true, &[0], t0)?;
        let row = self.ms[0].d.ban_of(&format!("{BRUTE}/32"));
        let reason = |r: &serde_json::Value| {
            let text = r["reason"].as_str().unwrap_or_default();
            text.split(':').next().unwrap_or_default().to_string()
        };
        self.p.note(&format!(
            "SBC 1: banned by jail sip-auth {} after the 3rd line ({}); pushed to LAPI as an alert",
            fmt_d(local[0]),
            row.map_or("not listed".into(), |r| format!(
                "origin {}, {}",
                r["origin"],
                reason(&r)
            ))
        ));
        let t_ban = t0 + local[0].unwrap_or_default();
        let remote = self.wait_map(&maps, BRUTE, true, &[1, 2], t_ban)?;
        for i in [1, 2] {
            self.p.note(&format!(
                "SBC {}: enforcing it {} after SBC 1 banned it (pulls every {} s)",
                i + 1,
                fmt_d(remote[i]),
                EVERY.as_secs()
            ));
        }
        if let Some(r) = self.ms[1].d.ban_of(&format!("{BRUTE}/32")) {
            self.p.note(&format!(
                "SBC 2 lists it as origin {}, reason {} (a decision, never pushed back)",
                r["origin"], r["reason"]
            ));
        }
        let (probes, dropped) = self.probe_all(BRUTE.into(), true)?;
        // The report counts from the 3rd failure line.
        let from_line =
            |t: Option<Duration>| local[0].and(t).map(|t| t + local[0].unwrap_or_default());
        let times = vec![local[0], from_line(remote[1]), from_line(remote[2])];
        self.p.done(&format!(
            "{PROBES} SIP OPTIONS from {BRUTE} to each SBC: {}",
            probes_line(&probes)
        ));
        self.rows.push((
            format!("jail ban {BRUTE} (from SBC 1's 3rd failure line)"),
            times,
        ));
        self.check(
            "SBC 1's jail banned the password guesser after 3 failure lines",
            local[0].is_some(),
        );
        self.check(
            &format!(
                "the jail ban reached SBC 2 and 3 within {} s (3 pulls)",
                (EVERY * 3).as_secs()
            ),
            remote[1..]
                .iter()
                .all(|t| t.is_some_and(|t| t <= EVERY * 3)),
        );
        self.check(
            "all three SBCs drop the password guesser's packets",
            dropped,
        );
        Ok(())
    }

    /// (b) IPv4 and IPv6 ranges from `cscli decisions add --range`.
    fn ranges(&mut self, lapi: &Lapi) -> Result<()> {
        self.p.step(&format!(
            "The operator bans two ranges on LAPI: cscli decisions add --range {V4_RANGE}, then --range {V6_RANGE}"
        ));
        let mut ok = true;
        for (range, probe) in [(V4_RANGE, V4_PROBE), (V6_RANGE, V6_PROBE)] {
            let net: IpNet = range.parse().context("range literal")?;
            let src: IpAddr = probe.parse().context("probe literal")?;
            let t0 = Instant::now();
            lapi.add_decision_range(net, "1h", "fleet demo: ops range")?;
            let times = self.wait_some(&[0, 1, 2], t0, EVERY * 4, |d, i| {
                Ok(d.probe(i, src)?.dropped())
            })?;
            self.p.note(&format!(
                "{range}: packets from {probe} dropped as banned on SBC 1, 2, 3 after {} (from cscli)",
                times_line(&times)
            ));
            ok &= times.iter().all(Option::is_some);
            self.rows
                .push((format!("cscli range {range} (probe {probe})"), times));
        }
        let c = self.ms[2].crowdsec()?;
        self.p.done(&format!(
            "SBC 3 enforces {} decisions: {}",
            c.decisions,
            by_origin(&c)
        ));
        self.check(
            "the IPv4 and IPv6 ranges from cscli are enforced on all three SBCs",
            ok,
        );
        Ok(())
    }

    /// (c) A decision for the allowlisted trunk: skipped, the trunk passes.
    fn trunk(&mut self, lapi: &Lapi) -> Result<()> {
        self.p.step(&format!(
            "A mistaken decision on LAPI for the allowlisted trunk: cscli decisions add --ip {TRUNK}"
        ));
        lapi.add_decision_ip(TRUNK.into(), "1h", "fleet demo: a mistake")?;
        let skipped = self.wait_all(EVERY * 4, |m, _| {
            Ok(m.crowdsec()?.skipped.get("protected").copied().unwrap_or(0) >= 1)
        })?;
        self.p.note(&format!(
            "not enforced, counted as skipped (protected) in `shieldctl status` on SBC 1, 2, 3 after {}",
            times_line(&skipped)
        ));
        let (probes, passed) = self.probe_all(TRUNK.into(), false)?;
        let allowlisted: Vec<String> = probes
            .iter()
            .map(|p| format!("{}/{PROBES}", p.allowlisted))
            .collect();
        self.p.done(&format!(
            "{PROBES} SIP OPTIONS from the trunk to each SBC: passed as allowlisted {}",
            allowlisted.join(", ")
        ));
        self.check(
            "a LAPI decision for the allowlisted trunk was skipped (protected) and the trunk still passes everywhere",
            passed && skipped.iter().all(Option::is_some),
        );
        Ok(())
    }

    /// (d) LAPI down for [`OUTAGE`]: bans stay, a new ban is queued; back
    /// up, the fleet converges.
    fn outage(&mut self, lapi: &mut Lapi) -> Result<()> {
        self.p.step(&format!(
            "LAPI down for {} s: the fleet keeps enforcing; meanwhile {LATE_BRUTE} guesses passwords at SBC 1",
            OUTAGE.as_secs()
        ));
        lapi.stop();
        let t_down = Instant::now();
        let down = self.wait_some(&[0, 1, 2], t_down, Duration::from_secs(10), |d, i| {
            Ok(d.ms[i].d.try_ctl_ok(&["status"])?.contains("DOWN"))
        })?;
        let line = self.ms[1]
            .d
            .try_ctl_ok(&["status"])?
            .lines()
            .find(|l| l.starts_with("crowdsec"))
            .unwrap_or_default()
            .to_string();
        self.p.note(&format!(
            "`shieldctl status` shows LAPI DOWN on SBC 1, 2, 3 after {}; SBC 2: {line}",
            times_line(&down)
        ));
        let mut kept = true;
        for src in [BRUTE.to_string(), V4_PROBE.into(), V6_PROBE.into()] {
            let (probes, dropped) = self.probe_all(src.parse()?, true)?;
            self.p.note(&format!(
                "still dropped from {src}: {}",
                probes_line(&probes)
            ));
            kept &= dropped;
        }
        let queued = self.late_ban()?;
        self.check(
            "with LAPI down, every ban stayed enforced and `shieldctl status` showed LAPI DOWN",
            kept && down.iter().all(Option::is_some),
        );
        while t_down.elapsed() < OUTAGE {
            signals::sleep(Duration::from_millis(50))?;
            let left = OUTAGE.saturating_sub(t_down.elapsed()).as_secs();
            self.status_line(&format!("LAPI back in {left} s | "));
        }
        self.recovery(lapi, queued)
    }

    /// During the outage: a jail ban on SBC 1, queued for LAPI. Whether
    /// it was queued and stayed local.
    fn late_ban(&mut self) -> Result<bool> {
        let maps = self.ban_maps()?;
        let t0 = Instant::now();
        self.ms[0].fail(LATE_BRUTE.into(), 3)?;
        let local = self.wait_map(&maps, LATE_BRUTE, true, &[0], t0)?;
        let queued = self.wait_some(&[0], t0, Duration::from_secs(5), |d, i| {
            Ok(d.ms[i].crowdsec()?.push.is_some_and(|p| p.queued >= 1))
        })?;
        let mut local_only = true;
        for i in 1..SBCS {
            local_only &= self.probe(i, LATE_BRUTE.into())?.all_passed();
        }
        self.p.note(&format!(
            "SBC 1 banned {LATE_BRUTE} {} after its 3rd failure line; the push is {} (`shieldctl status`: push ... 1 queued); \
             SBC 2 and 3 do not know it yet",
            fmt_d(local[0]),
            if queued[0].is_some() { "queued" } else { "NOT queued" }
        ));
        Ok(local[0].is_some() && queued[0].is_some() && local_only)
    }

    /// LAPI restarted: the queued ban reaches every SBC, all see LAPI up.
    fn recovery(&mut self, lapi: &mut Lapi, queued: bool) -> Result<()> {
        let t_restart = Instant::now();
        lapi.restart().context("restarting the LAPI")?;
        let t_back = Instant::now();
        self.p.note(&format!(
            "LAPI restarted ({:.1} s to answer), same database",
            t_restart.elapsed().as_secs_f64()
        ));
        let maps = self.ban_maps()?;
        let within = Duration::from_secs(40);
        let reached = self.wait_some(&[1, 2], t_back, within, |_, i| {
            Ok(maps[i].contains(LATE_BRUTE))
        })?;
        let up = self.wait_some(&[0, 1, 2], t_back, within, |d, i| {
            let c = d.ms[i].crowdsec()?;
            Ok(c.up && c.push.is_none_or(|p| p.queued == 0))
        })?;
        let converged = up
            .iter()
            .chain(&reached[1..])
            .copied()
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max());
        let (probes, dropped) = self.probe_all(LATE_BRUTE.into(), true)?;
        self.p.note(&format!(
            "the queued ban {LATE_BRUTE} pushed and enforced on SBC 2, 3 after {}; LAPI up again on SBC 1, 2, 3 after {}",
            times_line(&reached[1..]),
            times_line(&up)
        ));
        self.p.done(&format!(
            "fleet converged {} after LAPI came back (push retries back off to 15 s); packets from {LATE_BRUTE}: {}",
            fmt_d(converged),
            probes_line(&probes)
        ));
        let mut row = reached;
        row[0] = None;
        self.rows.push((
            format!("ban queued during the outage {LATE_BRUTE} (from LAPI back)"),
            row,
        ));
        self.check(
            "the ban made on SBC 1 while LAPI was down was queued, then enforced fleet-wide once LAPI returned",
            queued && converged.is_some() && dropped,
        );
        Ok(())
    }

    /// (e) `shieldctl unban` on SBC 1 deletes its pushed decision: lifted
    /// everywhere.
    fn unban(&mut self) -> Result<()> {
        self.p.step(&format!(
            "shieldctl unban {BRUTE} on SBC 1 (the jail ban it pushed in stage 4)"
        ));
        let maps = self.ban_maps()?;
        let t0 = Instant::now();
        let out = self.ms[0].d.try_ctl_ok(&["unban", &BRUTE.to_string()])?;
        self.p.note(&format!("shieldctl: {}", out.trim()));
        let gone = self.wait_some(&[0, 1, 2], t0, EVERY * 4, |_, i| {
            Ok(!maps[i].contains(BRUTE))
        })?;
        let (probes, passed) = self.probe_all(BRUTE.into(), false)?;
        let deleted = self.ms[0].crowdsec()?.push.map_or(0, |p| p.deleted);
        self.p.done(&format!(
            "lifted on SBC 1, 2, 3 after {} (SBC 1 deleted {deleted} decision on LAPI); packets from {BRUTE} now pass: {}",
            times_line(&gone),
            probes
                .iter()
                .map(|p| format!("{}/{PROBES}", p.passed))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.rows.push((
            format!("unban {BRUTE} on SBC 1 (from shieldctl)"),
            gone.clone(),
        ));
        self.check(
            "`shieldctl unban` on SBC 1 lifted its pushed ban on all three SBCs",
            passed && gone.iter().all(Option::is_some),
        );
        let mut running = true;
        for m in &mut self.ms {
            running &= m.d.is_running();
        }
        self.check("every shieldd kept running throughout", running);
        Ok(())
    }

    /// The crowdsec part of `shieldctl status` on SBC 2.
    fn show_status(&mut self) -> Result<()> {
        self.p
            .step("`shieldctl status` on SBC 2, its crowdsec part");
        let text = self.ms[1].d.try_ctl_ok(&["status"])?;
        let part = text
            .find("\ncrowdsec")
            .map_or(text.as_str(), |at| &text[at + 1..]);
        for line in part.lines() {
            self.p.note(&format!("  {line}"));
        }
        self.p
            .done("(the same as `shieldctl --json status` | jq .crowdsec)");
        Ok(())
    }

    /// Prints the timings and the checks; whether every check passed.
    fn report(&mut self) -> bool {
        println!(
            "\n=== Fleet report ({:.0} s) ===",
            self.p.elapsed().as_secs_f64()
        );
        println!("Propagation, from the event to enforcement in each SBC's kernel (probed with packets or the ban map):");
        println!(
            "  {:<62} {:>8} {:>8} {:>8}",
            "event", "SBC 1", "SBC 2", "SBC 3"
        );
        for (what, times) in &self.rows {
            let t: Vec<String> = times.iter().map(|t| fmt_d(*t)).collect();
            println!("  {what:<62} {:>8} {:>8} {:>8}", t[0], t[1], t[2]);
        }
        println!(
            "  (pull interval update_frequency = {} s; LAPI was down {} s)",
            EVERY.as_secs(),
            OUTAGE.as_secs()
        );
        println!("Files: lab-out/fleet-demo/sbc{{1,2,3}}/ (shield.toml, shieldd.log, auth.log)");
        println!("Checks:");
        for (what, ok) in &self.checks {
            println!("  [{}] {what}", if *ok { "ok" } else { "FAILED" });
        }
        self.checks.iter().all(|(_, ok)| *ok)
    }

    /// Keeps the fleet up until Ctrl-C (`--hold`).
    fn hold(&self, lapi: &Lapi) {
        let mut hint = String::from("\nThe fleet stays up until Ctrl-C. Try:\n");
        for (i, m) in self.ms.iter().enumerate() {
            let _ = writeln!(
                hint,
                "  {} --socket {} status      # SBC {}",
                m.d.bins.shieldctl.display(),
                path_str(&m.d.socket),
                i + 1
            );
        }
        let _ = writeln!(
            hint,
            "  nsenter --net=/run/netns/{} cscli -c {} decisions list",
            lapi.ns_name(),
            lapi.config_path().display()
        );
        print!("{hint}");
        while signals::sleep(Duration::from_secs(1)).is_ok() {}
    }
}

/// "12 ms", "1.9 s", or "-" when not seen.
fn fmt_d(t: Option<Duration>) -> String {
    match t {
        Some(t) if t < Duration::from_secs(1) => format!("{} ms", t.as_millis()),
        Some(t) => format!("{:.1} s", t.as_secs_f64()),
        None => "-".into(),
    }
}

fn times_line(times: &[Option<Duration>]) -> String {
    times
        .iter()
        .map(|t| fmt_d(*t))
        .collect::<Vec<_>>()
        .join(", ")
}

fn probes_line(probes: &[Probe]) -> String {
    let per: Vec<String> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| format!("SBC {} dropped {}/{PROBES}", i + 1, p.banned))
        .collect();
    per.join(", ")
}

fn by_origin(c: &CrowdsecStatus) -> String {
    c.by_origin
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `v1.4.6-...` from `cscli version` (which logs it on stderr).
fn crowdsec_version() -> String {
    std::process::Command::new("cscli")
        .arg("version")
        .output()
        .ok()
        .and_then(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let at = text.find("version: ")?;
            text[at + 9..].split_whitespace().next().map(str::to_string)
        })
        .unwrap_or_else(|| "version unknown".into())
}
