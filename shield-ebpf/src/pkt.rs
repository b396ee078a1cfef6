//! The frame: bounds-checked access, the L2/L3 parse both programs share,
//! and the source's key.

use core::mem::size_of;

use aya_ebpf::bindings::__sk_buff;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
    vlan::VlanHdr,
};
use shield_common::{
    sip::HEAD_LEN, src_key_v4, Method, Policy, Reason, SrcKey, MAX_L4_OFFSET, MAX_V6_EXT,
};

use crate::hook::{Ctx, RawCtx};

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
/// Not a transport we look at (or one we could not reach).
pub(crate) const IPPROTO_NONE: u8 = 59;
/// Masks a laundered transport offset (at most `MAX_L4_OFFSET`) back into
/// a range the verifier knows; exact only if `MAX_L4_OFFSET` is a power of
/// two.
pub(crate) const L4_OFFSET_MASK: usize = 2 * MAX_L4_OFFSET - 1;
const _: () = assert!(MAX_L4_OFFSET.is_power_of_two());
/// Payload offsets beyond this cannot occur (see `MAX_L4_OFFSET`).
pub(crate) const MAX_PAYLOAD_OFFSET: usize = 2 * MAX_L4_OFFSET + 8;
/// `Outcome::method` of anything but a UDP SIP request.
pub(crate) const NO_METHOD: usize = Method::COUNT;
/// Masks a laundered method index (below `Method::COUNT`) back into a range
/// the verifier knows: all ones, so every index survives it.
pub(crate) const METHOD_MASK: usize = Method::COUNT.next_power_of_two() - 1;
const _: () = assert!(Method::COUNT - 1 <= METHOD_MASK && (METHOD_MASK + 1).is_power_of_two());

/// The frame: `[data, end)`. Passed by value (two packet pointers) into the
/// non-inlined scan functions, where the verifier tracks them as such.
#[derive(Clone, Copy)]
pub(crate) struct Pkt {
    pub(crate) data: usize,
    pub(crate) end: usize,
}

impl Pkt {
    #[inline(always)]
    pub(crate) fn new(ctx: &Ctx) -> Pkt {
        Pkt {
            data: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// The frame of a global function's context argument (`xdp_md` and
    /// `__sk_buff` name their packet pointers alike).
    #[inline(always)]
    pub(crate) fn of(ctx: *mut RawCtx) -> Pkt {
        // SAFETY: the program's context, valid for the whole run.
        unsafe {
            Pkt {
                data: (*ctx).data as usize,
                end: (*ctx).data_end as usize,
            }
        }
    }

    /// The linear part of a socket buffer (what direct packet access sees).
    #[inline(always)]
    pub(crate) fn skb(skb: *mut __sk_buff) -> Pkt {
        // SAFETY: the program's context, valid for the whole run.
        unsafe {
            Pkt {
                data: (*skb).data as usize,
                end: (*skb).data_end as usize,
            }
        }
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.end - self.data
    }

    /// The one bounds check: a pointer to a `T` at `off` bytes into the
    /// frame, if the whole `T` is inside it.
    #[inline(always)]
    pub(crate) fn ptr_at<T>(&self, off: usize) -> Option<*const T> {
        if self.data + off + size_of::<T>() > self.end {
            return None;
        }
        Some((self.data + off) as *const T)
    }

    /// The first `HEAD_LEN` payload bytes at `off` into `head`: one block
    /// copy when the frame has them (one check), else byte by byte with
    /// the rest zero (a keepalive, a runt).
    #[inline(always)]
    pub(crate) fn copy_head(&self, off: usize, head: &mut [u8; HEAD_LEN]) {
        if let Some(h) = self.ptr_at::<[u8; HEAD_LEN]>(off) {
            // SAFETY: inside the frame: `ptr_at` checked all HEAD_LEN bytes.
            unsafe { core::ptr::copy_nonoverlapping(h.cast::<u8>(), head.as_mut_ptr(), HEAD_LEN) };
            return;
        }
        *head = [0; HEAD_LEN];
        for (i, h) in head.iter_mut().enumerate() {
            match self.byte_at(off + i) {
                Some(b) => *h = b,
                None => break,
            }
        }
    }

    /// One byte at `off`. The size is read through a volatile load:
    /// otherwise LLVM rewrites `p + 1 > end` into `end > p`, a form from
    /// which the verifier learns nothing about the byte at `p`.
    #[inline(always)]
    pub(crate) fn byte_at(&self, off: usize) -> Option<u8> {
        // SAFETY: a read of a local constant.
        let one: usize = unsafe { core::ptr::read_volatile(&1) };
        let p = self.data + off;
        if p + one > self.end {
            return None;
        }
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        Some(unsafe { *(p as *const u8) })
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Src {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// The network and transport layer as far as the verdict (and the egress
/// classifier) needs them.
pub(crate) struct Frame {
    /// Offset of the IP header (read again by `dest`).
    pub(crate) l3: usize,
    pub(crate) src: Src,
    /// Read by the egress classifier only (dead code in the XDP program).
    pub(crate) dst: Src,
    pub(crate) proto: u8,
    /// Offset of the transport header.
    pub(crate) l4: usize,
    /// A fragment other than the first: no ports.
    pub(crate) later_fragment: bool,
    /// The IPv6 extension chain goes on past the `MAX_V6_EXT` headers we
    /// walk: the transport is out of reach (see `out_of_reach`).
    pub(crate) unwalked: bool,
}

/// What the verdict function found out besides the reason.
pub(crate) struct Outcome {
    pub(crate) reason: Reason,
    /// The method index of a UDP SIP request, for the per-method counters;
    /// `NO_METHOD` otherwise. An index, not a `Method`: see `decide`.
    pub(crate) method: usize,
}

impl Outcome {
    pub(crate) const fn of(reason: Reason) -> Outcome {
        Outcome {
            reason,
            method: NO_METHOD,
        }
    }
}

/// Parses L2/L3 and finds the transport header. `None`: not IP, or an L2/L3
/// header is truncated or garbled — the frame passes untouched.
#[inline(always)]
pub(crate) fn parse(pkt: &Pkt) -> Option<Frame> {
    let eth: *const EthHdr = pkt.ptr_at(0)?;
    // SAFETY: inside the frame: the bounds check above covers every byte read.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut off = EthHdr::LEN;
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner).
    for _ in 0..2 {
        if ether_type == EtherType::Ieee8021q as u16 || ether_type == EtherType::Ieee8021ad as u16 {
            let vlan: *const VlanHdr = pkt.ptr_at(off)?;
            // SAFETY: inside the frame: the bounds check above covers every byte read.
            ether_type = unsafe { (*vlan).ether_type };
            off += VlanHdr::LEN;
        }
    }
    if ether_type == EtherType::Ipv4 as u16 {
        parse_v4(pkt, off)
    } else if ether_type == EtherType::Ipv6 as u16 {
        parse_v6(pkt, off)
    } else {
        None
    }
}

/// The IPv4 header at `off`: honours IHL (options).
#[inline(always)]
fn parse_v4(pkt: &Pkt, off: usize) -> Option<Frame> {
    let ip: *const Ipv4Hdr = pkt.ptr_at(off)?;
    // SAFETY: inside the frame: `ptr_at` checked the whole header.
    let (vihl, frags, proto, src, dst) = unsafe {
        (
            (*ip).vihl,
            (*ip).frags,
            (*ip).proto,
            (*ip).src_addr,
            (*ip).dst_addr,
        )
    };
    if vihl >> 4 != 4 {
        return None;
    }
    // IHL counts 32-bit words and covers the options.
    let hlen = ((vihl & 0x0f) as usize) * 4;
    if hlen < Ipv4Hdr::LEN {
        return None;
    }
    // The options must be in the frame.
    if pkt.data + off + hlen > pkt.end {
        return None;
    }
    let frag_off = u16::from_be_bytes(frags) & 0x1fff;
    Some(Frame {
        l3: off,
        src: Src::V4(src),
        dst: Src::V4(dst),
        proto,
        l4: off + hlen,
        later_fragment: frag_off != 0,
        // IHL reaches 60 bytes at most.
        unwalked: false,
    })
}

/// The IPv6 header at `off` and the common extension headers after it.
#[inline(always)]
fn parse_v6(pkt: &Pkt, off: usize) -> Option<Frame> {
    let ip: *const Ipv6Hdr = pkt.ptr_at(off)?;
    let (vcf0, mut next, src, dst) =
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        unsafe { ((*ip).vcf[0], (*ip).next_hdr, (*ip).src_addr, (*ip).dst_addr) };
    if vcf0 >> 4 != 6 {
        return None;
    }
    let mut l4 = off + Ipv6Hdr::LEN;
    let mut later_fragment = false;
    let mut unwalked = false;
    // One round more than MAX_V6_EXT: the last only looks at `next`.
    // (Decided by the control flow, not by testing `next` again after
    // the loop: that re-test would split every exit into two verifier
    // states, one of them impossible.)
    for i in 0..=MAX_V6_EXT {
        match next {
            0 | 43 | 44 | 60 if i == MAX_V6_EXT => {
                // The chain goes on after MAX_V6_EXT headers. A header
                // cut short above returned `None` (pass: the kernel's
                // stack drops a truncated packet too), but this one is
                // complete as far as we know, and the kernel's stack
                // walks any chain to its end: see `out_of_reach`.
                unwalked = true;
                break;
            }
            // Hop-by-hop, routing, destination options: length in 8-octet units.
            0 | 43 | 60 => {
                let h: *const [u8; 2] = pkt.ptr_at(l4)?;
                // SAFETY: inside the frame: the bounds check above covers every byte read.
                let (nh, len) = unsafe { ((*h)[0], (*h)[1]) };
                next = nh;
                l4 += (len as usize + 1) * 8;
            }
            44 => {
                let h: *const [u8; 4] = pkt.ptr_at(l4)?;
                // SAFETY: inside the frame: the bounds check above covers every byte read.
                let (nh, hi, lo) = unsafe { ((*h)[0], (*h)[2], (*h)[3]) };
                next = nh;
                l4 += 8;
                if u16::from_be_bytes([hi, lo]) >> 3 != 0 {
                    later_fragment = true;
                    break;
                }
            }
            _ => break,
        }
    }
    Some(Frame {
        l3: off,
        src: Src::V6(src),
        dst: Src::V6(dst),
        proto: next,
        l4,
        later_fragment,
        unwalked,
    })
}

#[inline(always)]
pub(crate) fn src_key(src: &Src, p: &Policy) -> SrcKey {
    match src {
        Src::V4(a) => src_key_v4(*a),
        Src::V6(a) => shield_common::mask_v6(a, p.ipv6_prefix),
    }
}
