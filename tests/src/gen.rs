//! Random and mutated frames for the differential test: plausible SIP
//! traffic in every L2/L3 shape the program walks, then truncated, bit-
//! flipped, overwritten or replaced by noise.

use crate::frames::{Ext, Frame, L3, L4, TPID_8021AD, TPID_8021Q};

/// Generated frames stay within one XDP buffer of `BPF_PROG_TEST_RUN`
/// (a page minus head- and tailroom); longer ones are cut to this.
pub const MAX_FRAME: usize = 3400;
/// Bytes of IPv6 extension headers one frame may carry: enough to push the
/// transport past `MAX_L4_OFFSET`, with room left for a payload.
const V6_EXT_BUDGET: usize = 2600;

/// SplitMix64: small, fast, and deterministic for a given seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Sources the differential test's tables know about (allowed, denied,
/// banned, plain), so every list and bucket gets exercised.
pub const V4_SOURCES: [[u8; 4]; 8] = [
    [198, 51, 100, 1], // allowlisted
    [198, 51, 100, 2], // denied
    [198, 51, 100, 3], // banned
    [198, 51, 100, 4], // ban expired
    [198, 51, 100, 5],
    [198, 51, 100, 6],
    [203, 0, 113, 7], // in the banned /28
    [192, 0, 2, 99],
];

pub fn v6_source(rng: &mut Rng) -> [u8; 16] {
    // 2001:db8:N::M: N = 1 allowlisted /48, 2 banned /64, 3..4 plain.
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[5] = 1 + rng.below(4) as u8;
    a[7] = rng.below(2) as u8; // two /64s inside each
    a[15] = 1 + rng.below(3) as u8;
    a
}

const METHODS: [&str; 18] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
    "FOO",
    "invite",
    "X-EXT.1",
    "REGISTERX",
];

const USER_AGENTS: [&str; 10] = [
    "friendly-scanner",
    "Friendly-Scanner/0.1",
    "SIPVICIOUS",
    "sipcli/v1.8",
    "VaxSIPUserAgent/3.1",
    "Linphone/5.2.0",
    "Asterisk PBX 20.5.0",
    "Zoiper rv2.10",
    "smap",
    "pplsip",
];

/// Request-URIs that exercise the destination policy (SPEC §11): premium
/// and allowed international numbers in every spelling, national ones,
/// strip prefixes, escapes, no number, no user part, and a number padded
/// past the kernel's window.
const DIAL_STRINGS: [&str; 18] = [
    "sip:00899123456@198.51.100.1",
    "sip:+8991234@sbc",
    "sip:900899555@sbc",
    "tel:+1-900-555-0100",
    "sip:%2B33123456@sbc;user=phone",
    "SIP:0033612345678@sbc",
    "sip:0049301234@sbc",
    "sip:01144207123@sbc",
    "sip:0900123@sbc",
    "sips:0800123@sbc",
    "sip:alice@sbc",
    "sip:00899%zz@sbc",
    "sip:198.51.100.1",
    "sip:+44%20(20)%207123@sbc",
    "sip:+33-1-23;phone-context=x@sbc",
    "sip:*97@sbc",
    "tel:+8991",
    "sip:00899123:pw@sbc",
];

/// A Request-URI from `DIAL_STRINGS`, now and then padded with escaped
/// separators past the kernel's 128-byte window, or cut short.
fn request_uri(rng: &mut Rng) -> String {
    let uri = rng.pick(&DIAL_STRINGS).to_string();
    match rng.below(20) {
        0 => uri.replacen(':', &format!(":{}", "%2D".repeat(1 + rng.below(50))), 1),
        1 => uri[..1 + rng.below(uri.len())].to_owned(),
        _ => uri,
    }
}

/// A SIP message with random method, headers, User-Agent placement,
/// spacing and body.
fn sip_message(rng: &mut Rng) -> Vec<u8> {
    let mut s = String::new();
    if rng.chance(15) {
        s.push_str(&format!("SIP/2.0 {} OK\r\n", 100 + rng.below(500)));
    } else {
        let uri = if rng.chance(20) {
            "sip:100@198.51.100.1".to_owned()
        } else {
            request_uri(rng)
        };
        // INVITEs more often than the other methods: the destination
        // policy (SPEC §11) reads only them.
        let method = if rng.chance(45) { "INVITE" } else { rng.pick(&METHODS) };
        s.push_str(&format!("{method} {uri} SIP/2.0\r\n"));
    }
    let headers = [
        "Via: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        "To: <sip:100@198.51.100.1>",
        "To: <sip:100@198.51.100.1>;tag=as7d9",
        "t: \"x;tag=1\" <sip:100@198.51.100.1>",
        "From: <sip:100@198.51.100.1>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.example",
        "CSeq: 314159 INVITE",
        // The CSeqs of `response_frame`'s replies: some of those answer
        // these requests (SPEC §8 pairs them by Call-ID and CSeq).
        "CSeq: 1 REGISTER",
        "CSeq: 102 INVITE",
        "Contact: <sip:100@203.0.113.7>",
        "Unsupported: foo",
        "Supported: replaces",
        "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE",
    ];
    if rng.chance(15) {
        // Several `U...` lines ahead of the User-Agent: the scan examines
        // only UA_MAX_U_LINES of them.
        for _ in 0..2 + rng.below(5) {
            s.push_str(rng.pick(&["Unsupported: 100rel\r\n", "Urgency: high\r\n", "u: x\r\n"]));
        }
    }
    let n = rng.below(8);
    let ua_at = if rng.chance(60) {
        Some(rng.below(n + 1))
    } else {
        None
    };
    for i in 0..=n {
        if ua_at == Some(i) {
            let name = *rng.pick(&[
                "User-Agent",
                "user-agent",
                "USER-AGENT",
                "User-Agents",
                "UserAgent",
            ]);
            let before = " ".repeat(rng.below(6));
            let after = *rng.pick(&["", " ", "  ", "\t", "      "]);
            s.push_str(&format!(
                "{name}{before}:{after}{}\r\n",
                rng.pick(&USER_AGENTS)
            ));
        }
        if i < n {
            s.push_str(rng.pick(&headers));
            s.push_str("\r\n");
        }
    }
    if rng.chance(50) {
        // More calls (SPEC §13): a source reaches its limit of two.
        s.push_str(&call_id(rng));
    }
    if rng.chance(30) {
        // Digest credentials (SPEC §12), some with a nonce the replies
        // of `response_frame` carry.
        s.push_str(rng.pick(&CREDENTIALS));
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    if rng.chance(20) {
        // A body that itself looks like headers.
        s.push_str("User-Agent: friendly-scanner\r\nv=0\r\n");
    }
    if rng.chance(5) {
        // A long header pushes what follows past the scan limit.
        s.insert_str(s.find("\r\n").unwrap_or(0), &"x".repeat(rng.below(1400)));
    }
    s.into_bytes()
}

fn payload(rng: &mut Rng) -> Vec<u8> {
    match rng.below(20) {
        0 => b"\r\n".to_vec(),
        1 => b"\r\n\r\n".to_vec(),
        2 => {
            let mut b = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
            let n = 12 + rng.below(12);
            b.extend(rng.bytes(n));
            b
        }
        3 => {
            let n = rng.below(64);
            rng.bytes(n)
        }
        4 => Vec::new(),
        _ => sip_message(rng),
    }
}

fn l3(rng: &mut Rng) -> L3 {
    if rng.chance(70) {
        let opts = 4 * rng.below(11);
        let frag = if rng.chance(85) {
            0
        } else {
            rng.below(8192) as u16
        };
        // A hot source sends a good share, so buckets empty and escalation
        // reports fire within a case.
        let src = if rng.chance(40) {
            V4_SOURCES[4]
        } else {
            *rng.pick(&V4_SOURCES)
        };
        L3::V4 {
            src,
            dst: [198, 51, 100, 254],
            options: (0..opts).map(|_| 1).collect(),
            frag_offset: frag,
            more_frags: rng.chance(10),
        }
    } else {
        L3::V6 {
            src: v6_source(rng),
            dst: crate::frames::SBC_V6,
            ext: v6_chain(rng),
        }
    }
}

/// An IPv6 extension chain: mostly none or a short one, sometimes 0..=12
/// headers (past `MAX_V6_EXT`), mixing hop-by-hop, routing, destination
/// options, first and later fragments, headers the shield does not walk,
/// and odd lengths up to 255 that push the transport past `MAX_L4_OFFSET`.
fn v6_chain(rng: &mut Rng) -> Vec<Ext> {
    let n = match rng.below(10) {
        0..=4 => 0,
        5..=6 => 1 + rng.below(4),
        7 => rng.below(13),
        // Around MAX_V6_EXT (8): 7..=12.
        _ => 7 + rng.below(6),
    };
    let mut budget = V6_EXT_BUDGET;
    let mut chain = Vec::with_capacity(n);
    for _ in 0..n {
        // Length in 8-octet units past the first eight: mostly small.
        let want = match rng.below(10) {
            0..=6 => rng.below(3),
            7..=8 => rng.below(32),
            _ => rng.below(256),
        };
        let len = want.min((budget / 8).saturating_sub(1));
        let e = match rng.below(20) {
            0..=4 => Ext::HopByHop(len as u8),
            5..=8 => Ext::Routing(len as u8),
            9..=13 => Ext::DestOpts(len as u8),
            14..=18 => Ext::Fragment {
                offset: if rng.chance(60) {
                    0
                } else {
                    1 + rng.below(8191) as u16
                },
                more: rng.chance(50),
            },
            _ => Ext::Other {
                proto: *rng.pick(&[51u8, 50, 135, 139, 140, 253, 254, 255]),
                len: len as u8,
            },
        };
        budget = budget.saturating_sub(match e {
            Ext::Fragment { .. } => 8,
            _ => (len + 1) * 8,
        });
        chain.push(e);
    }
    chain
}

fn l4(rng: &mut Rng) -> L4 {
    let port = |rng: &mut Rng| *rng.pick(&[5060u16, 5060, 5060, 5061, 5080, 53, 443]);
    match rng.below(20) {
        0..=14 => L4::Udp {
            sport: 5062,
            dport: port(rng),
        },
        15..=18 => L4::Tcp {
            sport: 40000,
            dport: port(rng),
            syn: rng.chance(60),
            ack: rng.chance(40),
        },
        // Other transports, "no next header", and extension-header numbers
        // whose header is then made of the payload's bytes.
        _ => L4::Raw(*rng.pick(&[1u8, 58, 47, 132, 59, 255, 0, 43, 44, 60])),
    }
}

/// One frame: a plausible one, then maybe mutated.
pub fn frame(rng: &mut Rng) -> Vec<u8> {
    let vlans = match rng.below(10) {
        0 => vec![TPID_8021Q],
        1 => vec![TPID_8021AD, TPID_8021Q],
        2 if rng.chance(20) => vec![TPID_8021AD, TPID_8021Q, TPID_8021Q],
        _ => vec![],
    };
    let mut f = Frame {
        vlans,
        l3: l3(rng),
        l4: l4(rng),
        payload: payload(rng),
    }
    .build();
    mutate(rng, &mut f);
    f
}

/// Truncations, bit flips, overwritten bytes and noise (most frames are
/// left alone).
fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    f.truncate(MAX_FRAME);
    match rng.below(20) {
        // Truncated anywhere after the Ethernet header (test_run's minimum).
        0..=2 => {
            let cut = 14 + rng.below(f.len() - 13);
            f.truncate(cut);
        }
        // Bit flips.
        3..=6 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
        }
        // Overwritten bytes.
        7..=8 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(f.len());
                f[i] = rng.next_u64() as u8;
            }
        }
        // Noise after a valid Ethernet header, or noise throughout.
        9 => {
            let n = rng.below(300);
            f.truncate(14);
            f.extend(rng.bytes(n));
        }
        10 => {
            let n = 14 + rng.below(300);
            *f = rng.bytes(n);
        }
        _ => {}
    }
}

/// A frame leaving the SBC (for the egress classifier): mostly SIP
/// responses from a protected port to one of the sources above, with every
/// status class and garbage codes, CSeq in all spellings and places,
/// missing or garbled; also requests leaving the host, other ports, and
/// the same L2/L3 shapes and mutations as [`frame`].
pub fn response_frame(rng: &mut Rng) -> Vec<u8> {
    let vlans = match rng.below(10) {
        0 => vec![TPID_8021Q],
        1 => vec![TPID_8021AD, TPID_8021Q],
        _ => vec![],
    };
    // The SBC is the source; the destination is a (would-be) client.
    let l3 = match l3(rng) {
        L3::V4 { src, dst, options, frag_offset, more_frags } => L3::V4 {
            src: dst,
            dst: src,
            options,
            frag_offset,
            more_frags,
        },
        L3::V6 { src, dst, ext } => L3::V6 { src: dst, dst: src, ext },
    };
    let sport = *rng.pick(&[5060u16, 5060, 5060, 5061, 5062, 40000]);
    let l4 = match rng.below(10) {
        0..=6 => L4::Udp { sport, dport: 5062 },
        7..=8 => L4::Tcp { sport, dport: 40000, syn: false, ack: true },
        _ => L4::Raw(*rng.pick(&[1u8, 58, 59])),
    };
    let mut payload = response_payload(rng);
    if matches!(l4, L4::Tcp { .. }) && rng.chance(40) {
        let first = String::from_utf8_lossy(&payload).into_owned();
        payload = segment(rng, first, |r| String::from_utf8_lossy(&response_payload(r)).into_owned()).into_bytes();
    }
    let mut f = Frame { vlans, l3, l4, payload }.build();
    mutate(rng, &mut f);
    f
}

/// One of a few Call-ID lines: the calls of SPEC §13 (the fixed Call-ID
/// among the other headers may come first and win).
fn call_id(rng: &mut Rng) -> String {
    format!("Call-ID: call-{}@pc33.example\r\n", rng.below(4))
}

const CSEQ_LINES: [&str; 12] = [
    "CSeq: 1 REGISTER",
    "CSeq: 102 INVITE",
    "cseq:7 REGISTER",
    "CSEQ \t: \t 4294967295  INVITE",
    "CSeq: 3 OPTIONS",
    "CSeq: 3 BYE",
    "CSeq: 9 register",
    "CSeq: INVITE",
    "CSeq: 12345678901 INVITE",
    "CSeq: 1 FOO-BAR",
    "CSeqs: 1 INVITE",
    "CSeq: 1 INV\u{1}TE",
];

/// A response (or, sometimes, a request) with a random status line and
/// CSeq placement.
fn response_payload(rng: &mut Rng) -> Vec<u8> {
    let mut s = match rng.below(20) {
        0 => format!("{} sip:100@203.0.113.7 SIP/2.0\r\n", rng.pick(&METHODS)),
        1 => format!("SIP/2.0 {}{} x\r\n", rng.below(1000), rng.pick(&["", "0", " "])),
        2 => "SIP/2.1 200 OK\r\n".to_string(),
        _ => format!(
            "SIP/2.0 {} {}\r\n",
            *rng.pick(&[100u32, 180, 183, 200, 200, 200, 202, 301, 401, 407, 403, 486, 500, 503, 603, 699])
                + if rng.chance(5) { rng.below(100) as u32 } else { 0 },
            rng.pick(&["OK", "Unauthorized", "Trying", ""])
        ),
    };
    let c_lines = [
        "Call-ID: a84b4c76e66710@pc33.example",
        "Contact: <sip:100@198.51.100.1>",
        "Content-Type: application/sdp",
        "c: x",
    ];
    s.push_str("Via: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK776asdhds\r\n");
    let before = rng.below(11);
    for _ in 0..before {
        s.push_str(rng.pick(&c_lines));
        s.push_str("\r\n");
    }
    if rng.chance(40) {
        s.push_str(&call_id(rng));
    }
    if rng.chance(85) {
        s.push_str(rng.pick(&CSEQ_LINES));
        s.push_str("\r\n");
    }
    if rng.chance(40) {
        s.push_str(rng.pick(&CHALLENGES));
        s.push_str("\r\n");
    }
    s.push_str("To: <sip:100@198.51.100.1>;tag=x\r\nContent-Length: 0\r\n\r\n");
    if rng.chance(10) {
        s.push_str("CSeq: 1 INVITE\r\n"); // in the body: never read
    }
    if rng.chance(5) {
        s.insert_str(s.find("\r\n").unwrap_or(0), &"x".repeat(rng.below(1400)));
    }
    s.into_bytes()
}

/// A final (or provisional) reply of the SBC to a call of SPEC §13: one
/// of the few Call-IDs, CSeq INVITE or BYE, to one of the sources above;
/// now and then mutated like the rest.
pub fn call_reply_frame(rng: &mut Rng) -> Vec<u8> {
    let mut s = call_reply(rng);
    let l3 = match call_l3(rng) {
        L3::V4 { src, dst, .. } => L3::V4 {
            src: dst,
            dst: src,
            options: Vec::new(),
            frag_offset: 0,
            more_frags: false,
        },
        L3::V6 { src, dst, .. } => L3::V6 { src: dst, dst: src, ext: Vec::new() },
    };
    let l4 = if rng.chance(25) {
        // A TCP segment may hold several replies (a CANCEL's 200 and the
        // INVITE's 487 written at once).
        if rng.chance(30) {
            s = segment(rng, s, call_reply);
        }
        L4::Tcp { sport: 5060, dport: 40000, syn: false, ack: true }
    } else {
        L4::Udp { sport: 5060, dport: 5062 }
    };
    let mut f = Frame {
        vlans: Vec::new(),
        l3,
        l4,
        payload: s.into_bytes(),
    }
    .build();
    if rng.chance(20) {
        mutate(rng, &mut f);
    }
    f
}

/// A reply of the SBC to one of the calls: a CSeq INVITE or BYE, one of
/// the few Call-IDs.
fn call_reply(rng: &mut Rng) -> String {
    let method = if rng.chance(25) { "BYE" } else { "INVITE" };
    let status = if method == "BYE" {
        *rng.pick(&[200u32, 200, 481])
    } else {
        *rng.pick(&[180u32, 183, 200, 200, 200, 200, 407, 401, 486, 487, 487, 503, 603, 302])
    };
    let mut s = format!("SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK1\r\n");
    s.push_str(&call_id(rng));
    s.push_str(&format!("CSeq: {} {method}\r\n", 1 + rng.below(2)));
    s.push_str("To: <sip:100@198.51.100.1>;tag=x\r\nContent-Length: 0\r\n\r\n");
    s
}

/// Messages back to back in one TCP segment: `first`, then one to four
/// more from `more`, each one's end (the `Content-Length: 0` line and the
/// blank line of the generators above) rewritten in one of the ways a
/// stream frames a message, or fails to: the full and compact names, a
/// body (which may look like a message itself), a bare-LF blank line; a
/// length missing, garbled, repeated, or running past the body (nothing
/// after such a message may be read).
pub fn segment(rng: &mut Rng, first: String, mut more: impl FnMut(&mut Rng) -> String) -> String {
    let n = 2 + rng.below(4);
    let mut out = String::new();
    for i in 0..n {
        let msg = if i == 0 { first.clone() } else { more(rng) };
        // (A socket buffer for a test run holds a few KB.)
        if i > 0 && out.len() + msg.len() > 1600 {
            break;
        }
        out.push_str(&framed(rng, &msg));
    }
    out
}

/// `msg` with its `Content-Length: 0` and blank line rewritten (see
/// [`segment`]).
fn framed(rng: &mut Rng, msg: &str) -> String {
    const END: &str = "Content-Length: 0\r\n\r\n";
    let Some(at) = msg.rfind(END) else {
        return msg.to_string();
    };
    let bodies = ["", "v=0\r\no=- 1 1 IN IP4 203.0.113.7\r\ns=-\r\n", "SIP/2.0 487 X\r\nCSeq: 1 INVITE\r\n\r\n", "x"];
    let body = *rng.pick(&bodies);
    let n = body.len();
    let end = match rng.below(14) {
        0..=4 => format!("Content-Length: {n}\r\n\r\n{body}"),
        5 => format!("l: {n}\r\n\r\n{body}"),
        6 => format!("content-length:{n}\r\n\n{body}"),
        7 => format!("Content-Length: {}\r\n\r\n{body}", n + 1 + rng.below(3)),
        8 => format!("Content-Length: {n}\r\nContent-Length: {n}\r\n\r\n{body}"),
        9 => format!("Content-Length: {}\r\n\r\n{body}", rng.pick(&["-1", "abc", "99999999999", "4294967295", "1 2"])),
        10 => format!("\r\n{body}"),
        11 => format!("L : {n}\r\n\r\n{body}"),
        _ => format!("Content-Length: {n}\r\n\r\n{body}"),
    };
    format!("{}{end}", &msg[..at])
}

/// A request of a call (SPEC §13): an initial INVITE (sometimes
/// retransmitted, sometimes a re-INVITE with a To tag), a CANCEL or a BYE,
/// from one of the sources above, with one of the few Call-IDs.
pub fn call_request_frame(rng: &mut Rng) -> Vec<u8> {
    let mut s = call_request(rng);
    let l3 = call_l3(rng);
    // Plain TCP too (SPEC §13), the requests sometimes several to a
    // segment (behind an OPTIONS, a reply, another request).
    let l4 = if rng.chance(25) {
        if rng.chance(40) {
            let first = match rng.below(3) {
                0 => "OPTIONS sip:sbc SIP/2.0\r\nCall-ID: ka@x\r\nCSeq: 9 OPTIONS\r\nContent-Length: 0\r\n\r\n".to_string(),
                1 => "SIP/2.0 200 OK\r\nCall-ID: ka@x\r\nCSeq: 9 OPTIONS\r\nContent-Length: 0\r\n\r\n".to_string(),
                _ => call_request(rng),
            };
            s = segment(rng, first + &s, call_request);
        }
        L4::Tcp { sport: 40000, dport: 5060, syn: false, ack: true }
    } else {
        L4::Udp { sport: 5062, dport: 5060 }
    };
    let mut f = Frame {
        vlans: Vec::new(),
        l3,
        l4,
        payload: s.into_bytes(),
    }
    .build();
    if rng.chance(10) {
        mutate(rng, &mut f);
    }
    f
}

/// A request of a call: an initial INVITE (sometimes a re-INVITE with a
/// To tag), a CANCEL or a BYE, one of the few Call-IDs.
fn call_request(rng: &mut Rng) -> String {
    let method = *rng.pick(&["INVITE", "INVITE", "INVITE", "CANCEL", "BYE"]);
    let uri = request_uri(rng);
    let mut s = format!("{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK2\r\n");
    s.push_str(if rng.chance(15) { "To: <sip:100@sbc>;tag=as7d9\r\n" } else { "To: <sip:100@sbc>\r\n" });
    s.push_str("From: <sip:1@sbc>;tag=1\r\n");
    s.push_str(&call_id(rng));
    s.push_str(&format!("CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"));
    s
}

/// The Call-ID and CSeq lines of a digest exchange: two of each, so that
/// replies often answer an attempt made a few frames before.
fn auth_ids(rng: &mut Rng, method: &str) -> String {
    format!("Call-ID: auth-{}@pc33.example\r\nCSeq: {} {method}\r\n", rng.below(2), 1 + rng.below(2))
}

/// A digest exchange's client: mostly the hot source (verified in the
/// differential test's variant 3, so its UDP requests pass the budget
/// too), else any caller of [`call_l3`].
fn auth_l3(rng: &mut Rng) -> L3 {
    if rng.chance(80) {
        L3::V4 {
            src: V4_SOURCES[4],
            dst: [198, 51, 100, 254],
            options: Vec::new(),
            frag_offset: 0,
            more_frags: false,
        }
    } else {
        call_l3(rng)
    }
}

/// A request of a digest exchange (SPEC §12): a REGISTER or INVITE from
/// one of the callers of [`call_l3`], one of the few Call-IDs and CSeqs of
/// [`auth_reply_frame`], mostly with credentials, over UDP or plain TCP
/// (the message starting the segment); now and then mutated.
pub fn auth_request_frame(rng: &mut Rng) -> Vec<u8> {
    let mut s = auth_request(rng);
    let l4 = if rng.chance(60) {
        if rng.chance(25) {
            let first = "OPTIONS sip:sbc SIP/2.0\r\nCall-ID: ka@x\r\nCSeq: 9 OPTIONS\r\nContent-Length: 0\r\n\r\n";
            s = segment(rng, first.to_string() + &s, |r| auth_request(r));
        }
        L4::Tcp { sport: 40000, dport: 5060, syn: false, ack: true }
    } else {
        L4::Udp { sport: 5062, dport: 5060 }
    };
    let mut f = Frame { vlans: Vec::new(), l3: auth_l3(rng), l4, payload: s.into_bytes() }.build();
    if rng.chance(10) {
        mutate(rng, &mut f);
    }
    f
}

/// A REGISTER or INVITE of a digest exchange, mostly with credentials.
fn auth_request(rng: &mut Rng) -> String {
    let method = *rng.pick(&["REGISTER", "REGISTER", "REGISTER", "INVITE"]);
    let mut s = format!("{method} sip:100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.7:5062;branch=z9hG4bK3\r\n");
    s.push_str("From: <sip:1@sbc>;tag=1\r\nTo: <sip:100@sbc>\r\n");
    s.push_str(&auth_ids(rng, method));
    if rng.chance(80) {
        s.push_str(rng.pick(&CREDENTIALS));
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

/// The server's reply in a digest exchange (SPEC §12): a challenge (the
/// nonces of [`CREDENTIALS`], stale or not), or a final answer that
/// settles an attempt, to one of the callers, over UDP or plain TCP.
pub fn auth_reply_frame(rng: &mut Rng) -> Vec<u8> {
    let method = *rng.pick(&["REGISTER", "REGISTER", "REGISTER", "INVITE"]);
    let status = *rng.pick(&[401u32, 401, 407, 200, 403, 486]);
    let mut s = format!("SIP/2.0 {status} X\r\nVia: SIP/2.0/TCP 203.0.113.7:5062;branch=z9hG4bK3\r\n");
    s.push_str(&auth_ids(rng, method));
    if (status == 401 || status == 407) && rng.chance(80) {
        s.push_str(rng.pick(&CHALLENGES));
        s.push_str("\r\n");
    }
    s.push_str("To: <sip:100@sbc>;tag=x\r\nContent-Length: 0\r\n\r\n");
    let l3 = match auth_l3(rng) {
        L3::V4 { src, dst, .. } => L3::V4 { src: dst, dst: src, options: Vec::new(), frag_offset: 0, more_frags: false },
        L3::V6 { src, dst, .. } => L3::V6 { src: dst, dst: src, ext: Vec::new() },
    };
    let l4 = if rng.chance(60) {
        L4::Tcp { sport: 5060, dport: 40000, syn: false, ack: true }
    } else {
        L4::Udp { sport: 5060, dport: 5062 }
    };
    let mut f = Frame { vlans: Vec::new(), l3, l4, payload: s.into_bytes() }.build();
    if rng.chance(10) {
        mutate(rng, &mut f);
    }
    f
}

/// A caller's network layer: mostly two plain IPv4 sources (so one
/// reaches its limit), sometimes any of the others.
fn call_l3(rng: &mut Rng) -> L3 {
    match rng.below(10) {
        0..=5 => L3::V4 {
            src: V4_SOURCES[4],
            dst: [198, 51, 100, 254],
            options: Vec::new(),
            frag_offset: 0,
            more_frags: false,
        },
        6..=7 => L3::V4 {
            src: *rng.pick(&V4_SOURCES),
            dst: [198, 51, 100, 254],
            options: Vec::new(),
            frag_offset: 0,
            more_frags: false,
        },
        _ => L3::V6 {
            src: v6_source(rng),
            dst: crate::frames::SBC_V6,
            ext: Vec::new(),
        },
    }
}
/// Digest credentials in every shape the parser takes (SPEC §12).
const CREDENTIALS: [&str; 8] = [
    "Authorization: Digest username=\"alice\", realm=\"x\", nonce=\"n1\", response=\"r\"",
    "authorization: DIGEST nonce=n2,username=bob",
    "Proxy-Authorization: digest username=\"c, d\", nonce=\"n1\"",
    "Authorization: Digest realm=\"a, nonce=n1\", nonce=\"n3\", username=eve",
    "Authorization: Digest username=\"f\",\r\n nonce=\"n2\"",
    "Authorization: Basic Zm9vOmJhcg==",
    "Authorization: Digest username=\"g\", nonce=\"n1",
    "Authorizations: Digest nonce=\"n1\"",
];

/// Digest challenges: the nonces the credentials above carry, stale or not.
const CHALLENGES: [&str; 6] = [
    "WWW-Authenticate: Digest realm=\"x\", nonce=\"n1\", qop=\"auth\"",
    "Proxy-Authenticate: DIGEST nonce=n2, realm=x",
    "WWW-Authenticate: Digest realm=\"x\", nonce=\"n3\", stale=TRUE",
    "WWW-Authenticate: Digest realm=\"a, nonce=n1\"",
    "www-authenticate: digest realm=x,\r\n\tnonce=\"n2\"",
    "WWW-Authenticate: Basic realm=\"x\"",
];
