//! Throwaway network namespaces joined by veth pairs: the hosts of the
//! traffic tests. Everything is removed on drop, also when a test panics.
//!
//! Addresses are documentation prefixes only (RFC 5737): the SBC side is
//! 198.51.100.1/24, the peer side 198.51.100.2/24 plus any extra source
//! addresses a test adds.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
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

    /// A command that runs inside the namespace. Uses `nsenter --net`, not
    /// `ip netns exec`, which remounts /sys and hides the host's bpffs.
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(prog);
        c
    }

    /// Runs `f` on a thread that has joined this namespace (setns is
    /// per-thread), and returns its result.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // SAFETY: a valid namespace fd; affects only this thread.
                let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
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
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: a valid namespace fd; affects only this thread.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
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
        // Two queues each way: packets from senders on different CPUs reach
        // the XDP program on different CPUs.
        ip(&[
            "link",
            "add",
            PEER_IF,
            "netns",
            &peer.name,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            SBC_IF,
            "netns",
            &sbc.name,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
        ]);
        peer.ip(&["addr", "add", "198.51.100.2/24", "dev", PEER_IF]);
        sbc.ip(&["addr", "add", "198.51.100.1/24", "dev", SBC_IF]);
        peer.ip(&["link", "set", PEER_IF, "up"]);
        sbc.ip(&["link", "set", SBC_IF, "up"]);
        Lab { peer, sbc }
    }

    /// Adds `addr` (in 198.51.100.0/24) to the peer as another source
    /// address.
    pub fn add_peer_addr(&self, addr: Ipv4Addr) {
        self.peer
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", PEER_IF]);
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}
