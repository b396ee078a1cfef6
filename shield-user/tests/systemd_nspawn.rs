//! The Debian package under a real systemd: a Debian 12 container booted
//! with systemd-nspawn (systemd 252 as its PID 1), the package installed
//! with dpkg, shieldd started by systemd from the packaged unit on a veth
//! of the test's lab, and real packets:
//!
//! - the install creates the `shield` group and neither enables nor starts
//!   the service (the packaged config names no interface);
//! - once the operator names the interface, `systemctl enable --now`
//!   attaches, and a ban drops its source's packets;
//! - `systemctl restart` and a package upgrade (dpkg -i again: postinst
//!   try-restart) keep the ban, and a banned flood sent right through them
//!   gets no packet past (the new daemon adopts the pins);
//! - the packaged `shieldctl watch` samples that banned source's drops;
//! - `systemctl stop` leaves the shield attached and dropping;
//! - `systemd-analyze security shieldd` is printed (exposure score);
//! - `dpkg --purge` takes the shield off and removes the state.
//!
//! The container's root is a debootstrap of Debian 12 cached in
//! /var/cache/sipshield (built on first use from Debian's mirror, at most
//! 15 minutes; later runs boot an ephemeral copy of it in seconds). Its
//! network is the lab's SBC namespace; its /sys/fs/bpf a bpffs instance of
//! its own (nspawn mounts /sys read-only, and a host's systemd would have
//! mounted bpffs at boot). Fails, never skips, when any of that cannot run.
//!
//! What nspawn needs on this kind of machine (kernel 6.18, Debian 12's
//! systemd-nspawn 252, the host's PID 1 not systemd), measured:
//! - `--register=no --keep-unit`: without them nspawn asks the host's
//!   systemd for a scope and stops with "Failed to open system bus: No such
//!   file or directory" / "Parent died too early";
//! - `--system-call-filter=bpf`: nspawn's seccomp filter otherwise answers
//!   bpf(2) with EPERM inside the container: shieldd started by systemd
//!   logged "kernel feature probe `is_btf_supported` failed: Operation not
//!   permitted" and "failed to create map `BUDGET`" (every map in turn);
//! - `--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN`: not in nspawn's
//!   default set; the unit's own CapabilityBoundingSet= then narrows them
//!   for the service as on a real host. ("Some capabilities will not be set
//!   because they are not in the current bounding set" is printed: this
//!   machine's root lacks CAP_SYS_RESOURCE, which the service does not use.)

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ROOTFS: &str = "/var/cache/sipshield/bookworm-systemd-v1";
const READY: &str = ".sipshield-ready";
const MIRROR: &str = "http://deb.debian.org/debian";
const DEBOOTSTRAP_LIMIT: Duration = Duration::from_secs(900);
const IN_CONTAINER_DEB_DIR: &str = "/mnt/sipshield";
const BANNED: Ipv4Addr = PEER_IP;
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// The cached Debian 12 tree, made on first use.
fn rootfs() -> PathBuf {
    let root = PathBuf::from(ROOTFS);
    remove_stale_copies(&root);
    if root.join(READY).exists() {
        return root;
    }
    for tool in ["debootstrap", "systemd-nspawn"] {
        assert!(
            Command::new("which").arg(tool).output().is_ok_and(|o| o.status.success()),
            "{tool} is not installed: run `make setup` (scripts/setup.sh installs debootstrap and systemd-container)"
        );
    }
    let partial = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(root.parent().unwrap()).expect("cache dir");
    let started = Instant::now();
    let mut c = Command::new("debootstrap");
    c.args(["--variant=minbase", "--include=systemd,systemd-sysv,dbus,iproute2", "bookworm"])
        .arg(&partial)
        .arg(MIRROR);
    let out = output_within(c, DEBOOTSTRAP_LIMIT);
    assert!(
        out.status.success(),
        "debootstrap of Debian 12 from {MIRROR} failed ({}): {}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 20)
    );
    std::fs::write(partial.join(READY), "debootstrap bookworm minbase + systemd\n").expect("marker");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &root).expect("rename the tree into place");
    println!("debootstrap: {:.0} s", started.elapsed().as_secs_f64());
    root
}

/// `--ephemeral` copies (`.#machine.NAME…` beside the tree) left by a run
/// whose nspawn had to be killed: nspawn removes its copy only when it
/// exits by itself. Only this test boots from the tree, one run at a time.
fn remove_stale_copies(root: &Path) {
    let (Some(dir), Some(name)) = (root.parent(), root.file_name()) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let copy = file.strip_prefix(".#machine.").or_else(|| file.strip_prefix(".#.#machine."));
        if copy.is_some_and(|c| c.starts_with(&*name.to_string_lossy())) {
            let p = e.path();
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            println!("removed a stale copy: {}", p.display());
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A booted container; powered off and its bpffs unmounted on drop.
struct Container {
    nspawn: Child,
    init: u32,
    bpffs: tempfile::TempDir,
    log: PathBuf,
}

impl Container {
    fn boot(root: &Path, netns: &str, deb_dir: &Path, log_dir: &Path) -> Container {
        let bpffs = tempfile::Builder::new().prefix("sipshield-ct-bpf").tempdir_in("/run").expect("tempdir");
        netns_sh("mount", &["-t", "bpf", "bpf", path_str(bpffs.path())]);
        let log = log_dir.join("nspawn.log");
        let out = std::fs::File::create(&log).expect("nspawn log");
        let nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(root)
            // A copy per run: the cached tree stays clean.
            .args(["--ephemeral", "--boot", "--register=no", "--keep-unit", "--quiet"])
            .arg(format!("--machine=sipshield-{}", std::process::id()))
            .arg(format!("--network-namespace-path=/run/netns/{netns}"))
            .arg(format!("--bind={}:/sys/fs/bpf", bpffs.path().display()))
            .arg(format!("--bind-ro={}:{IN_CONTAINER_DEB_DIR}", deb_dir.display()))
            .arg("--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN")
            // nspawn's own seccomp filter answers bpf(2) with EPERM unless
            // it is listed (measured: every map creation failed without it).
            .arg("--system-call-filter=bpf")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("systemd-nspawn");
        let pid = nspawn.id();
        let mut c = Container { nspawn, init: 0, bpffs, log };
        c.init = c.wait_for_init(pid);
        c.wait_running();
        c
    }

    /// The container's PID 1, a child of nspawn.
    fn wait_for_init(&mut self, nspawn: u32) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!("systemd-nspawn exited ({status}): {}", self.log_tail());
            }
            for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                // pid (comm) state ppid ...
                let Some((_, rest)) = stat.rsplit_once(") ") else { continue };
                let ppid: u32 = rest.split(' ').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
                if ppid == nspawn && stat.contains("(systemd)") {
                    return e.file_name().to_string_lossy().parse().expect("pid");
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no systemd inside the container after 30 s: {}", self.log_tail());
    }

    fn wait_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let state = self.sh_out("systemctl is-system-running").stdout;
            let state = String::from_utf8_lossy(&state).trim().to_string();
            if state == "running" || state == "degraded" {
                println!("container booted: systemd {state}");
                return;
            }
            assert!(Instant::now() < deadline, "container not up after 90 s ({state}): {}", self.log_tail());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
    }

    /// `sh -c script` inside the container (all its namespaces).
    fn sh_out(&self, script: &str) -> std::process::Output {
        let mut c = Command::new("nsenter");
        c.arg("--target").arg(self.init.to_string()).args(["--all", "--", "sh", "-c", script]);
        output_within(c, Duration::from_secs(120))
    }

    /// Like [`Container::sh_out`]; must succeed; its standard output.
    fn sh(&self, script: &str) -> String {
        let out = self.sh_out(script);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "in the container: {script}: {}\n{stdout}{}\njournal:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.journal()
        );
        stdout
    }

    fn journal(&self) -> String {
        let out = self.sh_out("journalctl -u shieldd --no-pager -n 40");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until shieldd answers on its control socket.
    fn wait_shieldd(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.sh_out("systemctl is-active --quiet shieldd && shieldctl status >/dev/null").status.success() {
            assert!(Instant::now() < deadline, "shieldd not up after 30 s:\n{}", self.journal());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn main_pid(&self) -> u32 {
        self.sh("systemctl show -p MainPID --value shieldd").trim().parse().expect("MainPID")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM: nspawn asks the container's systemd to power off.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.nspawn.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        let _ = Command::new("umount").arg(self.bpffs.path()).status();
    }
}

fn netns_sh(prog: &str, args: &[&str]) {
    shield_tests::netns::sh(prog, args);
}

/// Is an XDP program attached to the lab's SBC interface? (Asked from the
/// host: the interface is in the lab's namespace.)
fn xdp_attached(lab: &Lab) -> bool {
    let out = Command::new("ip").args(["-n", &lab.sbc.name, "link", "show", "dev", SBC_IF]).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// Sends `n` packets from each of BANNED and OTHER; returns what arrived
/// from each.
fn probe(lab: &Lab, sink: &Sink, n: u32) -> (u64, u64) {
    let before = (sink.from(BANNED).count, sink.from(OTHER).count);
    send(lab, BANNED, n, Duration::from_millis(20));
    send(lab, OTHER, n, Duration::from_millis(20));
    settle();
    (sink.from(BANNED).count - before.0, sink.from(OTHER).count - before.1)
}

/// Runs `action` while BANNED floods (a packet every 2 ms); returns how
/// many of those packets were sent and how many arrived.
fn flood_through(lab: &Lab, sink: &Sink, action: impl FnOnce()) -> (u32, u64) {
    let before = sink.from(BANNED).count;
    let flood = Flood::start(lab, BANNED, Duration::from_millis(2), u32::MAX, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(300));
    action();
    std::thread::sleep(Duration::from_millis(300));
    let sent = flood.stop();
    settle();
    (sent, sink.from(BANNED).count - before)
}

#[test]
fn package_under_systemd_in_a_debian_12_container() {
    shield_tests::kernel::require_root();
    let started = Instant::now();
    let root = rootfs();
    let deb = deb::build();
    let deb_name = deb.path.file_name().unwrap().to_string_lossy().into_owned();
    let lab = Lab::new();
    lab.add_peer_addr(OTHER);
    let logs = tempfile::tempdir().expect("tempdir");
    let ct = Container::boot(&root, &lab.sbc.name, deb.path.parent().unwrap(), logs.path());
    println!("booted in {:.1} s", started.elapsed().as_secs_f64());
    let pkg = format!("{IN_CONTAINER_DEB_DIR}/{deb_name}");
    install_then_enable(&ct, &lab, &pkg);
    let sink = Sink::start(&lab);
    ct.sh(&format!("shieldctl ban {BANNED} --duration 1h --reason nspawn-test"));
    assert_eq!(probe(&lab, &sink, 10), (0, 10), "after the ban: (banned, other) arrivals");
    restart_keeps_the_ban(&ct, &lab, &sink, "systemctl restart", "systemctl restart shieldd");
    assert!(ct.sh("shieldctl banned").contains(&BANNED.to_string()), "ban lost by the restart");
    assert_eq!(probe(&lab, &sink, 10), (0, 10), "after the restart");
    watch_in_the_container(&ct, &lab);
    // Upgrade (the same package again): postinst restarts the running daemon.
    restart_keeps_the_ban(&ct, &lab, &sink, "upgrade", &format!("dpkg -i {pkg} >/dev/null 2>&1"));
    stop_leaves_it_enforcing(&ct, &lab, &sink);
    purge(&ct, &lab, &sink);
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Install: group made, service neither enabled nor started; then the
/// operator names the interface and starts it: attached.
fn install_then_enable(ct: &Container, lab: &Lab, pkg: &str) {
    println!("{}", ct.sh(&format!("dpkg -i {pkg} 2>&1")));
    ct.sh("getent group shield");
    let enabled = ct.sh_out("systemctl is-enabled shieldd");
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled", "installed enabled");
    assert!(!ct.sh_out("systemctl is-active --quiet shieldd").status.success(), "started by the install");
    assert!(!xdp_attached(lab), "attached before any interface was named");
    ct.sh(&format!(
        "sed -i 's/^interfaces = \\[\\].*/interfaces = [\"{SBC_IF}\"]/' /etc/shield/shield.toml && shieldd --check"
    ));
    ct.sh("systemctl enable --now shieldd");
    ct.wait_shieldd();
    assert!(xdp_attached(lab), "shieldd active but nothing on {SBC_IF}:\n{}", ct.journal());
    println!("{}", ct.sh("shieldctl status"));
}

/// `script` must restart shieldd (a new MainPID) while the banned source
/// floods, and not one of its packets may get through.
fn restart_keeps_the_ban(ct: &Container, lab: &Lab, sink: &Sink, what: &str, script: &str) {
    let pid = ct.main_pid();
    let (sent, through) = flood_through(lab, sink, || {
        ct.sh(script);
        ct.wait_shieldd();
    });
    assert_ne!(ct.main_pid(), pid, "{what} did not restart shieldd");
    println!("{what}: {sent} flood packets from the banned source, {through} arrived");
    assert_eq!(through, 0, "packets from the banned source passed during the {what}");
}

/// `shieldctl watch` of the package, against the daemon systemd runs.
fn watch_in_the_container(ct: &Container, lab: &Lab) {
    let watcher = {
        let mut c = Command::new("nsenter");
        c.arg("--target").arg(ct.init.to_string()).args(["--all", "--", "shieldctl", "--json", "watch"]);
        c.args(["--reason", "ban", "--count", "20", "--for", "10s"]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("shieldctl watch in the container")
    };
    std::thread::sleep(Duration::from_millis(700));
    send(lab, BANNED, 300, Duration::from_millis(5));
    let out = watcher.wait_with_output().expect("watch");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "watch: {}{text}", String::from_utf8_lossy(&out.stderr));
    let samples: Vec<serde_json::Value> =
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|v: &serde_json::Value| v["type"] == "sample").collect();
    assert_eq!(samples.len(), 20, "{text}");
    assert!(samples.iter().all(|v| v["reason"] == "ban" && v["packet"]["source"] == BANNED.to_string()), "{text}");
    println!("watch in the container: {} samples of the banned source's drops", samples.len());
}

/// Stop: the shield stays attached and enforcing; the unit's exposure.
fn stop_leaves_it_enforcing(ct: &Container, lab: &Lab, sink: &Sink) {
    ct.sh("systemctl stop shieldd");
    assert!(!ct.sh_out("systemctl is-active --quiet shieldd").status.success());
    assert!(xdp_attached(lab), "systemctl stop detached the shield");
    assert_eq!(probe(lab, sink, 10), (0, 10), "with shieldd stopped");
    let security = ct.sh("systemd-analyze security --no-pager shieldd.service 2>&1");
    println!("{security}");
    let overall = security.lines().find(|l| l.contains("Overall exposure level")).expect("an overall exposure level");
    println!("systemd-analyze security: {}", overall.trim_start_matches(|c: char| !c.is_alphanumeric()));
}

/// Purge: shield off the kernel, state and conffile gone, group kept.
fn purge(ct: &Container, lab: &Lab, sink: &Sink) {
    ct.sh("systemctl start shieldd");
    ct.wait_shieldd();
    ct.sh("test -e /var/lib/shield/shield.db");
    println!("{}", ct.sh("dpkg --purge sip-shield 2>&1"));
    assert!(!xdp_attached(lab), "the shield is still attached after the purge");
    ct.sh("! test -e /var/lib/shield && ! test -e /etc/shield/shield.toml && ! test -e /usr/sbin/shieldd");
    ct.sh("getent group shield");
    assert_eq!(probe(lab, sink, 10), (10, 10), "after the purge");
}
