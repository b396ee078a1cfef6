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

mod auth;
// The hook this object's decision runs on: XDP (`tc_main.rs` is the same
// modules on tc ingress).
#[cfg(target_arch = "bpf")]
mod calls;
#[cfg(target_arch = "bpf")]
mod conn;
#[cfg(target_arch = "bpf")]
mod dest;
#[cfg(target_arch = "bpf")]
mod egress;
#[path = "hook_xdp.rs"]
mod hook;
#[cfg(target_arch = "bpf")]
mod lines;
#[cfg(target_arch = "bpf")]
mod lists;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod pkt;
#[cfg(target_arch = "bpf")]
mod sample;
#[cfg(target_arch = "bpf")]
mod scratch;
#[cfg(target_arch = "bpf")]
mod source;
#[cfg(target_arch = "bpf")]
mod txn;
#[cfg(target_arch = "bpf")]
mod ua;
#[cfg(target_arch = "bpf")]
mod walk;
#[cfg(target_arch = "bpf")]
mod wants;
#[cfg(target_arch = "bpf")]
mod xdp;

// User space pins the maps listed in `names::ALL`: the same set as the
// object file declares.
#[cfg(target_arch = "bpf")]
const _: () = assert!(shield_common::names::are_all_in(&[
    maps::MAP_NAMES,
    sample::MAP_NAMES,
    calls::MAP_NAMES,
    auth::MAP_NAMES,
]));

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
// SAFETY: the section name the loader expects; the symbol is unique.
#[unsafe(link_section = "license")]
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
