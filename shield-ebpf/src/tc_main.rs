//! SIP Shield's decision as a tc ingress program on the socket buffer, for
//! drivers without native XDP (issue 22 item 4): the same modules as
//! `main.rs` (the XDP object), with `hook_tc.rs` as `crate::hook`. The
//! object also holds the egress classifier and the call-expiry program
//! (they come with the modules); user space loads only `shield_tc` from
//! it, onto the XDP object's maps.
//!
//! The verdict order is SPEC.md §2. All policy lives in maps written by
//! `shieldd`, so nothing here is recompiled or reloaded when policy changes.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The bpf target has no `compare_exchange` (its spec says `atomic-cas: false`)
// although the kernel has BPF_CMPXCHG; the intrinsic reaches it.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

// The hook this object's decision runs on: tc ingress.
#[path = "hook_tc.rs"]
mod hook;

include!("roots.rs");

#[cfg(not(target_arch = "bpf"))]
fn main() {}
