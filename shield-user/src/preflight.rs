//! What `shieldd --check` can see of the host beyond the file: interfaces,
//! the control group, the pin path. Without side effects: nothing is
//! mounted, created, loaded, attached or bound, so it runs as any user.
//! What it cannot check without root is named in [`NEEDS_ROOT`].

use std::path::Path;

use crate::config::Config;
use crate::control::server::group_id;
use crate::kernel;

/// Checks `--check` leaves to the real start, which needs root.
pub const NEEDS_ROOT: &str =
    "not checked (they need root and side effects): loading the XDP program, attaching it, \
     mounting bpffs, writing state_dir, binding the metrics address";

/// One problem: the config key it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Every problem found; empty when the host looks ready for `cfg`.
pub fn check(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, iface) in cfg.shield.interfaces.iter().enumerate() {
        if kernel::ifindex(iface).is_none() {
            out.push(Problem {
                key: format!("shield.interfaces[{i}]"),
                message: format!("no interface {iface:?} in this network namespace"),
            });
        }
    }
    if let Err(e) = group_id(&cfg.control.group) {
        out.push(Problem {
            key: "control.group".into(),
            message: e.to_string(),
        });
    }
    if let Some(message) = pin_path_problem(&cfg.shield.pin_path) {
        out.push(Problem {
            key: "shield.pin_path".into(),
            message,
        });
    }
    out
}

/// Why pins cannot live at `dir`, if they cannot.
fn pin_path_problem(dir: &Path) -> Option<String> {
    if !dir.is_absolute() {
        return Some(format!("{} is not an absolute path", dir.display()));
    }
    kernel::check_dir(dir).err().map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_paths_off_bpffs_are_refused_with_a_hint_that_names_the_default() {
        let why = pin_path_problem(Path::new("/tmp/shield-pins")).expect("not bpffs");
        assert!(why.contains("/sys/fs/bpf/shield"), "{why}");
        assert!(!why.contains("mount -t bpf bpf /tmp"), "{why}");
        assert!(pin_path_problem(Path::new("relative/pins")).is_some());
        assert!(pin_path_problem(Path::new("/sys/fs/bpf/shield")).is_none());
    }
}
