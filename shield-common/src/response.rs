//! SIP responses as the egress classifier reads them (SPEC §8): the status
//! class from the status line, the request method from the `CSeq` header.
//! The kernel's egress program and the reference model run this code.
//!
//! What may verify a destination is decided from these two alone, so they
//! are strict: a status line is `SIP/2.0 `, three digits (first 1..=6) and
//! a space; a CSeq line is `CSeq` (any case), `:`, a sequence number and a
//! method token. Anything else is not a response, or a response of method
//! `OTHER`, which never verifies.

use crate::sip::{byte, is_lws, method_of, skip_lws, HEAD_LEN, MAX_METHOD_LEN, UA_WINDOW};
use crate::Method;


/// Status classes counted: `1xx` ..= `6xx`.
pub const RESPONSE_CLASSES: usize = 6;

/// The status class (1..=6) of a payload of `len` bytes whose first
/// `min(len, HEAD_LEN)` bytes are in `head`, if it starts with a status line.
#[inline(always)]
pub fn status_class(head: &[u8; HEAD_LEN], len: usize) -> Option<u8> {
    const PREFIX: &[u8; 8] = b"SIP/2.0 ";
    // "SIP/2.0 200 " at least.
    if len < PREFIX.len() + 4 {
        return None;
    }
    let mut i = 0;
    while i < PREFIX.len() {
        if byte(head, i) != PREFIX[i] {
            return None;
        }
        i += 1;
    }
    let (a, b, c) = (byte(head, 8), byte(head, 9), byte(head, 10));
    if !(b'1'..=b'6').contains(&a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return None;
    }
    if byte(head, 11) != b' ' {
        return None;
    }
    Some(a - b'0')
}

/// What a header line that may be `CSeq` turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CseqLine {
    /// Some other header: keep looking.
    NotCseq,
    /// A `CSeq` header that does not parse: the response has no method.
    Garbled,
    Found { number: u32, method: Method },
}

/// Longest sequence number accepted (RFC 3261: 32 bits, 10 digits).
const CSEQ_MAX_DIGITS: usize = 10;
/// The header name, lower case.
const CSEQ_NAME: &[u8; 4] = b"cseq";

/// Parses a header line that starts at `win[0]` (its first `UA_WINDOW`
/// bytes, zero-filled past the end of the payload). The method is
/// case-sensitive, as on the request line (RFC 3261 §20.16).
#[inline(always)]
pub fn cseq_line(win: &[u8; UA_WINDOW]) -> CseqLine {
    let mut i = 0;
    while i < CSEQ_NAME.len() {
        if byte(win, i).to_ascii_lowercase() != CSEQ_NAME[i] {
            return CseqLine::NotCseq;
        }
        i += 1;
    }
    let j = skip_lws(win, CSEQ_NAME.len());
    if byte(win, j) != b':' {
        return CseqLine::NotCseq;
    }
    let mut j = skip_lws(win, j + 1);
    let digits = j;
    let mut number: u64 = 0;
    while j - digits <= CSEQ_MAX_DIGITS && byte(win, j).is_ascii_digit() {
        number = number * 10 + (byte(win, j) - b'0') as u64;
        j += 1;
    }
    let n = j - digits;
    if n == 0 || n > CSEQ_MAX_DIGITS || number > u32::MAX as u64 || !is_lws(byte(win, j)) {
        return CseqLine::Garbled;
    }
    let start = skip_lws(win, j);
    let mut k = 0;
    while k <= MAX_METHOD_LEN {
        let c = byte(win, start + k);
        if matches!(c, b'\r' | b'\n' | b' ' | b'\t' | 0) {
            break;
        }
        if !crate::sip::is_token_char(c) {
            return CseqLine::Garbled;
        }
        k += 1;
    }
    if k == 0 || k > MAX_METHOD_LEN {
        return CseqLine::Garbled;
    }
    CseqLine::Found {
        number: number as u32,
        method: method_of(win, start, k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(p: &[u8]) -> Option<u8> {
        let mut h = [0u8; HEAD_LEN];
        let n = p.len().min(HEAD_LEN);
        h[..n].copy_from_slice(&p[..n]);
        status_class(&h, p.len())
    }

    fn cseq(line: &[u8]) -> CseqLine {
        let mut w = [0u8; UA_WINDOW];
        let n = line.len().min(UA_WINDOW);
        w[..n].copy_from_slice(&line[..n]);
        cseq_line(&w)
    }

    #[test]
    fn status_lines() {
        assert_eq!(class(b"SIP/2.0 200 OK\r\n"), Some(2));
        assert_eq!(class(b"SIP/2.0 100 Trying"), Some(1));
        assert_eq!(class(b"SIP/2.0 699 x"), Some(6));
        assert_eq!(class(b"SIP/2.0 401 "), Some(4));
        assert_eq!(class(b"SIP/2.0 401"), None); // no space after the code
        assert_eq!(class(b"SIP/2.0 700 x"), None);
        assert_eq!(class(b"SIP/2.0 099 x"), None);
        assert_eq!(class(b"SIP/2.0 2OO OK"), None);
        assert_eq!(class(b"SIP/2.0 2000 OK"), None);
        assert_eq!(class(b"sip/2.0 200 OK"), None);
        assert_eq!(class(b"SIP/2.1 200 OK"), None);
        assert_eq!(class(b"INVITE sip:a SIP/2.0"), None);
        assert_eq!(class(b""), None);
    }

    #[test]
    fn cseq_lines() {
        let m = |number, method| CseqLine::Found { number, method };
        assert_eq!(cseq(b"CSeq: 1 REGISTER\r\n"), m(1, Method::Register));
        assert_eq!(cseq(b"cseq:1 INVITE"), m(1, Method::Invite));
        assert_eq!(
            cseq(b"CSEQ \t:\t 4294967295\t\tINVITE\r\n"),
            m(u32::MAX, Method::Invite)
        );
        assert_eq!(cseq(b"CSeq: 7 register\r\n"), m(7, Method::Other));
        assert_eq!(cseq(b"CSeq: 7 FOO-BAR\r\n"), m(7, Method::Other));
        assert_eq!(cseq(b"CSeq: 7 INVITEX\r\n"), m(7, Method::Other));
        assert_eq!(cseq(b"CSeq: 7 BYE"), m(7, Method::Bye)); // end of payload
        assert_eq!(cseq(b"CSeq: 0000000012 ACK"), m(12, Method::Ack));
        assert_eq!(cseq(b"CSeq: INVITE\r\n"), CseqLine::Garbled);
        assert_eq!(cseq(b"CSeq: 12345678901 INVITE"), CseqLine::Garbled);
        assert_eq!(cseq(b"CSeq: 4294967296 INVITE"), CseqLine::Garbled);
        assert_eq!(cseq(b"CSeq: 1INVITE"), CseqLine::Garbled);
        assert_eq!(cseq(b"CSeq: 1 \r\n"), CseqLine::Garbled);
        assert_eq!(cseq(b"CSeq: 1 INV\x01TE"), CseqLine::Garbled);
        assert_eq!(cseq(b"CSeq: 1 ABCDEFGHIJKLMNOPQ"), CseqLine::Garbled);
        assert_eq!(cseq(b"CSeq 1 INVITE"), CseqLine::NotCseq);
        assert_eq!(cseq(b"Call-ID: x"), CseqLine::NotCseq);
        assert_eq!(cseq(b"Contact: <sip:a>"), CseqLine::NotCseq);
        assert_eq!(cseq(b"CSeqX: 1 INVITE"), CseqLine::NotCseq);
    }
}
