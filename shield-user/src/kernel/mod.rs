//! The kernel layer: everything user space does to the XDP program, its
//! maps, its links and the pins that keep them alive without a daemon.
//!
//! One job per module; a module imports only those to its left, never one
//! to its right:
//!
//! ```text
//! sys ← maps (+ verify) ← reuse ← load ← attach ← pins
//! ```
//!
//! - [`sys`]: the raw `bpf(2)` commands aya does not wrap (batched map
//!   reads and writes, link info, opening pins, and the program load and
//!   test run the test tools use). The one place `union bpf_attr` is
//!   written out.
//! - `maps`: [`MapId`] (the maps by type, never by string) and
//!   [`ShieldMaps`], typed access to them. [`ShieldMaps`]'s `write_policy`
//!   is the one place trie occupancy becomes the `POLICY` flags.
//! - `reuse`: the programs an earlier daemon pinned for the same object,
//!   run again without the verifier.
//! - `load`: [`Shield`], loading the embedded object (creating its maps
//!   pinned, or adopting pinned ones) and the map sizes, [`Capacity`].
//! - `attach`: attaching and detaching: [`attach`] (new link, or adopting
//!   a pinned one with an atomic program swap), [`Attachment::detach`],
//!   and the link pins' names.
//! - `pins`: the pin directory: bpffs checks and mount, the program pin,
//!   [`PinSnapshot`] (undoing a failed start) and [`remove_all`].
//!
//! - `events`: the ring buffers the program reports through, read from
//!   async code ([`EventRing`], [`EventReader`]).
//!
//! Errors: everything fails with [`KernelError`]; a full map is
//! [`KernelError::MapFull`]. No aya type leaves this layer for the daemon.

mod attach;
mod auth;
mod calls;
mod cidr;
mod dest;
mod egress;
mod events;
mod load;
mod map_id;
mod map_ops;
mod maps;
mod pins;
mod reuse;
pub mod sys;
mod verify;

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use auth::{AuthCounts, AuthMaps, AuthOutcome};
pub use calls::{decode_event as decode_call_event, CallMaps};
pub use dest::{DestCounts, DestMaps};
pub use attach::{attach, AttachMode, attach_link, ifindex, pinned_links, Attachment, Mode, PinnedLinkEntry};
pub use egress::{attach_egress, EgressHook, EgressLink};
pub use events::{EventReader, EventRing};
pub use load::{raise_memlock, Capacity, LoadTimes, Shield};
pub use map_id::MapId;
pub use maps::{monotonic_ns, List, ShieldMaps};
pub use verify::{VerifiedBy, VerifiedEntry};
pub use pins::{
    check_dir, has_maps, load_tc, obsolete_bans, pin_program, prepare_dir, remove_all,
    unpin_obsolete, PinDir, PinSnapshot, Removed,
};

/// Where systemd (and everyone else) mounts bpffs.
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Why the kernel layer failed. Each message names what to do where
/// there is something to do.
#[derive(Debug, Error)]
pub enum KernelError {
    #[error("loading the XDP object (maps{}) failed: {source}", pin_note(.pin_dir))]
    Object {
        pin_dir: Option<PathBuf>,
        // Boxed: aya's error is large, and this one is rare.
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error(
        "the maps pinned under {pin_path} do not fit this configuration: {detail}. Maps cannot be resized in place. \
         Either set [capacity] back, or run `shieldctl detach` (this removes the shield until shieldd starts again; \
         bans are kept in state_dir) and start shieldd again"
    )]
    IncompatiblePins { pin_path: PathBuf, detail: String },
    #[error("the XDP object has no program `{0}`")]
    NoProgram(&'static str),
    #[error("the verifier rejected the XDP program: {0}")]
    Verifier(#[source] aya::programs::ProgramError),
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("interface {0:?} does not exist")]
    NoInterface(String),
    #[error("attaching to {iface} ({mode} mode): {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attaching to {iface}: the kernel gave no bpf_link (needs Linux >= 5.9): {source}")]
    NoLink {
        iface: String,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("{iface}: tc ingress program: {message}")]
    TcIngress { iface: String, message: String },
    #[error("{iface}: egress classifier: {message}")]
    Egress { iface: String, message: String },
    #[error("{iface}: pinned link {path}: {message}")]
    PinnedLink {
        iface: String,
        path: PathBuf,
        message: String,
    },
    #[error("pinning {what} at {path}: {source}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("pinned map {path}: {message}")]
    PinnedMap { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "pin_path {path} is not on a bpf filesystem ({mount} is not a bpffs): use a directory \
         under /sys/fs/bpf, e.g. the default pin_path = \"/sys/fs/bpf/shield\" (shieldd mounts \
         bpffs there if needed)"
    )]
    NotBpffs { path: PathBuf, mount: PathBuf },
    #[error("mounting bpffs at {BPFFS_ROOT} failed: {0} (mount it yourself: `mount -t bpf bpf {BPFFS_ROOT}`)")]
    Mount(#[source] io::Error),
    /// A map write found the map full (`E2BIG`): raise `[capacity]`.
    #[error(transparent)]
    MapFull(aya::maps::MapError),
    /// Any other failed map operation.
    #[error(transparent)]
    MapOp(aya::maps::MapError),
}

impl KernelError {
    /// Whether a map write failed because the map is full.
    pub fn is_map_full(&self) -> bool {
        matches!(self, KernelError::MapFull(_))
    }
}

/// A map operation's error, a full map told apart.
impl From<aya::maps::MapError> for KernelError {
    fn from(e: aya::maps::MapError) -> KernelError {
        match &e {
            aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG) => {
                KernelError::MapFull(e)
            }
            _ => KernelError::MapOp(e),
        }
    }
}

fn pin_note(p: &Option<PathBuf>) -> String {
    match p {
        Some(p) => format!(" pinned under {}", p.display()),
        None => String::new(),
    }
}

/// Wraps an I/O error on `path`.
fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The entries of `dir`; `None` if it does not exist.
fn read_dir(dir: &Path) -> Result<Option<std::fs::ReadDir>, KernelError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(Some(rd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Removes a file; one already gone is no error (it is what was wanted).
fn remove_file(path: &Path) -> Result<(), KernelError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}
