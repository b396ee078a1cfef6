//! Several SIP messages in one TCP segment (RFC 3261 §18.3): over a
//! stream, a message's body is exactly `Content-Length` bytes after the
//! blank line that ends its headers, and the next message starts right
//! after it. A server writing a CANCEL's 200 and the INVITE's 487 back to
//! back sends both in one segment; a client may do the same with an
//! OPTIONS and an INVITE.
//!
//! Where the next message starts is decided here, once, for the kernel
//! (the egress classifier and the XDP program) and the reference model:
//! each walks the header lines starting with [`FRAMING_LETTERS`] within
//! `UA_SCAN_LIMIT` bytes of the message's start (the same walk as for
//! Call-ID and CSeq), hands each to [`length_line`] and [`Framing::take`],
//! and at the blank line asks [`Framing::next`]. Nothing is guessed: a
//! missing, garbled or repeated `Content-Length`, a blank line out of
//! reach, or a body running past the segment ends the walk, and nothing
//! after that message is read.

use crate::sip::{byte, is_token_char, skip_lws, HEAD_LEN, MAX_METHOD_LEN, UA_WINDOW};

/// Messages read in one segment at most (the first included).
pub const SEGMENT_MAX_MESSAGES: usize = 4;

/// Header lines starting with `c`/`C` or `l`/`L` looked at for the
/// `Content-Length` (Call-ID, CSeq, Contact, Content-Type... come first);
/// one more such line ends the walk.
pub const FRAMING_MAX_LINES: usize = 12;

/// The first letters (lower case) of the lines looked at: `Content-Length`
/// and its compact form `l` (RFC 3261 §7.3.3).
pub const FRAMING_LETTERS: (u8, u8) = (b'c', LENGTH_COMPACT);

/// The header name, lower case, and its compact form.
const LENGTH_NAME: &[u8; 14] = b"content-length";
const LENGTH_COMPACT: u8 = b'l';

/// Most digits a `Content-Length` may have (a u32, as RFC 3261's
/// `1*DIGIT` fits any real body); more is garbled.
const LENGTH_MAX_DIGITS: usize = 10;

/// Whether a message of `len` bytes whose first `min(len, HEAD_LEN)`
/// bytes are in `head` starts with a SIP start line: `SIP/2.0 ` (a
/// status line), or a token of at most `MAX_METHOD_LEN` characters and a
/// space (a request line, as `sip::classify` reads one). Only then is its
/// end looked for: anything else (TLS, junk, a body) ends the walk.
#[inline(always)]
pub fn starts_message(head: &[u8; HEAD_LEN], len: usize) -> bool {
    const STATUS: &[u8; 8] = b"SIP/2.0 ";
    let mut k = 0;
    while k < STATUS.len() && byte(head, k) == STATUS[k] {
        k += 1;
    }
    if k == STATUS.len() && len >= STATUS.len() {
        return true;
    }
    let mut k = 0;
    while k <= MAX_METHOD_LEN && k < len {
        let c = byte(head, k);
        if c == b' ' {
            return k > 0;
        }
        if !is_token_char(c) {
            return false;
        }
        k += 1;
    }
    false
}

/// What a header line that may be `Content-Length` turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthLine {
    /// Some other header: keep looking.
    Other,
    /// A `Content-Length` that does not parse (no digits, a sign, a
    /// letter, too many digits, anything but blanks after the number).
    Garbled,
    Length(u32),
}

/// Parses a header line that starts at `win[0]` (its first `UA_WINDOW`
/// bytes, zero-filled past the end of the payload).
#[inline(always)]
pub fn length_line(win: &[u8; UA_WINDOW]) -> LengthLine {
    let n = if byte(win, 0).to_ascii_lowercase() == LENGTH_COMPACT {
        1
    } else {
        let mut i = 0;
        while i < LENGTH_NAME.len() {
            if byte(win, i).to_ascii_lowercase() != LENGTH_NAME[i] {
                return LengthLine::Other;
            }
            i += 1;
        }
        LENGTH_NAME.len()
    };
    let j = skip_lws(win, n);
    if byte(win, j) != b':' {
        return LengthLine::Other;
    }
    let mut j = skip_lws(win, j + 1);
    let digits = j;
    let mut value: u64 = 0;
    while j - digits <= LENGTH_MAX_DIGITS && byte(win, j).is_ascii_digit() {
        value = value * 10 + (byte(win, j) - b'0') as u64;
        j += 1;
    }
    let k = j - digits;
    if k == 0 || k > LENGTH_MAX_DIGITS || value > u32::MAX as u64 {
        return LengthLine::Garbled;
    }
    let end = byte(win, skip_lws(win, j));
    if end != b'\r' && end != b'\n' {
        return LengthLine::Garbled;
    }
    LengthLine::Length(value as u32)
}

/// What the walk over a message's header lines found of its length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Framing {
    /// The `Content-Length` value, once one was found.
    pub length: u32,
    /// 1 once a `Content-Length` was found.
    pub found: u32,
}

impl Framing {
    /// Takes one line; true when the walk must stop: a garbled
    /// `Content-Length`, or a second one (which of the two the receiver
    /// believes is its business: never guess).
    #[inline(always)]
    pub fn take(&mut self, line: LengthLine) -> bool {
        match line {
            LengthLine::Other => false,
            LengthLine::Garbled => true,
            LengthLine::Length(n) => {
                if self.found != 0 {
                    return true;
                }
                self.length = n;
                self.found = 1;
                false
            }
        }
    }

    /// The headers end with the blank line `blank` bytes into a message
    /// of `len` bytes (those the segment holds from its start), whose
    /// first two bytes are `b0` and `b1` (0 past the payload): where the
    /// next message starts, in bytes from this one's start, if the
    /// segment holds a byte of it.
    #[inline(always)]
    pub fn next(&self, blank: usize, b0: u8, b1: u8, len: usize) -> Option<usize> {
        if self.found == 0 {
            return None; // over a stream, RFC 3261 §18.3 makes it mandatory
        }
        let eol = if b0 == b'\r' && b1 == b'\n' {
            2
        } else if b0 == b'\n' {
            1
        } else {
            return None; // a lone CR: not a line end
        };
        let next = blank + eol + self.length as usize;
        if next < len {
            Some(next)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(l: &[u8]) -> LengthLine {
        let mut w = [0u8; UA_WINDOW];
        let n = l.len().min(UA_WINDOW);
        w[..n].copy_from_slice(&l[..n]);
        length_line(&w)
    }

    fn starts(p: &[u8]) -> bool {
        let mut h = [0u8; HEAD_LEN];
        let n = p.len().min(HEAD_LEN);
        h[..n].copy_from_slice(&p[..n]);
        starts_message(&h, p.len())
    }

    #[test]
    fn start_lines() {
        assert!(starts(b"SIP/2.0 200 OK\r\n"));
        assert!(starts(b"INVITE sip:a@b SIP/2.0\r\n"));
        assert!(starts(b"FOO-BAR x"));
        assert!(!starts(b"\r\n\r\n"));
        assert!(!starts(b" INVITE x"));
        assert!(!starts(b"\x16\x03\x01\x02\x00"), "TLS");
        assert!(!starts(b"v=0\r\no=- 1 1 IN IP4 x"), "a body");
        assert!(!starts(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ x"), "a token too long");
        assert!(!starts(b"INVITE"), "no space within the message");
        assert!(!starts(b"SIP/2.0"));
    }

    #[test]
    fn content_length_lines() {
        assert_eq!(line(b"Content-Length: 0\r\n"), LengthLine::Length(0));
        assert_eq!(line(b"content-length:129\r\n"), LengthLine::Length(129));
        assert_eq!(line(b"CONTENT-LENGTH \t:  42 \r\n"), LengthLine::Length(42));
        assert_eq!(line(b"l: 7\r\n"), LengthLine::Length(7));
        assert_eq!(line(b"L:7\n"), LengthLine::Length(7));
        assert_eq!(line(b"Content-Length: 4294967295\r\n"), LengthLine::Length(u32::MAX));
        assert_eq!(line(b"Content-Length: 0000000012\r\n"), LengthLine::Length(12));
    }

    #[test]
    fn other_lines() {
        for l in [
            &b"Content-Type: application/sdp\r\n"[..],
            b"Call-ID: 1@x\r\n",
            b"CSeq: 1 INVITE\r\n",
            b"Contact: <sip:a@b>\r\n",
            b"Content-Length-X: 3\r\n",
            b"Lines: 3\r\n",
            b"l3: 3\r\n",
            b"c: x\r\n",
        ] {
            assert_eq!(line(l), LengthLine::Other, "{:?}", core::str::from_utf8(l));
        }
    }

    #[test]
    fn absurd_lengths_are_garbled() {
        for l in [
            &b"Content-Length: -5\r\n"[..],
            b"Content-Length: +5\r\n",
            b"Content-Length: abc\r\n",
            b"Content-Length: 12abc\r\n",
            b"Content-Length: 12 13\r\n",
            b"Content-Length: 0x10\r\n",
            b"Content-Length: 4294967296\r\n",
            b"Content-Length: 99999999999999999999\r\n",
            b"Content-Length: 00000000012\r\n",
            b"Content-Length:\r\n",
            b"Content-Length: 12",
            b"l: \r\n",
        ] {
            assert_eq!(line(l), LengthLine::Garbled, "{:?}", core::str::from_utf8(l));
        }
    }

    #[test]
    fn a_second_or_garbled_length_stops_the_walk() {
        let mut f = Framing::default();
        assert!(!f.take(LengthLine::Other));
        assert!(!f.take(LengthLine::Length(3)));
        assert!(f.take(LengthLine::Length(3)), "a duplicate, even equal");
        let mut f = Framing::default();
        assert!(f.take(LengthLine::Garbled));
    }

    #[test]
    fn the_next_message_starts_after_the_body() {
        let f = Framing { length: 5, found: 1 };
        assert_eq!(f.next(100, b'\r', b'\n', 200), Some(107));
        assert_eq!(f.next(100, b'\n', b'I', 200), Some(106));
        assert_eq!(f.next(100, b'\r', b'\n', 107), None, "nothing after the body");
        assert_eq!(f.next(100, b'\r', b'\n', 50), None, "the body runs past the segment");
        assert_eq!(f.next(100, b'\r', b'x', 200), None, "a lone CR");
        assert_eq!(Framing::default().next(100, b'\r', b'\n', 200), None, "no Content-Length");
        let huge = Framing { length: u32::MAX, found: 1 };
        assert_eq!(huge.next(1000, b'\r', b'\n', 2000), None);
    }
}
