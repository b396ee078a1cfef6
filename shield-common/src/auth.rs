//! Digest authentication seen on the wire (SPEC §12): the one parser of
//! `WWW-Authenticate` / `Proxy-Authenticate` (a server's challenge) and
//! `Authorization` / `Proxy-Authorization` (a client's answer) that the
//! egress classifier, the XDP program and the reference model all run.
//!
//! A header line is found by the shared header-line search; its first
//! `UA_WINDOW` bytes go to [`auth_name`], which says which header it is and
//! where its value starts. The value is then fed, [`AUTH_CHUNK`] bytes at a
//! time, to a byte-at-a-time state machine ([`DigestParse`]): digest
//! headers are longer than any fixed window (params in any order, a nonce
//! of any length), and a streaming machine costs the kernel one verified
//! loop whatever the line holds.
//!
//! What it keeps: a 64-bit FNV-1a hash of the nonce, the `stale` flag and
//! the username (its first [`USER_MAX`] bytes and a hash of all of it).
//! Quoted and unquoted values hash the same (a quoted-pair counts as the
//! character it escapes); commas and blanks inside quotes are value bytes;
//! a folded line (CRLF then a blank) is one blank.
//!
//! Long nonces: only the first [`NONCE_MAX`] bytes are hashed
//! ([`DIGEST_NONCE_LONG`] says there were more). Both directions hash the
//! same prefix, so a long nonce still pairs; a spoofer still has to guess
//! 128 bytes it never saw. A nonce cut by the end of what is read (the
//! line runs past [`AUTH_LINE_MAX`] bytes or the payload) before
//! `NONCE_MAX` bytes counts as absent: a hash of fewer bytes would not
//! match the other direction's.

use crate::sip::{byte, is_lws, skip_lws, UA_WINDOW};

pub mod record;
pub use record::*;

/// Bytes fed to the state machine per kernel call (a per-CPU scratch copy).
pub const AUTH_CHUNK: usize = 16;
const _: () = assert!(AUTH_CHUNK.is_power_of_two());
/// Chunks read at most from one header line.
pub const AUTH_MAX_CHUNKS: usize = 128;
/// Bytes of a header line read at most, from its first byte.
pub const AUTH_LINE_MAX: usize = AUTH_CHUNK * AUTH_MAX_CHUNKS;
/// Nonce bytes hashed at most.
pub const NONCE_MAX: u32 = 128;
/// Username bytes kept (the hash covers all of them).
pub const USER_MAX: usize = 32;
const _: () = assert!(USER_MAX.is_power_of_two());
/// Header lines starting with the scanned letters looked at per message.
pub const AUTH_MAX_LINES: usize = 8;

/// Which digest header a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthHeader {
    /// `WWW-Authenticate` or `Proxy-Authenticate` (in a response).
    Challenge,
    /// `Authorization` or `Proxy-Authorization` (in a request).
    Credentials,
}

const WWW_AUTHENTICATE: &[u8] = b"www-authenticate";
const PROXY_AUTHENTICATE: &[u8] = b"proxy-authenticate";
const AUTHORIZATION: &[u8] = b"authorization";
const PROXY_AUTHORIZATION: &[u8] = b"proxy-authorization";

/// The first letters of the lines that may be each header (lower case):
/// what the header-line search scans for.
pub const CHALLENGE_LETTERS: (u8, u8) = (b'w', b'p');
pub const CREDENTIALS_LETTERS: (u8, u8) = (b'a', b'p');

/// Whether `win` (a line's first `UA_WINDOW` bytes, zero-filled past the
/// payload) is a header of kind `want`; if so, the offset of its value
/// (after the colon). Names in any case, up to `UA_MAX_LWS` blanks before
/// the colon. None of these headers has a compact form (RFC 3261 §7.3.3).
#[inline(always)]
pub fn auth_name(win: &[u8; UA_WINDOW], want: AuthHeader) -> Option<usize> {
    let (a, b) = match want {
        AuthHeader::Challenge => (WWW_AUTHENTICATE, PROXY_AUTHENTICATE),
        AuthHeader::Credentials => (AUTHORIZATION, PROXY_AUTHORIZATION),
    };
    let n = if name_is(win, a) {
        a.len()
    } else if name_is(win, b) {
        b.len()
    } else {
        return None;
    };
    let j = skip_lws(win, n);
    if byte(win, j) != b':' {
        return None;
    }
    Some(j + 1)
}

#[inline(always)]
fn name_is(win: &[u8; UA_WINDOW], name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        if byte(win, i).to_ascii_lowercase() != name[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `DigestParse::flags`: the scheme is `Digest`.
pub const DIGEST_SCHEME: u32 = 1;
/// A nonce was read (see the module's note on long nonces).
pub const DIGEST_NONCE: u32 = 2;
/// The nonce had more than `NONCE_MAX` bytes.
pub const DIGEST_NONCE_LONG: u32 = 4;
/// `stale=true` (any case, quoted or not).
pub const DIGEST_STALE: u32 = 8;
/// A username was read.
pub const DIGEST_USER: u32 = 16;
/// The username had more than `USER_MAX` bytes.
pub const DIGEST_USER_LONG: u32 = 32;
/// The header's value did not parse where the machine stopped: what was
/// read before stays.
pub const DIGEST_BAD: u32 = 64;

// States. The machine reads the value after the colon.
const S_PRE_SCHEME: u8 = 0;
const S_SCHEME: u8 = 1;
const S_PRE_NAME: u8 = 2;
const S_NAME: u8 = 3;
const S_EQ: u8 = 4;
const S_PRE_VALUE: u8 = 5;
const S_QUOTED: u8 = 6;
const S_ESCAPE: u8 = 7;
const S_TOKEN: u8 = 8;
const S_AFTER_VALUE: u8 = 9;
/// The header ended (or never was digest): nothing more is read.
const S_DONE: u8 = 10;

// Which parameter's value is being read.
const P_OTHER: u8 = 0;
const P_NONCE: u8 = 1;
const P_USER: u8 = 2;
const P_STALE: u8 = 3;

/// Up to 8 bytes packed little-endian into a u64: names compared in one
/// instruction.
const fn pack(s: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < s.len() {
        v |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    v
}
const PACK_DIGEST: u64 = pack(b"digest");
const PACK_NONCE: u64 = pack(b"nonce");
const PACK_USERNAME: u64 = pack(b"username");
const PACK_STALE: u64 = pack(b"stale");
const PACK_TRUE: u64 = pack(b"true");
/// `pack_len` saturates here: anything longer matches nothing.
const PACK_FULL: u8 = 9;

/// FNV-1a, 64 bits (the Call-ID's hash too).
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hash of a nonce as the parser computes it: a helper for tests and
/// user space.
pub fn nonce_hash(nonce: &[u8]) -> u64 {
    let n = core::cmp::min(nonce.len(), NONCE_MAX as usize);
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < n {
        h = (h ^ nonce[i] as u64).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// The streaming parser's state and result. Lives in per-CPU scratch in
/// the kernel; `Default` is the start state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestParse {
    pub nonce_hash: u64,
    pub user_hash: u64,
    /// The lower-cased first bytes of the scheme, a parameter name or the
    /// `stale` value (see `pack`).
    pack: u64,
    pub flags: u32,
    /// Nonce bytes seen (saturates above `NONCE_MAX`).
    pub nonce_len: u32,
    pub user: [u8; USER_MAX],
    pub user_len: u32,
    state: u8,
    param: u8,
    pack_len: u8,
    /// A line feed was the last byte: the next decides fold or end.
    after_lf: u8,
}

impl Default for DigestParse {
    fn default() -> Self {
        DigestParse {
            nonce_hash: FNV_OFFSET,
            user_hash: FNV_OFFSET,
            pack: 0,
            flags: 0,
            nonce_len: 0,
            user: [0; USER_MAX],
            user_len: 0,
            state: S_PRE_SCHEME,
            param: P_OTHER,
            pack_len: 0,
            after_lf: 0,
        }
    }
}

#[inline(always)]
const fn is_token(c: u8) -> bool {
    crate::sip::is_token_char(c)
}

impl DigestParse {
    /// Back to the start state, in place (the kernel's copy lives in
    /// scratch; a `Default` temporary would sit on its small stack).
    #[inline(always)]
    pub fn reset(&mut self) {
        self.nonce_hash = FNV_OFFSET;
        self.user_hash = FNV_OFFSET;
        self.pack = 0;
        self.flags = 0;
        self.nonce_len = 0;
        self.user = [0; USER_MAX];
        self.user_len = 0;
        self.state = S_PRE_SCHEME;
        self.param = P_OTHER;
        self.pack_len = 0;
        self.after_lf = 0;
    }

    /// Whether the machine has stopped (the header ended).
    #[inline(always)]
    pub const fn done(&self) -> bool {
        self.state == S_DONE
    }

    /// Whether a digest nonce was read.
    #[inline(always)]
    pub const fn has_nonce(&self) -> bool {
        self.flags & (DIGEST_SCHEME | DIGEST_NONCE) == DIGEST_SCHEME | DIGEST_NONCE
    }

    /// The username read (its first `USER_MAX` bytes).
    pub fn username(&self) -> &[u8] {
        &self.user[..core::cmp::min(self.user_len as usize, USER_MAX)]
    }

    /// Feeds `chunk[..n]`; true once the header has ended. Every index is
    /// bounded by the chunk: the kernel runs exactly this loop.
    #[inline(always)]
    pub fn feed(&mut self, chunk: &[u8; AUTH_CHUNK], n: usize) -> bool {
        let mut i = 0;
        while i < AUTH_CHUNK {
            if i >= n || self.state == S_DONE {
                break;
            }
            self.byte(chunk[i]);
            i += 1;
        }
        self.state == S_DONE
    }

    /// The end of what can be read (payload or `AUTH_LINE_MAX`): a value
    /// being read ends here.
    #[inline(always)]
    pub fn finish(&mut self) {
        if self.state != S_DONE {
            self.end_line();
        }
    }

    /// One byte of the header's value.
    #[inline(always)]
    pub fn byte(&mut self, c: u8) {
        if self.after_lf != 0 {
            self.after_lf = 0;
            if !is_lws(c) {
                self.end_line();
                return;
            }
            // A folded line: CRLF and the blanks are one blank.
        }
        match c {
            b'\n' => {
                self.after_lf = 1;
                return;
            }
            // A CR is only ever followed by the LF that decides.
            b'\r' => return,
            0 => {
                self.end_line();
                return;
            }
            _ => {}
        }
        match self.state {
            S_PRE_SCHEME | S_PRE_NAME | S_EQ | S_PRE_VALUE | S_AFTER_VALUE
                if is_lws(c) => {}
            S_PRE_SCHEME | S_SCHEME => self.scheme(c),
            S_PRE_NAME | S_NAME | S_EQ => self.name(c),
            S_PRE_VALUE => self.value_start(c),
            S_QUOTED => {
                if c == b'\\' {
                    self.state = S_ESCAPE;
                } else if c == b'"' {
                    self.value_end();
                    self.state = S_AFTER_VALUE;
                } else {
                    self.value_byte(c);
                }
            }
            S_ESCAPE => {
                self.value_byte(c);
                self.state = S_QUOTED;
            }
            // Lenient: an unquoted value runs to a comma or a blank.
            S_TOKEN => {
                if c == b',' || is_lws(c) {
                    self.value_end();
                    self.state = S_AFTER_VALUE;
                    self.after_value(c);
                } else {
                    self.value_byte(c);
                }
            }
            S_AFTER_VALUE => self.after_value(c),
            _ => {}
        }
    }

    #[inline(always)]
    fn scheme(&mut self, c: u8) {
        if is_token(c) {
            self.state = S_SCHEME;
            self.pack_byte(c);
        } else if is_lws(c) && self.pack == PACK_DIGEST && self.pack_len == 6 {
            self.flags |= DIGEST_SCHEME;
            self.state = S_PRE_NAME;
        } else {
            self.state = S_DONE; // another scheme (Basic...) or garbage
        }
    }

    #[inline(always)]
    fn name(&mut self, c: u8) {
        if self.state == S_PRE_NAME {
            if c == b',' || is_lws(c) {
                return;
            }
            self.pack = 0;
            self.pack_len = 0;
            self.state = S_NAME;
        }
        if self.state == S_NAME && is_token(c) {
            self.pack_byte(c);
        } else if c == b'=' {
            self.param = self.param_kind();
            self.state = S_PRE_VALUE;
        } else if is_lws(c) && self.state == S_NAME {
            self.state = S_EQ;
        } else {
            self.bad();
        }
    }

    /// Which parameter the name packed so far is; a repeated nonce or
    /// username is ignored (the first counts).
    #[inline(always)]
    fn param_kind(&self) -> u8 {
        let (p, n) = (self.pack, self.pack_len);
        if n == 5 && p == PACK_NONCE && self.flags & DIGEST_NONCE == 0 {
            P_NONCE
        } else if n == 8 && p == PACK_USERNAME && self.flags & DIGEST_USER == 0 {
            P_USER
        } else if n == 5 && p == PACK_STALE {
            P_STALE
        } else {
            P_OTHER
        }
    }

    #[inline(always)]
    fn value_start(&mut self, c: u8) {
        self.pack = 0;
        self.pack_len = 0;
        if c == b'"' {
            self.state = S_QUOTED;
        } else if c != b',' {
            self.state = S_TOKEN;
            self.value_byte(c);
        } else {
            self.bad();
        }
    }

    #[inline(always)]
    fn after_value(&mut self, c: u8) {
        if c == b',' {
            self.state = S_PRE_NAME;
        } else if !is_lws(c) {
            self.bad();
        }
    }

    #[inline(always)]
    fn value_byte(&mut self, c: u8) {
        match self.param {
            P_NONCE => {
                if self.nonce_len < NONCE_MAX {
                    self.nonce_hash = (self.nonce_hash ^ c as u64).wrapping_mul(FNV_PRIME);
                }
                if self.nonce_len <= NONCE_MAX {
                    self.nonce_len += 1;
                }
            }
            P_USER => {
                self.user_hash = (self.user_hash ^ c as u64).wrapping_mul(FNV_PRIME);
                if (self.user_len as usize) < USER_MAX {
                    self.user[self.user_len as usize & (USER_MAX - 1)] = c;
                }
                if (self.user_len as usize) <= USER_MAX {
                    self.user_len += 1;
                }
            }
            P_STALE => self.pack_byte(c),
            _ => {}
        }
    }

    /// The value being read ended normally.
    #[inline(always)]
    fn value_end(&mut self) {
        match self.param {
            P_NONCE => {
                if self.nonce_len > 0 {
                    self.flags |= DIGEST_NONCE;
                }
                if self.nonce_len > NONCE_MAX {
                    self.flags |= DIGEST_NONCE_LONG;
                    self.nonce_len = NONCE_MAX;
                }
            }
            P_USER => {
                self.flags |= DIGEST_USER;
                if self.user_len as usize > USER_MAX {
                    self.flags |= DIGEST_USER_LONG;
                    self.user_len = USER_MAX as u32;
                }
            }
            P_STALE => {
                if self.pack_len == 4 && self.pack == PACK_TRUE {
                    self.flags |= DIGEST_STALE;
                }
            }
            _ => {}
        }
        self.param = P_OTHER;
    }

    /// The header ended (or cannot be read further): a token value ends
    /// with it; a quoted one was cut, and counts only as a nonce already
    /// `NONCE_MAX` long.
    #[inline(always)]
    fn end_line(&mut self) {
        match self.state {
            S_TOKEN => self.value_end(),
            S_QUOTED | S_ESCAPE => {
                if self.param == P_NONCE && self.nonce_len > NONCE_MAX {
                    self.value_end();
                }
                self.flags |= DIGEST_BAD;
            }
            S_SCHEME => {
                if self.pack == PACK_DIGEST && self.pack_len == 6 {
                    self.flags |= DIGEST_SCHEME;
                }
            }
            _ => {}
        }
        self.state = S_DONE;
    }

    #[inline(always)]
    fn bad(&mut self) {
        self.flags |= DIGEST_BAD;
        self.state = S_DONE;
    }

    #[inline(always)]
    fn pack_byte(&mut self, c: u8) {
        if self.pack_len < 8 {
            self.pack |= (c.to_ascii_lowercase() as u64) << (8 * self.pack_len as u32);
        }
        if self.pack_len < PACK_FULL {
            self.pack_len += 1;
        }
    }
}

/// Parses a whole header line (`line` from its first byte, as much as the
/// payload holds) the way the kernel does: the name from its first
/// `UA_WINDOW` bytes, then the value in `AUTH_CHUNK` chunks up to
/// `AUTH_LINE_MAX` bytes from the line's start. `None`: not a `want`
/// header.
pub fn parse_line(line: &[u8], want: AuthHeader) -> Option<DigestParse> {
    let mut win = [0u8; UA_WINDOW];
    let n = core::cmp::min(line.len(), UA_WINDOW);
    win[..n].copy_from_slice(&line[..n]);
    let start = auth_name(&win, want)?;
    let end = core::cmp::min(line.len(), AUTH_LINE_MAX);
    let mut d = DigestParse::default();
    let mut at = start;
    while at < end {
        let mut chunk = [0u8; AUTH_CHUNK];
        let k = core::cmp::min(end - at, AUTH_CHUNK);
        chunk[..k].copy_from_slice(&line[at..at + k]);
        if d.feed(&chunk, k) {
            return Some(d);
        }
        at += k;
    }
    d.finish();
    Some(d)
}

#[cfg(test)]
mod tests;
