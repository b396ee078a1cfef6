//! The ban store under load (SPEC §10, issue 9's goals): shieldd with a
//! million bans on record — its start from the store into fresh maps and
//! its restart adopting pinned maps; `ban` round trips over the control
//! socket (p50/p99) beside `status` round trips on the same daemon (the
//! protocol's floor: no kernel write, no store write); bans per second
//! from concurrent clients beside `status` per second; and `shieldctl ban`
//! as a process beside `shieldctl status`. The addresses are map keys only
//! (100.64.0.0 and up): nothing is sent to them.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use shield::control::client::{self, Session};
use shield::control::protocol::{Ban, Lasts, Net, Request, Response, Status};
use shield::store::Store;

use super::bans::{ban_key, ban_records};
use crate::daemon::Shieldd;
use crate::lab::shieldd::LabConfig;
use crate::netns::Netns;

/// Sequential round trips per measured request kind.
const ROUND_TRIPS: usize = 2000;
/// Concurrent clients in the throughput runs, and requests each.
const CLIENTS: usize = 4;
const PER_CLIENT: usize = 2500;
/// `shieldctl` invocations per kind.
const PROCESSES: usize = 200;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(mut v: Vec<f64>) -> Percentiles {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        Percentiles {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: *v.last().unwrap_or(&0.0),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StoreLoad {
    pub count: u32,
    /// `Store::import` of the records (one transaction).
    pub import_secs: f64,
    pub db_bytes: u64,
    /// shieldd starts with fresh maps (the pins removed before each), one
    /// per round.
    pub fresh: Vec<StartFigures>,
    /// shieldd restarts adopting the pinned maps, one per round.
    pub adopt: Vec<StartFigures>,
    /// A start with an empty store (maps, verifier, attach): the floor a
    /// start with bans is compared with.
    pub empty: StartFigures,
    pub ban: Percentiles,
    pub status: Percentiles,
    pub bans_per_sec: f64,
    pub status_per_sec: f64,
    /// The same with one session (connection) per client.
    pub bans_per_sec_session: f64,
    pub status_per_sec_session: f64,
    pub ctl_ban: Percentiles,
    pub ctl_status: Percentiles,
}

/// One shieldd start: from its spawn until its control socket answers `status`,
/// and where the time went by its `start timings` log line (ms).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StartFigures {
    pub ready_secs: f64,
    /// The maps created (or adopted) before the verifier can start.
    pub maps_ms: u64,
    /// The store read (snapshot or rows), beside the verifier.
    pub store_read_ms: u64,
    /// The verifier checking the programs (its own thread).
    pub verifier_ms: u64,
    /// The ban book built from the records, and beside it the ban maps
    /// written (fresh) or read (adopted).
    pub book_ms: u64,
    pub kernel_ms: u64,
    /// The whole restore (book, maps, reconciling).
    pub restore_ms: u64,
    /// Waiting for the verifier after the restore.
    pub waited_ms: u64,
    /// Configuration written, interfaces attached, program pinned.
    pub attach_ms: u64,
    /// The start inside shieldd (maps to pinned program).
    pub core_ms: u64,
    /// CPU time shieldd had used by then, all its threads (user + system):
    /// what the start costs, whatever else runs on the machine.
    pub cpu_ms: u64,
}

impl StartFigures {
    /// The figures of the start of `d`, which was ready after `ready`.
    fn of_daemon(ready: Duration, d: &Shieldd) -> StartFigures {
        StartFigures {
            cpu_ms: process_cpu_ms(d.pid()),
            ..StartFigures::of(ready, &d.log_text())
        }
    }

    /// The figures of the last start logged in `log`, ready after `ready`.
    fn of(ready: Duration, log: &str) -> StartFigures {
        let line = log.lines().rfind(|l| l.contains("start timings")).unwrap_or("");
        let f = |k: &str| field_ms(line, k);
        StartFigures {
            ready_secs: ready.as_secs_f64(),
            maps_ms: f("maps_ms"),
            store_read_ms: f("store_read_ms"),
            verifier_ms: f("verifier_ms"),
            book_ms: f("book_ms"),
            kernel_ms: f("kernel_ms"),
            restore_ms: f("restore_ms"),
            waited_ms: f("waited_ms"),
            attach_ms: f("attach_ms"),
            core_ms: f("ms"),
            cpu_ms: 0,
        }
    }

    /// One line: the time and its parts.
    fn describe(&self) -> String {
        format!(
            "{:.2} s (in shieldd {} ms, CPU {} ms: maps {} ms, then beside the verifier's {} ms: store read {} ms, \
             restore {} ms [book {} ms | ban maps {} ms], then waited for the verifier {} ms, attach {} ms)",
            self.ready_secs,
            self.core_ms,
            self.cpu_ms,
            self.maps_ms,
            self.verifier_ms,
            self.store_read_ms,
            self.restore_ms,
            self.book_ms,
            self.kernel_ms,
            self.waited_ms,
            self.attach_ms
        )
    }
}

/// User + system CPU time of process `pid` so far, all its threads
/// (`/proc/PID/stat`, in clock ticks); 0 if unreadable.
fn process_cpu_ms(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // utime and stime are fields 14 and 15 of stat; `rest` starts at 3.
    let tick = |i: usize| f.get(i).and_then(|w| w.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) * 1000 / hz,
        _ => 0,
    }
}

/// `key=N` of a log line; 0 if absent.
fn field_ms(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The median of the starts' `ready_secs` (0 if none).
pub fn median_ready(starts: &[StartFigures]) -> f64 {
    median(starts, |s| s.ready_secs)
}

fn median(starts: &[StartFigures], of: impl Fn(&StartFigures) -> f64) -> f64 {
    let mut v: Vec<f64> = starts.iter().map(of).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ban_req(addr: Ipv4Addr) -> Request {
    Request::Ban(Ban {
        net: Net(ipnet::IpNet::from(std::net::IpAddr::V4(addr))),
        duration: Some(Lasts::Secs(3600)),
        reason: Some("bench".into()),
        force: false,
    })
}

fn call(socket: &Path, req: &Request) -> Result<()> {
    check(req, client::request(socket, req, TIMEOUT)?)
}

fn check(req: &Request, r: Response) -> Result<()> {
    if !r.ok {
        bail!("{} refused: {:?}", req.name(), r.error);
    }
    if let Some(w) = r.warning {
        bail!("{}: {w}", req.name());
    }
    Ok(())
}

/// `count` round trips of `req(i)`, one after another.
fn round_trips(socket: &Path, count: usize, req: impl Fn(usize) -> Request) -> Result<Percentiles> {
    let mut ms = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        call(socket, &req(i))?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Percentiles::of(ms))
}

/// Requests per second from CLIENTS threads, each sending PER_CLIENT: a
/// connection per request (as shieldctl does), or one session each.
fn throughput(socket: &Path, session: bool, req: impl Fn(usize) -> Request + Sync) -> Result<f64> {
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let req = &req;
                s.spawn(move || -> Result<()> {
                    let mut sess = match session {
                        true => Some(Session::connect(socket, TIMEOUT)?),
                        false => None,
                    };
                    for i in 0..PER_CLIENT {
                        let req = req(c * PER_CLIENT + i);
                        match &mut sess {
                            Some(sess) => check(&req, sess.request(&req)?)?,
                            None => call(socket, &req)?,
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("client thread"))
    })?;
    Ok((CLIENTS * PER_CLIENT) as f64 / t.elapsed().as_secs_f64())
}

/// `shieldctl args(i)` as a process, `count` times.
fn processes(d: &Shieldd, count: usize, args: impl Fn(usize) -> Vec<String>) -> Result<Percentiles> {
    let mut ms = Vec::with_capacity(count);
    for i in 0..count {
        let a = args(i);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let t = Instant::now();
        let out = d.try_ctl(&a)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() || !out.stderr.is_empty() {
            bail!("shieldctl {a:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(Percentiles::of(ms))
}

/// Starts shieldd `rounds` times from fresh maps (its pins removed
/// first: `shieldctl detach`, which keeps the store) and each time
/// restarts it adopting its pins; checks that every ban came back.
fn start_rounds(d: &mut Shieldd, count: u32, rounds: usize, r: &mut StoreLoad, progress: &mut dyn FnMut(&str)) -> Result<()> {
    for round in 0..rounds {
        if round > 0 {
            d.try_ctl_ok(&["detach"]).context("detach before a fresh start")?;
            d.wait_exit(TIMEOUT);
        }
        progress(&format!("round {}/{rounds}: shieldd start from the store into fresh maps", round + 1));
        let ready = d.try_start()?;
        let log = d.log_text();
        if !log.lines().rfind(|l| l.contains("bans restored")).is_some_and(|l| l.contains("adopted_maps=false")) {
            bail!("the start did not make fresh maps:\n{log}");
        }
        r.fresh.push(StartFigures::of_daemon(ready, d));
        let active = d.status()?.bans_active;
        if active != u64::from(count) {
            bail!("shieldd restored {active} of {count} bans");
        }
        progress(&format!("round {}/{rounds}: shieldd restart adopting the pinned maps", round + 1));
        let ready = d.restart()?;
        let log = d.log_text();
        if !log.lines().rfind(|l| l.contains("bans restored")).is_some_and(|l| l.contains("maps_trusted=true")) {
            bail!("the restart did not adopt the pinned maps:\n{log}");
        }
        r.adopt.push(StartFigures::of_daemon(ready, d));
        let active = d.status()?.bans_active;
        if active != u64::from(count) {
            bail!("shieldd kept {active} of {count} bans on a restart");
        }
    }
    Ok(())
}

/// `starts_only`: stop after the start and restart figures (the round
/// trips and throughput are left at zero). `rounds`: fresh and adopting
/// starts measured, alternately.
pub fn run(
    sbc: &Netns,
    dir: &Path,
    count: u32,
    starts_only: bool,
    rounds: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<StoreLoad> {
    let mut r = StoreLoad {
        count,
        ..Default::default()
    };
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    // Room for the million, the measured bans and the throughput runs.
    let capacity = (count as usize + ROUND_TRIPS + 2 * CLIENTS * PER_CLIENT + PROCESSES + 64).to_string();
    let cfg = |sub: &str| {
        LabConfig::new(&dir.join(sub))
            .set("capacity", "bans", &capacity)
            .set("shield", "detach_on_exit", "false")
    };

    progress("shieldd start with an empty store");
    {
        let d = cfg("empty").start(sbc)?;
        r.empty = StartFigures::of_daemon(d.ready_after, &d);
        drop(d);
    }

    progress("importing the bans into a store");
    let mut d = cfg("bans").daemon(sbc)?;
    let records = ban_records(count);
    let t = Instant::now();
    Store::open(&d.state)?.import(&records, "bench")?;
    r.import_secs = t.elapsed().as_secs_f64();
    drop(records);
    r.db_bytes = std::fs::metadata(d.state.join("shield.db"))?.len();

    d.check()?;
    start_rounds(&mut d, count, rounds.max(1), &mut r, progress)?;
    if starts_only {
        return Ok(r);
    }

    let socket = d.socket.clone();
    let base = count;
    progress("round trips: status, then ban");
    r.status = round_trips(&socket, ROUND_TRIPS, |_| Request::Status(Status {}))?;
    r.ban = round_trips(&socket, ROUND_TRIPS, |i| ban_req(ban_key(base + i as u32)))?;

    progress("throughput: concurrent clients, status, then ban");
    r.status_per_sec = throughput(&socket, false, |_| Request::Status(Status {}))?;
    r.status_per_sec_session = throughput(&socket, true, |_| Request::Status(Status {}))?;
    let base = base + ROUND_TRIPS as u32;
    r.bans_per_sec = throughput(&socket, false, |i| ban_req(ban_key(base + i as u32)))?;
    let base = base + (CLIENTS * PER_CLIENT) as u32;
    r.bans_per_sec_session = throughput(&socket, true, |i| ban_req(ban_key(base + i as u32)))?;

    progress("shieldctl processes: status, then ban");
    let base = base + (CLIENTS * PER_CLIENT) as u32;
    r.ctl_status = processes(&d, PROCESSES, |_| vec!["status".into()])?;
    r.ctl_ban = processes(&d, PROCESSES, |i| {
        vec!["ban".into(), ban_key(base + i as u32).to_string(), "-d".into(), "1h".into()]
    })?;
    let active = d.status().context("status")?.bans_active;
    let want = u64::from(base) + PROCESSES as u64;
    if active != want {
        bail!("{active} bans active after the runs, expected {want}");
    }
    d.stop();
    Ok(r)
}

/// The starts (empty store, fresh maps, adopting the pins), each with
/// where its time went, the medians, and their ratios to the empty start
/// and to issue 22's goal (1 s).
pub fn starts(r: &StoreLoad) -> String {
    let mut s = format!("  empty store: {}\n", r.empty.describe());
    for (name, runs) in [("into fresh maps", &r.fresh), ("adopting the pinned maps", &r.adopt)] {
        for (i, f) in runs.iter().enumerate() {
            s += &format!("  {} bans {name}, round {}: {}\n", r.count, i + 1, f.describe());
        }
    }
    let (fresh, adopt) = (median_ready(&r.fresh), median_ready(&r.adopt));
    let empty = r.empty.ready_secs.max(1e-9);
    s += &format!(
        "  median of {} rounds: fresh {fresh:.2} s ({:.2}x the empty start, {:.2}x the 1 s goal), \
         adopting {adopt:.2} s ({:.2}x the empty start, {:.2}x the 1 s goal)\n",
        r.fresh.len(),
        fresh / empty,
        fresh,
        adopt / empty,
        adopt
    );
    let cpu = |starts: &[StartFigures]| median(starts, |s| s.cpu_ms as f64);
    let empty_cpu = (r.empty.cpu_ms as f64).max(1.0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    s += &format!(
        "  shieldd's CPU time (median): empty {} ms, fresh {:.0} ms ({:.2}x), adopting {:.0} ms ({:.2}x); \
         spread perfectly over this machine's {cpus} CPUs no start with bans can take less than \
         fresh {:.2} s, adopting {:.2} s\n",
        r.empty.cpu_ms,
        cpu(&r.fresh),
        cpu(&r.fresh) / empty_cpu,
        cpu(&r.adopt),
        cpu(&r.adopt) / empty_cpu,
        cpu(&r.fresh) / 1e3 / cpus,
        cpu(&r.adopt) / 1e3 / cpus
    );
    s
}

pub fn table(r: &StoreLoad) -> String {
    let ratio = |a: f64, b: f64| a / b.max(1e-9);
    let mut s = format!(
        "Ban store: {} bans on record (shield.db {:.0} MB; import in one transaction {:.2} s)\n\n",
        r.count,
        r.db_bytes as f64 / 1e6,
        r.import_secs
    );
    s += &format!(
        "{:<58} {:>10} {:>10} {:>10}\n",
        "", "p50 ms", "p99 ms", "max ms"
    );
    let row = |name: &str, p: &Percentiles| {
        format!("{name:<58} {:>10.2} {:>10.2} {:>10.2}\n", p.p50_ms, p.p99_ms, p.max_ms)
    };
    s += &row("ban over the control socket (kernel + store write)", &r.ban);
    s += &row("status over the control socket (baseline)", &r.status);
    s += &row("`shieldctl ban` process", &r.ctl_ban);
    s += &row("`shieldctl status` process (baseline)", &r.ctl_status);
    s += &format!(
        "\nban p99 / status p99: {:.2}x; shieldctl ban p99 / shieldctl status p99: {:.2}x\n",
        ratio(r.ban.p99_ms, r.status.p99_ms),
        ratio(r.ctl_ban.p99_ms, r.ctl_status.p99_ms)
    );
    s += &format!(
        "Throughput, {CLIENTS} concurrent clients, a connection per request (as shieldctl): {:.0} bans/s, {:.0} status/s (baseline): {:.2}x\n",
        r.bans_per_sec,
        r.status_per_sec,
        ratio(r.bans_per_sec, r.status_per_sec)
    );
    s += &format!(
        "Throughput, {CLIENTS} concurrent clients, one session each: {:.0} bans/s, {:.0} status/s (baseline): {:.2}x\n",
        r.bans_per_sec_session,
        r.status_per_sec_session,
        ratio(r.bans_per_sec_session, r.status_per_sec_session)
    );
    s += &format!(
        "Start, from spawning shieldd until its control socket answers `status`:\n{}",
        starts(r)
    );
    let (fresh, adopt) = (median_ready(&r.fresh), median_ready(&r.adopt));
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    s += &format!(
        "Goals: ban p99 <= 10 ms: {:.2} ms, {}; >= 5,000 bans/s: {:.0} (sessions; {:.0} a connection each), {}; start with 1M bans <= 1 s (median): fresh {:.2} s {}, adopting {:.2} s {}\n",
        r.ban.p99_ms,
        verdict(r.ban.p99_ms <= 10.0),
        r.bans_per_sec_session,
        r.bans_per_sec,
        verdict(r.bans_per_sec_session >= 5000.0),
        fresh,
        verdict(fresh <= 1.0),
        adopt,
        verdict(adopt <= 1.0)
    );
    s
}
