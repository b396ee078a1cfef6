// The items both crate roots share (`main.rs`: the XDP object;
// `tc_main.rs`: the same decision on tc ingress), included by each so a
// module added here is in both objects. Only `crate::hook` differs.

mod auth;
#[cfg(target_arch = "bpf")]
mod calls;
#[cfg(target_arch = "bpf")]
mod conn;
#[cfg(target_arch = "bpf")]
mod dest;
#[cfg(target_arch = "bpf")]
mod egress;
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
mod tcp;
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
