//! Throwaway network namespaces joined by veth pairs: the hosts of the
//! traffic tests, the daemon tests ([`Lab`]) and the three-host lab
//! ([`crate::lab::Topology`]), all built here. Everything is removed on
//! drop, also when a test panics.
//!
//! Names are `shl<pid>-<n>-<tag>`: [`crate::lab::sweep`] removes those of a
//! process that no longer exists. Addresses are documentation prefixes only
//! (RFC 5737).

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args`; panics with the command and its stderr on failure.
pub fn ip(args: &[&str]) {
    sh("ip", args);
}

/// Runs a command; panics with its stderr on failure.
pub fn sh(prog: &str, args: &[&str]) {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{prog} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command that runs inside the namespace named `ns`. Uses `nsenter
/// --net`, not `ip netns exec`, which remounts /sys and hides the host's
/// bpffs.
pub fn nsenter(ns: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(prog);
    c
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        crate::kernel::require_root();
        let name = format!(
            "shl{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a);
    }

    /// A command that runs inside the namespace (see [`nsenter`]).
    pub fn command(&self, prog: &str) -> Command {
        nsenter(&self.name, prog)
    }

    /// Runs `f` on a thread that has joined this namespace (setns is
    /// per-thread), and returns its result. Sockets made there stay in the
    /// namespace wherever they are used afterwards.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&path);
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Like [`Netns::run`], but returns at once; join the handle for the
    /// result.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::JoinHandle<R> {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// The ifindex of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        self.run(|| {
            let name = std::ffi::CString::new(dev).expect("device name");
            // SAFETY: valid C string; resolved in this thread's namespace.
            let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(i != 0, "no device {dev} in {}", self.name);
            i
        })
    }

    /// Adds each of `addrs` as a /32 on `dev`, in one `ip -batch` run.
    pub fn add_addrs(&self, dev: &str, addrs: &[Ipv4Addr]) {
        let script: String = addrs
            .iter()
            .map(|a| format!("addr add {a}/32 dev {dev}\n"))
            .collect();
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("ip -batch");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("ip -batch input");
        let status = child.wait().expect("ip -batch");
        assert!(status.success(), "adding addresses in {}", self.name);
    }

    /// The MAC address of `dev`. Asked through the namespace's netlink:
    /// /sys shows the namespace of whoever mounted it.
    pub fn mac(&self, dev: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-j", "link", "show", "dev", dev])
            .output()
            .expect("ip -j link show");
        assert!(
            out.status.success(),
            "ip link show {dev}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        v[0]["address"].as_str().expect("link address").to_string()
    }

    /// A permanent neighbour entry: `addr` is at `lladdr` on `dev`.
    pub fn neighbour(&self, addr: Ipv4Addr, lladdr: &str, dev: &str) {
        let a = addr.to_string();
        self.ip(&[
            "neigh",
            "replace",
            &a,
            "lladdr",
            lladdr,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }
}

/// Joins the calling thread to the namespace at `path`.
fn enter(path: &str) {
    let fd = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: a valid namespace fd; affects only this thread.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth ends, and with them any
        // XDP program attached there.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One end of a [`veth`] pair: the device `dev` in `ns`, with `addr`/24.
pub struct End<'a> {
    pub ns: &'a Netns,
    pub dev: &'a str,
    pub addr: Ipv4Addr,
}

/// A veth pair between two namespaces, each end with its address (/24) and
/// up. Two queues each way: packets from senders on different CPUs reach
/// the XDP program on different CPUs, as on a multi-queue NIC. Deleted with
/// either namespace.
pub fn veth(a: End, b: End) {
    ip(&[
        "link",
        "add",
        a.dev,
        "netns",
        &a.ns.name,
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        b.dev,
        "netns",
        &b.ns.name,
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
    ]);
    for end in [&a, &b] {
        end.ns
            .ip(&["addr", "add", &format!("{}/24", end.addr), "dev", end.dev]);
    }
    for end in [&a, &b] {
        end.ns.ip(&["link", "set", end.dev, "up"]);
    }
}

/// Two hosts: `peer` (clients, attackers) and `sbc` (the protected host),
/// joined by a veth pair `veth-p` / `veth-s`.
pub struct Lab {
    pub peer: Netns,
    pub sbc: Netns,
}

pub const SBC_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const SBC_IF: &str = "veth-s";
pub const PEER_IF: &str = "veth-p";

impl Lab {
    pub fn new() -> Lab {
        let peer = Netns::new("p");
        let sbc = Netns::new("s");
        veth(
            End {
                ns: &peer,
                dev: PEER_IF,
                addr: PEER_IP,
            },
            End {
                ns: &sbc,
                dev: SBC_IF,
                addr: SBC_IP,
            },
        );
        Lab { peer, sbc }
    }

    /// Adds `addr` (in 198.51.100.0/24) to the peer as another source
    /// address.
    pub fn add_peer_addr(&self, addr: Ipv4Addr) {
        self.peer.add_addrs(PEER_IF, &[addr]);
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}
