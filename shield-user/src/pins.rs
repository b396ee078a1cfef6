//! The pin directory: what a daemon leaves in bpffs so that the kernel keeps
//! enforcing while no daemon runs, and what the next daemon adopts.
//!
//! Layout under `pin_path`:
//!
//! ```text
//! POLICY, BANS_V4, ...        every map, pinned by name (see `loader`)
//! prog                        the XDP program the links run
//! link_<mode>_<ifname>        the bpf_link attaching it to <ifname>;
//!                             <mode> is how it is attached: driver|generic
//! ```
//!
//! bpffs refuses names with a `.` (reserved for its own files), and VLAN
//! interfaces are called `eth0.100`: in <ifname>, `.` is written `%2e` and
//! `%` is written `%25`.
//!
//! The attach mode lives in the link's name because the kernel's
//! `bpf_link_info` does not say it, and a restarted daemon must know it
//! (status, metrics, and whether the configured mode still matches).
//!
//! A restart replaces the program inside each pinned link with
//! `BPF_LINK_UPDATE` (`Xdp::attach_to_link`): one atomic pointer swap per
//! interface, so there is no moment without a program on it.

use crate::text::chain;
use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::XdpMode;
use thiserror::Error;

use crate::config::AttachMode;
use crate::loader::{LoadError, Shield};

/// `statfs.f_type` of a bpf filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where systemd (and everyone else) mounts bpffs.
const BPFFS_ROOT: &str = "/sys/fs/bpf";
const PROG_PIN: &str = "prog";
const LINK_PREFIX: &str = "link_";

/// How a program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Native XDP, in the driver.
    Driver,
    /// Generic (skb) XDP, in the core stack.
    Generic,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Driver => "driver",
            Mode::Generic => "generic",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        match s {
            "driver" => Some(Mode::Driver),
            "generic" => Some(Mode::Generic),
            _ => None,
        }
    }

    fn xdp(self) -> XdpMode {
        match self {
            Mode::Driver => XdpMode::Driver,
            Mode::Generic => XdpMode::Skb,
        }
    }

    /// Whether a link in this mode satisfies the configured mode.
    pub fn satisfies(self, want: AttachMode) -> bool {
        matches!(
            (want, self),
            (AttachMode::Auto, _)
                | (AttachMode::Driver, Mode::Driver)
                | (AttachMode::Generic, Mode::Generic)
        )
    }
}

#[derive(Debug, Error)]
pub enum PinError {
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
    #[error("interface {0:?} does not exist")]
    NoInterface(String),
    #[error("{iface}: {source}")]
    Attach {
        iface: String,
        #[source]
        source: Box<LoadError>,
    },
    #[error("{iface}: pinned link {path}: {message}")]
    Link {
        iface: String,
        path: PathBuf,
        message: String,
    },
    #[error("pinning the program at {path}: {source}")]
    PinProgram {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.to_path_buf(),
        source,
    }
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
    pin: PathBuf,
    link: FdLink,
}

impl Attachment {
    pub fn pin_path(&self) -> &Path {
        &self.pin
    }

    /// Detaches: removes the pin and closes the last fd of the link.
    pub fn detach(self) -> Result<(), PinError> {
        match std::fs::remove_file(&self.pin) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&self.pin)(e)),
        }
        drop(self.link);
        Ok(())
    }
}

/// Makes sure `dir` exists on a bpf filesystem, mounting bpffs at
/// /sys/fs/bpf when that is where it belongs and nothing is mounted yet.
pub fn prepare_dir(dir: &Path) -> Result<(), PinError> {
    if check_dir(dir)? == PinDir::NeedsMount {
        mount_bpffs()?;
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    Ok(())
}

/// Whether pins can live at `dir`, looked at without changing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinDir {
    /// On a bpffs already.
    Ready,
    /// Under an unmounted `/sys/fs/bpf`, which shieldd mounts (only there).
    NeedsMount,
}

/// `dir`'s nearest existing ancestor must be a bpffs, or be `/sys/fs/bpf`
/// itself; anything else is [`PinError::NotBpffs`].
pub fn check_dir(dir: &Path) -> Result<PinDir, PinError> {
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let root = Path::new(BPFFS_ROOT);
    if is_bpffs(existing)? {
        Ok(PinDir::Ready)
    } else if existing == root && dir.starts_with(root) {
        Ok(PinDir::NeedsMount)
    } else {
        Err(PinError::NotBpffs {
            path: dir.to_path_buf(),
            mount: existing.to_path_buf(),
        })
    }
}

fn is_bpffs(path: &Path) -> Result<bool, PinError> {
    let c = cstr(path)?;
    // SAFETY: zeroed statfs is a valid out-parameter; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_err(path)(io::Error::last_os_error()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs() -> Result<(), PinError> {
    // SAFETY: constant NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(PinError::Mount(io::Error::last_os_error()));
    }
    tracing::info!(path = BPFFS_ROOT, "mounted bpffs");
    Ok(())
}

fn cstr(path: &Path) -> Result<CString, PinError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| PinError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

/// The ifindex of `iface` in this network namespace.
pub fn ifindex(iface: &str) -> Option<u32> {
    let c = CString::new(iface).ok()?;
    // SAFETY: NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// A link pin found in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedLinkEntry {
    pub iface: String,
    pub mode: Mode,
    pub path: PathBuf,
}

/// The link pins under `dir` (none if it does not exist).
pub fn pinned_links(dir: &Path) -> Result<Vec<PinnedLinkEntry>, PinError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
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
) -> Result<Attachment, PinError> {
    let ifindex = ifindex(iface).ok_or_else(|| PinError::NoInterface(iface.to_string()))?;
    for entry in pinned_links(dir)?.into_iter().filter(|e| e.iface == iface) {
        match adopt(shield, &entry, ifindex) {
            Ok(Some(a)) => return Ok(a),
            Ok(None) => {
                tracing::warn!(iface, pin = %entry.path.display(), "pinned link no longer attached to the interface; replacing it");
                std::fs::remove_file(&entry.path).map_err(io_err(&entry.path))?;
            }
            Err(e) => return Err(e),
        }
    }
    let modes: &[Mode] = match want {
        AttachMode::Auto => &[Mode::Driver, Mode::Generic],
        AttachMode::Driver => &[Mode::Driver],
        AttachMode::Generic => &[Mode::Generic],
    };
    let mut last = None;
    for &mode in modes {
        match shield.attach(iface, mode.xdp()) {
            Ok(link) => return pin_new(link, dir, iface, ifindex, mode),
            Err(e) => {
                if want == AttachMode::Auto && mode == Mode::Driver {
                    tracing::warn!(iface, error = %e, "driver-mode XDP failed; falling back to generic");
                }
                last = Some(e);
            }
        }
    }
    Err(PinError::Attach {
        iface: iface.to_string(),
        source: Box::new(last.expect("at least one mode tried")),
    })
}

fn pin_new(
    link: FdLink,
    dir: &Path,
    iface: &str,
    ifindex: u32,
    mode: Mode,
) -> Result<Attachment, PinError> {
    let pin = dir.join(link_name(mode, iface));
    let link_id = link.info().map(|i| i.id()).unwrap_or(0);
    let pinned = link.pin(&pin).map_err(|e| PinError::Link {
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
        pin,
        link: FdLink::from(pinned),
    })
}

/// Takes over a pinned link: `Ok(None)` if it is stale.
fn adopt(
    shield: &mut Shield,
    entry: &PinnedLinkEntry,
    ifindex: u32,
) -> Result<Option<Attachment>, PinError> {
    let iface = entry.iface.clone();
    let link_err = |message: String| PinError::Link {
        iface: iface.clone(),
        path: entry.path.clone(),
        message,
    };
    let pinned = PinnedLink::from_pin(&entry.path)
        .map_err(|e| link_err(format!("cannot open: {}", chain(&e))))?;
    let fd_link = FdLink::from(pinned);
    let raw =
        crate::bpfsys::obj_get(&entry.path).map_err(|e| link_err(format!("cannot open: {e}")))?;
    let info = crate::bpfsys::xdp_link_info(std::os::fd::AsFd::as_fd(&raw))
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
        pin: entry.path.clone(),
        link,
    }))
}

/// Pins the loaded program at `dir/prog`, replacing an older pin.
pub fn pin_program(shield: &mut Shield, dir: &Path) -> Result<(), PinError> {
    let path = dir.join(PROG_PIN);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    shield
        .program()
        .pin(&path)
        .map_err(|source| PinError::PinProgram { path, source })
}

/// What the pin directory held before a start-up attempt, so that a
/// failed attempt takes away exactly what it added (maps created during
/// the load, new links, the program) and nothing a shield still running
/// from an earlier daemon needs. Without this, the next start would adopt
/// the half-made maps as if they were the enforcing ones.
#[derive(Debug)]
pub struct PinSnapshot {
    dir: PathBuf,
    existed: bool,
    entries: std::collections::HashSet<std::ffi::OsString>,
}

impl PinSnapshot {
    /// Lists `dir` (which need not exist yet).
    pub fn take(dir: &Path) -> Result<PinSnapshot, PinError> {
        let mut snap = PinSnapshot {
            dir: dir.to_path_buf(),
            existed: false,
            entries: Default::default(),
        };
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(snap),
            Err(e) => return Err(io_err(dir)(e)),
        };
        snap.existed = true;
        for entry in rd {
            snap.entries.insert(entry.map_err(io_err(dir))?.file_name());
        }
        Ok(snap)
    }

    /// Unpins everything that appeared since [`PinSnapshot::take`], and the
    /// directory if it was made since. The objects go once their last fd
    /// closes: the caller drops its handles first. Returns the names
    /// removed; failures are logged (a start-up is failing already).
    pub fn roll_back(&self) -> Vec<String> {
        let mut removed = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return removed;
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            if self.entries.contains(&name) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed.push(name.to_string_lossy().into_owned()),
                Err(e) => {
                    tracing::error!(pin = %entry.path().display(), "could not remove a pin of the failed start: {e}; remove it by hand")
                }
            }
        }
        if !self.existed {
            let _ = std::fs::remove_dir(&self.dir);
        }
        removed
    }
}

/// What [`remove_all`] took away.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub links: Vec<String>,
    pub other: usize,
}

/// Removes everything pinned under `dir` and the directory itself: the
/// links first (each detaches once no process holds it), then the program
/// and the maps. A missing directory is not an error.
pub fn remove_all(dir: &Path) -> Result<Removed, PinError> {
    let mut removed = Removed::default();
    for l in pinned_links(dir)? {
        std::fs::remove_file(&l.path).map_err(io_err(&l.path))?;
        removed.links.push(l.iface);
    }
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in rd {
        let path = entry.map_err(io_err(dir))?.path();
        std::fs::remove_file(&path).map_err(io_err(&path))?;
        removed.other += 1;
    }
    std::fs::remove_dir(dir).map_err(io_err(dir))?;
    Ok(removed)
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
    }
}
