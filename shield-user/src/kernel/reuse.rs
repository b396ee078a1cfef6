//! Reusing the programs an earlier daemon pinned, so that a restart of the
//! same build skips the verifier (about 0.6 CPU-s each start).
//!
//! Beside `prog`, a start pins its XDP program and its egress classifier a
//! second time, under names that carry a hash of the object they were
//! loaded from: `prog_xdp_<hash>` and `prog_egress_<hash>`. A start whose
//! embedded object has the same hash, and whose maps are the very maps
//! those programs use (adopted, not made anew), runs them as they are;
//! anything else (another build, a map created again, a pin that cannot be
//! opened) loads and verifies the object, and the attach step swaps the new
//! program into each link atomically, as before.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use aya::programs::{SchedClassifier, Xdp};
use aya_obj::programs::XdpAttachType;

use super::{read_dir, remove_file, KernelError};
use crate::text::chain;

const XDP_PREFIX: &str = "prog_xdp_";
const EGRESS_PREFIX: &str = "prog_egress_";

/// The pinned programs a start runs instead of loading its own.
pub(super) struct Reused {
    pub xdp: Xdp,
    pub egress: SchedClassifier,
}

/// A hash of the object's bytes, as 16 hex digits. Not a security check
/// (whoever can write the pin directory is root): it tells builds apart.
/// std's SipHash with its fixed keys; a different Rust release may hash
/// differently, which only costs one verifier run.
pub(super) fn object_hash(object: &[u8]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    object.hash(&mut h);
    format!("{:016x}", h.finish())
}

fn pins(dir: &Path, hash: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{XDP_PREFIX}{hash}")),
        dir.join(format!("{EGRESS_PREFIX}{hash}")),
    )
}

/// The programs pinned for the object `hash` under `dir`, if both are
/// there and use only maps in `map_ids` (the maps this start holds);
/// `None` (with the reason logged) when the object has to be loaded.
pub(super) fn pinned(dir: &Path, hash: &str, map_ids: &[u32]) -> Option<Reused> {
    let (xdp_pin, egress_pin) = pins(dir, hash);
    if !xdp_pin.exists() || !egress_pin.exists() {
        return None;
    }
    match open(&xdp_pin, &egress_pin, map_ids) {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(pin_path = %dir.display(), "not reusing the pinned programs: {why}; loading them again");
            None
        }
    }
}

fn open(xdp_pin: &Path, egress_pin: &Path, map_ids: &[u32]) -> Result<Option<Reused>, String> {
    let xdp = Xdp::from_pin(xdp_pin, XdpAttachType::Interface)
        .map_err(|e| format!("{}: {}", xdp_pin.display(), chain(&e)))?;
    let egress = SchedClassifier::from_pin(egress_pin)
        .map_err(|e| format!("{}: {}", egress_pin.display(), chain(&e)))?;
    for (pin, info) in [(xdp_pin, xdp.info()), (egress_pin, egress.info())] {
        let info = info.map_err(|e| format!("{}: {}", pin.display(), chain(&e)))?;
        let used = info
            .map_ids()
            .map_err(|e| format!("{}: {}", pin.display(), chain(&e)))?
            .ok_or_else(|| "the kernel does not list a program's maps".to_string())?;
        if let Some(id) = used.iter().find(|id| !map_ids.contains(id) && !object_constants(**id)) {
            // A map was made anew (its pin was gone): the pinned program
            // still writes the old one.
            tracing::info!(pin = %pin.display(), map_id = id, "the pinned program uses a map this start did not adopt; loading the object");
            return Ok(None);
        }
    }
    Ok(Some(Reused { xdp, egress }))
}

/// Whether map `id` holds the object's read-only data (`.rodata*`, which
/// aya creates anew at each load and freezes): the same bytes in the
/// pinned program's copy, as its object is this one.
fn object_constants(id: u32) -> bool {
    aya::maps::MapInfo::from_id(id)
        .ok()
        .is_some_and(|i| i.name_as_str().is_some_and(|n| n.starts_with(".rodata")))
}

/// Where the programs of a freshly loaded object with `hash` are pinned
/// (see [`super::Shield::pin_object_programs`]), the pins of other
/// objects removed (their links run the new programs by now) and any
/// stale pin at those names too.
pub(super) fn fresh_pins(dir: &Path, hash: &str) -> Result<(PathBuf, PathBuf), KernelError> {
    remove_others(dir, hash)?;
    let (xdp_pin, egress_pin) = pins(dir, hash);
    remove_file(&xdp_pin)?;
    remove_file(&egress_pin)?;
    Ok((xdp_pin, egress_pin))
}

/// Removes the pins of programs loaded from objects other than `hash`.
fn remove_others(dir: &Path, hash: &str) -> Result<(), KernelError> {
    let Some(rd) = read_dir(dir)? else {
        return Ok(());
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let other = [XDP_PREFIX, EGRESS_PREFIX]
            .iter()
            .any(|p| name.strip_prefix(p).is_some_and(|h| h != hash));
        if other {
            remove_file(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_tell_objects_apart_and_name_pins_bpffs_accepts() {
        let a = object_hash(b"object one");
        assert_eq!(a, object_hash(b"object one"));
        assert_ne!(a, object_hash(b"object two"));
        assert_eq!(a.len(), 16);
        let (x, e) = pins(Path::new("/sys/fs/bpf/shield"), &a);
        for p in [x, e] {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            assert!(!name.contains('.') && name.ends_with(&a), "{name}");
        }
    }
}
