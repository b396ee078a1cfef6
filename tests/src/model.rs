//! The reference model: SPEC §2's verdict function written plainly over a
//! byte slice, with the maps as ordinary collections. The differential test
//! runs it beside the kernel program on the same frames.
//!
//! It parses the frame independently of `shield-ebpf` (no shared parsing
//! code); what it shares with the kernel is what SPEC §2 says must be one
//! definition: the SIP first-line classifier, the User-Agent line parser and
//! the bucket arithmetic from `shield-common`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use shield_common::{
    framing::{length_line, starts_message, Framing, FRAMING_LETTERS, FRAMING_MAX_LINES, SEGMENT_MAX_MESSAGES},
    gcra, mask_v6,
    response,
    sip::{self, UaKey, UaLine, HEAD_LEN, UA_MAX_U_LINES, UA_SCAN_LIMIT, UA_WINDOW},
    src_key_v4,
    srcstate::{gcra32, unit, TAT_METHOD, TAT_PACKET, TAT_SYN},
    txn::{txn_line, TxnIds, TXN_MAX_C_LINES},
    Meta, Method, OffenderEvent, Txn, TxnKey, PayloadKind, Policy, Reason, SrcKey, SrcState, FAMILY_V4,
    FAMILY_V6, F_DROP_MALFORMED, F_SCAN_UA, F_SCOPE_SIP, F_TRUNK_ONLY, MAX_L4_OFFSET, MAX_V6_EXT,
    PORT_TCP, PORT_UDP,
};

/// Payload offsets beyond this are out of the kernel's reach
/// (`shield-ebpf`'s `pkt::MAX_PAYLOAD_OFFSET`): a later message of a TCP
/// segment starting there is not read.
const MAX_PAYLOAD_OFFSET: usize = 2 * MAX_L4_OFFSET + 8;

/// What the maps hold, as plain collections.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    pub policy: Policy,
    pub udp_ports: HashSet<u16>,
    pub tcp_ports: HashSet<u16>,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// Bans with their expiry (monotonic ns, 0 = forever).
    pub bans: Vec<(IpNet, u64)>,
    pub scanners: HashSet<UaKey>,
    /// `shieldctl verify` entries with their expiry (monotonic ns, 0 =
    /// for ever): one source (IPv4 host, IPv6 prefix at least
    /// `ipv6_prefix` long) or a network.
    pub verified: Vec<(IpNet, u64)>,
    /// `DEST_POLICY` and the rule trie's entries (SPEC §11).
    pub dest: shield_common::dest::DestPolicy,
    pub dest_rules: Vec<(u32, [u8; shield_common::dest::KEY_BYTES], shield_common::dest::DestRule)>,
    /// `CALL_CFG` (SPEC §13).
    pub calls: shield_common::calls::CallConfig,
    /// `AUTH_CONFIG` on (SPEC §12).
    pub auth_on: bool,
    /// The host's established TCP connections, as the XDP program's socket
    /// lookup finds them: (remote address, remote port, local address,
    /// local port). Only a TCP INVITE on one of these opens a call (SPEC
    /// §13); a test run with no real connection has none.
    pub tcp_established: HashSet<(IpAddr, u16, IpAddr, u16)>,
}

impl Tables {
    pub fn port_flags(&self, port: u16) -> u8 {
        (if self.udp_ports.contains(&port) {
            PORT_UDP
        } else {
            0
        }) | (if self.tcp_ports.contains(&port) {
            PORT_TCP
        } else {
            0
        })
    }
}

/// The model's verdict for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    /// The method of a UDP SIP request (counted in `SIP_STATS`).
    pub method: Option<Method>,
}

pub struct Model {
    pub tables: Tables,
    pub sources: HashMap<SrcKey, SrcState>,
    pub events: Vec<OffenderEvent>,
    /// `VERIFIED`: source key → expiry (from `tables.verified` and the
    /// egress classifier's 2xx).
    pub verified: HashMap<SrcKey, u64>,
    /// The shared unverified bucket's TAT.
    pub budget_tat: u64,
    /// `TXNS`: requests that passed and may verify their source.
    pub txns: HashMap<TxnKey, Txn>,
    /// `DEST_SOURCES`: callers' international buckets and refusal windows.
    pub dest_sources: HashMap<SrcKey, shield_common::dest::DestSource>,
    /// `DEST_REFUSED`, all interfaces: refusals by rule id.
    pub dest_refused: HashMap<u32, u64>,
    /// The call table (SPEC §13).
    pub calls: CallTable,
    /// The `AUTH_*` maps (SPEC §12).
    pub auth: auth::AuthState,
}

/// What the egress classifier makes of a frame leaving the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The CSeq method (`Other` for none, garbled, or unknown).
    pub method: Method,
    /// Status class, 1..=6.
    pub class: u8,
}

struct Parsed {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    l4: usize,
    later_fragment: bool,
    /// An IPv6 packet whose transport header is out of reach: the extension
    /// chain goes on after `MAX_V6_EXT` headers, or the UDP/TCP header starts
    /// beyond `MAX_L4_OFFSET`.
    unwalked: bool,
}

/// The IPv6 extension headers the walk skips.
fn is_v6_ext(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 60)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// L2/L3 per SPEC §2 step 1. `None`: pass untouched.
fn parse(f: &[u8]) -> Option<Parsed> {
    let mut et = be16(f, 12)?;
    let mut off = 14;
    for _ in 0..2 {
        if et == 0x8100 || et == 0x88a8 {
            f.get(off..off + 4)?;
            et = be16(f, off + 2)?;
            off += 4;
        }
    }
    match et {
        0x0800 => {
            let ip = f.get(off..off + 20)?;
            if ip[0] >> 4 != 4 {
                return None;
            }
            let hlen = usize::from(ip[0] & 0x0f) * 4;
            if hlen < 20 || f.len() < off + hlen {
                return None;
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            let src = IpAddr::from([ip[12], ip[13], ip[14], ip[15]]);
            Some(Parsed {
                src,
                dst: IpAddr::from([ip[16], ip[17], ip[18], ip[19]]),
                proto: ip[9],
                l4: off + hlen,
                later_fragment: frag != 0,
                unwalked: false,
            })
        }
        0x86dd => {
            let ip = f.get(off..off + 40)?;
            if ip[0] >> 4 != 6 {
                return None;
            }
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            let mut next = ip[6];
            let mut l4 = off + 40;
            let mut later_fragment = false;
            let mut walked = 0;
            // Walk at most MAX_V6_EXT extension headers. A header cut short
            // is a truncated frame: pass untouched.
            while is_v6_ext(next) && walked < MAX_V6_EXT {
                if next == 44 {
                    let h = f.get(l4..l4 + 4)?;
                    next = h[0];
                    l4 += 8;
                    walked += 1;
                    if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                        // A later fragment: what follows is not a header.
                        later_fragment = true;
                        break;
                    }
                } else {
                    let h = f.get(l4..l4 + 2)?;
                    next = h[0];
                    l4 += (usize::from(h[1]) + 1) * 8;
                    walked += 1;
                }
            }
            // Still an extension header after MAX_V6_EXT of them, or a UDP or
            // TCP header too far in: the transport is out of reach.
            let chain_goes_on = is_v6_ext(next);
            let transport_too_far = l4 > MAX_L4_OFFSET && (next == 17 || next == 6);
            let unwalked = !later_fragment && (chain_goes_on || transport_too_far);
            Some(Parsed {
                src: IpAddr::from(src),
                dst: IpAddr::from(dst),
                proto: next,
                l4,
                later_fragment,
                unwalked,
            })
        }
        _ => None,
    }
}

/// Whether the model finds `frame`'s transport out of reach (an IPv6 chain
/// longer than walked, or UDP/TCP beyond `MAX_L4_OFFSET`): lets the
/// differential test check that its generator produces such frames.
pub fn transport_out_of_reach(frame: &[u8]) -> bool {
    parse(frame).is_some_and(|p| p.unwalked)
}

/// The IP protocol number the model finds in `frame` (6: TCP), if it
/// parses: lets the differential test count its generator's TCP frames.
pub fn transport_protocol(frame: &[u8]) -> Option<u8> {
    parse(frame).map(|p| p.proto)
}

impl Model {
    pub fn new(tables: Tables) -> Model {
        let mut m = Model {
            tables,
            sources: HashMap::new(),
            events: Vec::new(),
            verified: HashMap::new(),
            budget_tat: 0,
            txns: HashMap::new(),
            dest_sources: HashMap::new(),
            dest_refused: HashMap::new(),
            calls: CallTable::default(),
            auth: auth::AuthState::default(),
        };
        m.auth.on = m.tables.auth_on;
        m.reset_verified();
        m
    }

    /// `VERIFIED` as `tables.verified` leaves it (the learned entries, the
    /// remembered requests and the budget's state forgotten).
    pub fn reset_verified(&mut self) {
        self.verified.clear();
        self.txns.clear();
        self.auth.nonces.clear();
        self.auth.attempts.clear();
        self.budget_tat = 0;
        let prefix = self.tables.policy.ipv6_prefix;
        for (net, exp) in self.tables.verified.clone() {
            if Self::is_source(&net, prefix) {
                self.verified.insert(self.key(net.addr()), exp);
            }
        }
    }

    /// Whether a verified entry is one source key rather than a network.
    fn is_source(net: &IpNet, ipv6_prefix: u32) -> bool {
        match net {
            IpNet::V4(n) => n.prefix_len() == 32,
            IpNet::V6(n) => u32::from(n.prefix_len()) >= ipv6_prefix,
        }
    }

    /// SPEC §8: a live `VERIFIED` entry for the source's key, or a live
    /// verified network around it.
    fn is_verified(&self, a: IpAddr, now: u64) -> bool {
        let live = |exp: u64| exp == 0 || now < exp;
        let prefix = self.tables.policy.ipv6_prefix;
        self.verified.get(&self.key(a)).is_some_and(|e| live(*e))
            || self
                .tables
                .verified
                .iter()
                .any(|(n, e)| !Self::is_source(n, prefix) && n.contains(&a) && live(*e))
    }

    fn listed(list: &[IpNet], a: IpAddr) -> bool {
        list.iter().any(|n| n.contains(&a))
    }

    fn banned(&self, a: IpAddr, now: u64) -> bool {
        self.tables
            .bans
            .iter()
            .any(|(n, exp)| n.contains(&a) && (*exp == 0 || now < *exp))
    }

    fn key(&self, a: IpAddr) -> SrcKey {
        match a {
            IpAddr::V4(v4) => src_key_v4(v4.octets()),
            IpAddr::V6(v6) => mask_v6(&v6.octets(), self.tables.policy.ipv6_prefix),
        }
    }

    /// The verdict for `frame` at monotonic time `now` (ns). Updates bucket
    /// and escalation state like the kernel does.
    pub fn decide(&mut self, frame: &[u8], now: u64) -> Decision {
        let ok = Decision {
            reason: Reason::Ok,
            method: None,
        };
        let Some(p) = parse(frame) else { return ok };
        let pol = self.tables.policy;

        if Self::listed(&self.tables.allow, p.src) {
            return self.allowlisted(frame, &p, now);
        }
        let denied = Self::listed(&self.tables.deny, p.src);
        let banned = self.banned(p.src, now);

        // A transport out of reach has an unknown port: treated as
        // protected. Deny and ban win (whatever the scope); otherwise it is
        // dropped as malformed, whether or not `drop_malformed` is set.
        if p.unwalked {
            if denied || banned {
                let reason = if denied { Reason::Deny } else { Reason::Ban };
                return Decision {
                    reason,
                    method: None,
                };
            }
            let key = self.key(p.src);
            self.escalate(&key, p.src, now, Reason::Malformed);
            return Decision {
                reason: Reason::Malformed,
                method: None,
            };
        }

        let proto = if p.l4 > MAX_L4_OFFSET { 59 } else { p.proto };
        let l4 = if p.later_fragment {
            None
        } else {
            frame.get(p.l4..)
        };
        let udp = l4.filter(|_| proto == 17).and_then(|b| b.get(..8));
        let tcp = l4.filter(|_| proto == 6).and_then(|b| b.get(..20));
        let protected = match (udp, tcp) {
            (Some(u), _) => {
                self.tables.port_flags(u16::from_be_bytes([u[2], u[3]])) & PORT_UDP != 0
            }
            (_, Some(t)) => {
                self.tables.port_flags(u16::from_be_bytes([t[2], t[3]])) & PORT_TCP != 0
            }
            _ => false,
        };

        if (denied || banned) && (protected || pol.flags & F_SCOPE_SIP == 0) {
            let reason = if denied { Reason::Deny } else { Reason::Ban };
            return Decision {
                reason,
                method: None,
            };
        }
        let key = self.key(p.src);
        if p.later_fragment {
            // With the budget on, an unverified source without state gets
            // none from a fragment (SPEC §2 step 7b).
            let stateless = pol.unverified.is_limited()
                && !self.is_verified(p.src, now)
                && !self.sources.contains_key(&key);
            if pol.packet.is_limited()
                && !stateless
                && !self.spend(&key, now, TAT_PACKET, &pol.packet)
            {
                self.escalate(&key, p.src, now, Reason::Rate);
                return Decision {
                    reason: Reason::Rate,
                    method: None,
                };
            }
            return ok;
        }
        if !protected {
            return ok;
        }
        if pol.flags & F_TRUNK_ONLY != 0 {
            return Decision {
                reason: Reason::NotAllowed,
                method: None,
            };
        }

        let mut method = None;
        let mut syn = false;
        let mut request_ids = TxnIds::default();
        let mut reply_ids = TxnIds::default();
        let mut reply = false;
        let mut held = false;
        if let Some(u) = udp {
            let udp_len = usize::from(u16::from_be_bytes([u[4], u[5]]));
            let pay = p.l4 + 8;
            let plen = frame
                .len()
                .saturating_sub(pay)
                .min(udp_len.saturating_sub(8));
            let payload = &frame[pay.min(frame.len())..][..plen];
            let mut head = [0u8; HEAD_LEN];
            let n = plen.min(HEAD_LEN);
            head[..n].copy_from_slice(&payload[..n]);
            let is_sip = match sip::classify(&head, plen) {
                PayloadKind::Request(m) => {
                    method = Some(m);
                    true
                }
                PayloadKind::Response => {
                    reply = true;
                    true
                }
                PayloadKind::Keepalive => false,
                PayloadKind::NotSip => {
                    if pol.flags & F_DROP_MALFORMED != 0 {
                        self.escalate(&key, p.src, now, Reason::Malformed);
                        return Decision {
                            reason: Reason::Malformed,
                            method: None,
                        };
                    }
                    false
                }
            };
            // SPEC §2's allowed reordering: a source with state whose
            // packet bucket is already empty is dropped `rate` before the
            // budget and the User-Agent scan (the bucket is only read).
            if pol.packet.is_limited()
                && self.sources.get_mut(&key).is_some_and(|s| {
                    s.refresh(now);
                    gcra32(s.tat[TAT_PACKET], unit(now), &pol.packet).is_none()
                })
            {
                self.escalate(&key, p.src, now, Reason::Rate);
                return Decision {
                    reason: Reason::Rate,
                    method,
                };
            }
            if method.is_some_and(|m| pol.verifies(m as usize)) {
                request_ids = txn_ids(payload);
            } else if reply && pol.verify_methods != 0 && !self.is_verified(p.src, now) {
                // A reply coming in from an unverified source (SPEC §8).
                reply_ids = txn_ids(payload);
            }
            // Step 7b: the shared budget of unverified sources; a source
            // with state is held to its own buckets (step 9) first.
            if pol.unverified.is_limited() && !self.is_verified(p.src, now) {
                if self.sources.contains_key(&key) {
                    if !self.within_buckets(&key, now, method, false) {
                        self.escalate(&key, p.src, now, Reason::Rate);
                        return Decision {
                            reason: Reason::Rate,
                            method,
                        };
                    }
                    held = true;
                }
                match gcra(self.budget_tat, now, &pol.unverified) {
                    Some(t) => self.budget_tat = t,
                    None => {
                        return Decision {
                            reason: Reason::Unverified,
                            method,
                        }
                    }
                }
            }
            if is_sip && pol.flags & F_SCAN_UA != 0 {
                if let Some(ua) = user_agent(payload) {
                    if self.tables.scanners.contains(&ua) {
                        self.escalate(&key, p.src, now, Reason::Scanner);
                        return Decision {
                            reason: Reason::Scanner,
                            method,
                        };
                    }
                }
            }
        } else if let Some(t) = tcp {
            syn = t[13] & 0x02 != 0 && t[13] & 0x10 == 0;
        }

        if !held && !self.within_buckets(&key, now, method, syn) {
            self.escalate(&key, p.src, now, Reason::Rate);
            return Decision {
                reason: Reason::Rate,
                method,
            };
        }
        // The request starting a TCP segment: its call, its CANCEL, its
        // credentials (SPEC §12, §13).
        if tcp.is_some() {
            if let Some(reason) = self.tcp_request(frame, &p, key, now, false) {
                return Decision { reason, method: None };
            }
        }
        // Step 9b: an INVITE that passed meets the destination policy.
        if method == Some(Method::Invite) {
            let payload = udp_payload(frame, &p).unwrap_or(&[]);
            if let Some(r) = self.destination(payload, p.src, false, now) {
                return Decision {
                    reason: r.reason,
                    method,
                };
            }
            if let Some(reason) = self.open_call(payload, p.src, true, now) {
                return Decision { reason, method };
            }
        }
        if method == Some(Method::Cancel) {
            let payload = udp_payload(frame, &p).unwrap_or(&[]);
            self.cancel_call(payload, p.src);
        }
        // A request that passed and may verify its source (SPEC §8).
        if let (Some(m), Some(call_id), Some((cseq, cseq_method))) =
            (method, request_ids.call_id, request_ids.cseq)
        {
            let key = TxnKey {
                src: key,
                call_id,
                cseq,
                _pad: 0,
            };
            let txn = Txn {
                seen_ns: now,
                method: m as u32,
                cseq_method: cseq_method as u32,
            };
            self.txns.insert(key, txn);
        }
        if let (Some(call_id), Some((cseq, m))) = (reply_ids.call_id, reply_ids.cseq) {
            if pol.verifies(m as usize) {
                let txn = Txn {
                    seen_ns: now,
                    method: m as u32,
                    cseq_method: m as u32,
                };
                self.txns.insert(TxnKey::contested(call_id, cseq), txn);
            }
        }
        // Digest credentials (SPEC §12).
        if let (Some(m), Some(payload)) = (method, udp_payload(frame, &p)) {
            self.auth_attempt(payload, key, m, now);
        }
        Decision {
            reason: Reason::Ok,
            method,
        }
    }

    /// Step 9: spends from the source's packet bucket, its method's and
    /// (a SYN) the SYN bucket, creating its state; false when one is empty.
    fn within_buckets(&mut self, key: &SrcKey, now: u64, method: Option<Method>, syn: bool) -> bool {
        let pol = self.tables.policy;
        let mb = method
            .and_then(|m| pol.method_bucket(m))
            .map(|(i, b)| (i, *b));
        let syn_bucket = syn && pol.syn.is_limited();
        if !(pol.packet.is_limited() || mb.is_some() || syn_bucket) {
            return true;
        }
        (!pol.packet.is_limited() || self.spend(key, now, TAT_PACKET, &pol.packet))
            && mb.is_none_or(|(i, b)| self.spend(key, now, TAT_METHOD + i, &b))
            && (!syn_bucket || self.spend(key, now, TAT_SYN, &pol.syn))
    }

    fn spend(
        &mut self,
        key: &SrcKey,
        now: u64,
        tat: usize,
        b: &shield_common::Bucket,
    ) -> bool {
        let st = self.sources.entry(*key).or_insert_with(|| SrcState::new(now));
        st.refresh(now);
        st.spend(tat, now, b)
    }

    /// Counts a drop towards the source's escalation, if its reason is one
    /// that escalates (the shared rule, [`Reason::escalates`]).
    fn escalate(&mut self, key: &SrcKey, src: IpAddr, now: u64, reason: Reason) {
        let pol = self.tables.policy;
        if pol.escalate_drops == 0 || !reason.escalates() {
            return;
        }
        let st = self.sources.entry(*key).or_insert_with(|| SrcState::new(now));
        st.refresh(now);
        st.meta = Meta::count_drop(st.meta, now, pol.escalate_window_ns);
        if Meta::drops(st.meta) != pol.escalate_drops {
            return;
        }
        // A verified source is never reported for escalation.
        if self.is_verified(src, now) {
            return;
        }
        self.report(key, src, reason, pol.escalate_drops, now);
    }

    /// The offender report the kernel writes for `src` (keyed `key`).
    pub(super) fn report(&mut self, key: &SrcKey, src: IpAddr, reason: Reason, drops: u32, now: u64) {
        let (family, prefix_len, addr) = match src {
            IpAddr::V4(a) => {
                let mut addr = [0u8; 16];
                addr[..4].copy_from_slice(&a.octets());
                (FAMILY_V4, 32, addr)
            }
            IpAddr::V6(_) => (FAMILY_V6, self.tables.policy.ipv6_prefix as u8, *key),
        };
        self.events.push(OffenderEvent {
            addr,
            family,
            prefix_len,
            reason: reason as u8,
            _pad: 0,
            drops,
            ts_ns: now,
        });
    }
}

impl Model {
    /// The egress classifier on `frame` (leaving the host) at `now`:
    /// `None` if it is not a SIP response from a protected port. A final
    /// 2xx to a method in `[verify] methods` verifies the destination.
    /// A segment holding several messages: the first reply (see
    /// [`Model::egress_all`]).
    pub fn egress(&mut self, frame: &[u8], now: u64) -> Option<Reply> {
        self.egress_all(frame, now).into_iter().next()
    }

    /// The egress classifier on `frame`: every reply it reads, in order.
    /// A UDP datagram holds one message; a TCP segment up to
    /// `SEGMENT_MAX_MESSAGES`, read in turn while each one's end is known
    /// ([`next_message`]) and starts within the kernel's reach.
    pub fn egress_all(&mut self, frame: &[u8], now: u64) -> Vec<Reply> {
        let mut out = Vec::new();
        let Some((p, pay, plen, tcp)) = self.egress_payload(frame) else {
            return out;
        };
        let payload = &frame[pay.min(frame.len())..][..plen];
        let mut at = 0;
        for _ in 0..SEGMENT_MAX_MESSAGES {
            // (The kernel's bounds on a message's offset and length.)
            if pay + at > MAX_PAYLOAD_OFFSET || plen - at > 0xffff {
                break;
            }
            let msg = &payload[at..];
            let (sip, reply) = self.egress_message(msg, p.dst, now);
            out.extend(reply);
            if !sip || !tcp {
                break;
            }
            match next_message(msg) {
                Some(n) => at += n,
                None => break,
            }
        }
        out
    }

    /// The frame leaving the host from a protected port: its parse, the
    /// payload's offset and length, and whether it is TCP.
    fn egress_payload(&self, frame: &[u8]) -> Option<(Parsed, usize, usize, bool)> {
        let p = parse(frame)?;
        if p.later_fragment || p.unwalked || p.l4 > MAX_L4_OFFSET {
            return None;
        }
        let l4 = frame.get(p.l4..)?;
        let (pay, wire_len) = match p.proto {
            17 => {
                let u = l4.get(..8)?;
                let sport = u16::from_be_bytes([u[0], u[1]]);
                if self.tables.port_flags(sport) & PORT_UDP == 0 {
                    return None;
                }
                let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
                (p.l4 + 8, ulen.saturating_sub(8))
            }
            6 => {
                let t = l4.get(..20)?;
                let sport = u16::from_be_bytes([t[0], t[1]]);
                if self.tables.port_flags(sport) & PORT_TCP == 0 {
                    return None;
                }
                let doff = usize::from(t[12] >> 4) * 4;
                if doff < 20 {
                    return None;
                }
                (p.l4 + doff, usize::MAX)
            }
            _ => return None,
        };
        let plen = frame.len().saturating_sub(pay).min(wire_len);
        let tcp = p.proto == 6;
        Some((p, pay, plen, tcp))
    }

    /// One message leaving the host for `dst`: whether it starts with a
    /// SIP start line (then the next one may be read), and the reply it
    /// is, if a response.
    fn egress_message(&mut self, payload: &[u8], dst: IpAddr, now: u64) -> (bool, Option<Reply>) {
        let plen = payload.len();
        let mut head = [0u8; HEAD_LEN];
        let n = plen.min(HEAD_LEN);
        head[..n].copy_from_slice(&payload[..n]);
        let Some(class) = response::status_class(&head, plen) else {
            return (starts_message(&head, plen), None);
        };
        let ids = txn_ids(payload);
        let found = ids.cseq.map(|(_, m)| m);
        let pol = self.tables.policy;
        let verifies = class >= 2 && self.settle(&ids, dst, class, now);
        let authed = match (ids.call_id, ids.cseq) {
            (Some(call_id), Some((cseq, m))) if class >= 2 => {
                let status = shield_common::auth::status_code(&head);
                self.auth_settle(payload, dst, (call_id, cseq, m as u32), status, now)
            }
            _ => false,
        };
        if class >= 2 {
            let challenge = shield_common::calls::is_challenge(&head);
            self.call_reply(&ids, dst, class, challenge, now);
        }
        if verifies || authed {
            let exp = now.saturating_add(pol.verify_ttl_ns);
            let e = self.verified.entry(self.key(dst)).or_insert(exp);
            if *e != 0 && *e < exp {
                *e = exp;
            }
        }
        let reply = Reply {
            method: found.unwrap_or(Method::Other),
            class,
        };
        (true, Some(reply))
    }

    /// A final reply to `dst` with these Call-ID and CSeq uses up the
    /// request remembered from `dst` that it answers (same CSeq method);
    /// whether it verifies.
    fn settle(&mut self, ids: &TxnIds, dst: IpAddr, class: u8, now: u64) -> bool {
        let (Some(call_id), Some((cseq, m))) = (ids.call_id, ids.cseq) else {
            return false;
        };
        let key = TxnKey {
            src: self.key(dst),
            call_id,
            cseq,
            _pad: 0,
        };
        match self.txns.get(&key) {
            Some(t) if t.cseq_method == m as u32 => {
                let t = *t;
                self.txns.remove(&key);
                let contested = self
                    .txns
                    .get(&TxnKey::contested(call_id, cseq))
                    .is_some_and(|c| c.live(now));
                t.verified_by(&self.tables.policy, class, now) && !contested
            }
            _ => false,
        }
    }
}


/// The Call-ID and CSeq: the first of each among the header lines starting
/// within `UA_SCAN_LIMIT` bytes, before the blank line, among the first
/// `TXN_MAX_C_LINES` lines that start with `c` or `C`; a garbled one ends
/// the walk.
pub fn txn_ids(payload: &[u8]) -> TxnIds {
    let mut ids = TxnIds::default();
    let (c, i) = shield_common::txn::TXN_LETTERS;
    header_walk(payload, &[c, i], TXN_MAX_C_LINES, |win| ids.take(txn_line(win)));
    ids
}

/// Where the message after the one starting `payload` (the rest of its
/// TCP segment) starts, in bytes from its start (`shield_common::framing`):
/// the header lines starting with `c`/`l` within `UA_SCAN_LIMIT` bytes, at
/// most `FRAMING_MAX_LINES` of them, each parsed as the kernel's zero-filled
/// `UA_WINDOW` copy, up to the blank line. `None`: unknown, or past the
/// segment. The kernel's `lines::message_end`.
pub fn next_message(payload: &[u8]) -> Option<usize> {
    let (c, l) = FRAMING_LETTERS;
    let limit = payload.len().min(UA_SCAN_LIMIT);
    let mut framing = Framing::default();
    let mut seen = 0;
    for start in 1..limit {
        if payload[start - 1] != b'\n' {
            continue;
        }
        let first = payload[start];
        if first == b'\r' || first == b'\n' {
            let b1 = payload.get(start + 1).copied().unwrap_or(0);
            return framing.next(start, first, b1, payload.len());
        }
        let lower = first.to_ascii_lowercase();
        if lower != c && lower != l {
            continue;
        }
        if seen == FRAMING_MAX_LINES {
            return None;
        }
        seen += 1;
        let mut win = [0u8; UA_WINDOW];
        let n = (payload.len() - start).min(UA_WINDOW);
        win[..n].copy_from_slice(&payload[start..start + n]);
        if framing.take(length_line(&win)) {
            return None;
        }
    }
    None
}

/// The messages of a TCP segment's `payload` as the kernel reads them: each
/// one's offset, up to `SEGMENT_MAX_MESSAGES`, while the one before starts
/// with a SIP start line and its end is known.
pub fn segment_messages(payload: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    let mut at = 0;
    while out.len() < SEGMENT_MAX_MESSAGES {
        let msg = &payload[at..];
        let mut head = [0u8; HEAD_LEN];
        let n = msg.len().min(HEAD_LEN);
        head[..n].copy_from_slice(&msg[..n]);
        if !starts_message(&head, msg.len()) {
            break;
        }
        match next_message(msg) {
            Some(n) => {
                at += n;
                out.push(at);
            }
            None => break,
        }
    }
    out
}

/// The CSeq method (see [`txn_ids`]).
pub fn cseq_method(payload: &[u8]) -> Option<Method> {
    txn_ids(payload).cseq.map(|(_, m)| m)
}

/// Walks the header lines starting within `UA_SCAN_LIMIT` bytes, up to the
/// blank line, handing at most `max_lines` of those whose first letter is
/// one of `letters` (either case) to `line` (the payload from the line's
/// start), until it says stop.
pub(crate) fn header_lines(
    payload: &[u8],
    letters: &[u8],
    max_lines: usize,
    mut line: impl FnMut(&[u8]) -> bool,
) {
    let limit = payload.len().min(UA_SCAN_LIMIT);
    let mut seen = 0;
    for start in 1..limit {
        if payload[start - 1] != b'\n' {
            continue;
        }
        let c = payload[start];
        if c == b'\r' || c == b'\n' {
            return;
        }
        if !letters.contains(&c.to_ascii_lowercase()) {
            continue;
        }
        if seen == max_lines {
            return;
        }
        seen += 1;
        if line(&payload[start..]) {
            return;
        }
    }
}

/// [`header_lines`] for lines starting with one of `letters`, each handed
/// over as the kernel's zero-filled `UA_WINDOW` copy.
fn header_walk(
    payload: &[u8],
    letters: &[u8],
    max_lines: usize,
    mut line: impl FnMut(&[u8; UA_WINDOW]) -> bool,
) {
    header_lines(payload, letters, max_lines, |rest| {
        let mut win = [0u8; UA_WINDOW];
        let n = rest.len().min(UA_WINDOW);
        win[..n].copy_from_slice(&rest[..n]);
        line(&win)
    });
}

/// The User-Agent product token: the first header line starting within
/// `UA_SCAN_LIMIT` bytes whose name is `User-Agent`, before the blank line,
/// among the first `UA_MAX_U_LINES` lines that start with `u` or `U`.
pub fn user_agent(payload: &[u8]) -> Option<UaKey> {
    let mut found = None;
    header_walk(payload, &[b'u'], UA_MAX_U_LINES, |win| match sip::ua_line(win) {
        UaLine::NotUa => false,
        UaLine::NoToken => true,
        UaLine::Token(k) => {
            found = Some(k);
            true
        }
    });
    found
}

impl Model {
    /// Step 2 with SPEC §11's exception: an allowlisted source's UDP
    /// INVITE to a protected port still meets the destination policy
    /// (unless `check_allowlisted = false`, or there is nothing to refuse).
    fn allowlisted(&mut self, frame: &[u8], p: &Parsed, now: u64) -> Decision {
        let pass = Decision {
            reason: Reason::Allowlisted,
            method: None,
        };
        let dp = self.tables.dest;
        // Looked at even when the policy refuses nothing: its calls are
        // tracked (SPEC §13).
        if !dp.has(shield_common::dest::D_CHECK_ALLOWLISTED)
            || p.later_fragment
            || (p.proto != 17 && p.proto != 6)
            || p.l4 > MAX_L4_OFFSET
        {
            return pass;
        }
        if p.proto == 6 {
            // Every request of the segment: INVITEs tracked, never
            // limited, never refused; CANCELs read as anyone's.
            let key = self.key(p.src);
            let _ = self.tcp_request(frame, p, key, now, true);
            return pass;
        }
        let Some(u) = frame.get(p.l4..p.l4 + 8) else {
            return pass;
        };
        if self.tables.port_flags(u16::from_be_bytes([u[2], u[3]])) & PORT_UDP == 0 {
            return pass;
        }
        let Some(payload) = udp_payload(frame, p) else {
            return pass;
        };
        // The kernel reads the first line's HEAD_LEN bytes in one load.
        if frame.len() < p.l4 + 8 + HEAD_LEN {
            return pass;
        }
        let mut head = [0u8; HEAD_LEN];
        head.copy_from_slice(&frame[p.l4 + 8..p.l4 + 8 + HEAD_LEN]);
        match sip::classify(&head, payload.len()) {
            PayloadKind::Request(Method::Invite) => {}
            // A trunk's CANCEL ends its call `cancelled` as anyone's.
            PayloadKind::Request(Method::Cancel) if self.tables.calls.on() => {
                self.cancel_call(payload, p.src);
                return pass;
            }
            _ => return pass,
        }
        match self.destination(payload, p.src, true, now) {
            Some(r) => Decision {
                reason: r.reason,
                method: Some(Method::Invite),
            },
            None => {
                // Tracked, never limited: the allowlist overrides the limit.
                let _ = self.open_call(payload, p.src, false, now);
                pass
            }
        }
    }
}

impl Model {
    /// A TCP segment to a protected port that passed steps 2-9: each of
    /// its messages in turn (up to `SEGMENT_MAX_MESSAGES`, while each
    /// starts with a SIP start line and its end is known), as the kernel's
    /// `tcp::request` reads them. An INVITE opens its call, a CANCEL marks
    /// the caller's call (both only on an established connection), a
    /// REGISTER or INVITE with credentials is an attempt (any segment: a
    /// forged one cannot carry a nonce its source was sent). `Some`: an
    /// INVITE's source is at its call limit (the segment is dropped,
    /// nothing after that INVITE read).
    fn tcp_request(&mut self, frame: &[u8], p: &Parsed, key: SrcKey, now: u64, allowlisted: bool) -> Option<Reason> {
        let (pay, established) = tcp_segment(frame, p, &self.tables)?;
        let payload = &frame[pay.min(frame.len())..];
        let mut at = 0;
        for _ in 0..SEGMENT_MAX_MESSAGES {
            // (The kernel's bounds: a message starting in the payload and
            // within reach, its first HEAD_LEN bytes in the frame.)
            if at >= payload.len() || pay + at > MAX_PAYLOAD_OFFSET || payload.len() - at > 0xffff {
                return None;
            }
            let msg = &payload[at..];
            let head: &[u8; HEAD_LEN] = msg.get(..HEAD_LEN)?.try_into().ok()?;
            if let PayloadKind::Request(method) = sip::classify(head, msg.len()) {
                if let Some(reason) = self.tcp_message(msg, p, key, (method, allowlisted), established, now) {
                    return Some(reason);
                }
            }
            if !starts_message(head, msg.len()) {
                return None;
            }
            at += next_message(msg)?;
        }
        None
    }

    /// One request of a TCP segment (`payload`: from its start to the
    /// segment's end): see [`Model::tcp_request`].
    fn tcp_message(
        &mut self,
        payload: &[u8],
        p: &Parsed,
        key: SrcKey,
        (method, allowlisted): (Method, bool),
        established: bool,
        now: u64,
    ) -> Option<Reason> {
        if method == Method::Invite && established {
            if let Some(reason) = self.open_call(payload, p.src, !allowlisted, now) {
                return Some(reason);
            }
        }
        if method == Method::Cancel {
            if established {
                self.cancel_call(payload, p.src);
            }
            return None;
        }
        // An allowlisted source's credentials are not read (as over UDP).
        if !allowlisted {
            self.auth_attempt(payload, key, method, now);
        }
        None
    }
}

/// The TCP segment at `p.l4` to a TCP-protected port: its payload's
/// offset in the frame and whether the connection is one the host has
/// established, as the kernel's `tcp::shield_tcp_request` and
/// `conn::shield_tcp_established` read them.
fn tcp_segment(frame: &[u8], p: &Parsed, tables: &Tables) -> Option<(usize, bool)> {
    let t = frame.get(p.l4..p.l4 + 20)?;
    let (sport, dport) = (u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]]));
    if tables.port_flags(dport) & PORT_TCP == 0 {
        return None;
    }
    let doff = usize::from(t[12] >> 4) * 4;
    let pay = p.l4 + doff;
    if doff < 20 || pay > MAX_PAYLOAD_OFFSET {
        return None;
    }
    // A segment of no established connection is a forged source's.
    let established = tables.tcp_established.contains(&(p.src, sport, p.dst, dport));
    Some((pay, established))
}

/// The UDP payload (as long as the UDP header says and the frame has).
fn udp_payload<'f>(frame: &'f [u8], p: &Parsed) -> Option<&'f [u8]> {
    let u = frame.get(p.l4..p.l4 + 8)?;
    let udp_len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    let pay = p.l4 + 8;
    let plen = frame.len().saturating_sub(pay).min(udp_len.saturating_sub(8));
    frame.get(pay..pay + plen)
}

mod auth;
mod calls;
pub use auth::{digest, AuthState};
mod dest;
pub use calls::CallTable;
pub use dest::Refused;
