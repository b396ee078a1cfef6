//! SIP Shield's XDP program: classifies every frame on the attached interface
//! and drops floods, scanners and banned sources before the stack sees them.
//! (`tc_main.rs` builds the same decision as a tc ingress program.)
//!
//! The verdict order is SPEC.md §2. All policy lives in maps written by
//! `shieldd`, so nothing here is recompiled or reloaded when policy changes.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The bpf target has no `compare_exchange` (its spec says `atomic-cas: false`)
// although the kernel has BPF_CMPXCHG; the intrinsic reaches it.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

// The hook this object's decision runs on: XDP (`tc_main.rs` is the same
// modules on tc ingress).
#[path = "hook_xdp.rs"]
mod hook;

include!("roots.rs");

#[cfg(not(target_arch = "bpf"))]
fn main() {}
