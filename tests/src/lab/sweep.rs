//! Leftovers of a lab whose driver was killed outright (SIGKILL, a crash):
//! its drop guards never ran. The demo and the bench call [`stale`] first:
//! it removes namespaces named by `netns::Netns` (`shl<pid>-...`) and lab
//! pins (`/sys/fs/bpf/sipshield-lab-<pid>-...`) whose creating process no
//! longer exists, killing any process still inside such a namespace
//! (Kamailio workers, sipp) first. Nothing of a running process is touched.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// What was removed.
#[derive(Debug, Default)]
pub struct Swept {
    pub namespaces: Vec<String>,
    pub processes: usize,
    pub pins: Vec<String>,
}

fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub fn stale() -> Swept {
    let mut out = Swept::default();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner_pid(&name, "shl") else {
                continue;
            };
            if alive(pid) {
                continue;
            }
            if let Ok(meta) = std::fs::metadata(e.path()) {
                out.processes += kill_inside(meta.ino());
            }
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            out.namespaces.push(name);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner_pid(&name, &format!("{}-", super::shieldd::LAB_PINS)) else {
                continue;
            };
            if !alive(pid) && shield::kernel::remove_all(&e.path()).is_ok() {
                out.pins.push(name);
            }
        }
    }
    out
}

/// SIGKILLs every process whose network namespace has inode `ino`.
fn kill_inside(ino: u64) -> usize {
    let mut n = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        if std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino) {
            // SAFETY: signalling a process left in a dead lab's namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            n += 1;
        }
    }
    n
}

impl Swept {
    /// One line for the user, or `None` when nothing was left over.
    pub fn describe(&self) -> Option<String> {
        if self.namespaces.is_empty() && self.pins.is_empty() {
            return None;
        }
        Some(format!(
            "removed the leftovers of an earlier run that was killed: {} namespace(s), {} process(es), {} pin dir(s)",
            self.namespaces.len(),
            self.processes,
            self.pins.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_owner_from_the_name() {
        assert_eq!(super::owner_pid("shl1234-0-sbc", "shl"), Some(1234));
        assert_eq!(
            super::owner_pid("sipshield-lab-77-3", "sipshield-lab-"),
            Some(77)
        );
        assert_eq!(super::owner_pid("other", "shl"), None);
    }
}
