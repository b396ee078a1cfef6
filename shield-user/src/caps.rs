//! Does this process have the capabilities the daemon needs? Asked up
//! front with `capget(2)` (the `caps` crate), so a missing one is one clear line instead of an
//! `EPERM` from deep inside the loader.

use std::fmt;

use caps::{CapSet, Capability};

pub const CAP_NET_ADMIN: u32 = Capability::CAP_NET_ADMIN as u32;
pub const CAP_SYS_ADMIN: u32 = Capability::CAP_SYS_ADMIN as u32;
pub const CAP_PERFMON: u32 = Capability::CAP_PERFMON as u32;
pub const CAP_BPF: u32 = Capability::CAP_BPF as u32;

/// The effective capability set of this process, one bit per capability
/// number (`None` if `capget` itself fails, which only happens under exotic
/// seccomp policies).
pub fn effective() -> Option<u64> {
    let set = caps::read(None, CapSet::Effective).ok()?;
    Some(set.iter().fold(0u64, |bits, c| bits | (1u64 << c.index())))
}

/// Capabilities the daemon lacks, by name (empty: all there).
#[derive(Debug, PartialEq, Eq)]
pub struct Missing(pub Vec<&'static str>);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.join(", "))
    }
}

/// What the daemon needs from `set`: CAP_BPF (load programs, maps, pins)
/// and CAP_NET_ADMIN (attach XDP); CAP_PERFMON lets the verifier accept the
/// program's pointer arithmetic. Kernels before 5.8 have neither CAP_BPF nor
/// CAP_PERFMON and want CAP_SYS_ADMIN, which covers both.
pub fn missing_for_daemon(set: u64) -> Missing {
    let has = |c: u32| set & (1u64 << c) != 0;
    let sys_admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !sys_admin {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_PERFMON) && !sys_admin {
        missing.push("CAP_PERFMON");
    }
    Missing(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs() {
        let bit = |c: u32| 1u64 << c;
        assert!(
            missing_for_daemon(bit(CAP_BPF) | bit(CAP_NET_ADMIN) | bit(CAP_PERFMON))
                .0
                .is_empty()
        );
        assert!(missing_for_daemon(bit(CAP_SYS_ADMIN) | bit(CAP_NET_ADMIN))
            .0
            .is_empty());
        assert_eq!(
            missing_for_daemon(bit(CAP_BPF)).0,
            vec!["CAP_NET_ADMIN", "CAP_PERFMON"]
        );
        assert_eq!(
            missing_for_daemon(0).to_string(),
            "CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON"
        );
    }

    #[test]
    fn capget_answers() {
        assert!(effective().is_some());
    }

    #[test]
    fn capability_numbers_are_the_kernel_s() {
        assert_eq!((CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF), (12, 21, 38, 39));
    }
}
