//! SIP payload classification shared by the XDP program and the reference
//! model: the first line (request, status, keepalive, STUN) and the
//! User-Agent product token.
//!
//! The functions take fixed-size arrays plus a length so the eBPF side can
//! copy a bounded prefix of the packet onto its stack and call exactly the
//! same code user space runs.

/// SIP methods with their own counters and (optionally) their own bucket.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Invite = 0,
    Ack = 1,
    Bye = 2,
    Cancel = 3,
    Register = 4,
    Options = 5,
    Prack = 6,
    Subscribe = 7,
    Notify = 8,
    Publish = 9,
    Info = 10,
    Refer = 11,
    Message = 12,
    Update = 13,
    /// Any other method token (extension methods, garbage that looks like one).
    Other = 14,
}

impl Method {
    pub const COUNT: usize = 15;
    pub const ALL: [Method; Self::COUNT] = [
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Register,
        Method::Options,
        Method::Prack,
        Method::Subscribe,
        Method::Notify,
        Method::Publish,
        Method::Info,
        Method::Refer,
        Method::Message,
        Method::Update,
        Method::Other,
    ];

    /// Every method's name, by discriminant: the one table of names (the
    /// metrics, the config and the first-line classifier all use it). The
    /// last, `OTHER`, is a label, never matched on the wire.
    const NAMES: [&'static str; Self::COUNT] = [
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
        "OTHER",
    ];

    pub const fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// A known method by its exact (case-sensitive, RFC 3261) name.
    pub fn from_name(name: &[u8]) -> Option<Method> {
        let mut i = 0;
        while i < Self::COUNT - 1 {
            let m = Self::ALL[i];
            if m.as_str().as_bytes() == name {
                return Some(m);
            }
            i += 1;
        }
        None
    }
}

// `ALL` and `NAMES` are indexed by discriminant, `Other` last (the loops
// over the known methods stop before it); a method token is at most
// MAX_METHOD_LEN bytes.
const _: () = {
    let mut i = 0;
    while i < Method::COUNT {
        assert!(Method::ALL[i] as usize == i);
        assert!(Method::NAMES[i].len() <= MAX_METHOD_LEN);
        i += 1;
    }
    assert!(Method::Other as usize == Method::COUNT - 1);
};

/// What the start of a UDP payload on a protected port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    Request(Method),
    Response,
    /// CRLF / CRLFCRLF or a STUN binding request (RFC 5626 keepalives).
    Keepalive,
    NotSip,
}

/// Bytes of payload the first-line classifier looks at.
pub const HEAD_LEN: usize = 24;
/// Longest method token accepted before the space.
pub const MAX_METHOD_LEN: usize = 16;

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_HEADER_LEN: usize = 20;

/// RFC 3261 `token` characters.
#[inline(always)]
pub const fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Classifies a payload of `len` bytes whose first `min(len, HEAD_LEN)` bytes
/// are in `head` (the rest of `head` is ignored).
#[inline(always)]
pub fn classify(head: &[u8; HEAD_LEN], len: usize) -> PayloadKind {
    if len == 2 && head[0] == b'\r' && head[1] == b'\n' {
        return PayloadKind::Keepalive;
    }
    if len == 4 && head[0] == b'\r' && head[1] == b'\n' && head[2] == b'\r' && head[3] == b'\n' {
        return PayloadKind::Keepalive;
    }
    if len >= STUN_HEADER_LEN
        && head[0] == 0x00
        && head[1] == 0x01
        && head[4] == STUN_MAGIC[0]
        && head[5] == STUN_MAGIC[1]
        && head[6] == STUN_MAGIC[2]
        && head[7] == STUN_MAGIC[3]
    {
        return PayloadKind::Keepalive;
    }
    if len >= 8
        && head[0] == b'S'
        && head[1] == b'I'
        && head[2] == b'P'
        && head[3] == b'/'
        && head[4] == b'2'
        && head[5] == b'.'
        && head[6] == b'0'
        && head[7] == b' '
    {
        return PayloadKind::Response;
    }
    // Request line: 1..=MAX_METHOD_LEN token characters, then a space.
    // (`get` rather than indexing: no panic path for the eBPF build.)
    let mut k = 0;
    while k <= MAX_METHOD_LEN {
        if k >= len {
            return PayloadKind::NotSip;
        }
        let c = byte(head, k);
        if c == b' ' {
            if k == 0 {
                return PayloadKind::NotSip;
            }
            return PayloadKind::Request(method_of(head, 0, k));
        }
        if !is_token_char(c) {
            return PayloadKind::NotSip;
        }
        k += 1;
    }
    PayloadKind::NotSip
}

#[inline(always)]
pub(crate) fn byte<const N: usize>(b: &[u8; N], i: usize) -> u8 {
    match b.get(i) {
        Some(c) => *c,
        None => 0,
    }
}

/// Maps the method token `b[at..at + k]` to a known method. Compares the
/// length first, so most names cost one compare; the loops run over
/// constants and unroll into straight-line compares.
#[inline(always)]
pub(crate) fn method_of<const N: usize>(b: &[u8; N], at: usize, k: usize) -> Method {
    let mut m = 0;
    while m < Method::COUNT - 1 {
        let name = Method::NAMES[m].as_bytes();
        if name.len() == k {
            let mut i = 0;
            while i < name.len() && byte(b, at + i) == name[i] {
                i += 1;
            }
            if i == name.len() {
                return Method::ALL[m];
            }
        }
        m += 1;
    }
    Method::Other
}

/// Header lines are looked for only where they start within this many bytes
/// of the payload (a scanner's User-Agent sits well inside it).
pub const UA_SCAN_LIMIT: usize = 1024;
/// Header lines starting with `u`/`U` examined at most (`User-Agent`,
/// `Unsupported`, ...); past that the scan gives up. Bounds the kernel's work.
pub const UA_MAX_U_LINES: usize = 4;
/// Bytes of a candidate line handed to [`ua_line`].
pub const UA_WINDOW: usize = 64;
/// Longest product token compared; longer tokens never match.
pub const UA_TOKEN_MAX: usize = 32;
/// The header name, lower case.
pub const UA_NAME: &[u8; 10] = b"user-agent";

/// Lower-cased, zero-padded product token: the key of the scanner map.
pub type UaKey = [u8; UA_TOKEN_MAX];

/// What a header line that may be `User-Agent` turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UaLine {
    /// Some other header: keep looking.
    NotUa,
    /// The User-Agent header with an empty or over-long product token.
    NoToken,
    Token(UaKey),
}

/// Characters that end a product token. NUL is one so that a window
/// zero-filled past the end of the payload ends the token there.
#[inline(always)]
pub const fn is_ua_delim(c: u8) -> bool {
    matches!(c, b'/' | b' ' | b'\t' | b'\r' | b'\n' | 0)
}

/// Parses a header line that starts at `win[0]`. `win` holds the line's
/// first `UA_WINDOW` bytes, zero-filled past the end of the payload.
///
/// Every index below is a constant or bounded by the window: the kernel runs
/// exactly this code on its copy of the line.
#[inline(always)]
pub fn ua_line(win: &[u8; UA_WINDOW]) -> UaLine {
    let mut i = 0;
    while i < UA_NAME.len() {
        if byte(win, i).to_ascii_lowercase() != UA_NAME[i] {
            return UaLine::NotUa;
        }
        i += 1;
    }
    let j = skip_lws(win, UA_NAME.len());
    if byte(win, j) != b':' {
        return UaLine::NotUa;
    }
    ua_token(win, skip_lws(win, j + 1))
}

/// The product token at `win[start..]`, eight bytes at a time: its first
/// delimiter found with a has-byte test per word, lower-cased without a
/// branch per byte. Same answer as a byte loop: a token of 1 to
/// `UA_TOKEN_MAX` bytes ended by a delimiter, else `NoToken`.
#[inline(always)]
fn ua_token(win: &[u8; UA_WINDOW], start: usize) -> UaLine {
    let mut key = [0u8; UA_TOKEN_MAX];
    let mut w = 0;
    while w < UA_TOKEN_MAX / 8 {
        // `start` is at most UA_NAME.len() + 2 * UA_MAX_LWS + 1, so the
        // window always has these bytes; `None` cannot happen.
        let Some(word) = word_at(win, start + w * 8) else {
            return UaLine::NoToken;
        };
        let delims = ua_delims(word);
        let low = lower_ascii(word);
        if delims != 0 {
            // Bytes before the first delimiter: all ones below its byte.
            let keep = (delims.isolate_lowest_one() >> 7).wrapping_sub(1);
            if w == 0 && keep == 0 {
                return UaLine::NoToken; // empty token
            }
            put_word(&mut key, w, low & keep);
            return UaLine::Token(key);
        }
        put_word(&mut key, w, low);
        w += 1;
    }
    // UA_TOKEN_MAX bytes without a delimiter: a token only if one follows.
    if is_ua_delim(byte(win, start + UA_TOKEN_MAX)) {
        UaLine::Token(key)
    } else {
        UaLine::NoToken // longer than any token we compare
    }
}

// Whole words of token, and the byte after them, inside the window
// whatever the blanks around the colon.
const _: () = assert!(UA_TOKEN_MAX.is_multiple_of(8));
const _: () = assert!(UA_NAME.len() + 2 * UA_MAX_LWS + 1 + UA_TOKEN_MAX < UA_WINDOW);

pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
pub(crate) const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
pub(crate) const HIGH: u64 = 0x8080_8080_8080_8080;

/// The little-endian word at `win[at..at + 8]`.
#[inline(always)]
fn word_at(win: &[u8; UA_WINDOW], at: usize) -> Option<u64> {
    let b: &[u8; 8] = win.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(*b))
}

/// The eight window bytes at `at`, little-endian, 0 past the window.
#[inline(always)]
pub(crate) fn word_or_zero(win: &[u8; UA_WINDOW], at: usize) -> u64 {
    if let Some(b) = win.get(at..at + 8) {
        if let Ok(b) = <&[u8; 8]>::try_from(b) {
            return u64::from_le_bytes(*b);
        }
    }
    let mut w = 0;
    let mut i = 0;
    while i < 8 {
        w |= (byte(win, at + i) as u64) << (8 * i);
        i += 1;
    }
    w
}

#[inline(always)]
fn put_word(key: &mut UaKey, w: usize, v: u64) {
    if let Some(k) = key.get_mut(w * 8..w * 8 + 8) {
        k.copy_from_slice(&v.to_le_bytes());
    }
}

/// The top bit of each byte of `w` equal to `c`; exact (no false hits).
#[inline(always)]
pub(crate) const fn bytes_eq(w: u64, c: u8) -> u64 {
    let x = w ^ (ONES * c as u64);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// The top bit of each byte of `w` that [`is_ua_delim`].
#[inline(always)]
const fn ua_delims(w: u64) -> u64 {
    bytes_eq(w, b'/')
        | bytes_eq(w, b' ')
        | bytes_eq(w, b'\t')
        | bytes_eq(w, b'\r')
        | bytes_eq(w, b'\n')
        | bytes_eq(w, 0)
}

/// `to_ascii_lowercase` on each byte of `w` (bytes above 0x7f untouched).
#[inline(always)]
const fn lower_ascii(w: u64) -> u64 {
    let x = w & LOW7;
    // Top bit per byte: x >= 'A', and x > 'Z' (no carry: x < 0x80).
    let ge_a = x + ONES * (0x80 - b'A' as u64);
    let gt_z = x + ONES * (0x80 - b'Z' as u64 - 1);
    let upper = ge_a & !gt_z & !w & HIGH;
    w | (upper >> 2)
}

#[inline(always)]
pub(crate) const fn is_lws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Blanks skipped on either side of the colon. Real User-Agent headers have
/// one or none; a longer run ends the match (`:` or a token char expected
/// there), which keeps the kernel's copy of this walk small.
pub const UA_MAX_LWS: usize = 4;

/// The position after at most `UA_MAX_LWS` blanks from `j`.
#[inline(always)]
pub(crate) fn skip_lws(win: &[u8; UA_WINDOW], mut j: usize) -> usize {
    let mut k = 0;
    while k < UA_MAX_LWS && is_lws(byte(win, j)) {
        j += 1;
        k += 1;
    }
    j
}

/// The scanner-map key for a configured User-Agent product token, or `None`
/// if it can never match (empty, too long, or containing a delimiter).
pub fn ua_key(token: &str) -> Option<UaKey> {
    let b = token.as_bytes();
    if b.is_empty() || b.len() > UA_TOKEN_MAX {
        return None;
    }
    let mut key = [0u8; UA_TOKEN_MAX];
    for (i, &c) in b.iter().enumerate() {
        if is_ua_delim(c) || c == b':' || c.is_ascii_control() || c == 0 {
            return None;
        }
        key[i] = c.to_ascii_lowercase();
    }
    Some(key)
}

/// Default `[sip] scanner_user_agents` (SPEC §2 step 8).
pub const DEFAULT_SCANNERS: [&str; 11] = [
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "vaxsipuseragent",
    "pplsip",
    "iwar",
    "sivus",
    "sundayddr",
    "smap",
    "gulp",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn head(p: &[u8]) -> ([u8; HEAD_LEN], usize) {
        let mut h = [0u8; HEAD_LEN];
        let n = p.len().min(HEAD_LEN);
        h[..n].copy_from_slice(&p[..n]);
        (h, p.len())
    }

    fn kind(p: &[u8]) -> PayloadKind {
        let (h, l) = head(p);
        classify(&h, l)
    }

    #[test]
    fn first_lines() {
        assert_eq!(
            kind(b"INVITE sip:a@b SIP/2.0\r\n"),
            PayloadKind::Request(Method::Invite)
        );
        assert_eq!(
            kind(b"REGISTER sip:b SIP/2.0\r\n"),
            PayloadKind::Request(Method::Register)
        );
        assert_eq!(
            kind(b"SUBSCRIBE sip:b SIP/2.0"),
            PayloadKind::Request(Method::Subscribe)
        );
        assert_eq!(
            kind(b"invite sip:b SIP/2.0"),
            PayloadKind::Request(Method::Other)
        );
        assert_eq!(
            kind(b"FOO-BAR.x sip:b"),
            PayloadKind::Request(Method::Other)
        );
        assert_eq!(kind(b"SIP/2.0 200 OK\r\n"), PayloadKind::Response);
        assert_eq!(kind(b"SIP/2.0"), PayloadKind::NotSip);
        assert_eq!(kind(b"SIP/2.1 200 OK"), PayloadKind::NotSip);
        assert_eq!(kind(b" INVITE"), PayloadKind::NotSip);
        assert_eq!(kind(b"INVITE"), PayloadKind::NotSip);
        assert_eq!(kind(b"INV\x00TE x"), PayloadKind::NotSip);
        assert_eq!(
            kind(b"ABCDEFGHIJKLMNOP x"),
            PayloadKind::Request(Method::Other)
        );
        assert_eq!(kind(b"ABCDEFGHIJKLMNOPQ x"), PayloadKind::NotSip);
        assert_eq!(kind(b""), PayloadKind::NotSip);
        for m in Method::ALL.iter().take(Method::COUNT - 1) {
            let mut line = [0u8; 32];
            let n = m.as_str().len();
            line[..n].copy_from_slice(m.as_str().as_bytes());
            line[n] = b' ';
            assert_eq!(kind(&line[..n + 1]), PayloadKind::Request(*m));
            assert_eq!(Method::from_name(m.as_str().as_bytes()), Some(*m));
        }
        assert_eq!(Method::from_name(b"OTHER"), None);
        // Near misses of a known name are other methods.
        for line in [
            &b"INVITEX x"[..],
            b"INVIT x",
            b"OTHER x",
            b"ACKK x",
            b"BYe x",
        ] {
            assert_eq!(kind(line), PayloadKind::Request(Method::Other), "{line:?}");
        }
    }

    #[test]
    fn keepalives() {
        assert_eq!(kind(b"\r\n"), PayloadKind::Keepalive);
        assert_eq!(kind(b"\r\n\r\n"), PayloadKind::Keepalive);
        assert_eq!(kind(b"\r\n\r"), PayloadKind::NotSip);
        assert_eq!(kind(b"\r\n\r\n\r\n"), PayloadKind::NotSip);
        let mut stun = [0u8; 20];
        stun[1] = 1;
        stun[4..8].copy_from_slice(&STUN_MAGIC);
        assert_eq!(kind(&stun), PayloadKind::Keepalive);
        assert_eq!(kind(&stun[..19]), PayloadKind::NotSip);
        stun[1] = 0x11; // binding indication/response are not keepalive requests
        assert_eq!(kind(&stun), PayloadKind::NotSip);
    }

    fn ua(line: &[u8]) -> UaLine {
        let mut w = [0u8; UA_WINDOW];
        let n = line.len().min(UA_WINDOW);
        w[..n].copy_from_slice(&line[..n]);
        ua_line(&w)
    }

    #[test]
    fn user_agent_tokens() {
        let k = ua_key("friendly-scanner").unwrap();
        assert_eq!(ua(b"User-Agent: friendly-scanner\r\n"), UaLine::Token(k));
        assert_eq!(ua(b"user-agent:Friendly-Scanner/1.0"), UaLine::Token(k));
        assert_eq!(ua(b"USER-AGENT \t:  FRIENDLY-SCANNER"), UaLine::Token(k));
        // More than UA_MAX_LWS blanks: not recognised.
        assert_eq!(ua(b"User-Agent     : friendly-scanner"), UaLine::NotUa);
        assert_eq!(ua(b"User-Agent:     friendly-scanner"), UaLine::NoToken);
        assert_eq!(
            ua(b"User-Agent: sipcli/v1.8"),
            UaLine::Token(ua_key("SIPCLI").unwrap())
        );
        assert_eq!(ua(b"User-Agent: \r\n"), UaLine::NoToken);
        assert_eq!(ua(b"User-Agent: /x"), UaLine::NoToken);
        assert_eq!(ua(b"User-Agent friendly"), UaLine::NotUa);
        assert_eq!(ua(b"Unsupported: foo"), UaLine::NotUa);
        assert_eq!(ua(b"User-Agen"), UaLine::NotUa);
        let long = b"User-Agent: abcdefghijklmnopqrstuvwxyzABCDEFG\r\n";
        assert_eq!(ua(long), UaLine::NoToken);
        let exact = b"User-Agent: abcdefghijklmnopqrstuvwxyzABCDEF\r\n";
        assert!(matches!(ua(exact), UaLine::Token(_)));
        // Token running to the end of the payload.
        assert_eq!(
            ua(b"User-Agent: smap"),
            UaLine::Token(ua_key("smap").unwrap())
        );
        // Token running past the window with more payload: too long.
        let mut pad = [b'a'; 100];
        pad[..12].copy_from_slice(b"User-Agent: ");
        assert_eq!(ua(&pad), UaLine::NoToken);
        // NUL ends a token, like the end of the payload.
        assert_eq!(
            ua(b"User-Agent: smap\0junk"),
            UaLine::Token(ua_key("smap").unwrap())
        );
    }

    /// The byte loop `ua_token` replaced, as the reference.
    fn ua_token_bytes(win: &[u8; UA_WINDOW], start: usize) -> UaLine {
        let mut key = [0u8; UA_TOKEN_MAX];
        let mut t = 0;
        while t <= UA_TOKEN_MAX {
            let c = byte(win, start + t);
            if is_ua_delim(c) {
                break;
            }
            match key.get_mut(t) {
                Some(k) => *k = c.to_ascii_lowercase(),
                None => return UaLine::NoToken,
            }
            t += 1;
        }
        if t == 0 {
            return UaLine::NoToken;
        }
        UaLine::Token(key)
    }

    #[test]
    fn word_token_matches_the_byte_loop() {
        // Every byte value at every position, and random windows whose
        // bytes favour delimiters and letters.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pool = b"/ \t\r\n\0AZaz@[`{\x7f\x80\xc1\xdaM-_.9";
        for round in 0..200_000u32 {
            let mut win = [0u8; UA_WINDOW];
            for b in win.iter_mut() {
                let r = next();
                *b = if r & 3 == 0 {
                    r as u8 >> 2
                } else {
                    pool[(r >> 8) as usize % pool.len()]
                };
            }
            if round < 256 * 40 {
                win[19 + (round as usize / 256)] = round as u8;
            }
            let start = (next() % 20) as usize;
            assert_eq!(
                ua_token(&win, start),
                ua_token_bytes(&win, start),
                "{win:?} at {start}"
            );
        }
    }

    #[test]
    fn ua_keys() {
        assert!(ua_key("").is_none());
        assert!(ua_key("a/b").is_none());
        assert!(ua_key("a b").is_none());
        assert!(ua_key(&"x".repeat(33)).is_none());
        assert!(ua_key(&"x".repeat(32)).is_some());
        for s in DEFAULT_SCANNERS {
            assert!(ua_key(s).is_some(), "{s}");
        }
    }
}
