//! SIP Shield's XDP program: classifies every frame on the attached interface
//! and drops floods, scanners and banned sources before the stack sees them.
//!
//! The verdict order is SPEC.md §2. All policy lives in maps written by
//! `shieldd`, so nothing here is recompiled or reloaded when policy changes.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The bpf target has no `compare_exchange` (its spec says `atomic-cas: false`)
// although the kernel has BPF_CMPXCHG; the intrinsic reaches it.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod dest;
#[cfg(target_arch = "bpf")]
mod egress;
#[cfg(target_arch = "bpf")]
mod lines;
#[cfg(target_arch = "bpf")]
mod prog;
#[cfg(target_arch = "bpf")]
mod sample;
#[cfg(target_arch = "bpf")]
mod txn;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
