//! Transactions (SPEC §8): what pairs a final response with the request
//! the ingress program saw from the response's destination. A CSeq in a
//! reply is the requester's text, and a server may relay a reply to any
//! address named in a forged Via: a 2xx alone proves nothing. So the XDP
//! program remembers every request that passed whose request-line method
//! verifies, keyed by its source, Call-ID and CSeq number, and the egress
//! classifier verifies a 2xx's destination only when it answers one of
//! those, within [`TXN_WINDOW_NS`].
//!
//! Both header lines start with `c`, so one walk over the `c` lines (the
//! header-line search both programs share) finds both. The XDP program,
//! the egress classifier and the reference model run this code.
//!
//! The table is built to carry more than verification: SPEC §12 (digest
//! nonces and attempts) and §13 (calls) key on the same Call-ID hash.

use crate::maps::SrcKey;
use crate::policy::Policy;
use crate::response::{cseq_line, CseqLine};
use crate::sip::{byte, bytes_eq, skip_lws, word_or_zero, UA_WINDOW};
use crate::Method;

/// How long a request stays answerable: 64 × T1 (RFC 3261 Timer B/F),
/// rounded to 32 s as SPEC §8 says.
pub const TXN_WINDOW_NS: u64 = 32 * 1_000_000_000;

/// Header lines starting with `c`/`C` looked at for Call-ID and CSeq
/// (Contact, Content-Type, Content-Length... may come first).
pub const TXN_MAX_C_LINES: usize = 8;

/// `TXNS` key: the requester (keyed like `SOURCES`), the Call-ID's hash
/// and the CSeq number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TxnKey {
    pub src: SrcKey,
    pub call_id: u64,
    pub cseq: u32,
    pub _pad: u32,
}

/// The `src` of a contested record: a key no source has (all ones is no
/// unicast address, and IPv4 keys start with zeros).
pub const CONTESTED: SrcKey = [0xff; 16];

impl TxnKey {
    /// The record of a reply with this Call-ID and CSeq that came *in*
    /// from a source neither allowlisted nor verified: a server relays such
    /// a reply to whatever address its second Via names, so no 2xx to that
    /// transaction may verify anyone, whoever sent the request, and however
    /// late the server's own answer comes (a race an overloaded server
    /// loses).
    #[inline(always)]
    pub const fn contested(call_id: u64, cseq: u32) -> TxnKey {
        TxnKey {
            src: CONTESTED,
            call_id,
            cseq,
            _pad: 0,
        }
    }
}

/// `TXNS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// When the request passed (`CLOCK_MONOTONIC_COARSE` ns).
    pub seen_ns: u64,
    /// The request line's method index.
    pub method: u32,
    /// The CSeq header's method index (a response carries this one).
    pub cseq_method: u32,
}

impl Txn {
    /// Whether a final response at `now_ns` whose CSeq method is
    /// `cseq_method` answers this request.
    #[inline(always)]
    pub const fn answered_by(&self, cseq_method: u32, now_ns: u64) -> bool {
        self.cseq_method == cseq_method && self.live(now_ns)
    }

    /// Whether the record is within [`TXN_WINDOW_NS`] of `now_ns`.
    #[inline(always)]
    pub const fn live(&self, now_ns: u64) -> bool {
        now_ns >= self.seen_ns && now_ns - self.seen_ns <= TXN_WINDOW_NS
    }

    /// Whether this request's first final response, of status class
    /// `class`, at `now_ns`, verifies its sender: a 2xx in time to a
    /// request whose request-line method verifies (the CSeq methods
    /// already matched).
    #[inline(always)]
    pub const fn verified_by(&self, p: &Policy, class: u8, now_ns: u64) -> bool {
        class == 2
            && self.answered_by(self.cseq_method, now_ns)
            && p.verifies(self.method as usize)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (maps.rs sizes_without_padding).
    unsafe impl aya::Pod for super::TxnKey {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (maps.rs sizes_without_padding).
    unsafe impl aya::Pod for super::Txn {}
}

/// What a header line that may be Call-ID or CSeq turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnLine {
    /// Some other header: keep looking.
    Other,
    /// A Call-ID or CSeq header that does not parse: stop.
    Garbled,
    /// A Call-ID: the hash of its value.
    CallId(u64),
    Cseq { number: u32, method: Method },
}

/// The header name, lower case, and its compact form (RFC 3261 §7.3.3).
const CALL_ID_NAME: &[u8; 7] = b"call-id";
const CALL_ID_COMPACT: u8 = b'i';

/// The first letters (lower case) of the lines the walk for Call-ID and
/// CSeq looks at: `Call-ID`, `CSeq`, compact `i`.
pub const TXN_LETTERS: (u8, u8) = (b'c', CALL_ID_COMPACT);

/// FNV-1a's constants, 64 bits (mixed a word at a time here).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Parses a header line that starts at `win[0]` (its first `UA_WINDOW`
/// bytes, zero-filled past the end of the payload).
#[inline(always)]
pub fn txn_line(win: &[u8; UA_WINDOW]) -> TxnLine {
    match cseq_line(win) {
        CseqLine::Found { number, method } => return TxnLine::Cseq { number, method },
        CseqLine::Garbled => return TxnLine::Garbled,
        CseqLine::NotCseq => {}
    }
    match call_id_line(win) {
        Some(Some(h)) => TxnLine::CallId(h),
        Some(None) => TxnLine::Garbled,
        None => TxnLine::Other,
    }
}

/// `None`: not a Call-ID line; `Some(None)`: one with no value; else the
/// hash of the value: the bytes after the colon and blanks up to a blank,
/// CR, LF, NUL or the end of the window (a Call-ID longer than the window
/// hashes its first bytes: the request and its replies carry the same).
/// Eight bytes at a time: each word of the value (the last one cut at its
/// end, zeros after) mixed in FNV-style with a 64-bit multiply.
#[inline(always)]
fn call_id_line(win: &[u8; UA_WINDOW]) -> Option<Option<u64>> {
    let n = if byte(win, 0).to_ascii_lowercase() == CALL_ID_COMPACT {
        1
    } else {
        let mut i = 0;
        while i < CALL_ID_NAME.len() {
            if byte(win, i).to_ascii_lowercase() != CALL_ID_NAME[i] {
                return None;
            }
            i += 1;
        }
        CALL_ID_NAME.len()
    };
    let j = skip_lws(win, n);
    if byte(win, j) != b':' {
        return None;
    }
    let start = skip_lws(win, j + 1);
    let mut h = FNV_OFFSET;
    let mut k = 0;
    while k < UA_WINDOW / 8 {
        let w = word_or_zero(win, start + 8 * k);
        let ends = bytes_eq(w, b'\r')
            | bytes_eq(w, b'\n')
            | bytes_eq(w, 0)
            | bytes_eq(w, b' ')
            | bytes_eq(w, b'\t');
        if ends == 0 {
            h = (h ^ w).wrapping_mul(FNV_PRIME);
            k += 1;
            continue;
        }
        // The bytes before the first end: all ones below its byte.
        let keep = ((ends & ends.wrapping_neg()) >> 7).wrapping_sub(1);
        if k == 0 && keep == 0 {
            return Some(None); // no value
        }
        return Some(Some((h ^ (w & keep)).wrapping_mul(FNV_PRIME)));
    }
    // (The window's end is a zero: never reached.)
    Some(Some(h))
}

/// What a walk over a message's `c` lines found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnIds {
    pub call_id: Option<u64>,
    pub cseq: Option<(u32, Method)>,
}

impl TxnIds {
    /// Takes one line; true when the walk should stop (both found, or a
    /// garbled line).
    #[inline(always)]
    pub fn take(&mut self, line: TxnLine) -> bool {
        match line {
            TxnLine::Other => return false,
            TxnLine::Garbled => return true,
            TxnLine::CallId(h) => {
                if self.call_id.is_none() {
                    self.call_id = Some(h);
                }
            }
            TxnLine::Cseq { number, method } => {
                if self.cseq.is_none() {
                    self.cseq = Some((number, method));
                }
            }
        }
        self.call_id.is_some() && self.cseq.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(l: &[u8]) -> TxnLine {
        let mut w = [0u8; UA_WINDOW];
        let n = l.len().min(UA_WINDOW);
        w[..n].copy_from_slice(&l[..n]);
        txn_line(&w)
    }

    fn hash(l: &[u8]) -> u64 {
        match line(l) {
            TxnLine::CallId(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn call_id_lines() {
        let a = hash(b"Call-ID: abc@host\r\n");
        assert_eq!(hash(b"call-id:abc@host"), a, "any case, no blank");
        assert_eq!(hash(b"CALL-ID \t: \tabc@host \r\n"), a, "blanks");
        assert_ne!(hash(b"Call-ID: abd@host\r\n"), a);
        assert_ne!(hash(b"Call-ID: abc@hos\r\n"), a);
        assert_eq!(line(b"Call-ID: \r\n"), TxnLine::Garbled);
        assert_eq!(line(b"Call-ID:"), TxnLine::Garbled);
        assert_eq!(line(b"Call-IDs: x"), TxnLine::Other);
        assert_eq!(line(b"Call-ID x"), TxnLine::Other);
        assert_eq!(line(b"Contact: <sip:a>"), TxnLine::Other);
        // The compact form (RFC 3261 §7.3.3) is the same header.
        assert_eq!(hash(b"i: abc@host\r\n"), a);
        assert_eq!(hash(b"I \t:abc@host"), a);
        assert_eq!(line(b"i:\r\n"), TxnLine::Garbled);
        assert_eq!(line(b"id: x"), TxnLine::Other);
        assert_eq!(line(b"Info: x"), TxnLine::Other);
        // Longer than the window: the first bytes decide.
        let long = [b"Call-ID: ".as_slice(), &[b'x'; 100]].concat();
        let mut longer = long.clone();
        longer.push(b'y');
        assert_eq!(hash(&long), hash(&longer));
    }

    #[test]
    fn cseq_lines_carry_the_number() {
        assert_eq!(
            line(b"CSeq: 42 REGISTER\r\n"),
            TxnLine::Cseq {
                number: 42,
                method: Method::Register
            }
        );
        assert_eq!(line(b"CSeq: 1INVITE"), TxnLine::Garbled);
    }

    #[test]
    fn the_walk_stops_when_both_are_found_or_on_a_garbled_line() {
        let mut ids = TxnIds::default();
        assert!(!ids.take(TxnLine::Other));
        assert!(!ids.take(TxnLine::CallId(7)));
        assert!(!ids.take(TxnLine::CallId(8)), "the first Call-ID stays");
        assert!(ids.take(TxnLine::Cseq {
            number: 1,
            method: Method::Invite
        }));
        assert_eq!(ids.call_id, Some(7));
        assert_eq!(ids.cseq, Some((1, Method::Invite)));
        let mut g = TxnIds::default();
        assert!(g.take(TxnLine::Garbled));
    }

    #[test]
    fn a_reply_answers_only_its_method_within_the_window() {
        let t = Txn {
            seen_ns: 1_000,
            method: Method::Register as u32,
            cseq_method: Method::Register as u32,
        };
        let r = Method::Register as u32;
        assert!(t.answered_by(r, 1_000));
        assert!(t.answered_by(r, 1_000 + TXN_WINDOW_NS));
        assert!(!t.answered_by(r, 1_001 + TXN_WINDOW_NS));
        assert!(!t.answered_by(Method::Invite as u32, 2_000));
        assert!(!t.answered_by(r, 999), "before the request");
    }
}
