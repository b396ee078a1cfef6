use core::{
    intrinsics::{atomic_cxchg, AtomicOrdering::Relaxed},
    mem::size_of,
};

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};
use shield_common::{
    default_size, gcra,
    sip::{self, UaKey, UaLine, HEAD_LEN, UA_SCAN_LIMIT, UA_WINDOW},
    sip_stats_index, src_key_v4, stats_index, BanValue, Bucket, Counter, Method, OffenderEvent,
    PayloadKind, Policy, Reason, SrcKey, SrcState, Verdict, F_ALLOW_V4, F_ALLOW_V6, F_BAN_NETS_V4,
    F_BAN_NETS_V6, F_DENY_V4, F_DENY_V6, F_DROP_MALFORMED, F_ENFORCE, F_SCAN_UA, F_SCOPE_SIP,
    F_TRUNK_ONLY, FAMILY_V4, FAMILY_V6, MAX_IFACE_SLOTS, MAX_IFINDEX, PORTS_ENTRIES, PORT_TCP,
    PORT_UDP, SIP_STATS_ENTRIES, STATS_ENTRIES,
};

#[map]
static POLICY: Array<Policy> = Array::with_max_entries(1, 0);
#[map]
static PORTS: Array<u8> = Array::with_max_entries(PORTS_ENTRIES, 0);
#[map]
static IFACE_SLOT: Array<u32> = Array::with_max_entries(MAX_IFINDEX, 0);

#[map]
static ALLOW_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(default_size::ALLOW, 0);
#[map]
static ALLOW_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(default_size::ALLOW, 0);
#[map]
static DENY_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(default_size::DENY, 0);
#[map]
static DENY_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(default_size::DENY, 0);

#[map]
static BANS_V4: HashMap<[u8; 4], BanValue> = HashMap::with_max_entries(default_size::BANS, 0);
#[map]
static BANS_V6: HashMap<[u8; 16], BanValue> = HashMap::with_max_entries(default_size::BANS, 0);
#[map]
static BAN_NETS_V4: LpmTrie<[u8; 4], BanValue> =
    LpmTrie::with_max_entries(default_size::BAN_NETS, 0);
#[map]
static BAN_NETS_V6: LpmTrie<[u8; 16], BanValue> =
    LpmTrie::with_max_entries(default_size::BAN_NETS, 0);

#[map]
static SCANNERS: HashMap<UaKey, u8> = HashMap::with_max_entries(default_size::SCANNERS, 0);
#[map]
static SOURCES: LruHashMap<SrcKey, SrcState> =
    LruHashMap::with_max_entries(default_size::SOURCES, 0);

#[map]
static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STATS_ENTRIES, 0);
#[map]
static SIP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SIP_STATS_ENTRIES, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(default_size::EVENTS_BYTES, 0);

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Not a transport we look at (or one we could not reach).
const IPPROTO_NONE: u8 = 59;
/// IPv6 extension headers walked before giving up on finding the transport.
const MAX_V6_EXT: usize = 8;

/// The one bounds check: a pointer to a `T` at `off` bytes into the frame,
/// if the whole `T` is inside it.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

#[inline(always)]
fn byte_at(ctx: &XdpContext, off: usize) -> Option<u8> {
    ptr_at::<u8>(ctx, off).map(|p| unsafe { *p })
}

#[derive(Clone, Copy)]
enum Src {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// The network and transport layer as far as the verdict needs them.
struct Frame {
    src: Src,
    proto: u8,
    /// Offset of the transport header.
    l4: usize,
    /// A fragment other than the first: no ports.
    later_fragment: bool,
}

/// What the verdict function found out besides the reason.
struct Outcome {
    reason: Reason,
    /// The method of a UDP SIP request, for the per-method counters.
    method: Option<Method>,
}

impl Outcome {
    const fn of(reason: Reason) -> Outcome {
        Outcome { reason, method: None }
    }
}

#[xdp]
pub fn shield(ctx: XdpContext) -> u32 {
    let Some(policy) = POLICY.get(0) else {
        return XDP_PASS;
    };
    let out = decide(&ctx, policy);
    let verdict = Verdict::of(out.reason, policy.has(F_ENFORCE));
    account(&ctx, &out, verdict);
    if verdict == Verdict::Drop {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

#[inline(always)]
fn account(ctx: &XdpContext, out: &Outcome, verdict: Verdict) {
    let slot = match IFACE_SLOT.get(ctx.ingress_ifindex() as u32) {
        Some(s) => *s & (MAX_IFACE_SLOTS - 1),
        None => 0,
    };
    if let Some(c) = STATS.get_ptr_mut(stats_index(slot, verdict, out.reason)) {
        // Per-CPU slot: no other writer.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
    if let Some(m) = out.method {
        if let Some(c) = SIP_STATS.get_ptr_mut(sip_stats_index(slot, m, verdict)) {
            unsafe { *c += 1 };
        }
    }
}

/// Parses L2/L3 and finds the transport header. `None`: not IP, or an L2/L3
/// header is truncated or garbled — the frame passes untouched.
#[inline(always)]
fn parse(ctx: &XdpContext) -> Option<Frame> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut off = EthHdr::LEN;
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner).
    for _ in 0..2 {
        if ether_type == EtherType::Ieee8021q as u16 || ether_type == EtherType::Ieee8021ad as u16 {
            let vlan: *const VlanHdr = ptr_at(ctx, off)?;
            ether_type = unsafe { (*vlan).ether_type };
            off += VlanHdr::LEN;
        }
    }
    if ether_type == EtherType::Ipv4 as u16 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, off)?;
        let (vihl, frags, proto, src) =
            unsafe { ((*ip).vihl, (*ip).frags, (*ip).proto, (*ip).src_addr) };
        if vihl >> 4 != 4 {
            return None;
        }
        // IHL counts 32-bit words and covers the options.
        let hlen = ((vihl & 0x0f) as usize) * 4;
        if hlen < Ipv4Hdr::LEN {
            return None;
        }
        ptr_at::<u8>(ctx, off + hlen - 1)?;
        let frag_off = u16::from_be_bytes(frags) & 0x1fff;
        Some(Frame { src: Src::V4(src), proto, l4: off + hlen, later_fragment: frag_off != 0 })
    } else if ether_type == EtherType::Ipv6 as u16 {
        let ip: *const Ipv6Hdr = ptr_at(ctx, off)?;
        let (vcf0, mut next, src) = unsafe { ((*ip).vcf[0], (*ip).next_hdr, (*ip).src_addr) };
        if vcf0 >> 4 != 6 {
            return None;
        }
        let mut l4 = off + Ipv6Hdr::LEN;
        let mut later_fragment = false;
        let mut walked = 0;
        while walked < MAX_V6_EXT {
            match next {
                // Hop-by-hop, routing, destination options: length in 8-octet units.
                0 | 43 | 60 => {
                    let h: *const [u8; 2] = ptr_at(ctx, l4)?;
                    let (nh, len) = unsafe { ((*h)[0], (*h)[1]) };
                    next = nh;
                    l4 += (len as usize + 1) * 8;
                }
                44 => {
                    let h: *const [u8; 4] = ptr_at(ctx, l4)?;
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
            walked += 1;
        }
        if walked == MAX_V6_EXT {
            // Chain longer than we walk: no port to protect.
            next = IPPROTO_NONE;
        }
        Some(Frame { src: Src::V6(src), proto: next, l4, later_fragment })
    } else {
        None
    }
}

#[inline(always)]
fn decide(ctx: &XdpContext, p: &Policy) -> Outcome {
    let Some(f) = parse(ctx) else {
        return Outcome::of(Reason::Ok);
    };

    // Banned? The exact-address hash first: it is the flood path.
    let banned = match f.src {
        Src::V4(a) => {
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            let hit = unsafe { BANS_V4.get(&a) }.is_some_and(|b| b.active(now));
            hit || (p.has(F_BAN_NETS_V4)
                && BAN_NETS_V4.get(&Key::new(32, a)).is_some_and(|b| b.active(now)))
        }
        Src::V6(a) => {
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            let hit = unsafe { BANS_V6.get(&a) }.is_some_and(|b| b.active(now));
            hit || (p.has(F_BAN_NETS_V6)
                && BAN_NETS_V6.get(&Key::new(128, a)).is_some_and(|b| b.active(now)))
        }
    };
    let (allowed, denied) = match f.src {
        Src::V4(a) => (
            p.has(F_ALLOW_V4) && ALLOW_V4.get(&Key::new(32, a)).is_some(),
            p.has(F_DENY_V4) && DENY_V4.get(&Key::new(32, a)).is_some(),
        ),
        Src::V6(a) => (
            p.has(F_ALLOW_V6) && ALLOW_V6.get(&Key::new(128, a)).is_some(),
            p.has(F_DENY_V6) && DENY_V6.get(&Key::new(128, a)).is_some(),
        ),
    };
    if allowed {
        return Outcome::of(Reason::Allowlisted);
    }

    let (udp, tcp) = if f.later_fragment {
        (None, None)
    } else {
        (
            if f.proto == IPPROTO_UDP { ptr_at::<UdpHdr>(ctx, f.l4) } else { None },
            if f.proto == IPPROTO_TCP { ptr_at::<TcpHdr>(ctx, f.l4) } else { None },
        )
    };
    let protected = if let Some(u) = udp {
        port_flags(unsafe { (*u).dst }) & PORT_UDP != 0
    } else if let Some(t) = tcp {
        port_flags(unsafe { (*t).dest }) & PORT_TCP != 0
    } else {
        false
    };

    if (denied || banned) && (protected || !p.has(F_SCOPE_SIP)) {
        return Outcome::of(if denied { Reason::Deny } else { Reason::Ban });
    }

    if f.later_fragment {
        // No port: only the per-source packet bucket applies.
        if p.packet.is_limited() {
            let key = src_key(&f.src, p);
            if let Some(st) = source(&key) {
                let now = unsafe { bpf_ktime_get_ns() };
                if !spend(unsafe { &raw mut (*st).packet_tat }, now, &p.packet) {
                    escalate(st, &key, &f.src, p, now, Reason::Rate);
                    return Outcome::of(Reason::Rate);
                }
            }
        }
        return Outcome::of(Reason::Ok);
    }
    if !protected {
        return Outcome::of(Reason::Ok);
    }
    if p.has(F_TRUNK_ONLY) {
        return Outcome::of(Reason::NotAllowed);
    }

    let mut method = None;
    let mut syn = false;
    if udp.is_some() {
        let udp = udp.unwrap_or(core::ptr::null());
        let udp_len = u16::from_be_bytes(unsafe { (*udp).len }) as usize;
        let pay = f.l4 + UdpHdr::LEN;
        let in_frame = (ctx.data_end() - ctx.data()).saturating_sub(pay);
        let plen = core::cmp::min(in_frame, udp_len.saturating_sub(UdpHdr::LEN));

        let mut head = [0u8; HEAD_LEN];
        for (i, h) in head.iter_mut().enumerate() {
            if i >= plen {
                break;
            }
            match byte_at(ctx, pay + i) {
                Some(b) => *h = b,
                None => break,
            }
        }
        let kind = sip::classify(&head, plen);
        let is_sip = match kind {
            PayloadKind::Request(m) => {
                method = Some(m);
                true
            }
            PayloadKind::Response => true,
            PayloadKind::Keepalive => false,
            PayloadKind::NotSip => {
                if p.has(F_DROP_MALFORMED) {
                    return offence(&f.src, p, Reason::Malformed, None);
                }
                false
            }
        };
        if is_sip && p.has(F_SCAN_UA) {
            if let Some(ua) = find_user_agent(ctx, pay, plen) {
                if unsafe { SCANNERS.get(&ua) }.is_some() {
                    return offence(&f.src, p, Reason::Scanner, method);
                }
            }
        }
    } else if let Some(t) = tcp {
        syn = unsafe { (*t).syn() != 0 && (*t).ack() == 0 };
    }

    // Token buckets.
    let method_bucket = match method {
        Some(m) => p.method_bucket(m),
        None => None,
    };
    let syn_bucket = syn && p.syn.is_limited();
    if p.packet.is_limited() || method_bucket.is_some() || syn_bucket {
        let key = src_key(&f.src, p);
        if let Some(st) = source(&key) {
            let now = unsafe { bpf_ktime_get_ns() };
            let ok = (!p.packet.is_limited()
                || spend(unsafe { &raw mut (*st).packet_tat }, now, &p.packet))
                && match method_bucket {
                    Some((i, b)) => {
                        let i = i % shield_common::METHOD_BUCKETS;
                        spend(unsafe { &raw mut (*st).method_tat[i] }, now, b)
                    }
                    None => true,
                }
                && (!syn_bucket || spend(unsafe { &raw mut (*st).syn_tat }, now, &p.syn));
            if !ok {
                escalate(st, &key, &f.src, p, now, Reason::Rate);
                return Outcome { reason: Reason::Rate, method };
            }
        }
    }
    Outcome { reason: Reason::Ok, method }
}

#[inline(always)]
fn port_flags(port_be: [u8; 2]) -> u8 {
    match PORTS.get(u16::from_be_bytes(port_be) as u32) {
        Some(f) => *f,
        None => 0,
    }
}

/// A drop that counts towards escalation (malformed, scanner).
#[inline(always)]
fn offence(src: &Src, p: &Policy, reason: Reason, method: Option<Method>) -> Outcome {
    if p.escalate_drops != 0 {
        let key = src_key(src, p);
        if let Some(st) = source(&key) {
            let now = unsafe { bpf_ktime_get_ns() };
            escalate(st, &key, src, p, now, reason);
        }
    }
    Outcome { reason, method }
}

#[inline(always)]
fn src_key(src: &Src, p: &Policy) -> SrcKey {
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
    // BPF_NOEXIST: if another CPU created it meanwhile, keep theirs.
    let _ = SOURCES.insert(key, &SrcState::default(), 1);
    SOURCES.get_ptr_mut(key)
}

/// Spends one token from the bucket whose TAT is at `tat`. A CAS makes the
/// update exact when the same source is handled on several CPUs at once.
#[inline(always)]
fn spend(tat: *mut u64, now: u64, b: &Bucket) -> bool {
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
    let (family, prefix_len, addr) = match src {
        Src::V4(a) => {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(a);
            (FAMILY_V4, 32, addr)
        }
        Src::V6(_) => (FAMILY_V6, p.ipv6_prefix as u8, *key),
    };
    if let Some(mut e) = EVENTS.reserve::<OffenderEvent>(0) {
        e.write(OffenderEvent {
            addr,
            family,
            prefix_len,
            reason: reason as u8,
            _pad: 0,
            drops: p.escalate_drops,
            ts_ns: now,
        });
        e.submit(0);
    }
}

/// Looks for the `User-Agent` header among the header lines that start in
/// the first `UA_SCAN_LIMIT` payload bytes and returns its product token.
/// The same walk as the reference model's; the line itself is parsed by
/// the shared `sip::ua_line`.
#[inline(always)]
fn find_user_agent(ctx: &XdpContext, pay: usize, plen: usize) -> Option<UaKey> {
    let limit = core::cmp::min(plen, UA_SCAN_LIMIT);
    for j in 0..UA_SCAN_LIMIT - 1 {
        // The line would start at j + 1.
        if j + 1 >= limit {
            return None;
        }
        if byte_at(ctx, pay + j)? != b'\n' {
            continue;
        }
        let c = byte_at(ctx, pay + j + 1)?;
        if c == b'\r' || c == b'\n' {
            // Empty line: end of the headers.
            return None;
        }
        if c | 0x20 != b'u' {
            continue;
        }
        let start = j + 1;
        let mut win = [0u8; UA_WINDOW];
        for (k, w) in win.iter_mut().enumerate() {
            if start + k >= plen {
                break;
            }
            match byte_at(ctx, pay + start + k) {
                Some(b) => *w = b,
                None => break,
            }
        }
        match sip::ua_line(&win, plen - start) {
            UaLine::NotUa => continue,
            UaLine::NoToken => return None,
            UaLine::Token(k) => return Some(k),
        }
    }
    None
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
