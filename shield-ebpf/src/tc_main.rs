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

mod auth;
// The hook this object's decision runs on: tc ingress.
#[cfg(target_arch = "bpf")]
mod calls;
#[cfg(target_arch = "bpf")]
mod conn;
#[cfg(target_arch = "bpf")]
mod dest;
#[cfg(target_arch = "bpf")]
mod egress;
#[path = "hook_tc.rs"]
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
