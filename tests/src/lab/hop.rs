//! The redirect engine's hop: a veth pair of the flood's own, made in the
//! sender's namespace for as long as the flood runs, that turns socket
//! buffers into XDP frames.
//!
//! ```text
//!  flood ──AF_PACKET──▶ near ══veth══ far ──XDP_REDIRECT──▶ eth0 ══veth══ SBC
//!                                    (xdpgen program)     ndo_xdp_xmit
//! ```
//!
//! The far end runs the generator program of [`super::xdpgen`] in native
//! mode with the [`Verdict::Redirect`] verdict: it makes each frame
//! different (source, letters, checksums) and redirects it to the
//! interface towards the SBC. A veth's `ndo_xdp_xmit` puts an `xdp_frame`
//! on its peer's ring, so the SBC's XDP program runs on it before any skb
//! exists, as it would on a frame from a NIC's driver. The socket buffer
//! the sender built ends at the far end.
//!
//! The far end's NAPI runs in a kernel thread of its own (threaded NAPI),
//! so the hop's work is system time of that thread, not softirq time: the
//! lab benchmark reads softirq time as the SBC's receive cost. The thread
//! is pinned to the sender's CPUs, so the flood and the SBC's receive of
//! it (which a veth runs where the frames come from) keep to the CPUs the
//! flood was given, as with the in-kernel generator.
//!
//! The program is attached with a `bpf_link` and the pair is deleted on
//! drop; a sender killed outright leaves the pair in its namespace, which
//! goes with the namespace (the lab's are all temporary).

use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;

use anyhow::{bail, Context, Result};
use shield::kernel::sys::{link_create_xdp, XDP_FLAGS_DRV_MODE};

use crate::packet::PacketSocket;
use super::xdpgen::{self, ifindex, Randomise, Verdict};

/// One hop: a veth pair, the generator on its far end, a packet socket on
/// its near end.
pub struct Hop {
    near: String,
    sock: PacketSocket,
    /// Whether the far end's NAPI got a thread of its own.
    pub threaded: bool,
    _link: OwnedFd,
}

impl Hop {
    /// Hop number `index` of this process, redirecting into `target` (an
    /// interface of the calling thread's namespace) the frames made from
    /// `frame` as `r` says.
    pub fn new(index: usize, target: &str, frame: &[u8], r: &Randomise) -> Result<Hop> {
        let target_index = ifindex(target)?;
        let pid = std::process::id();
        // At most 9 characters: the NAPI thread's name, `napi/FAR-ID`, is
        // cut to 15 and must still name this far end alone.
        let (near, far) = (format!("fy{pid:x}{index}"), format!("fx{pid:x}{index}"));
        ip(&["link", "add", &near, "type", "veth", "peer", "name", &far])?;
        // From here on a failure deletes the pair (`Hop` is dropped).
        let partial = Cleanup(&near);
        ip(&["link", "set", &far, "up"])?;
        ip(&["link", "set", &near, "up"])?;
        let prog = xdpgen::load(frame, r, Verdict::Redirect(target_index))?;
        let link = link_create_xdp(prog.as_fd(), ifindex(&far)?, XDP_FLAGS_DRV_MODE)
            .with_context(|| format!("attaching the hop program to {far} (native XDP)"))?;
        let threaded = thread_napi(&far) && pin_napi_thread(&far);
        let sock = PacketSocket::open(&near)?;
        std::mem::forget(partial);
        Ok(Hop {
            near,
            sock,
            threaded,
            _link: link,
        })
    }

    /// The near end's name.
    pub fn name(&self) -> &str {
        &self.near
    }

    /// The socket frames go in by.
    pub fn socket(&self) -> &PacketSocket {
        &self.sock
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        Cleanup(&self.near);
    }
}

/// Deletes a veth pair (by either end) when dropped.
struct Cleanup<'a>(&'a str);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).output();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Gives `dev`'s NAPI a kernel thread (`/sys/class/net/DEV/threaded`). The
/// sender may have joined its namespace with setns(2), so the `/sys` it
/// sees can be another namespace's: the write is done by a child in a
/// mount namespace of its own with a sysfs mounted for this network
/// namespace. False when that fails (the hop then runs in softirq).
fn thread_napi(dev: &str) -> bool {
    let script = format!("mount -t sysfs sysfs /sys && echo 1 > /sys/class/net/{dev}/threaded");
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pins `dev`'s NAPI thread to the CPUs this process may run on. False
/// when there is no such thread or it cannot be moved.
fn pin_napi_thread(dev: &str) -> bool {
    let Some(pid) = napi_thread(dev) else {
        return false;
    };
    // SAFETY: a zeroed cpu_set_t is empty and valid; both calls get its
    // true size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        libc::sched_getaffinity(0, size, &mut set) == 0
            && libc::sched_setaffinity(pid, size, &set) == 0
    }
}

/// The pid of the kernel thread `napi/DEV-ID` (its name cut to 15 bytes).
fn napi_thread(dev: &str) -> Option<libc::pid_t> {
    let prefix = format!("napi/{dev}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        let rest = comm.trim_end().strip_prefix(&prefix)?;
        (rest.is_empty() || rest.starts_with('-')).then_some(pid)
    })
}
