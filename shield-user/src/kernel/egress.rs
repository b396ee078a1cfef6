//! The egress classifier's attachment (SPEC §8), made, adopted and removed
//! together with each interface's XDP link (see [`super::attach`]).
//!
//! Where the kernel has tcx (Linux >= 6.6), the classifier hangs on a
//! `bpf_link` pinned as `egress_tcx_<ifname>` beside the XDP link, so it
//! keeps learning verified sources while no daemon runs, and a restart
//! swaps the program inside the link atomically. Older kernels get a
//! `clsact` qdisc and a netlink filter with a fixed priority and handle:
//! netlink filters cannot be pinned, but they outlive the daemon all the
//! same, and the next daemon finds them by priority and handle and
//! replaces their program in place.

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{
    self, NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttach, TcAttachType, TcHandle,
};
use aya::programs::{Link, LinkOrder, SchedClassifier};
use aya::util::KernelVersion;

use super::{remove_file, KernelError, Shield};
use crate::text::chain;

const PIN_PREFIX: &str = "egress_tcx_";
/// The netlink filter's priority and handle on kernels without tcx: fixed,
/// so that the next daemon can find the filter again.
const NL_PRIORITY: u16 = 0xc5e0;
const NL_HANDLE: u16 = 0x5117;

/// An egress classifier attachment.
#[derive(Debug)]
pub enum EgressLink {
    /// A pinned tcx link.
    Tcx { pin: PathBuf, link: FdLink },
    /// A clsact netlink filter (kernels before 6.6).
    Clsact { iface: String },
}

impl EgressLink {
    /// Removes the classifier from its interface.
    pub fn detach(self) -> Result<(), KernelError> {
        match self {
            EgressLink::Tcx { pin, link } => {
                remove_file(&pin)?;
                drop(link);
                Ok(())
            }
            EgressLink::Clsact { iface } => {
                let link = nl_link(&iface)?;
                link.detach().map_err(|e| err(&iface, format!("detaching: {}", chain(&e))))
            }
        }
    }

    pub const fn kind(&self) -> &'static str {
        match self {
            EgressLink::Tcx { .. } => "tcx",
            EgressLink::Clsact { .. } => "clsact",
        }
    }
}

fn err(iface: &str, message: String) -> KernelError {
    KernelError::Egress {
        iface: iface.to_string(),
        message,
    }
}

/// The pin of `iface`'s tcx link (`.` and `%` escaped as for XDP links).
fn pin_path(dir: &Path, iface: &str) -> PathBuf {
    let escaped = iface.replace('%', "%25").replace('.', "%2e");
    dir.join(format!("{PIN_PREFIX}{escaped}"))
}

/// Removes the egress classifier an earlier daemon left on `iface` (its
/// tcx pin; on older kernels, its netlink filter).
pub fn detach_pinned(dir: &Path, iface: &str) -> Result<(), KernelError> {
    if has_tcx() {
        remove_file(&pin_path(dir, iface))
    } else {
        // Gone already (or never there) is what was wanted.
        let _ = nl_link(iface).and_then(|l| {
            l.detach()
                .map_err(|e| err(iface, format!("detaching: {}", chain(&e))))
        });
        Ok(())
    }
}

/// Whether this kernel has tcx.
pub(super) fn has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// The TC hook the classifier hangs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressHook {
    Tcx,
    Clsact,
}

impl EgressHook {
    /// tcx where the kernel has it (Linux >= 6.6), clsact otherwise.
    pub fn auto() -> EgressHook {
        if has_tcx() {
            EgressHook::Tcx
        } else {
            EgressHook::Clsact
        }
    }
}

/// Attaches the loaded egress classifier to `iface` on `hook` (the daemon
/// uses [`EgressHook::auto`]), adopting (program swapped in place) what
/// an earlier daemon left there.
pub fn attach_egress(
    shield: &mut Shield,
    dir: &Path,
    iface: &str,
    ifindex: u32,
    hook: EgressHook,
) -> Result<EgressLink, KernelError> {
    match hook {
        EgressHook::Tcx => attach_tcx(shield, &pin_path(dir, iface), iface, ifindex),
        EgressHook::Clsact => attach_clsact(shield, iface),
    }
}

fn attach_tcx(
    shield: &mut Shield,
    pin: &Path,
    iface: &str,
    ifindex: u32,
) -> Result<EgressLink, KernelError> {
    let prog = shield.egress();
    if pin.exists() {
        let adopted = PinnedLink::from_pin(pin)
            .map_err(|e| format!("cannot open {}: {}", pin.display(), chain(&e)))
            .and_then(|p| tcx_replace(prog, FdLink::from(p)));
        match adopted {
            Ok(link) => {
                return Ok(EgressLink::Tcx {
                    pin: pin.to_path_buf(),
                    link,
                })
            }
            // A link of an interface since deleted (or not ours): replace it.
            Err(e) => {
                tracing::warn!(iface, error = %e, "pinned egress link unusable; replacing it");
                remove_file(pin)?;
            }
        }
    }
    let link = tcx_attach(prog, ifindex, TcAttachType::Egress).map_err(|m| err(iface, m))?;
    let pinned = link
        .pin(pin)
        .map_err(|e| err(iface, format!("pinning {}: {}", pin.display(), chain(&e))))?;
    Ok(EgressLink::Tcx {
        pin: pin.to_path_buf(),
        link: FdLink::from(pinned),
    })
}

/// Attaches `prog` to the tcx hook of `ifindex` on `side` (egress here,
/// ingress for the tc-mode decision, `attach`): a new link, not pinned.
/// Errors are messages for the caller's own error.
pub(super) fn tcx_attach(
    prog: &mut SchedClassifier,
    ifindex: u32,
    side: TcAttachType,
) -> Result<FdLink, String> {
    let id = prog
        .attach(
            ifindex,
            TcAttach::Tcx {
                attach_type: side,
                order: LinkOrder::default(),
            },
        )
        .map_err(|e| format!("tcx attach: {}", chain(&e)))?;
    take_fd_link(prog, id)
}

/// Puts `prog` into a tcx link an earlier daemon pinned: one atomic swap,
/// either direction.
pub(super) fn tcx_replace(prog: &mut SchedClassifier, link: FdLink) -> Result<FdLink, String> {
    let link = SchedClassifierLink::try_from(link).map_err(|e| format!("not a tcx link: {e}"))?;
    let id = prog
        .attach_to_link(link)
        .map_err(|e| format!("replacing the program: {}", chain(&e)))?;
    take_fd_link(prog, id)
}

fn take_fd_link(prog: &mut SchedClassifier, id: SchedClassifierLinkId) -> Result<FdLink, String> {
    let link = prog.take_link(id).map_err(|e| e.to_string())?;
    FdLink::try_from(link).map_err(|e| e.to_string())
}

/// The netlink filter an earlier daemon left on `iface`, as a link.
fn nl_link(iface: &str) -> Result<SchedClassifierLink, KernelError> {
    let name = std::ffi::CString::new(iface).map_err(|_| err(iface, "bad name".into()))?;
    SchedClassifierLink::attached(
        name.as_c_str(),
        TcAttachType::Egress.into(),
        NL_PRIORITY,
        TcHandle::new(0, NL_HANDLE),
        None,
    )
    .map_err(|e| err(iface, e.to_string()))
}

fn attach_clsact(shield: &mut Shield, iface: &str) -> Result<EgressLink, KernelError> {
    let name = std::ffi::CString::new(iface).map_err(|_| err(iface, "bad name".into()))?;
    // EEXIST: the qdisc is there already (ours or the operator's).
    if let Err(e) = tc::qdisc_add_clsact(name.as_c_str()) {
        tracing::debug!(iface, error = %e, "clsact qdisc not added (present already?)");
    }
    let prog = shield.egress();
    let id = match prog.attach_to_link(nl_link(iface)?) {
        Ok(id) => id,
        Err(_) => prog
            .attach(
                name.as_c_str(),
                TcAttach::Netlink {
                    parent: TcAttachType::Egress.into(),
                    options: NlOptions {
                        priority: NL_PRIORITY,
                        handle: TcHandle::new(0, NL_HANDLE),
                        ..Default::default()
                    },
                },
            )
            .map_err(|e| err(iface, format!("clsact attach: {}", chain(&e))))?,
    };
    // Netlink filters outlive the process unless detached: keep it.
    let link = prog.take_link(id).map_err(|e| err(iface, e.to_string()))?;
    std::mem::forget(link);
    Ok(EgressLink::Clsact {
        iface: iface.to_string(),
    })
}
