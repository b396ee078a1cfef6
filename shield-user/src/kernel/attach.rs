//! Attaching the program to interfaces and detaching it: every XDP link
//! the shield makes, adopts or removes goes through here, and the tcx
//! ingress link of the same decision in `tc` mode (issue 22 item 4).
//!
//! Links are `bpf_link`s pinned in the pin directory as
//! `link_<mode>_<ifname>`, so the kernel keeps enforcing while no daemon
//! runs. The attach mode lives in the name because the kernel's
//! `bpf_link_info` does not say it, and a restarted daemon must know it
//! (status, metrics, and whether the configured mode still matches).
//! bpffs refuses names with a `.` (reserved for its own files), and VLAN
//! interfaces are called `eth0.100`: in <ifname>, `.` is written `%2e` and
//! `%` is written `%25`.
//!
//! A restart replaces the program inside each pinned link with
//! `BPF_LINK_UPDATE` (`Xdp::attach_to_link`): one atomic pointer swap per
//! interface, so there is no moment without a program on it. Removing a
//! link's pin detaches it once no process holds the link any more.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::tc::TcAttachType;
use aya::programs::XdpMode;

use super::egress::{self, EgressLink};
use super::{io_err, read_dir, remove_file, sys, KernelError, Shield};
use crate::text::chain;

const LINK_PREFIX: &str = "link_";

/// `[shield] mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP, falling back to [`SKB_FALLBACK`] with a log line.
    Auto,
    Driver,
    Generic,
    /// The decision as a tc ingress program (tcx, Linux >= 6.6).
    Tc,
}

/// How a program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Native XDP, in the driver.
    Driver,
    /// Generic (skb) XDP, in the core stack.
    Generic,
    /// The same decision as a tcx ingress program on the socket buffer.
    Tc,
}

/// Where `mode = "auto"` goes on a driver without native XDP: the tc
/// ingress program. Measured (`labbench --only skb`, BENCHMARKS.md
/// section 1b: a flood of socket buffers at 100 kpps, SBC CPU per million
/// drops, three interleaved rounds, 2026-12-07) at 0.16 CPU-s (lowest
/// round) against generic XDP's 0.19 and nftables' 0.43, and below
/// generic XDP in every round (0.73x-0.84x): generic XDP first makes its
/// 256 bytes of headroom (a copy of the skb when it has less) and
/// builds an XDP buffer around it, then runs the same program. Kernels
/// without tcx keep generic XDP.
fn skb_fallback() -> Mode {
    if egress::has_tcx() {
        Mode::Tc
    } else {
        Mode::Generic
    }
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Driver => "driver",
            Mode::Generic => "generic",
            Mode::Tc => "tc",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        match s {
            "driver" => Some(Mode::Driver),
            "generic" => Some(Mode::Generic),
            "tc" => Some(Mode::Tc),
            _ => None,
        }
    }

    /// The XDP flag of an XDP mode; `None` for tc.
    fn xdp(self) -> Option<XdpMode> {
        match self {
            Mode::Driver => Some(XdpMode::Driver),
            Mode::Generic => Some(XdpMode::Skb),
            Mode::Tc => None,
        }
    }

    /// Whether a link in this mode satisfies the configured mode.
    pub fn satisfies(self, want: AttachMode) -> bool {
        matches!(
            (want, self),
            (AttachMode::Auto, _)
                | (AttachMode::Driver, Mode::Driver)
                | (AttachMode::Generic, Mode::Generic)
                | (AttachMode::Tc, Mode::Tc)
        )
    }
}

/// The ifindex of `iface` in this network namespace.
pub fn ifindex(iface: &str) -> Option<u32> {
    let c = CString::new(iface).ok()?;
    // SAFETY: NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// An XDP attachment the daemon holds (and has pinned).
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    pub mode: Mode,
    /// The kernel's id of the bpf_link.
    pub link_id: u32,
    /// True when an existing pinned link was taken over (program replaced
    /// atomically) rather than created.
    pub adopted: bool,
    /// The egress classifier on the same interface (SPEC §8); `None` only
    /// in the tests' bare XDP attachments.
    pub egress: Option<EgressLink>,
    pin: PathBuf,
    link: FdLink,
}

impl Attachment {
    /// Detaches: the egress classifier, then the XDP link (its pin
    /// removed and the last fd closed).
    pub fn detach(self) -> Result<(), KernelError> {
        if let Some(e) = self.egress {
            e.detach()?;
        }
        remove_file(&self.pin)?;
        drop(self.link);
        Ok(())
    }
}

/// A link pin found in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedLinkEntry {
    pub iface: String,
    pub mode: Mode,
    pub path: PathBuf,
}

impl PinnedLinkEntry {
    /// Detaches a link no process holds (one an earlier daemon pinned):
    /// removing its pin drops the kernel's last reference.
    pub fn detach(&self) -> Result<(), KernelError> {
        if let Some(dir) = self.path.parent() {
            egress::detach_pinned(dir, &self.iface)?;
        }
        remove_file(&self.path)
    }
}

/// The link pins under `dir` (none if it does not exist).
pub fn pinned_links(dir: &Path) -> Result<Vec<PinnedLinkEntry>, KernelError> {
    let Some(rd) = read_dir(dir)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((mode, iface)) = parse_link_name(&name) {
            out.push(PinnedLinkEntry {
                iface,
                mode,
                path: entry.path(),
            });
        }
    }
    out.sort_by(|a, b| a.iface.cmp(&b.iface));
    Ok(out)
}

fn link_name(mode: Mode, iface: &str) -> String {
    let escaped = iface.replace('%', "%25").replace('.', "%2e");
    format!("{LINK_PREFIX}{}_{escaped}", mode.as_str())
}

fn parse_link_name(name: &str) -> Option<(Mode, String)> {
    let rest = name.strip_prefix(LINK_PREFIX)?;
    let (mode, iface) = rest.split_once('_')?;
    let iface = iface.replace("%2e", ".").replace("%25", "%");
    Some((Mode::parse(mode)?, iface)).filter(|(_, i)| !i.is_empty())
}

/// Attaches the loaded program to `iface`, pinning the link under `dir`.
///
/// If a pinned link for `iface` exists and is still attached to it, the
/// program in it is replaced atomically and its mode kept (a mode change
/// cannot be atomic: the kernel refuses native and generic XDP on one
/// device at once; the caller is told through [`Attachment::mode`]).
/// A stale pin (interface gone or recreated) is removed and a fresh link
/// made. `want = Auto` tries driver mode and falls back to generic.
pub fn attach(
    shield: &mut Shield,
    dir: &Path,
    iface: &str,
    want: AttachMode,
) -> Result<Attachment, KernelError> {
    let mut a = attach_xdp(shield, dir, iface, want)?;
    let hook = egress::EgressHook::auto();
    match egress::attach_egress(shield, dir, iface, a.ifindex, hook) {
        Ok(e) => a.egress = Some(e),
        Err(e) => {
            // Half an attachment must not stay pinned (a failed reload
            // would leave it enforcing); an adopted link was there before.
            if !a.adopted {
                let _ = a.detach();
            }
            return Err(e);
        }
    }
    Ok(a)
}

fn attach_xdp(
    shield: &mut Shield,
    dir: &Path,
    iface: &str,
    want: AttachMode,
) -> Result<Attachment, KernelError> {
    let ifindex = ifindex(iface).ok_or_else(|| KernelError::NoInterface(iface.to_string()))?;
    for entry in pinned_links(dir)?.into_iter().filter(|e| e.iface == iface) {
        if entry.mode == Mode::Tc {
            shield.load_tc(dir)?;
        }
        match adopt(shield, &entry, ifindex)? {
            Some(a) => return Ok(a),
            None => {
                tracing::warn!(iface, pin = %entry.path.display(), "pinned link no longer attached to the interface; replacing it");
                entry.detach()?;
            }
        }
    }
    let auto = [Mode::Driver, skb_fallback()];
    let modes = match want {
        AttachMode::Auto => &auto[..],
        AttachMode::Driver => &[Mode::Driver],
        AttachMode::Generic => &[Mode::Generic],
        AttachMode::Tc => &[Mode::Tc],
    };
    let mut last = None;
    for &mode in modes {
        if mode == Mode::Tc {
            // The tc object, onto the maps pinned here (once).
            shield.load_tc(dir)?;
        }
        match attach_link(shield, iface, mode) {
            Ok(link) => return pin_new(link, dir, iface, ifindex, mode),
            Err(e) => {
                if want == AttachMode::Auto && mode == Mode::Driver {
                    tracing::warn!(iface, error = %e, fallback = skb_fallback().as_str(), "driver-mode XDP failed; falling back");
                }
                last = Some(e);
            }
        }
    }
    Err(last.expect("at least one mode tried"))
}

/// Attaches to `iface` in `mode` and returns the link, unpinned: it lives
/// as long as the returned value (or a pin made of it). [`attach`] is the
/// daemon's way; this is its first step, and the tests' way.
pub fn attach_link(shield: &mut Shield, iface: &str, mode: Mode) -> Result<FdLink, KernelError> {
    let err = |source| KernelError::Attach {
        iface: iface.to_string(),
        mode: mode.as_str(),
        source,
    };
    let Some(xdp_mode) = mode.xdp() else {
        return attach_tc(shield, iface);
    };
    let name = CString::new(iface)
        .map_err(|_| err(aya::programs::ProgramError::UnknownInterface { name: c"?".into() }))?;
    let prog = shield.program();
    let id = prog.attach(name.as_c_str(), xdp_mode).map_err(err)?;
    let link = prog.take_link(id).map_err(err)?;
    // bpf_link (kernel >= 5.9) is what lets the attachment outlive us.
    FdLink::try_from(link).map_err(|source| KernelError::NoLink {
        iface: iface.to_string(),
        source,
    })
}

/// [`attach_link`] in tc mode: a tcx ingress link of the tc program
/// ([`Shield::load_tc`] first), unpinned.
fn attach_tc(shield: &mut Shield, iface: &str) -> Result<FdLink, KernelError> {
    let tc_err = |message: String| KernelError::TcIngress {
        iface: iface.to_string(),
        message,
    };
    if !egress::has_tcx() {
        return Err(tc_err("needs tcx (Linux >= 6.6); use mode = \"generic\"".into()));
    }
    let ifindex = ifindex(iface).ok_or_else(|| KernelError::NoInterface(iface.to_string()))?;
    let prog = shield
        .tc_program()
        .ok_or_else(|| tc_err("the tc program is not loaded".into()))?;
    egress::tcx_attach(prog, ifindex, TcAttachType::Ingress).map_err(tc_err)
}

fn pin_new(
    link: FdLink,
    dir: &Path,
    iface: &str,
    ifindex: u32,
    mode: Mode,
) -> Result<Attachment, KernelError> {
    let pin = dir.join(link_name(mode, iface));
    let link_id = link.info().map(|i| i.id()).unwrap_or(0);
    let pinned = link.pin(&pin).map_err(|e| KernelError::PinnedLink {
        iface: iface.to_string(),
        path: pin.clone(),
        message: format!("pinning failed: {}", chain(&e)),
    })?;
    Ok(Attachment {
        iface: iface.to_string(),
        ifindex,
        mode,
        link_id,
        adopted: false,
        egress: None,
        pin,
        link: FdLink::from(pinned),
    })
}

/// Takes over a pinned link: `Ok(None)` if it is stale.
fn adopt(
    shield: &mut Shield,
    entry: &PinnedLinkEntry,
    ifindex: u32,
) -> Result<Option<Attachment>, KernelError> {
    let link_err = |message: String| KernelError::PinnedLink {
        iface: entry.iface.clone(),
        path: entry.path.clone(),
        message,
    };
    let pinned = PinnedLink::from_pin(&entry.path)
        .map_err(|e| link_err(format!("cannot open: {}", chain(&e))))?;
    let fd_link = FdLink::from(pinned);
    // aya's FdLink does not lend its fd: a second one for the link info.
    let raw = sys::obj_get(&entry.path).map_err(|e| link_err(format!("cannot open: {e}")))?;
    if entry.mode == Mode::Tc {
        return adopt_tc(shield, entry, ifindex, fd_link, &raw);
    }
    let info = sys::xdp_link_info(std::os::fd::AsFd::as_fd(&raw))
        .map_err(|e| link_err(format!("cannot read link info: {e}")))?
        .ok_or_else(|| link_err("is not an XDP link".into()))?;
    if info.ifindex != ifindex {
        return Ok(None);
    }
    let xdp_link = XdpLink::try_from(fd_link).map_err(|e| link_err(format!("not usable: {e}")))?;
    let prog = shield.program();
    let id = prog
        .attach_to_link(xdp_link)
        .map_err(|e| link_err(format!("replacing the program failed: {}", chain(&e))))?;
    let xdp_link = prog.take_link(id).map_err(|e| link_err(e.to_string()))?;
    let link = FdLink::try_from(xdp_link).map_err(|e| link_err(e.to_string()))?;
    Ok(Some(Attachment {
        iface: entry.iface.clone(),
        ifindex,
        mode: entry.mode,
        link_id: info.link_id,
        adopted: true,
        egress: None,
        pin: entry.path.clone(),
        link,
    }))
}

/// [`adopt`] for a tcx ingress link: the tc program (loaded by the
/// caller) swapped in atomically.
fn adopt_tc(
    shield: &mut Shield,
    entry: &PinnedLinkEntry,
    ifindex: u32,
    link: FdLink,
    raw: &std::os::fd::OwnedFd,
) -> Result<Option<Attachment>, KernelError> {
    let link_err = |message: String| KernelError::PinnedLink {
        iface: entry.iface.clone(),
        path: entry.path.clone(),
        message,
    };
    let info = sys::tcx_link_info(std::os::fd::AsFd::as_fd(raw))
        .map_err(|e| link_err(format!("cannot read link info: {e}")))?
        .ok_or_else(|| link_err("is not a tcx link".into()))?;
    if info.ifindex != ifindex {
        return Ok(None);
    }
    let prog = shield
        .tc_program()
        .ok_or_else(|| link_err("the tc program is not loaded".into()))?;
    let link = egress::tcx_replace(prog, link).map_err(link_err)?;
    Ok(Some(Attachment {
        iface: entry.iface.clone(),
        ifindex,
        mode: Mode::Tc,
        link_id: info.link_id,
        adopted: true,
        egress: None,
        pin: entry.path.clone(),
        link,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_round_trip() {
        for (mode, iface) in [
            (Mode::Driver, "eth0"),
            (Mode::Generic, "veth.100"),
            (Mode::Driver, "a-b_c%2e."),
            (Mode::Tc, "eth0"),
        ] {
            let name = link_name(mode, iface);
            assert!(!name.contains('.'), "{name}");
            assert_eq!(parse_link_name(&name), Some((mode, iface.to_string())));
        }
        assert_eq!(
            link_name(Mode::Generic, "eth0.100"),
            "link_generic_eth0%2e100"
        );
        assert_eq!(parse_link_name("link_bogus_eth0"), None);
        assert_eq!(parse_link_name("link_driver_"), None);
        assert_eq!(parse_link_name("BANS_V4"), None);
    }

    #[test]
    fn modes_satisfy_config() {
        assert!(Mode::Generic.satisfies(AttachMode::Auto));
        assert!(Mode::Driver.satisfies(AttachMode::Driver));
        assert!(!Mode::Generic.satisfies(AttachMode::Driver));
        assert!(!Mode::Driver.satisfies(AttachMode::Generic));
        assert!(Mode::Tc.satisfies(AttachMode::Tc));
        assert!(Mode::Tc.satisfies(AttachMode::Auto));
        assert!(!Mode::Tc.satisfies(AttachMode::Generic));
        assert!(!Mode::Generic.satisfies(AttachMode::Tc));
    }
}
