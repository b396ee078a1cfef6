//! The pin directory: what a daemon leaves in bpffs so that the kernel keeps
//! enforcing while no daemon runs, and what the next daemon adopts.
//!
//! Layout under `pin_path`:
//!
//! ```text
//! POLICY, BANS, ...           every map, pinned by its `MapId::name` (see `load`)
//! prog                        the XDP program the links run
//! prog_xdp_<hash>,            the same program and the egress classifier,
//! prog_egress_<hash>          named by their object's hash (see `reuse`)
//! link_<mode>_<ifname>        the bpf_link attaching it to <ifname>;
//!                             <mode> is how it is attached: driver|generic
//!                             (names and attaching: `attach`)
//! ```

use std::io;
use std::mem::size_of;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use shield_common::{names, BanValue};

use super::map_ops::obsolete_ban_net;
use super::maps::scan_fd;
use super::{
    io_err, pinned_links, read_dir, remove_file, sys, KernelError, MapId, Shield, BPFFS_ROOT,
};

/// `statfs.f_type` of a bpf filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const PROG_PIN: &str = "prog";

/// Makes sure `dir` exists on a bpf filesystem, mounting bpffs at
/// /sys/fs/bpf when that is where it belongs and nothing is mounted yet.
pub fn prepare_dir(dir: &Path) -> Result<(), KernelError> {
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
/// itself; anything else is [`KernelError::NotBpffs`].
pub fn check_dir(dir: &Path) -> Result<PinDir, KernelError> {
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
        Err(KernelError::NotBpffs {
            path: dir.to_path_buf(),
            mount: existing.to_path_buf(),
        })
    }
}

fn is_bpffs(path: &Path) -> Result<bool, KernelError> {
    let c = sys::path_cstr(path).map_err(io_err(path))?;
    // SAFETY: zeroed statfs is a valid out-parameter; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_err(path)(io::Error::last_os_error()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs() -> Result<(), KernelError> {
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
        return Err(KernelError::Mount(io::Error::last_os_error()));
    }
    tracing::info!(path = BPFFS_ROOT, "mounted bpffs");
    Ok(())
}

/// Pins the loaded program at `dir/prog`, replacing an older pin, and
/// both programs under their object's hash (see `reuse`).
pub fn pin_program(shield: &mut Shield, dir: &Path) -> Result<(), KernelError> {
    let path = dir.join(PROG_PIN);
    remove_file(&path)?;
    shield
        .program()
        .pin(&path)
        .map_err(|source| KernelError::Pin {
            what: "the program",
            path,
            source,
        })?;
    shield.pin_object_programs(dir)
}

/// Whether `dir` holds pinned ban maps: a previous daemon's, still
/// enforcing, which a load adopts (an earlier version's per-family ones
/// included: their bans are read by [`obsolete_bans`]).
pub fn has_maps(dir: &Path) -> bool {
    dir.join(MapId::Bans.name()).exists()
        || names::OBSOLETE_BANS.iter().any(|(n, _)| dir.join(n).exists())
}

/// The bans in the per-family ban maps an earlier version pinned under
/// `dir` (`names::OBSOLETE_BANS`), with their expiries; empty if there
/// are none. A pin whose key or value size is not what that version wrote
/// is refused with an error naming it (nothing is read from it).
pub fn obsolete_bans(dir: &Path) -> Result<Vec<(IpNet, u64)>, KernelError> {
    let mut out = Vec::new();
    for (name, key_size) in names::OBSOLETE_BANS {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let bad = |message: String| KernelError::PinnedMap { path: path.clone(), message };
        let data = aya::maps::MapData::from_pin(&path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let info = data.info().map_err(|e| bad(format!("cannot read its info: {e}")))?;
        let (ks, vs) = (info.key_size() as usize, info.value_size() as usize);
        if ks != key_size || vs != size_of::<BanValue>() {
            return Err(bad(format!(
                "key {ks} and value {vs} bytes, an earlier shieldd's ban map has {key_size} and {}",
                size_of::<BanValue>()
            )));
        }
        scan_fd(data.fd().as_fd(), ks, vs, |k, v| {
            if let Some(net) = obsolete_ban_net(k) {
                out.push((net, u64::from_ne_bytes(v[..8].try_into().expect("8 bytes"))));
            }
        })
        .map_err(|e| bad(format!("reading it failed: {e}")))?;
    }
    Ok(out)
}

/// Removes the pins of the maps earlier versions made that this one no
/// longer has (`names::OBSOLETE_BANS`); once the program that used them is
/// replaced, the kernel frees them. Returns the names removed.
pub fn unpin_obsolete(dir: &Path) -> Result<Vec<&'static str>, KernelError> {
    let mut removed = Vec::new();
    for (name, _) in names::OBSOLETE_BANS {
        let path = dir.join(name);
        if path.exists() {
            remove_file(&path)?;
            removed.push(name);
        }
    }
    Ok(removed)
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
    pub fn take(dir: &Path) -> Result<PinSnapshot, KernelError> {
        let mut snap = PinSnapshot {
            dir: dir.to_path_buf(),
            existed: false,
            entries: Default::default(),
        };
        let Some(rd) = read_dir(dir)? else {
            return Ok(snap);
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
pub fn remove_all(dir: &Path) -> Result<Removed, KernelError> {
    let mut removed = Removed::default();
    for l in pinned_links(dir)? {
        l.detach()?;
        removed.links.push(l.iface);
    }
    let Some(rd) = read_dir(dir)? else {
        return Ok(removed);
    };
    for entry in rd {
        let path = entry.map_err(io_err(dir))?.path();
        std::fs::remove_file(&path).map_err(io_err(&path))?;
        removed.other += 1;
    }
    std::fs::remove_dir(dir).map_err(io_err(dir))?;
    Ok(removed)
}

/// Loads `shield`'s tc ingress program onto its maps ([`Shield::load_tc`]).
/// With `pin_dir` the maps are the pins there. Without one (tests,
/// benchmarks) they are pinned for the load in a private directory under
/// /sys/fs/bpf, which is removed again whatever happens: afterwards both
/// programs hold the maps, and nothing is left in bpffs.
pub fn load_tc(shield: &mut Shield, pin_dir: Option<&Path>) -> Result<(), KernelError> {
    if let Some(dir) = pin_dir {
        return shield.load_tc(dir);
    }
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = Path::new(BPFFS_ROOT).join(format!("shield-tc-load-{}-{n}", std::process::id()));
    prepare_dir(&dir)?;
    let private = PinSnapshot {
        dir: dir.clone(),
        existed: false,
        entries: Default::default(),
    };
    let loaded = shield
        .maps
        .pin_all(&dir)
        .and_then(|()| shield.load_tc(&dir));
    private.roll_back();
    loaded
}
