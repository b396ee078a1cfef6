//! Child processes of the lab (Kamailio, sipp, shieldd, fail2ban, the flood
//! sender, scanners). Each runs in its own process group, so a terminal's
//! Ctrl-C reaches only the lab's driver, which then stops them in order;
//! and a [`Proc`] kills its whole group on drop (Kamailio forks its
//! workers), first politely (SIGTERM), then with SIGKILL. Also the small
//! process helpers of the daemon tests (running as another user, reading
//! output as it comes).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// A command that runs inside `ns`: `nsenter --net=/run/netns/NS -- prog`.
/// Unlike `ip netns exec`, it leaves /sys (and the bpffs under it) alone.
pub fn in_ns(ns: &Netns, prog: &str) -> Command {
    ns.command(prog)
}

/// A running child, killed with its process group on drop.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: Option<PathBuf>,
    status: Option<ExitStatus>,
    /// Collects a piped stdout (see [`Proc::spawn_piped`]).
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    /// Starts `cmd` in a new process group; stdout and stderr go to `log`
    /// (appended) or are discarded.
    pub fn spawn(name: &str, mut cmd: Command, log: Option<&Path>) -> Result<Proc> {
        cmd.process_group(0).stdin(Stdio::null());
        match log {
            Some(path) => {
                let f = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("{name}: log file {}", path.display()))?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.map(Path::to_path_buf),
            status: None,
            stdout: None,
        })
    }

    /// Starts `cmd` with stdout piped (for commands whose output is their
    /// result, such as the flood sender's JSON summary); stderr goes to `log`.
    pub fn spawn_piped(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let f = File::options().create(true).append(true).open(log)?;
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(f);
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let mut out = child.stdout.take().context("stdout")?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: Some(log.to_path_buf()),
            status: None,
            stdout: Some(reader),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// The log's last `lines` lines (for error messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(p) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether it still runs (reaps it if not).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => match c.try_wait() {
                Ok(Some(s)) => {
                    self.status = Some(s);
                    self.child = None;
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            },
            None => false,
        }
    }

    /// Its exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.is_running();
        self.status
    }

    /// Waits up to `within` for it to exit by itself.
    pub fn wait_timeout(&mut self, within: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        while self.is_running() {
            if t.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.status
    }

    /// Waits for it to exit and returns its piped stdout (see
    /// [`Proc::spawn_piped`]); killed after `within`.
    pub fn wait_output(&mut self, within: Duration) -> Result<(ExitStatus, String)> {
        let Some(status) = self.wait_timeout(within) else {
            self.stop_within(Duration::ZERO);
            bail!("{} did not finish within {within:?}", self.name);
        };
        let out = self
            .stdout
            .take()
            .context("stdout not piped")?
            .join()
            .unwrap_or_default();
        Ok((status, out))
    }

    /// Sends `sig` to the whole process group.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            signal_group(c.id(), sig);
        }
    }

    /// SIGTERM to the group, up to `grace` to exit, then SIGKILL.
    pub fn stop_within(&mut self, grace: Duration) -> Option<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return self.status;
        };
        let pid = child.id();
        signal_group(pid, libc::SIGTERM);
        let t = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if t.elapsed() < grace => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    signal_group(pid, libc::SIGKILL);
                    break child.wait().ok();
                }
            }
        };
        // Workers that outlived their parent (same group) go too.
        signal_group(pid, libc::SIGKILL);
        self.status = status;
        status
    }

    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_within(Duration::from_secs(5))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_within(Duration::from_secs(3));
    }
}

fn signal_group(pgid: u32, sig: i32) {
    // SAFETY: signalling a process group we created; a group that no
    // longer exists gives ESRCH, which is fine.
    unsafe {
        libc::kill(-(pgid as i32), sig);
    }
}

/// Runs a command to completion within `within`; its output. For short
/// helper commands (nft, kamcmd, shieldctl).
pub fn run_within(mut cmd: Command, within: Duration) -> Result<std::process::Output> {
    let prog = format!("{:?}", cmd.get_program());
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {prog}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => {
            let _ = waiter.join();
            Ok(out?)
        }
        Err(_) => {
            signal_group(pid, libc::SIGKILL);
            let _ = waiter.join();
            bail!("{prog} did not finish within {within:?}")
        }
    }
}

/// Like [`run_within`], but a non-zero exit is an error carrying stderr.
pub fn run_ok(cmd: Command, within: Duration) -> Result<String> {
    let desc = format!(
        "{:?} {:?}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>()
    );
    let out = run_within(cmd, within)?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pins the calling thread (and what it forks afterwards) to `cpus`.
pub fn pin_to_cpus(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays in bounds
    // for CPU numbers below CPU_SETSIZE, which the caller's machine has.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `cmd` start pinned to `cpus` (set in the child before exec).
pub fn pinned(cmd: &mut Command, cpus: Vec<usize>) {
    // SAFETY: sched_setaffinity is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || pin_to_cpus(&cpus));
    }
}

/// [`run_within`] for tests: panics if the command cannot be started or
/// overruns.
pub fn output_within(cmd: Command, within: Duration) -> std::process::Output {
    run_within(cmd, within).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs `curl -s --max-time 10 ARGS... -w '\n{write_out}'` inside the
/// namespace named `ns`: what `write_out` asked for (`%{http_code}`,
/// `%{content_type}`; empty when nothing answered) and the body.
pub fn curl(ns: &str, args: &[&str], write_out: &str) -> Result<(String, String)> {
    let mut cmd = crate::netns::nsenter(ns, "curl");
    cmd.args(["-s", "--max-time", "10", "-w", &format!("\n{write_out}")])
        .args(args);
    let out = run_within(cmd, Duration::from_secs(15))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, asked) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    Ok((asked.to_string(), body.to_string()))
}

/// A child killed on drop (not its group), for children whose output a
/// test reads as it comes ([`collect`]); the lab's children are [`Proc`]s.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a child's output lines into a shared string as they come.
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

/// `cmd` run as another user and group (no supplementary groups). Its
/// program must be one that user can reach: see [`reachable`].
pub fn as_user(mut cmd: Command, uid: u32, gid: u32) -> Command {
    cmd.uid(uid).gid(gid);
    cmd
}

/// A copy of a binary that every user can run (see [`reachable`]); removed
/// on drop.
pub struct Reachable {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Copies `bin` where every user can run it. The clone may live under
/// `/root` or in a `mktemp -d` folder (both 0700), which another user
/// cannot traverse to reach `target/release`.
pub fn reachable(bin: impl AsRef<Path>) -> Reachable {
    use std::os::unix::fs::PermissionsExt;
    let bin = bin.as_ref();
    let dir = tempfile::Builder::new()
        .prefix("shield-bin")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join(bin.file_name().expect("binary name"));
    // Copied by install(1), not std::fs::copy: our writable descriptor of
    // the copy would be inherited by any child another test forks
    // meanwhile, and exec of the copy would fail with ETXTBSY until that
    // child execs.
    let status = Command::new("install")
        .args(["-m", "0755"])
        .arg(bin)
        .arg(&path)
        .status()
        .unwrap_or_else(|e| panic!("running install: {e}"));
    assert!(status.success(), "install {} {}: {status}", bin.display(), path.display());
    Reachable { _dir: dir, path }
}

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
