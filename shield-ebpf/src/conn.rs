//! Whether a TCP segment belongs to a connection this host has
//! established: what lets a TCP INVITE open a call (SPEC §13) without
//! trusting its source address.

use aya_ebpf::{
    bindings::{
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as TupleV4,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 as TupleV6, BPF_F_CURRENT_NETNS,
        BPF_TCP_ESTABLISHED,
    },
    helpers::{bpf_sk_lookup_tcp, bpf_sk_release},
};
use shield_common::FAMILY_V4;

use crate::hook::RawCtx;
use crate::maps::SCRATCH;

/// 1 if the TCP segment whose addresses and ports `dest::shield_invite_at`
/// left in `SCRATCH.invite` belongs to a connection this host has
/// established (the kernel's socket table, `bpf_sk_lookup_tcp`, Linux
/// 4.20), else 0. The handshake proves the source address: a segment
/// forged from someone else's address has no such connection (the stack
/// drops it), so it must not open a call that holds its victim's slot.
/// A listener or a half-open connection (a SYN, forgeable too) is no
/// proof; neither is data on the handshake's last ACK or in a SYN (TCP
/// Fast Open): those calls are not tracked.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_tcp_established(ctx: *mut RawCtx) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let inv = unsafe { &(*scratch).invite };
    // SAFETY: a plain C struct of integers: all zeros is a value.
    let mut t: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    // The packet's view: its source is the remote end (network order).
    let (sport, dport) = (inv.sport.to_be(), inv.dport.to_be());
    // Addresses as the tuple holds them: 32-bit words in network order.
    let words = |a: &[u8; 16]| {
        let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        [w(0), w(4), w(8), w(12)]
    };
    let (saddr, daddr) = (words(&inv.src), words(&inv.dst));
    let size = if inv.family == FAMILY_V4 {
        let (saddr, daddr) = (saddr[0], daddr[0]);
        t.__bindgen_anon_1.ipv4 = TupleV4 {
            saddr,
            daddr,
            sport,
            dport,
        };
        core::mem::size_of::<TupleV4>()
    } else {
        t.__bindgen_anon_1.ipv6 = TupleV6 {
            saddr,
            daddr,
            sport,
            dport,
        };
        core::mem::size_of::<TupleV6>()
    };
    // SAFETY: `ctx` is the program's context and `t` an initialised tuple
    // of `size` bytes on this frame; the returned socket is released below.
    let sk = unsafe {
        bpf_sk_lookup_tcp(
            ctx.cast(),
            &mut t,
            size as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return 0;
    }
    // SAFETY: a socket the lookup returned, referenced until the release.
    let state = unsafe { (*sk).state };
    // SAFETY: the reference the lookup took, released once.
    unsafe { bpf_sk_release(sk.cast()) };
    (state == BPF_TCP_ESTABLISHED as u32) as u64
}
