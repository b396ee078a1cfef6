//! Harness of the daemon tests: `shieldd` as a real process inside the SBC
//! namespace of a [`Lab`], `shieldctl` as a real process, and UDP traffic
//! between the namespaces. Everything started here is stopped on drop
//! (processes killed, pins removed), also when a test panics.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use shield_tests::netns::{Lab, Netns, PEER_IP, SBC_IF, SBC_IP};

pub const SHIELDD: &str = env!("CARGO_BIN_EXE_shieldd");
pub const SHIELDCTL: &str = env!("CARGO_BIN_EXE_shieldctl");
/// Loading a program runs the verifier: allow for a slow, busy machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `[limits]` that let the tests' steady streams through.
pub const NO_LIMITS: &str = "[limits]\npackets_per_second = 0\n";

/// A SIP request the shield passes as valid SIP.
pub const OPTIONS: &[u8] =
    b"OPTIONS sip:probe@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.2:5060\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

/// A `shieldd` process and everything it owns on disk and in bpffs.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub pin: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    ns: String,
    child: Option<Child>,
}

impl Daemon {
    /// A daemon for `lab`'s SBC side (attached to veth-s), not started yet.
    /// `extra` is appended to a minimal config: it may add sections but
    /// must not repeat `[shield]`, `[control]` (use [`Daemon::with_config`]).
    pub fn new(ns: &Netns, extra: &str) -> Daemon {
        Self::with_config(ns, |d| {
            format!(
                "[shield]\ninterfaces = [\"{SBC_IF}\"]\npin_path = \"{}\"\nstate_dir = \"{}\"\n\n\
                 [control]\nsocket = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:9814\"\n\n{extra}\n",
                d.pin.display(),
                d.state.display(),
                d.socket.display()
            )
        })
    }

    /// A daemon whose whole config is `text(&daemon)`.
    pub fn with_config(ns: &Netns, text: impl FnOnce(&Daemon) -> String) -> Daemon {
        shield_tests::kernel::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let id = format!(
            "shtest-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let d = Daemon {
            config: dir.path().join("shield.toml"),
            socket: dir.path().join("ctl.sock"),
            pin: PathBuf::from("/sys/fs/bpf").join(id),
            state: dir.path().join("state"),
            log: dir.path().join("shieldd.log"),
            dir,
            ns: ns.name.clone(),
            child: None,
        };
        let text = text(&d);
        d.write_config(&text);
        d
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }

    fn command(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns))
            .arg("--")
            .arg(SHIELDD);
        c
    }

    /// Starts `shieldd` and waits until it answers `status`.
    pub fn start(&mut self) -> &mut Daemon {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = self
            .command()
            .arg("--config")
            .arg(&self.config)
            .env("SHIELD_LOG", "info")
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn shieldd");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("wait")
            {
                panic!(
                    "shieldd exited during start-up ({status}); log:\n{}",
                    self.log_text()
                );
            }
            if self.ctl(&["status"]).status.success() {
                break;
            }
            assert!(
                t.elapsed() < START_TIMEOUT,
                "shieldd not ready after {START_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("shieldd ready in {:?}", t.elapsed());
        self
    }

    /// Runs shieldd once with extra arguments and returns its output
    /// (start-up failures, `--check`).
    pub fn run_once(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(args).arg("--config").arg(&self.config);
        output_within(c, START_TIMEOUT)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: our own child.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process to exit; its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let t = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                self.child = None;
                return s;
            }
            assert!(
                t.elapsed() < within,
                "shieldd still running after {within:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10));
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(30))
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("wait").is_none(),
            None => false,
        }
    }

    /// `shieldctl --socket SOCK args...`
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(SHIELDCTL);
        c.arg("--socket").arg(&self.socket).args(args);
        output_within(c, Duration::from_secs(120))
    }

    /// `shieldctl --json ...`, which must succeed; its JSON.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl(&a);
        assert!(
            out.status.success(),
            "shieldctl {args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("shieldctl {args:?}: not JSON ({e}): {}", text(&out.stdout)))
    }

    /// `shieldctl args...`, which must succeed; its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "shieldctl {args:?} failed ({}): {}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Packets counted for (verdict, reason) over all interfaces.
    pub fn packets(&self, verdict: &str, reason: &str) -> u64 {
        let s = self.ctl_json(&["stats"]);
        s["totals"]
            .as_array()
            .expect("totals")
            .iter()
            .filter(|r| r["verdict"] == verdict && r["reason"] == reason)
            .map(|r| r["packets"].as_u64().expect("packets"))
            .sum()
    }

    /// The bans as `shieldctl banned --json` lists them.
    pub fn bans(&self) -> Vec<serde_json::Value> {
        self.ctl_json(&["banned"])["bans"]
            .as_array()
            .expect("bans")
            .clone()
    }

    pub fn ban_of(&self, net: &str) -> Option<serde_json::Value> {
        self.bans().into_iter().find(|b| b["net"] == net)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = shield::kernel::remove_all(&self.pin);
        if std::thread::panicking() {
            eprintln!("---- shieldd log ----\n{}", self.log_text());
        }
    }
}

/// Runs a command, killing it if it overruns.
pub fn output_within(mut c: Command, within: Duration) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let watchdog = std::thread::spawn(move || {
        let t = Instant::now();
        while !d.load(Ordering::Relaxed) {
            if t.elapsed() > within {
                // SAFETY: our own child.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    out
}

/// `command` run as another user and group (no supplementary groups).
/// Its program must be one that user can reach: see [`reachable`].
pub fn as_user(mut c: Command, uid: u32, gid: u32) -> Command {
    c.uid(uid).gid(gid);
    c
}

/// A copy of one of our binaries that every user can run. The clone may
/// live under `/root` or in a `mktemp -d` folder (both 0700), which another
/// user cannot traverse to reach `target/release`.
pub struct Reachable {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn reachable(bin: &str) -> Reachable {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("shield-bin")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join(Path::new(bin).file_name().expect("binary name"));
    std::fs::copy(bin, &path).unwrap_or_else(|e| panic!("copying {bin}: {e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    Reachable { _dir: dir, path }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Arrivals at SBC:5060, per source address.
#[derive(Clone, Debug, Default)]
pub struct Arrivals {
    pub count: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

/// A UDP socket on SBC:5060 that records what arrives.
pub struct Sink {
    seen: Arc<Mutex<HashMap<Ipv4Addr, Arrivals>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    pub fn start(lab: &Lab) -> Sink {
        let seen = Arc::new(Mutex::new(HashMap::<Ipv4Addr, Arrivals>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let (s2, st2, r2) = (seen.clone(), stop.clone(), ready.clone());
        let thread = lab.sbc.spawn(move || {
            let sock = UdpSocket::bind(SocketAddr::from((SBC_IP, 5060))).expect("bind SBC:5060");
            sock.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            r2.store(true, Ordering::SeqCst);
            let mut buf = [0u8; 2048];
            while !st2.load(Ordering::Relaxed) {
                if let Ok((_, SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
                    let now = Instant::now();
                    let mut m = s2.lock().expect("lock");
                    let a = m.entry(*from.ip()).or_default();
                    a.count += 1;
                    a.first.get_or_insert(now);
                    a.last = Some(now);
                }
            }
        });
        while !ready.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Sink {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn from(&self, src: Ipv4Addr) -> Arrivals {
        self.seen
            .lock()
            .expect("lock")
            .get(&src)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends SIP OPTIONS from `src` (an address of the peer) to SBC:5060, one
/// every `every`, until stopped, `max` packets are sent or `limit` passes.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    pub fn start(lab: &Lab, src: Ipv4Addr, every: Duration, max: u32, limit: Duration) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU32::new(0));
        let (st, se) = (stop.clone(), sent.clone());
        let thread = lab.peer.spawn(move || {
            let sock = UdpSocket::bind(SocketAddr::from((src, 0))).expect("bind source");
            let t = Instant::now();
            let mut next = Instant::now();
            while !st.load(Ordering::Relaxed)
                && se.load(Ordering::Relaxed) < max
                && t.elapsed() < limit
            {
                let _ = sock.send_to(OPTIONS, SocketAddr::from((SBC_IP, 5060)));
                se.fetch_add(1, Ordering::Relaxed);
                next += every;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
        });
        Flood {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    pub fn sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops and waits for the sender; packets sent.
    pub fn stop(mut self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sent()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `n` packets from `src`, `every` apart, and returns.
pub fn send(lab: &Lab, src: Ipv4Addr, n: u32, every: Duration) {
    Flood::start(lab, src, every, n, Duration::from_secs(30)).stop_when_done();
}

impl Flood {
    fn stop_when_done(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

/// Lets packets in flight land.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

/// A process killed on drop (Prometheus, ...).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a process's stderr lines into a shared string (for diagnostics).
pub fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let o = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut s = o.lock().expect("lock");
            s.push_str(&line);
            s.push('\n');
        }
    });
    out
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
