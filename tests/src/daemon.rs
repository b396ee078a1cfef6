//! The one `shieldd` harness, for the daemon tests (`shield-user/tests/
//! daemon_*.rs`) and the lab (demo, benches, lab tests): `shieldd` as a real
//! process inside a network namespace, `shieldctl` as a real process, both
//! from [`Binaries`] the caller names (the daemon tests cargo's fresh
//! `CARGO_BIN_EXE_*`, the lab [`Binaries::built`]).
//!
//! A [`Shieldd`] owns its files (config, control socket, state directory,
//! log) and its pins. On drop, also when a test panics, it stops the
//! daemon (SIGTERM to its process group, then SIGKILL), removes its pins,
//! and when panicking prints the daemon's log.
//!
//! What to write in the config is the caller's: [`Shieldd::new`] gives the
//! smallest one for the SBC of a [`crate::netns::Lab`], the lab renders
//! `config/shield.toml` ([`crate::lab::shieldd::LabConfig`]).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use shield::control::client;
use shield::control::protocol::{
    BannedReply, Lasts, Request, StatsReply, Status, StatusReply, VerifiedReply,
};
use shield::kernel::MapId;
use shield_common::{BanKey, BanValue};

use crate::paths::binary;
use crate::process::{run_within, Proc};
use crate::netns::{nsenter, Netns, SBC_IF};

/// Loading a program runs the verifier: allow for a slow, busy machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one `shieldctl` may take (a ban among a million included).
pub const CTL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stopped daemon gets to exit before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// Port of the metrics endpoint inside the daemon's namespace.
pub const METRICS_PORT: u16 = 9814;
/// Pin directories of the daemon tests: `/sys/fs/bpf/shtest-<pid>-<n>`.
pub const TEST_PINS: &str = "shtest";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The two programs a [`Shieldd`] runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub shieldd: PathBuf,
    pub shieldctl: PathBuf,
}

impl Binaries {
    pub fn new(shieldd: impl Into<PathBuf>, shieldctl: impl Into<PathBuf>) -> Binaries {
        Binaries {
            shieldd: shieldd.into(),
            shieldctl: shieldctl.into(),
        }
    }

    /// The workspace's binaries built with the running one's profile (see
    /// [`binary`]): what the lab runs.
    pub fn built() -> Result<Binaries> {
        Ok(Binaries::new(binary("shieldd")?, binary("shieldctl")?))
    }
}

/// A `shieldd` (running or not) and everything it owns on disk and in
/// bpffs.
pub struct Shieldd {
    pub bins: Binaries,
    /// Where its files are; a temporary one is removed on drop.
    pub dir: PathBuf,
    /// `dir/shield.toml`
    pub config: PathBuf,
    /// `dir/shield-ctl.sock`
    pub socket: PathBuf,
    /// `dir/shield-state`
    pub state: PathBuf,
    /// `dir/shieldd.log`: stdout and stderr of every start, appended.
    pub log: PathBuf,
    /// `/sys/fs/bpf/<prefix>-<pid>-<n>`, removed on drop.
    pub pin: PathBuf,
    /// From spawning the daemon to its first answer, at the latest start.
    pub ready_after: Duration,
    ns: String,
    proc: Option<Proc>,
    _temp: Option<tempfile::TempDir>,
}

impl Shieldd {
    /// A daemon for the SBC of a [`crate::netns::Lab`] (attached to
    /// [`SBC_IF`]), not started, in a temporary directory. `extra` is
    /// appended to the smallest config: it may add sections but must not
    /// repeat `[shield]`, `[control]` or `[metrics]` (use
    /// [`Shieldd::with_config`]).
    pub fn new(bins: Binaries, ns: &Netns, extra: &str) -> Shieldd {
        Self::with_config(bins, ns, |d| {
            format!(
                "[shield]\ninterfaces = [\"{SBC_IF}\"]\npin_path = \"{}\"\nstate_dir = \"{}\"\n\n\
                 [control]\nsocket = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n\n{extra}\n",
                d.pin.display(),
                d.state.display(),
                d.socket.display()
            )
        })
    }

    /// A daemon in `ns`, not started, in a temporary directory, pins under
    /// [`TEST_PINS`]; its whole config is `text(&daemon)`.
    pub fn with_config(
        bins: Binaries,
        ns: &Netns,
        text: impl FnOnce(&Shieldd) -> String,
    ) -> Shieldd {
        crate::kernel::require_root();
        let temp = tempfile::tempdir().expect("tempdir");
        let mut d = Shieldd::in_dir(bins, ns, temp.path(), TEST_PINS).expect("daemon dir");
        d._temp = Some(temp);
        let text = text(&d);
        d.write_config(&text);
        d
    }

    /// A daemon in `ns`, not started, with its files in `dir` (created)
    /// and its pins in `/sys/fs/bpf/<pin_prefix>-<pid>-<n>` (named after
    /// the process, so that [`crate::lab::sweep`] can tell leftovers).
    /// Write its config before starting it.
    pub fn in_dir(bins: Binaries, ns: &Netns, dir: &Path, pin_prefix: &str) -> Result<Shieldd> {
        crate::kernel::require_root();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let pins = format!(
            "{pin_prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Shieldd {
            bins,
            dir: dir.to_path_buf(),
            config: dir.join("shield.toml"),
            socket: dir.join("shield-ctl.sock"),
            state: dir.join("shield-state"),
            log: dir.join("shieldd.log"),
            pin: PathBuf::from("/sys/fs/bpf").join(pins),
            ready_after: Duration::ZERO,
            ns: ns.name.clone(),
            proc: None,
            _temp: None,
        })
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Adds a `[[jail]]` following a new, empty log file `log` in the
    /// daemon's directory, with the settings of `jail` (`name`, `filter`
    /// or `failregex`, ...), and `extra` sections before it. Returns the
    /// log's path.
    pub fn add_jail(&self, log: &str, jail: &str, extra: &str) -> PathBuf {
        let logpath = self.dir.join(log);
        std::fs::write(&logpath, "").expect("log");
        let base = std::fs::read_to_string(&self.config).expect("config");
        self.write_config(&format!(
            "{base}\n{extra}\n[[jail]]\nlogpath = \"{}\"\n{jail}",
            logpath.display()
        ));
        logpath
    }

    /// `shieldd ARGS`, in the daemon's namespace.
    fn command(&self) -> Command {
        nsenter(&self.ns, &self.bins.shieldd)
    }

    /// Runs `shieldd --check` on the config, in the daemon's namespace (it
    /// looks for the interfaces there).
    pub fn check(&self) -> Result<()> {
        let mut c = self.command();
        c.arg("--check").arg("--config").arg(&self.config);
        let out = run_within(c, Duration::from_secs(30))?;
        if !out.status.success() {
            bail!(
                "shieldd --check rejects {}:\n{}",
                self.config.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(())
    }

    /// Starts `shieldd` and waits until a `status` request over its control socket answers; the time
    /// that took (also in [`Shieldd::ready_after`]).
    pub fn try_start(&mut self) -> Result<Duration> {
        if self.is_running() {
            bail!("shieldd is already running");
        }
        let mut cmd = self.command();
        cmd.arg("--config")
            .arg(&self.config)
            .env("SHIELD_LOG", "info");
        let t = Instant::now();
        self.proc = Some(Proc::spawn("shieldd", cmd, Some(&self.log))?);
        loop {
            if !self.is_running() {
                let status = self.proc.as_mut().and_then(Proc::exit_status);
                bail!(
                    "shieldd exited during start-up ({}); log:\n{}",
                    status.map_or("?".into(), |s| s.to_string()),
                    self.log_tail(30)
                );
            }
            // Asked in-process, every 5 ms: a shieldctl process per poll
            // would take CPU from the start it times.
            let status = Request::Status(Status {});
            if client::request(&self.socket, &status, Duration::from_secs(5)).is_ok_and(|r| r.ok) {
                self.ready_after = t.elapsed();
                return Ok(self.ready_after);
            }
            if t.elapsed() > START_TIMEOUT {
                bail!(
                    "shieldd not ready after {START_TIMEOUT:?}; log:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// [`Shieldd::try_start`] for tests: panics if it fails.
    pub fn start(&mut self) -> &mut Shieldd {
        match self.try_start() {
            Ok(t) => eprintln!("shieldd ready in {t:?}"),
            Err(e) => panic!("{e:#}"),
        }
        self
    }

    /// Stops the daemon (SIGTERM, [`STOP_GRACE`]) and starts it again on
    /// the same files: with `detach_on_exit = false` the new one adopts
    /// the pinned shield. The time from spawning it to its answer.
    pub fn restart(&mut self) -> Result<Duration> {
        self.stop_process();
        self.try_start()
    }

    /// Runs shieldd once with extra arguments and returns its output
    /// (start-up failures, `--check`).
    pub fn run_once(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(args).arg("--config").arg(&self.config);
        run_within(c, START_TIMEOUT).unwrap_or_else(|e| panic!("shieldd {args:?}: {e:#}"))
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> u32 {
        let pid = self.proc.as_ref().map_or(0, Proc::pid);
        assert!(pid != 0, "shieldd is not running");
        pid
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: i32) {
        // SAFETY: our own child.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process to exit; its status.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let exited = self
            .proc
            .as_mut()
            .expect("shieldd was started")
            .wait_timeout(within);
        match exited {
            Some(s) => s,
            None => panic!(
                "shieldd still running after {within:?}; log:\n{}",
                self.log_text()
            ),
        }
    }

    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10));
    }

    /// SIGTERM; waits up to 30 s for the exit, its status. The pins stay.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(30))
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// Stops the process, if it runs: SIGTERM to its group, SIGKILL after
    /// [`STOP_GRACE`]. The pins stay.
    fn stop_process(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.stop_within(STOP_GRACE);
        }
    }

    /// Stops the daemon and removes its pins (with `detach_on_exit`, it has
    /// detached itself).
    pub fn stop(&mut self) {
        self.stop_process();
        let _ = shield::kernel::remove_all(&self.pin);
    }

    /// `shieldctl --socket SOCK args...`; an error if it cannot be run or
    /// overruns [`CTL_TIMEOUT`].
    pub fn try_ctl(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new(&self.bins.shieldctl);
        c.arg("--socket").arg(&self.socket).args(args);
        run_within(c, CTL_TIMEOUT)
    }

    /// [`Shieldd::try_ctl`] for tests: panics if shieldctl cannot be run or
    /// overruns; its output, whatever its exit status.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("shieldctl {args:?}: {e:#}"))
    }

    /// `shieldctl args...`, which must succeed; its stdout.
    pub fn try_ctl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.try_ctl(args)?;
        if !out.status.success() {
            bail!(
                "shieldctl {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// [`Shieldd::try_ctl_ok`] for tests: panics unless it succeeds.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        self.try_ctl_ok(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `shieldctl --json args...`, which must succeed; its reply.
    pub fn ctl_as<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.try_ctl_ok(&a)?;
        serde_json::from_str(&out).with_context(|| format!("shieldctl {args:?}: not JSON: {out}"))
    }

    /// [`Shieldd::ctl_as`] for tests, as a JSON value: panics unless it
    /// succeeds.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        self.ctl_as(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn stats(&self) -> Result<StatsReply> {
        self.ctl_as(&["stats"])
    }

    pub fn status(&self) -> Result<StatusReply> {
        self.ctl_as(&["status"])
    }

    pub fn banned(&self) -> Result<BannedReply> {
        self.ctl_as(&["banned"])
    }

    pub fn verified(&self) -> Result<VerifiedReply> {
        self.ctl_as(&["verified"])
    }

    /// How `net` (as listed: `192.0.2.7/32`) is verified (`reply`,
    /// `operator`, `config`), if it is.
    pub fn verified_how(&self, net: &str) -> Result<Option<String>> {
        Ok(verified_entry(&self.verified()?, net).map(|e| e.how.clone()))
    }

    /// The time `net` has left verified, if it is.
    pub fn verified_left(&self, net: &str) -> Result<Option<Lasts>> {
        Ok(verified_entry(&self.verified()?, net).map(|e| e.expires_in_secs))
    }

    /// Packets counted for (verdict, reason) over all interfaces; panics if
    /// `stats` fails.
    pub fn packets(&self, verdict: &str, reason: &str) -> u64 {
        let s = self.stats().unwrap_or_else(|e| panic!("{e:#}"));
        packets(&s, verdict, reason)
    }

    /// The bans as `shieldctl banned --json` lists them; panics if it fails.
    pub fn bans(&self) -> Vec<serde_json::Value> {
        self.ctl_json(&["banned"])["bans"]
            .as_array()
            .expect("bans")
            .clone()
    }

    pub fn ban_of(&self, net: &str) -> Option<serde_json::Value> {
        self.bans().into_iter().find(|b| b["net"] == net)
    }

    /// Lifts every ban (between benchmark runs).
    pub fn unban_all(&self) -> Result<()> {
        self.try_ctl_ok(&["unban", "--all"]).map(drop)
    }

    /// The kernel's exact-address ban map, opened from its pin: for
    /// polling "is this address banned yet" without the daemon in the way.
    pub fn ban_map(&self) -> Result<PinnedBans> {
        let path = self.pin.join(MapId::Bans.name());
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let map = BpfHashMap::try_from(Map::HashMap(data)).context("BANS is a hash map")?;
        Ok(PinnedBans { map })
    }

    /// `GET /metrics` from inside the daemon's namespace `ns`.
    pub fn metrics(&self, ns: &Netns) -> Result<String> {
        ns.run(|| http_get(METRICS_PORT, "/metrics"))
    }

    /// `/metrics` once `ready` holds for the page (reports reach the
    /// counters within a second or a sweep), or the last page after
    /// `within`: the caller's assertion says what was missing.
    pub fn metrics_when(&self, ns: &Netns, within: Duration, ready: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let text = self.metrics(ns).context("scraping shieldd")?;
            if ready(&text) || Instant::now() > deadline {
                return Ok(text);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's last `lines` lines (for error messages).
    fn log_tail(&self, lines: usize) -> String {
        self.proc
            .as_ref()
            .map_or_else(String::new, |p| p.log_tail(lines))
    }
}

impl Drop for Shieldd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- shieldd log ----\n{}", self.log_text());
        }
    }
}

/// `net`'s entry (as listed: `192.0.2.7/32`) in a `verified` reply.
pub fn verified_entry<'a>(
    v: &'a VerifiedReply,
    net: &str,
) -> Option<&'a shield::control::protocol::VerifiedInfo> {
    v.entries.iter().find(|e| e.net.to_string() == net)
}

/// Packets by verdict and reason, summed over interfaces.
pub fn totals(stats: &StatsReply) -> BTreeMap<(String, String), u64> {
    stats
        .totals
        .iter()
        .map(|r| ((r.verdict.as_str().into(), r.reason.as_str().into()), r.packets))
        .collect()
}

/// Packets counted for (verdict, reason), summed over interfaces.
pub fn packets(stats: &StatsReply, verdict: &str, reason: &str) -> u64 {
    stats
        .totals
        .iter()
        .filter(|r| r.verdict.as_str() == verdict && r.reason.as_str() == reason)
        .map(|r| r.packets)
        .sum()
}

/// Packets dropped (verdict `drop`), all reasons.
pub fn dropped(stats: &StatsReply) -> u64 {
    stats
        .totals
        .iter()
        .filter(|r| r.verdict == shield_common::Verdict::Drop)
        .map(|r| r.packets)
        .sum()
}

/// The pinned BANS map (host bans of both families).
pub struct PinnedBans {
    map: BpfHashMap<MapData, BanKey, BanValue>,
}

impl PinnedBans {
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.map.get(&BanKey::v4(addr.octets()), 0).is_ok()
    }

    /// Whether the IPv6 host `addr` is banned.
    pub fn contains_v6(&self, addr: std::net::Ipv6Addr) -> bool {
        self.map.get(&BanKey::v6(addr.octets()), 0).is_ok()
    }

    /// Writes a ban by hand (as `bpftool map update` would), until the
    /// monotonic `expires_ns` (0 = forever).
    pub fn insert(&mut self, addr: Ipv4Addr, expires_ns: u64) -> Result<()> {
        self.map
            .insert(&BanKey::v4(addr.octets()), &BanValue::until(expires_ns), 0)
            .with_context(|| format!("writing {addr} into BANS"))
    }

    /// Deletes a ban by hand.
    pub fn remove(&mut self, addr: Ipv4Addr) -> Result<()> {
        self.map
            .remove(&BanKey::v4(addr.octets()))
            .with_context(|| format!("deleting {addr} from BANS"))
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
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

/// The sum over every series of `name` in a Prometheus text page whose
/// labels contain all of `want` (`key="value"` pieces); 0 for none.
pub fn metric(text: &str, name: &str, want: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && want.iter().all(|w| labels.contains(w))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
