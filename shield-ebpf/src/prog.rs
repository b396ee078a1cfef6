use core::{
    intrinsics::{atomic_cxchg, AtomicOrdering::Relaxed},
    mem::size_of,
};

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        xdp_md, __sk_buff, BPF_F_NO_PREALLOC,
    },
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use crate::lines::{self, LINE_BAD, LINE_FOUND, LINE_OTHER};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};
use shield_common::{
    default_size, dest::{self, DestPolicy, DestRule, DestSource, URI_WINDOW}, gcra, names, verified_hint,
    sip::{self, UaKey, UaLine, HEAD_LEN, UA_MAX_U_LINES, UA_WINDOW},
    sip_stats_slot, src_key_v4, stats_index, BanValue, Bucket, Budget, Counter, Method,
    OffenderEvent, PayloadKind, RefusalEvent, Policy, Reason, SrcKey, SrcState, Verdict, Verified, ACL_ALLOW,
    ACL_DENY, FAMILY_V4, FAMILY_V6, F_ALLOW_V4, F_ALLOW_V6, F_BAN_NETS_V4, F_BAN_NETS_V6,
    F_DENY_V4, F_DENY_V6, F_DROP_MALFORMED, F_ENFORCE, F_SCAN_UA, F_SCOPE_SIP, F_TRUNK_ONLY,
    F_VERIFY_NETS_V4, F_VERIFY_NETS_V6, MAX_IFACE_SLOTS, MAX_IFINDEX, MAX_L4_OFFSET, MAX_V6_EXT,
    PORTS_ENTRIES, PORT_TCP, PORT_UDP, RESPONSES_ENTRIES, SIP_STATS_ENTRIES, STATS_ENTRIES,
    txn::TxnIds, Txn, TxnKey, VERIFIED_HINT_WORDS,
};

/// Per-CPU scratch space for the header searches (see `find_line`): off
/// the 512-byte stack. The XDP program has `SCRATCH`, the egress
/// classifier `EGRESS_SCRATCH`.
#[repr(C)]
pub(crate) struct Scratch {
    /// Offsets are laundered through here.
    pub(crate) off: u64,
    /// The candidate header line.
    pub(crate) win: [u8; UA_WINDOW],
    /// The User-Agent product token found, the scanner map's key.
    pub(crate) ua: UaKey,
    /// The Call-ID and CSeq found (see `txn`).
    pub(crate) ids: TxnIds,
    /// The first payload bytes, for the first-line classifier.
    pub(crate) head: [u8; HEAD_LEN],
    /// The Request-URI of an initial INVITE (see `dest`).
    pub(crate) uri: [u8; URI_WINDOW],
    /// The INVITE's addresses, for its 403 (see `dest`).
    pub(crate) invite: crate::dest::Invite,
    /// The INVITE's dialled number (see `dest`).
    pub(crate) dialled: dest::Dialled,
    /// A refusal report being built (see `dest`).
    pub(crate) event: RefusalEvent,
    /// A new source's state: never written, so always zero (see `source`).
    pub(crate) new_source: SrcState,
}

/// Declares the maps, and `MAP_NAMES`: their names as the object file has
/// them (a map is named after its static). User space pins the maps listed
/// in `names::ALL`; an assertion below keeps the two the same set.
macro_rules! maps {
    ($(static $name:ident: $ty:ty = $init:expr;)*) => {
        $(
            #[map]
            pub(crate) static $name: $ty = $init;
        )*
        const MAP_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

maps! {
    static POLICY: Array<Policy> = Array::with_max_entries(1, 0);
    static PORTS: Array<u8> = Array::with_max_entries(PORTS_ENTRIES, 0);
    static IFACE_SLOT: Array<u32> = Array::with_max_entries(MAX_IFINDEX, 0);

    static ALLOW_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(default_size::ALLOW, 0);
    static ALLOW_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(default_size::ALLOW, 0);
    static DENY_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(default_size::DENY, 0);
    static DENY_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(default_size::DENY, 0);

    // Not preallocated: the program only reads these maps (and writes into
    // entries that exist); every ban is added by user space. Preallocation
    // pays off only for inserts by the program, and costs ~90 MiB per
    // million-slot map whether it holds one ban or a million.
    static BANS_V4: HashMap<[u8; 4], BanValue> =
        HashMap::with_max_entries(default_size::BANS, BPF_F_NO_PREALLOC);
    static BANS_V6: HashMap<[u8; 16], BanValue> =
        HashMap::with_max_entries(default_size::BANS, BPF_F_NO_PREALLOC);
    static BAN_NETS_V4: LpmTrie<[u8; 4], BanValue> =
        LpmTrie::with_max_entries(default_size::BAN_NETS, 0);
    static BAN_NETS_V6: LpmTrie<[u8; 16], BanValue> =
        LpmTrie::with_max_entries(default_size::BAN_NETS, 0);

    static SCANNERS: HashMap<UaKey, u8> = HashMap::with_max_entries(default_size::SCANNERS, 0);
    static SOURCES: LruHashMap<SrcKey, SrcState> =
        LruHashMap::with_max_entries(default_size::SOURCES, 0);

    static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STATS_ENTRIES, 0);
    static SIP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SIP_STATS_ENTRIES, 0);
    static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
    static EVENTS: RingBuf = RingBuf::with_byte_size(default_size::EVENTS_BYTES, 0);

    // SPEC §8: sources verified by a final 2xx (learned by the egress
    // classifier, or set by the operator), keyed like `SOURCES`.
    static VERIFIED: LruHashMap<SrcKey, Verified> =
        LruHashMap::with_max_entries(default_size::VERIFIED, 0);
    static VERIFY_NETS_V4: LpmTrie<[u8; 4], Verified> =
        LpmTrie::with_max_entries(default_size::VERIFY_NETS, 0);
    static VERIFY_NETS_V6: LpmTrie<[u8; 16], Verified> =
        LpmTrie::with_max_entries(default_size::VERIFY_NETS, 0);
    static BUDGET: Array<Budget> = Array::with_max_entries(1, 0);
    static RESPONSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(RESPONSES_ENTRIES, 0);
    static EGRESS_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
    static VERIFIED_HINT: Array<u64> = Array::with_max_entries(VERIFIED_HINT_WORDS, 0);
    // SPEC §8: requests that passed and may verify their source, so a
    // final 2xx verifies only a destination that really sent one.
    static TXNS: LruHashMap<TxnKey, Txn> = LruHashMap::with_max_entries(default_size::TXNS, 0);
    // Offender reports that found the ring buffer full (per CPU).
    static EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    // SPEC §11: the destination policy, its rules (deny and allow in one
    // trie: the longest match decides), INVITEs by class and country,
    // refusals by (interface, rule), refusal reports, and the host's reply
    // and report buckets.
    static DEST_POLICY: Array<DestPolicy> = Array::with_max_entries(1, 0);
    static DEST_RULES: LpmTrie<[u8; dest::KEY_BYTES], DestRule> =
        LpmTrie::with_max_entries(default_size::DEST_RULES, 0);
    static DEST_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(dest::DEST_STATS_ENTRIES, 0);
    static DEST_REFUSED: HashMap<u64, u64> =
        HashMap::with_max_entries(default_size::DEST_REFUSED, BPF_F_NO_PREALLOC);
    static DEST_EVENTS: RingBuf = RingBuf::with_byte_size(default_size::DEST_EVENTS_BYTES, 0);
    static DEST_BUDGET: Array<Budget> = Array::with_max_entries(2, 0);
    static DEST_SOURCES: LruHashMap<SrcKey, DestSource> =
        LruHashMap::with_max_entries(default_size::DEST_SOURCES, 0);
}

const _: () = assert!(names::are_all_of(MAP_NAMES, crate::sample::MAP_NAMES));

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
/// Not a transport we look at (or one we could not reach).
const IPPROTO_NONE: u8 = 59;
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
    pub(crate) fn new(ctx: &XdpContext) -> Pkt {
        Pkt {
            data: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// The linear part of a socket buffer (what direct packet access sees).
    #[inline(always)]
    pub(crate) fn skb(skb: *mut __sk_buff) -> Pkt {
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

    /// One byte at `off`. The size is read through a volatile load:
    /// otherwise LLVM rewrites `p + 1 > end` into `end > p`, a form from
    /// which the verifier learns nothing about the byte at `p`.
    #[inline(always)]
    pub(crate) fn byte_at(&self, off: usize) -> Option<u8> {
        let one: usize = unsafe { core::ptr::read_volatile(&1) };
        let p = self.data + off;
        if p + one > self.end {
            return None;
        }
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
struct Outcome {
    reason: Reason,
    /// The method index of a UDP SIP request, for the per-method counters;
    /// `NO_METHOD` otherwise. An index, not a `Method`: see `decide`.
    method: usize,
}

impl Outcome {
    const fn of(reason: Reason) -> Outcome {
        Outcome {
            reason,
            method: NO_METHOD,
        }
    }
}

#[xdp]
pub fn shield(ctx: XdpContext) -> u32 {
    let Some(policy) = POLICY.get(0) else {
        return XDP_PASS;
    };
    let pkt = Pkt::new(&ctx);
    let out = decide(&ctx, &pkt, policy);
    let verdict = Verdict::of(out.reason, policy.has(F_ENFORCE));
    account(&ctx, &pkt, &out, verdict);
    if verdict != Verdict::Pass {
        crate::sample::dropped(&ctx, pkt.len(), out.reason as u8);
    }
    if verdict == Verdict::Drop {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

/// A counter slot from `IFACE_SLOT` (user space writes only valid ones)
/// masked into range for the verifier.
pub(crate) const IFACE_SLOT_MASK: u32 = MAX_IFACE_SLOTS - 1;
const _: () = assert!(MAX_IFACE_SLOTS.is_power_of_two());

#[inline(always)]
fn account(ctx: &XdpContext, pkt: &Pkt, out: &Outcome, verdict: Verdict) {
    let slot = match IFACE_SLOT.get(ctx.ingress_ifindex() as u32) {
        Some(s) => *s & IFACE_SLOT_MASK,
        None => 0,
    };
    if let Some(c) = STATS.get_ptr_mut(stats_index(slot, verdict, out.reason)) {
        // Per-CPU slot: no other writer.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += pkt.len() as u64;
        }
    }
    if out.method < Method::COUNT {
        if let Some(c) = SIP_STATS.get_ptr_mut(sip_stats_slot(slot, out.method as u32, verdict)) {
            unsafe { *c += 1 };
        }
    }
}

/// Parses L2/L3 and finds the transport header. `None`: not IP, or an L2/L3
/// header is truncated or garbled — the frame passes untouched.
#[inline(always)]
pub(crate) fn parse(pkt: &Pkt) -> Option<Frame> {
    let eth: *const EthHdr = pkt.ptr_at(0)?;
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut off = EthHdr::LEN;
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner).
    for _ in 0..2 {
        if ether_type == EtherType::Ieee8021q as u16 || ether_type == EtherType::Ieee8021ad as u16 {
            let vlan: *const VlanHdr = pkt.ptr_at(off)?;
            ether_type = unsafe { (*vlan).ether_type };
            off += VlanHdr::LEN;
        }
    }
    if ether_type == EtherType::Ipv4 as u16 {
        let ip: *const Ipv4Hdr = pkt.ptr_at(off)?;
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
    } else if ether_type == EtherType::Ipv6 as u16 {
        let ip: *const Ipv6Hdr = pkt.ptr_at(off)?;
        let (vcf0, mut next, src, dst) = unsafe {
            (
                (*ip).vcf[0],
                (*ip).next_hdr,
                (*ip).src_addr,
                (*ip).dst_addr,
            )
        };
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
                    let (nh, len) = unsafe { ((*h)[0], (*h)[1]) };
                    next = nh;
                    l4 += (len as usize + 1) * 8;
                }
                44 => {
                    let h: *const [u8; 4] = pkt.ptr_at(l4)?;
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
    } else {
        None
    }
}

/// SPEC §2 in its order, each step a function named after it that returns
/// `Some(outcome)` (or `Err(outcome)`) when it decides the verdict.
#[inline(always)]
fn decide(ctx: &XdpContext, pkt: &Pkt, p: &Policy) -> Outcome {
    // Step 1: not IP, or a truncated header: pass untouched.
    let Some(f) = parse(pkt) else {
        return Outcome::of(Reason::Ok);
    };
    let (held, trusted) = match lists_and_bans(p, &f.src) {
        Ok(held) => (held, false),
        // SPEC §11: an allowlisted source's INVITEs may still meet the
        // destination policy (after the launder below: one state).
        Err(out) if matches!(out.reason, Reason::Allowlisted) && checks_allowlisted() => {
            (None, true)
        }
        Err(out) => return out,
    };

    // From here on one verifier state covers every L2/L3 shape: the
    // transport offset is laundered, so VLAN and extension-header variants
    // do not each re-verify the SIP checks.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Outcome::of(Reason::Ok);
    };
    let mut f = f;
    let far = f.l4 > MAX_L4_OFFSET;
    f.l4 = launder(scratch, f.l4) & L4_OFFSET_MASK;
    if trusted {
        return allowlisted(ctx, p, &f, far, scratch);
    }
    if let Some(out) = out_of_reach(p, &f, far, held) {
        return out;
    }
    if far {
        // Neither UDP nor TCP (see `out_of_reach`): nothing to read there.
        f.proto = IPPROTO_NONE;
    }

    let (udp, tcp) = transport(pkt, &f);
    if let Some(out) = protected_port(p, &f, udp, tcp, held) {
        return out;
    }
    if let Some(out) = trunk_only(p) {
        return out;
    }

    let mut sip = NOT_SIP;
    let mut syn = false;
    if udp.is_some() {
        let udp = udp.unwrap_or(core::ptr::null());
        sip = match sip_payload(ctx, pkt, p, &f.src, udp, f.l4, scratch) {
            Ok(s) => s,
            Err(out) => return out,
        };
    } else if let Some(t) = tcp {
        syn = unsafe { (*t).syn() != 0 && (*t).ack() == 0 };
    }
    let method = sip.method;
    let out = if sip.held {
        Outcome {
            reason: Reason::Ok,
            method,
        }
    } else {
        buckets(p, &f.src, method, syn, sip.state, sip.now)
    };
    // Step 9b: an INVITE that passed the buckets meets the destination
    // policy (SPEC §11).
    if matches!(out.reason, Reason::Ok) && method == Method::Invite as usize && udp.is_some() {
        let meta = f.l3 as u64 | if matches!(f.src, Src::V6(_)) { dest_v6() } else { 0 };
        if let Some(r) = crate::dest::check(ctx, p, &f.src, meta, f.l4) {
            return Outcome { reason: r, method };
        }
    }
    // A request that passes and may verify its source is remembered, for
    // the egress classifier to pair the server's 2xx with (SPEC §8).
    if matches!(out.reason, Reason::Ok) {
        if p.verifies(method) {
            crate::txn::remember(ctx, p, &f.src, method, sip.payload, scratch);
        } else if sip.reply && p.verify_methods != 0 && !verified(p, &f.src, now_ns()) {
            crate::txn::contest(ctx, p, sip.payload, scratch);
        }
    }
    out
}

/// Steps 2-4: allowlist, denylist, bans. `Ok(Some(deny or ban))`: the
/// source is denied or banned but `[bans] scope = "sip"` leaves it to the
/// port (step 5).
///
/// The lookups run in the order that is cheapest on the flood path; the
/// verdict follows SPEC §2's order. A source banned by address (the hash,
/// looked up first) carries its allow/deny bits cached in the ban entry, so
/// a banned flood costs one lookup per packet.
#[inline(always)]
fn lists_and_bans(p: &Policy, src: &Src) -> Result<Option<Reason>, Outcome> {
    let (banned, acl) = match *src {
        Src::V4(a) => match BANS_V4.get_ptr_mut(&a) {
            Some(b) if active(b) => (true, cached_acl(b, p, src)),
            _ => (ban_net_v4(p, a), acl_of(p, src)),
        },
        Src::V6(a) => match BANS_V6.get_ptr_mut(&a) {
            Some(b) if active(b) => (true, cached_acl(b, p, src)),
            _ => (ban_net_v6(p, a), acl_of(p, src)),
        },
    };
    if acl & ACL_ALLOW != 0 {
        return Err(Outcome::of(Reason::Allowlisted));
    }
    let held = if acl & ACL_DENY != 0 {
        Some(Reason::Deny)
    } else if banned {
        Some(Reason::Ban)
    } else {
        None
    };
    if let Some(r) = held {
        if !p.has(F_SCOPE_SIP) {
            // Deny and ban cover all traffic: no need to look at the transport.
            return Err(Outcome::of(r));
        }
    }
    Ok(held)
}

/// Step 2 with SPEC §11's exception: an allowlisted source passes, but
/// its initial UDP INVITEs still meet the destination policy (a hacked PBX
/// on a trusted address is the classic toll fraud), unless
/// `check_allowlisted = false` or there is nothing to refuse. Reached
/// after the launder: one verifier state for every L2/L3 shape.
#[inline(always)]
fn allowlisted(ctx: &XdpContext, p: &Policy, f: &Frame, far: bool, scratch: *mut Scratch) -> Outcome {
    let pass = Outcome::of(Reason::Allowlisted);
    if far || f.later_fragment || f.proto != IPPROTO_UDP {
        return pass;
    }
    let v6 = if matches!(f.src, Src::V6(_)) { dest_v6() } else { 0 };
    let l3 = launder(scratch, f.l3) as u64 & L3_OFFSET_MASK;
    match crate::dest::check(ctx, p, &f.src, l3 | v6 | crate::dest::ALLOWLISTED, f.l4) {
        Some(r) => Outcome {
            reason: r,
            method: Method::Invite as usize,
        },
        None => pass,
    }
}

/// Whether step 2 lets allowlisted sources meet the destination policy.
#[inline(always)]
fn checks_allowlisted() -> bool {
    DEST_POLICY
        .get(0)
        .is_some_and(|dp| dp.has(dest::D_CHECK_ALLOWLISTED) && dp.refuses())
}

/// Masks a laundered IP header offset (at most two VLAN tags in) back into
/// a range the verifier knows.
const L3_OFFSET_MASK: u64 = 63;
const _: () = assert!(EthHdr::LEN + 2 * VlanHdr::LEN <= L3_OFFSET_MASK as usize);

#[inline(always)]
const fn dest_v6() -> u64 {
    crate::dest::V6
}

/// Step 1's exception: a complete packet whose transport we cannot reach —
/// the extension chain goes on past what we walk, or a UDP/TCP header lies
/// beyond MAX_L4_OFFSET (`far`; a later fragment has no transport header to
/// find).
#[inline(always)]
fn out_of_reach(p: &Policy, f: &Frame, far: bool, held: Option<Reason>) -> Option<Outcome> {
    let tcp_or_udp = f.proto == IPPROTO_UDP || f.proto == IPPROTO_TCP;
    if !(f.unwalked || (far && tcp_or_udp && !f.later_fragment)) {
        return None;
    }
    // The kernel's stack walks any chain to its end, so this must not be a
    // way around the shield. The port is unknown: when in doubt, treat it as
    // protected. Deny and ban (scope "sip" too) win; otherwise drop
    // `malformed`, counted as an offence. Not subject to `[sip]
    // drop_malformed`: that option is about payloads that are not SIP, and
    // this payload was never looked at — the chain itself is what we cannot
    // parse, and no SIP peer sends one like it (RFC 8200: each extension
    // header at most once, destination options twice). Checked after the
    // launder: one verifier state for all such chains.
    Some(match held {
        Some(r) => Outcome::of(r),
        None => offence(&f.src, p, Reason::Malformed, NO_METHOD),
    })
}

/// The UDP or TCP header, if that is the transport and it is in the frame
/// (a later fragment has none).
#[inline(always)]
fn transport(pkt: &Pkt, f: &Frame) -> (Option<*const UdpHdr>, Option<*const TcpHdr>) {
    if f.later_fragment {
        (None, None)
    } else {
        (
            if f.proto == IPPROTO_UDP {
                pkt.ptr_at::<UdpHdr>(f.l4)
            } else {
                None
            },
            if f.proto == IPPROTO_TCP {
                pkt.ptr_at::<TcpHdr>(f.l4)
            } else {
                None
            },
        )
    }
}

/// Step 5: only packets to a protected port go on. Deny and ban held back
/// by `scope = "sip"` apply here; a later fragment (no port) gets the packet
/// bucket only.
#[inline(always)]
fn protected_port(
    p: &Policy,
    f: &Frame,
    udp: Option<*const UdpHdr>,
    tcp: Option<*const TcpHdr>,
    held: Option<Reason>,
) -> Option<Outcome> {
    let protected = if let Some(u) = udp {
        port_flags(unsafe { (*u).dst }) & PORT_UDP != 0
    } else if let Some(t) = tcp {
        port_flags(unsafe { (*t).dest }) & PORT_TCP != 0
    } else {
        false
    };
    if let Some(r) = held {
        if protected {
            // `[bans] scope = "sip"`: only protected ports are covered.
            return Some(Outcome::of(r));
        }
    }
    if f.later_fragment {
        return Some(later_fragment(p, &f.src));
    }
    if !protected {
        return Some(Outcome::of(Reason::Ok));
    }
    None
}

/// A fragment other than the first has no port: only the per-source packet
/// bucket applies. With the unverified budget on, a fragment from an
/// unverified source without state creates none (SPEC §2 step 7b): a
/// spoofed flood of fragments must not fill `SOURCES`.
#[inline(always)]
fn later_fragment(p: &Policy, src: &Src) -> Outcome {
    if p.packet.is_limited() {
        let key = src_key(src, p);
        let st = if p.unverified.is_limited() && !verified(p, src, now_ns()) {
            SOURCES.get_ptr_mut(&key)
        } else {
            source(&key)
        };
        if let Some(st) = st {
            let now = now_ns();
            if !spend(unsafe { &raw mut (*st).packet_tat }, now, &p.packet) {
                escalate(st, &key, src, p, now, Reason::Rate);
                return Outcome::of(Reason::Rate);
            }
        }
    }
    Outcome::of(Reason::Ok)
}

/// Step 6: `trunk_only`.
#[inline(always)]
fn trunk_only(p: &Policy) -> Option<Outcome> {
    if p.has(F_TRUNK_ONLY) {
        return Some(Outcome::of(Reason::NotAllowed));
    }
    None
}

/// What steps 7-8 found in a UDP payload that passed them.
#[derive(Clone, Copy)]
struct Sip {
    /// The request's method index (laundered), or `NO_METHOD`.
    method: usize,
    /// The payload's offset and length.
    payload: (usize, usize),
    /// A status line: a reply coming in.
    reply: bool,
    /// Step 7b already held the source to its buckets (step 9 is done).
    held: bool,
    /// The source's state if the early `rate` check found it (null: not
    /// looked up, or none): step 9 spends from it without a second lookup.
    state: *mut SrcState,
    /// The time the early `rate` check read (0: none), reused by step 9.
    now: u64,
}

const NOT_SIP: Sip = Sip {
    method: NO_METHOD,
    payload: (0, 0),
    reply: false,
    held: false,
    state: core::ptr::null_mut(),
    now: 0,
};

/// Steps 7, 7b and 8 for a UDP packet: the payload must be SIP or a
/// keepalive, an unverified source must find a token in the shared budget,
/// and it must not come from a scanner.
#[inline(always)]
fn sip_payload(
    ctx: &XdpContext,
    pkt: &Pkt,
    p: &Policy,
    src: &Src,
    udp: *const UdpHdr,
    l4: usize,
    scratch: *mut Scratch,
) -> Result<Sip, Outcome> {
    let udp_len = u16::from_be_bytes(unsafe { (*udp).len }) as usize;
    let pay = l4 + UdpHdr::LEN;
    let in_frame = pkt.len().saturating_sub(pay);
    let plen = core::cmp::min(in_frame, udp_len.saturating_sub(UdpHdr::LEN));

    // The classifier reads no byte at or past `plen`, so copying a whole
    // HEAD_LEN block when the frame has it is exact (and one check).
    // (Kept in SCRATCH: the stack is needed by the UA search's calls.)
    let head = unsafe { &mut (*scratch).head };
    if let Some(h) = pkt.ptr_at::<[u8; HEAD_LEN]>(pay) {
        unsafe { core::ptr::copy_nonoverlapping(h.cast::<u8>(), head.as_mut_ptr(), HEAD_LEN) };
    } else {
        for (i, h) in head.iter_mut().enumerate() {
            match pkt.byte_at(pay + i) {
                Some(b) => *h = b,
                None => break,
            }
        }
    }
    let mut method = NO_METHOD;
    let mut reply = false;
    let _ = head;
    let code = shield_classify(plen as u64);
    let is_sip = if code < Method::COUNT as u64 {
        // A request. Laundered: fifteen methods would otherwise be
        // fifteen verifier states through everything below.
        method = launder(scratch, code as usize) & METHOD_MASK;
        true
    } else if code == KIND_RESPONSE {
        reply = true;
        true
    } else if code == KIND_KEEPALIVE {
        false
    } else {
        if p.has(F_DROP_MALFORMED) {
            return Err(offence(src, p, Reason::Malformed, NO_METHOD));
        }
        false
    };
    // SPEC §2's allowed reordering: a source whose packet bucket is
    // already empty is dropped `rate` before the budget and the User-Agent
    // scan, so a single-source flood costs one lookup, not a header search.
    let (state, now) = bucket_empty(p, src, method)?;
    // Before the User-Agent scan and before any per-source state: a
    // spoofed flood's packet costs a lookup and a read of the shared line.
    let held = unverified(p, src, method, state)?;
    if is_sip {
        if let Some(out) = scanner(ctx, p, src, pay, plen, method, scratch) {
            return Err(out);
        }
    }
    Ok(Sip {
        method,
        payload: (pay, plen),
        reply,
        held,
        state,
        now,
    })
}

/// The early `rate` drop (SPEC §2's allowed difference): a source that has
/// state and whose packet bucket is empty now. Only reads the bucket: a
/// source with a token goes on and spends it at step 9 (or 7b) as before,
/// so steps 7-8 still see every packet that step 9 would pass. `Ok`: the
/// state it found and the time it read, for the later steps (null and 0:
/// none, or not looked up).
#[inline(always)]
fn bucket_empty(p: &Policy, src: &Src, method: usize) -> Result<(*mut SrcState, u64), Outcome> {
    if !p.packet.is_limited() {
        return Ok((core::ptr::null_mut(), 0));
    }
    let key = src_key(src, p);
    let Some(st) = SOURCES.get_ptr_mut(&key) else {
        return Ok((core::ptr::null_mut(), 0));
    };
    let now = now_ns();
    let tat = unsafe { core::ptr::read_volatile(&raw const (*st).packet_tat) };
    if gcra(tat, now, &p.packet).is_some() {
        return Ok((st, now));
    }
    escalate(st, &key, src, p, now, Reason::Rate);
    Err(Outcome {
        reason: Reason::Rate,
        method,
    })
}

/// `sip::classify` on `SCRATCH.head` for a payload of `plen` bytes, as a
/// code: the method index of a request, or one of the `KIND_*` below. A
/// global function: inlined, the classifier's byte compares spill a
/// dozen registers into the XDP program's frame, which every call chain
/// below it carries (the 512-byte limit is for the whole chain).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_classify(plen: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return KIND_NOT_SIP;
    };
    match sip::classify(unsafe { &(*scratch).head }, plen as usize) {
        PayloadKind::Request(m) => m as u64,
        PayloadKind::Response => KIND_RESPONSE,
        PayloadKind::Keepalive => KIND_KEEPALIVE,
        PayloadKind::NotSip => KIND_NOT_SIP,
    }
}

const KIND_RESPONSE: u64 = 0x100;
const KIND_KEEPALIVE: u64 = 0x101;
const KIND_NOT_SIP: u64 = 0x102;
const _: () = assert!(Method::COUNT as u64 <= KIND_RESPONSE);

/// Step 7b: a source neither allowlisted (returned earlier) nor verified
/// spends a token from the bucket all of them share. Not an offence: the
/// source address of such a packet proves nothing. A source that has state
/// (it was granted a token before) is first held to its own buckets, so a
/// real flooder is dropped `rate` and escalated instead of draining the
/// shared budget; a packet never creates state here. `Ok(true)`: the
/// source's buckets were spent (step 9 is done).
#[inline(always)]
fn unverified(p: &Policy, src: &Src, method: usize, state: *mut SrcState) -> Result<bool, Outcome> {
    if !p.unverified.is_limited() {
        return Ok(false);
    }
    let now = now_ns();
    if verified(p, src, now) {
        return Ok(false);
    }
    let key = src_key(src, p);
    let found = if state.is_null() {
        SOURCES.get_ptr_mut(&key)
    } else {
        Some(state)
    };
    let held = match found {
        Some(st) => match held_to_buckets(p, src, &key, st, method, false, now) {
            Some(out) => return Err(out),
            None => true,
        },
        None => false,
    };
    let Some(budget) = BUDGET.get_ptr_mut(0) else {
        return Ok(held);
    };
    // `spend` writes (one CAS) only when it grants a token: while the
    // bucket is empty every CPU only reads the line.
    if spend(unsafe { &raw mut (*budget).tat }, now, &p.unverified) {
        return Ok(held);
    }
    Err(Outcome {
        reason: Reason::Unverified,
        method,
    })
}

/// Whether `src` is verified (SPEC §8). A call to a global function: the
/// keys it builds live on its own stack, not on the XDP program's, which is
/// near the 512-byte limit along the User-Agent search's call chain.
#[inline(always)]
pub(crate) fn verified(p: &Policy, src: &Src, now: u64) -> bool {
    let (hi, lo, v6) = match src {
        Src::V4(a) => (0, u32::from_be_bytes(*a) as u64, 0),
        Src::V6(a) => {
            let (h, l) = a.split_at(8);
            (
                u64::from_be_bytes(h.try_into().unwrap_or([0; 8])),
                u64::from_be_bytes(l.try_into().unwrap_or([0; 8])),
                1,
            )
        }
    };
    // The policy's flags and prefix ride along: the caller has them.
    let policy = (p.flags as u64) << 32 | p.ipv6_prefix as u64;
    shield_verified(hi, lo, v6, now, policy) == 1
}

/// `verified` for the source `hi:lo` (IPv6 if `v6`, else the IPv4 address
/// in `lo`): a live `VERIFIED` entry for its key, or a live `VERIFY_NETS`
/// prefix around it (empty tries not looked up). `policy`: the caller's
/// `Policy::flags << 32 | ipv6_prefix` (no second `POLICY` lookup). 1 or 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_verified(hi: u64, lo: u64, v6: u64, now: u64, policy: u64) -> u64 {
    let (flags, ipv6_prefix) = ((policy >> 32) as u32, policy as u32);
    let has = |f: u32| flags & f != 0;
    let live = |v: &Verified| v.active(now);
    if v6 == 0 {
        let a = (lo as u32).to_be_bytes();
        let hit = learned(&src_key_v4(a), now)
            || (has(F_VERIFY_NETS_V4) && VERIFY_NETS_V4.get(&Key::new(32, a)).is_some_and(live));
        return hit as u64;
    }
    let key = join_v6(hi, lo);
    let hit = learned(&shield_common::mask_v6(&key, ipv6_prefix), now)
        || (has(F_VERIFY_NETS_V6) && VERIFY_NETS_V6.get(&Key::new(128, key)).is_some_and(live));
    hit as u64
}

/// A live `VERIFIED` entry (learned from a reply) for `key`. The hint bit
/// is looked at first: clear, the key was never learned (see
/// `shield_common::verified_hint`).
#[inline(always)]
fn learned(key: &SrcKey, now: u64) -> bool {
    let (word, bit) = verified_hint(key);
    VERIFIED_HINT.get(word).is_some_and(|w| *w & bit != 0)
        && unsafe { VERIFIED.get(key) }.is_some_and(|v| v.active(now))
}

#[inline(always)]
fn join_v6(hi: u64, lo: u64) -> [u8; 16] {
    let (h, l) = (hi.to_be_bytes(), lo.to_be_bytes());
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}

/// Step 8: a scanner's `User-Agent` in the SIP message at `pay` (`plen`
/// bytes).
#[inline(always)]
fn scanner(
    ctx: &XdpContext,
    p: &Policy,
    src: &Src,
    pay: usize,
    plen: usize,
    method: usize,
    scratch: *mut Scratch,
) -> Option<Outcome> {
    if p.has(F_SCAN_UA)
        && shield_user_agent(ctx.ctx, pay as u64, plen as u64) == 1
        && unsafe { SCANNERS.get(&(*scratch).ua) }.is_some()
    {
        return Some(offence(src, p, Reason::Scanner, method));
    }
    None
}

/// Steps 9 and 10: the source's token buckets, then pass. `state`: the
/// source's state if an earlier step found it (null: look it up, creating
/// it); `now`: the time that step read (0: not read yet).
#[inline(always)]
fn buckets(
    p: &Policy,
    src: &Src,
    method: usize,
    syn: bool,
    state: *mut SrcState,
    now: u64,
) -> Outcome {
    let syn_bucket = syn && p.syn.is_limited();
    if p.packet.is_limited() || p.method_bucket_at(method).is_some() || syn_bucket {
        let key = src_key(src, p);
        let st = if state.is_null() {
            source(&key)
        } else {
            Some(state)
        };
        if let Some(st) = st {
            let now = if now == 0 { now_ns() } else { now };
            if let Some(out) = held_to_buckets(p, src, &key, st, method, syn_bucket, now) {
                return out;
            }
        }
    }
    Outcome {
        reason: Reason::Ok,
        method,
    }
}

/// Spends from the source's packet bucket, its method's bucket and (for a
/// SYN) the SYN bucket: DROP `rate`, escalated, when one is empty.
#[inline(always)]
fn held_to_buckets(
    p: &Policy,
    src: &Src,
    key: &SrcKey,
    st: *mut SrcState,
    method: usize,
    syn_bucket: bool,
    now: u64,
) -> Option<Outcome> {
    let ok = (!p.packet.is_limited()
        || spend(unsafe { &raw mut (*st).packet_tat }, now, &p.packet))
        && match p.method_bucket_at(method) {
            // (`i < METHOD_BUCKETS` by construction; the check is for
            // the verifier, which loses the bound of a modulo.)
            Some((i, b)) if i < shield_common::METHOD_BUCKETS => spend(
                unsafe { (&raw mut (*st).method_tat).cast::<u64>().add(i) },
                now,
                b,
            ),
            Some(_) => true,
            None => true,
        }
        && (!syn_bucket || spend(unsafe { &raw mut (*st).syn_tat }, now, &p.syn));
    if ok {
        return None;
    }
    escalate(st, key, src, p, now, Reason::Rate);
    Some(Outcome {
        reason: Reason::Rate,
        method,
    })
}

/// `CLOCK_MONOTONIC_COARSE`: a tick's resolution (1-4 ms) is plenty for
/// ban expiry and for buckets — a GCRA's TAT advances by exact intervals, so
/// a coarse `now` only makes a bucket a tick stricter, never looser — and it
/// costs a fraction of `bpf_ktime_get_ns` on virtual machines.
#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
fn active(b: *mut BanValue) -> bool {
    unsafe { (*b).active(now_ns()) }
}

#[inline(always)]
fn ban_net_v4(p: &Policy, a: [u8; 4]) -> bool {
    p.has(F_BAN_NETS_V4)
        && BAN_NETS_V4
            .get(&Key::new(32, a))
            .is_some_and(|b| b.active(now_ns()))
}

#[inline(always)]
fn ban_net_v6(p: &Policy, a: [u8; 16]) -> bool {
    p.has(F_BAN_NETS_V6)
        && BAN_NETS_V6
            .get(&Key::new(128, a))
            .is_some_and(|b| b.active(now_ns()))
}

/// The source's `ACL_ALLOW` / `ACL_DENY` bits from the tries (empty tries
/// are not looked up).
#[inline(always)]
fn acl_of(p: &Policy, src: &Src) -> u32 {
    let (allow, deny) = match src {
        Src::V4(a) => (
            p.has(F_ALLOW_V4) && ALLOW_V4.get(&Key::new(32, *a)).is_some(),
            p.has(F_DENY_V4) && DENY_V4.get(&Key::new(32, *a)).is_some(),
        ),
        Src::V6(a) => (
            p.has(F_ALLOW_V6) && ALLOW_V6.get(&Key::new(128, *a)).is_some(),
            p.has(F_DENY_V6) && DENY_V6.get(&Key::new(128, *a)).is_some(),
        ),
    };
    (if allow { ACL_ALLOW } else { 0 }) | (if deny { ACL_DENY } else { 0 })
}

/// [`acl_of`] through the ban entry's cache: valid while the lists'
/// generation is the one it was filled in under.
#[inline(always)]
fn cached_acl(b: *mut BanValue, p: &Policy, src: &Src) -> u32 {
    unsafe {
        if core::ptr::read_volatile(&raw const (*b).acl_gen) == p.acl_gen {
            return core::ptr::read_volatile(&raw const (*b).acl);
        }
        let acl = acl_of(p, src);
        // Bits first, then the generation that vouches for them.
        core::ptr::write_volatile(&raw mut (*b).acl, acl);
        core::ptr::write_volatile(&raw mut (*b).acl_gen, p.acl_gen);
        acl
    }
}

#[inline(always)]
pub(crate) fn port_flags(port_be: [u8; 2]) -> u8 {
    match PORTS.get(u16::from_be_bytes(port_be) as u32) {
        Some(f) => *f,
        None => 0,
    }
}

/// A drop that counts towards escalation (malformed, scanner).
#[inline(always)]
fn offence(src: &Src, p: &Policy, reason: Reason, method: usize) -> Outcome {
    if p.escalate_drops != 0 {
        let key = src_key(src, p);
        if let Some(st) = source(&key) {
            let now = now_ns();
            escalate(st, &key, src, p, now, reason);
        }
    }
    Outcome { reason, method }
}

#[inline(always)]
pub(crate) fn src_key(src: &Src, p: &Policy) -> SrcKey {
    match src {
        Src::V4(a) => src_key_v4(*a),
        Src::V6(a) => shield_common::mask_v6(a, p.ipv6_prefix),
    }
}

/// The source's state, created with full buckets if it is new.
#[inline(always)]
fn source(key: &SrcKey) -> Option<*mut SrcState> {
    if let Some(st) = SOURCES.get_ptr_mut(key) {
        return Some(st);
    }
    // The new state is copied from scratch, where it is always zero: on
    // the stack its 80 bytes would count against every call chain.
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // BPF_NOEXIST: if another CPU created it meanwhile, keep theirs.
    let _ = SOURCES.insert(key, unsafe { &(*scratch).new_source }, 1);
    SOURCES.get_ptr_mut(key)
}

/// Spends one token from the bucket whose TAT is at `tat`. A CAS makes the
/// update exact when the same source is handled on several CPUs at once.
#[inline(always)]
pub(crate) fn spend(tat: *mut u64, now: u64, b: &Bucket) -> bool {
    let mut cur = unsafe { core::ptr::read_volatile(tat) };
    for _ in 0..4 {
        let Some(next) = gcra(cur, now, b) else {
            return false;
        };
        // Compare the returned value rather than use cmpxchg's success flag:
        // bitcode using the flag is rejected by bpf-linker 0.10's LLVM 22
        // reader ("Invalid record").
        let (seen, _) = unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(tat, cur, next) };
        if seen == cur {
            return true;
        }
        cur = seen;
    }
    // Lost the race four times in a row: the other CPUs are spending this
    // source's tokens, so treat it as empty.
    false
}

/// Counts a drop towards the source's escalation window and reports the
/// source to user space once it reaches the threshold.
#[inline(always)]
fn escalate(st: *mut SrcState, key: &SrcKey, src: &Src, p: &Policy, now: u64, reason: Reason) {
    if p.escalate_drops == 0 {
        return;
    }
    unsafe {
        if now.wrapping_sub((*st).esc_start_ns) >= p.escalate_window_ns {
            (*st).esc_start_ns = now;
            (*st).esc_drops = 0;
        }
        // A plain increment: a lost update under a multi-CPU flood only
        // delays the report by a drop, and every CPU sees the value it wrote,
        // so the threshold is never skipped.
        let n = (*st).esc_drops + 1;
        (*st).esc_drops = n;
        if n != p.escalate_drops as u64 {
            return;
        }
    }
    // SPEC §2: a verified source is never escalation-banned (its address
    // can be forged); its packets are still dropped one by one.
    if verified(p, src, now) {
        return;
    }
    if !report_offender(key, src, p, now, reason, p.escalate_drops) {
        // The ring is full (the daemon is behind, or gone): step back
        // below the threshold so the source's next drop reports it again
        // rather than never.
        unsafe { (*st).esc_drops = p.escalate_drops as u64 - 1 };
    }
}

/// Reports the source `src` (keyed `key`) to the daemon for an escalation
/// ban. False when the ring buffer is full (the loss is counted).
#[inline(always)]
pub(crate) fn report_offender(
    key: &SrcKey,
    src: &Src,
    p: &Policy,
    now: u64,
    reason: Reason,
    drops: u32,
) -> bool {
    let (family, prefix_len, addr) = match src {
        Src::V4(a) => {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(a);
            (FAMILY_V4, 32, addr)
        }
        Src::V6(_) => (FAMILY_V6, p.ipv6_prefix as u8, *key),
    };
    let Some(mut e) = EVENTS.reserve::<OffenderEvent>(0) else {
        if let Some(lost) = EVENTS_LOST.get_ptr_mut(0) {
            // Per-CPU slot: no other writer.
            unsafe { *lost += 1 };
        }
        return false;
    };
    // Field by field into the ring: a whole event built on the stack first
    // would count against every call chain through here.
    let ev = e.as_mut_ptr();
    unsafe {
        (*ev).addr = addr;
        (*ev).family = family;
        (*ev).prefix_len = prefix_len;
        (*ev).reason = reason as u8;
        (*ev)._pad = 0;
        (*ev).drops = drops;
        (*ev).ts_ns = now;
    }
    e.submit(0);
    true
}

/// Looks for the `User-Agent` header (see `lines::find_line`); returns 1
/// with the product token in `SCRATCH.ua`, or 0. The line itself is parsed
/// by the shared `sip::ua_line`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_user_agent(ctx: *mut xdp_md, pay: u64, plen: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let pkt = Pkt::new(&XdpContext::new(ctx));
    lines::find_line(
        &pkt,
        scratch,
        pay,
        plen,
        UA_MAX_U_LINES,
        |j, limit| shield_scan_block(ctx, pay, j, limit),
        |at, avail| shield_ua_line(ctx, at, avail),
    )
}

/// `sip::ua_line` on the line at payload offset `at` (`avail` bytes
/// left); a token goes to `SCRATCH.ua`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_ua_line(ctx: *mut xdp_md, at: u64, avail: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return LINE_BAD;
    };
    if !lines::copy_window(&Pkt::new(&XdpContext::new(ctx)), scratch, at, avail) {
        return LINE_BAD;
    }
    match sip::ua_line(unsafe { &(*scratch).win }) {
        UaLine::NotUa => LINE_OTHER,
        UaLine::NoToken => LINE_BAD,
        UaLine::Token(k) => {
            unsafe { (*scratch).ua = k };
            LINE_FOUND
        }
    }
}

/// `lines::scan_block` for lines starting with `u` or `U`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_scan_block(ctx: *mut xdp_md, pay: u64, j: u64, limit: u64) -> u64 {
    lines::scan_block(&Pkt::new(&XdpContext::new(ctx)), pay, j, limit, b'u')
}

/// Returns `v` after a round trip through per-CPU memory. The verifier does
/// not track values through map memory, so what comes back is "some
/// number": after masking, all the paths that computed `v` differently
/// continue as one verifier state instead of being checked one by one.
#[inline(always)]
pub(crate) fn launder(scratch: *mut Scratch, v: usize) -> usize {
    unsafe {
        core::ptr::write_volatile(&raw mut (*scratch).off, v as u64);
        core::ptr::read_volatile(&raw const (*scratch).off) as usize
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
