//! Digest authentication seen on the wire (SPEC §12): the one parser of
//! `WWW-Authenticate` / `Proxy-Authenticate` (a server's challenge) and
//! `Authorization` / `Proxy-Authorization` (a client's answer) that the
//! egress classifier, the XDP program and the reference model all run.
//!
//! A header line is found by the shared header-line search; its first
//! `UA_WINDOW` bytes go to [`auth_name`], which says which header it is and
//! where its value starts. The value is then read 8 bytes at a time
//! ([`LineWords`]: the kernel reads the packet, the model a slice) by
//! [`DigestParse::step`]: one step reads the rest of a parameter and the
//! next one whole (blanks, name, `=`, value), finding the bytes that
//! matter (quotes, escapes, commas, blanks, line ends) in each 8-byte word
//! at once. A kernel step is one call of a global: verified once per
//! program, whatever the line holds; at most [`AUTH_MAX_STEPS`] per line.
//!
//! What it keeps: a 64-bit hash of the nonce ([`word_hash`]: 8 bytes per
//! multiply, however the value's words fall), the `stale` flag and the
//! username (its first [`USER_MAX`] bytes and the same hash of all of it).
//! Quoted and unquoted values hash the same (a quoted-pair counts as the
//! character it escapes); commas and blanks inside quotes are value bytes;
//! a folded line (CRLF then a blank) is one blank; a CR inside a value is
//! dropped (the LF after it decides whether the value goes on). Credentials are read
//! until both nonce and username are known; a challenge to its end (its
//! `stale` may come last).
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

/// Steps (see [`DigestParse::step`]) taken at most on one header line.
pub const AUTH_MAX_STEPS: usize = 256;
/// Words of a value read at most in one step. 2 and 4 took the same time
/// in the datapath bench (a 40-byte nonce: 3 steps or 2); each word more
/// cost the verifier about 4,000 instructions in each program.
const VALUE_WORDS: usize = 2;
/// Bytes of a header line read at most, from its first byte.
pub const AUTH_LINE_MAX: usize = 2048;
const _: () = assert!(AUTH_LINE_MAX.is_power_of_two());
/// Nonce bytes hashed at most.
pub const NONCE_MAX: u32 = 128;
/// Username bytes kept (the hash covers all of them).
pub const USER_MAX: usize = 32;
const _: () = assert!(USER_MAX.is_power_of_two());
/// Header lines starting with the scanned letters looked at per message.
pub const AUTH_MAX_LINES: usize = 8;
/// Challenge lines of one response learned at most (a server may offer one
/// per algorithm: SHA-256, SHA-512-256, MD5).
pub const AUTH_MAX_CHALLENGES: usize = 4;
const _: () = assert!(AUTH_MAX_CHALLENGES.is_power_of_two());

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
const S_PRE_NAME: u8 = 2;
/// A name longer than a word goes on.
const S_NAME: u8 = 3;
const S_EQ: u8 = 4;
const S_PRE_VALUE: u8 = 5;
const S_QUOTED: u8 = 6;
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

/// [`word_hash`]'s start value (FNV-1a's offset basis).
const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;
/// [`mix`]'s multiplier: odd (so the multiply is a bijection), 2^64 / phi.
const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// One 8-byte block into the hash: an odd multiply, then the high half
/// folded into the low one (both bijections: distinct blocks after the
/// same prefix never collide).
#[inline(always)]
const fn mix(h: u64) -> u64 {
    let h = h.wrapping_mul(HASH_MUL);
    h ^ (h >> 32)
}

/// The hash the parser computes of a value's bytes: each whole 8-byte
/// block (little-endian) mixed in, then the last, partial block
/// (zero-filled, possibly empty) and the length. A multiply per 8 bytes
/// (FNV-1a took one per byte), and the same whichever way the bytes came
/// in (quoted-pairs, folds and word boundaries split them anywhere). Not
/// keyed: a forger still has to know the nonce the server sent to the
/// address it forges (the nonce map's key holds the address too).
pub fn word_hash(bytes: &[u8]) -> u64 {
    let mut h = HASH_SEED;
    let mut blocks = bytes.chunks_exact(8);
    for b in &mut blocks {
        h = mix(h ^ u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
    }
    let mut tail = [0u8; 8];
    tail[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
    finish_hash(h, u64::from_le_bytes(tail), bytes.len() as u32)
}

/// The end of [`word_hash`]: the partial block, then the length.
#[inline(always)]
const fn finish_hash(h: u64, tail: u64, len: u32) -> u64 {
    mix(mix(h ^ tail) ^ len as u64)
}

/// The hash of a nonce as the parser computes it (its first `NONCE_MAX`
/// bytes): a helper for tests and user space.
pub fn nonce_hash(nonce: &[u8]) -> u64 {
    word_hash(&nonce[..core::cmp::min(nonce.len(), NONCE_MAX as usize)])
}

/// `k` (<= 8) more bytes of a value, the low bytes of `w`, into a running
/// [`word_hash`] (`h`, with `acc` holding the `len % 8` bytes not mixed
/// in yet, `len` bytes so far); only the first `max` bytes count. The
/// block completed, if one was.
#[inline(always)]
fn absorb(h: &mut u64, acc: &mut u64, len: u32, w: u64, k: usize, max: u32) -> Option<u64> {
    let room = max.saturating_sub(len) as usize;
    let take = if k < room { k } else { room };
    let have = (len & 7) as usize;
    let v = low_bytes(w, take);
    let joined = *acc | v << (8 * have);
    if have + take < 8 {
        *acc = joined;
        return None;
    }
    *h = mix(*h ^ joined);
    // The bytes of `v` past the block (none when `have` is 0).
    *acc = if have == 0 { 0 } else { v >> (8 * (8 - have)) };
    Some(joined)
}

/// A header line, 8 bytes at a time: the kernel reads its packet, the
/// model a slice.
pub trait LineWords {
    /// The 8 bytes `off` bytes into the line, little-endian; bytes past
    /// what may be read (the payload, `AUTH_LINE_MAX`) are 0.
    fn word(&self, off: usize) -> u64;
}

/// [`LineWords`] over a slice (the model, tests, user space).
pub struct SliceWords<'a>(pub &'a [u8]);

impl LineWords for SliceWords<'_> {
    fn word(&self, off: usize) -> u64 {
        let end = core::cmp::min(self.0.len(), AUTH_LINE_MAX);
        let mut w = [0u8; 8];
        for (i, b) in w.iter_mut().enumerate() {
            if off + i < end {
                *b = self.0[off + i];
            }
        }
        u64::from_le_bytes(w)
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
/// `| LOWER` lower-cases the letters of a word (other bytes change too:
/// only ever compared with all-letter names).
const LOWER: u64 = ONES * 0x20;

/// The top bit of each byte of `w` equal to `c`; exact.
#[inline(always)]
const fn eq(w: u64, c: u8) -> u64 {
    crate::sip::bytes_eq(w, c)
}

/// Bytes that end a line's run: CR, LF and 0 (past the end).
#[inline(always)]
const fn line_ends(w: u64) -> u64 {
    eq(w, b'\r') | eq(w, b'\n') | eq(w, 0)
}

/// Bytes that end a parameter name or the scheme.
#[inline(always)]
const fn name_ends(w: u64) -> u64 {
    line_ends(w) | eq(w, b' ') | eq(w, b'\t') | eq(w, b',') | eq(w, b'=') | eq(w, b'"')
}

/// Byte number (0..8) of the lowest marked byte of `m` (top bits only,
/// not 0): isolate it, then a multiply gathers the byte number into the
/// top byte (BPF has no count-trailing-zeros).
#[inline(always)]
const fn first_byte(m: u64) -> usize {
    let low = m & m.wrapping_neg();
    ((low >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize & 7
}

/// The low `k` bytes of `w` (k <= 8).
#[inline(always)]
const fn low_bytes(w: u64, k: usize) -> u64 {
    if k >= 8 {
        w
    } else {
        w & ((1u64 << (8 * k)) - 1)
    }
}

/// Byte `k` (0..8) of `w`.
#[inline(always)]
const fn byte_of(w: u64, k: usize) -> u8 {
    (w >> (8 * (k & 7))) as u8
}

/// The streaming parser's state and result. Lives in per-CPU scratch in
/// the kernel; `Default` is the start state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestParse {
    /// The nonce's [`word_hash`] (running while the nonce is read).
    pub nonce_hash: u64,
    /// The username's [`word_hash`] (running while it is read).
    pub user_hash: u64,
    /// The nonce's and the username's bytes not hashed yet (see `absorb`).
    nonce_acc: u64,
    user_acc: u64,
    /// The lower-cased first bytes of a parameter name or the `stale`
    /// value (see `pack`).
    pack: u64,
    pub flags: u32,
    /// Nonce bytes seen; once the nonce is read, at most `NONCE_MAX`.
    pub nonce_len: u32,
    pub user: [u8; USER_MAX],
    /// Username bytes seen; once it is read, at most `USER_MAX`.
    pub user_len: u32,
    /// Line offset of the next byte to read.
    pos: u32,
    state: u8,
    param: u8,
    pack_len: u8,
    /// Credentials: done once nonce and username are known.
    creds: u8,
    _pad: u32,
}

impl Default for DigestParse {
    fn default() -> Self {
        DigestParse {
            nonce_hash: HASH_SEED,
            user_hash: HASH_SEED,
            nonce_acc: 0,
            user_acc: 0,
            pack: 0,
            flags: 0,
            nonce_len: 0,
            user: [0; USER_MAX],
            user_len: 0,
            pos: 0,
            state: S_PRE_SCHEME,
            param: P_OTHER,
            pack_len: 0,
            creds: 0,
            _pad: 0,
        }
    }
}

impl DigestParse {
    /// Back to the start state, in place (the kernel's copy lives in
    /// scratch; a `Default` temporary would sit on its small stack).
    #[inline(always)]
    pub fn reset(&mut self) {
        self.nonce_hash = HASH_SEED;
        self.user_hash = HASH_SEED;
        self.nonce_acc = 0;
        self.user_acc = 0;
        self.pack = 0;
        self.flags = 0;
        self.nonce_len = 0;
        self.user = [0; USER_MAX];
        self.user_len = 0;
        self.pos = 0;
        self.state = S_PRE_SCHEME;
        self.param = P_OTHER;
        self.pack_len = 0;
        self.creds = 0;
    }

    /// Reset, to read a `want` header's value from line offset `start`
    /// (what [`auth_name`] returned).
    #[inline(always)]
    pub fn start(&mut self, start: usize, want: AuthHeader) {
        self.reset();
        self.pos = start as u32;
        self.creds = matches!(want, AuthHeader::Credentials) as u8;
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

    /// One step: a word or two of the parameter being read, in order
    /// (blanks and comma, name, `=`, a word of its value), each part reading
    /// one word and handing over to the next: no loop, so the kernel's
    /// verifier checks each part once. True once the header has ended (or
    /// enough is known).
    #[inline(always)]
    pub fn step<B: LineWords>(&mut self, b: &B) -> bool {
        if self.state == S_PRE_SCHEME {
            self.scheme(b);
        }
        if self.state == S_AFTER_VALUE {
            self.after_value(b);
        }
        if self.state == S_PRE_NAME {
            self.name(b);
        }
        if self.state == S_NAME {
            self.name_rest(b);
        }
        if self.state == S_EQ {
            self.equals(b);
        }
        if self.state == S_PRE_VALUE {
            self.value_start(b);
        }
        if self.state == S_QUOTED || self.state == S_TOKEN {
            self.value(b);
        }
        let both = DIGEST_NONCE | DIGEST_USER;
        if self.creds != 0 && self.flags & both == both {
            self.state = S_DONE;
        }
        self.state == S_DONE
    }

    /// The end of what can be read (payload, `AUTH_LINE_MAX` or
    /// `AUTH_MAX_STEPS`): a value being read ends here.
    #[inline(always)]
    pub fn finish(&mut self) {
        if self.state != S_DONE {
            self.end_line();
        }
    }

    /// Skips blanks (and commas if `commas`), a folded line being one
    /// blank: the next other byte (at `pos`), or `None` when the line
    /// ended (`S_DONE`) or this step's words are used up (go on next step).
    #[inline(always)]
    fn skip<B: LineWords>(&mut self, b: &B, commas: bool) -> Option<u8> {
        let w = b.word(self.pos as usize);
        let mut blank = eq(w, b' ') | eq(w, b'\t') | eq(w, b'\r');
        if commas {
            blank |= eq(w, b',');
        }
        let other = !blank & HIGH;
        if other == 0 {
            self.pos += 8;
            return None;
        }
        let k = first_byte(other);
        let c = byte_of(w, k);
        self.pos += k as u32;
        if c == b'\n' && is_lws(self.next_byte(b)) {
            self.pos += 1; // a fold
            return None;
        }
        if c == b'\n' || c == 0 {
            self.end_line();
            return None;
        }
        Some(c)
    }

    /// The byte after the one at `pos`.
    #[inline(always)]
    fn next_byte<B: LineWords>(&self, b: &B) -> u8 {
        byte_of(b.word(self.pos as usize), 1)
    }

    /// The scheme: `Digest` then a blank, or nothing more is read.
    #[inline(always)]
    fn scheme<B: LineWords>(&mut self, b: &B) {
        if self.skip(b, false).is_none() {
            return;
        }
        let w = b.word(self.pos as usize);
        let ends = name_ends(w);
        let k = first_byte(ends);
        let c = byte_of(w, k);
        if ends != 0
            && k == 6
            && low_bytes(w | LOWER, 6) == PACK_DIGEST
            && (is_lws(c) || c == b'\r' || c == b'\n' || c == 0)
        {
            self.flags |= DIGEST_SCHEME;
            self.pos += 6;
            self.state = S_PRE_NAME;
        } else {
            self.state = S_DONE; // another scheme (Basic...) or garbage
        }
    }

    /// Blanks, then a comma before the next parameter.
    #[inline(always)]
    fn after_value<B: LineWords>(&mut self, b: &B) {
        match self.skip(b, false) {
            Some(b',') => {
                self.pos += 1;
                self.state = S_PRE_NAME;
            }
            Some(_) => self.bad(),
            None => {}
        }
    }

    /// Blanks and commas, then a parameter name up to its `=` (or blanks).
    #[inline(always)]
    fn name<B: LineWords>(&mut self, b: &B) {
        if self.skip(b, true).is_none() {
            return;
        }
        let w = b.word(self.pos as usize);
        let ends = name_ends(w);
        if ends == 0 {
            // 8 bytes and more: `name_rest` finds the end.
            self.pack = w | LOWER;
            self.pack_len = 8;
            self.pos += 8;
            self.state = S_NAME;
            return;
        }
        let len = first_byte(ends);
        if len == 0 {
            self.bad(); // `=` or `"` where a name starts
            return;
        }
        self.pack = low_bytes(w | LOWER, len);
        self.pack_len = len as u8;
        self.pos += len as u32;
        self.name_end(byte_of(w, len));
    }

    /// The rest of a name longer than a word, a word a step.
    #[inline(always)]
    fn name_rest<B: LineWords>(&mut self, b: &B) {
        let w = b.word(self.pos as usize);
        let ends = name_ends(w);
        if ends == 0 {
            self.pack_len = PACK_FULL;
            self.pos += 8;
            return;
        }
        let len = first_byte(ends);
        if len != 0 {
            self.pack_len = PACK_FULL;
        }
        self.pos += len as u32;
        self.name_end(byte_of(w, len));
    }

    /// The name ended at `c` (at `pos`).
    #[inline(always)]
    fn name_end(&mut self, c: u8) {
        self.param = self.param_kind();
        match c {
            b'=' => {
                self.pos += 1;
                self.state = S_PRE_VALUE;
            }
            b' ' | b'\t' | b'\r' | b'\n' => self.state = S_EQ,
            0 => self.end_line(),
            _ => self.bad(),
        }
    }

    /// Blanks between a name and its `=`.
    #[inline(always)]
    fn equals<B: LineWords>(&mut self, b: &B) {
        match self.skip(b, false) {
            Some(b'=') => {
                self.pos += 1;
                self.state = S_PRE_VALUE;
            }
            Some(_) => self.bad(),
            None => {}
        }
    }

    /// Which parameter the name packed is; a repeated nonce or username is
    /// ignored (the first counts).
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

    /// Blanks, then a quote or a token's first byte.
    #[inline(always)]
    fn value_start<B: LineWords>(&mut self, b: &B) {
        let Some(c) = self.skip(b, false) else {
            return;
        };
        self.pack = 0;
        self.pack_len = 0;
        if c == b'"' {
            self.pos += 1;
            self.state = S_QUOTED;
        } else if c != b',' {
            self.state = S_TOKEN;
        } else {
            self.bad();
        }
    }

    /// Up to `VALUE_WORDS` words of a value: each word's run of plain
    /// bytes, then the byte that stopped the run (the value goes on after
    /// a CR, a fold or a quoted-pair). Lenient: an unquoted value runs to
    /// a comma or a blank.
    #[inline(always)]
    fn value<B: LineWords>(&mut self, b: &B) {
        let quoted = self.state == S_QUOTED;
        for _ in 0..VALUE_WORDS {
            let w = b.word(self.pos as usize);
            let stops = line_ends(w)
                | if quoted {
                    eq(w, b'"') | eq(w, b'\\')
                } else {
                    eq(w, b',') | eq(w, b' ') | eq(w, b'\t')
                };
            if stops == 0 {
                self.run(w, 8);
                self.pos += 8;
                continue;
            }
            let k = first_byte(stops);
            self.run(w, k);
            self.pos += k as u32;
            if !self.value_stop(b, byte_of(w, k), quoted) {
                return;
            }
        }
    }

    /// The byte `c` at `pos` stopped a value's run: false when the value
    /// (or the line) ended there.
    #[inline(always)]
    fn value_stop<B: LineWords>(&mut self, b: &B, c: u8, quoted: bool) -> bool {
        match c {
            // A CR is only ever followed by the LF that decides.
            b'\r' => {
                self.pos += 1;
                true
            }
            b'\n' if quoted && is_lws(self.next_byte(b)) => {
                self.pos += 1; // a fold: its blanks are value bytes
                true
            }
            b'\\' if quoted => {
                let e = self.next_byte(b);
                if e == 0 || e == b'\r' || e == b'\n' {
                    self.pos += 1;
                    self.end_line();
                    return false;
                }
                self.run(e as u64, 1);
                self.pos += 2;
                true
            }
            b'"' if quoted => {
                self.pos += 1;
                self.value_end();
                self.state = S_AFTER_VALUE;
                false
            }
            b'\n' if quoted => {
                self.end_line();
                false
            }
            0 => {
                self.end_line();
                false
            }
            _ => {
                // A token's comma, blank or line end: `after_value` reads it.
                self.value_end();
                self.state = S_AFTER_VALUE;
                false
            }
        }
    }

    /// The `k` low bytes of `w` (k <= 8), plain value bytes: a few word
    /// operations, no loop over the bytes.
    #[inline(always)]
    fn run(&mut self, w: u64, k: usize) {
        match self.param {
            P_NONCE => {
                let len = self.nonce_len;
                absorb(
                    &mut self.nonce_hash,
                    &mut self.nonce_acc,
                    len,
                    w,
                    k,
                    NONCE_MAX,
                );
                self.nonce_len = len + k as u32;
            }
            P_USER => {
                let len = self.user_len;
                if let Some(block) =
                    absorb(&mut self.user_hash, &mut self.user_acc, len, w, k, u32::MAX)
                {
                    self.keep_user(len, block);
                }
                self.user_len = len + k as u32;
            }
            P_STALE => {
                // Letters only ever match letters: `| LOWER` lower-cases
                // them and turns nothing else into one.
                if self.pack_len < 8 {
                    self.pack |= low_bytes(w | LOWER, k) << (8 * self.pack_len as u32);
                }
                let n = self.pack_len as usize + k;
                self.pack_len = if n < PACK_FULL as usize {
                    n as u8
                } else {
                    PACK_FULL
                };
            }
            _ => {}
        }
    }

    /// The username's 8-byte block holding byte `at`, kept if it is one of
    /// the first `USER_MAX` bytes.
    #[inline(always)]
    fn keep_user(&mut self, at: u32, block: u64) {
        let i = (at / 8) as usize;
        if i < USER_MAX / 8 {
            let o = (i & (USER_MAX / 8 - 1)) * 8;
            self.user[o..o + 8].copy_from_slice(&block.to_le_bytes());
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
                // (An empty nonce is none: a later one is read from the seed.)
                if self.nonce_len > 0 {
                    self.nonce_hash = finish_hash(self.nonce_hash, self.nonce_acc, self.nonce_len);
                }
            }
            P_USER => {
                self.flags |= DIGEST_USER;
                let len = self.user_len;
                if len % 8 != 0 {
                    self.keep_user(len, self.user_acc);
                }
                self.user_hash = finish_hash(self.user_hash, self.user_acc, len);
                if len as usize > USER_MAX {
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
            S_QUOTED => {
                if self.param == P_NONCE && self.nonce_len > NONCE_MAX {
                    self.value_end();
                }
                self.flags |= DIGEST_BAD;
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
}

/// Parses a whole header line (`line` from its first byte, as much as the
/// payload holds) the way the kernel does: the name from its first
/// `UA_WINDOW` bytes, then the value step by step, at most
/// `AUTH_LINE_MAX` bytes from the line's start. `None`: not a `want`
/// header.
pub fn parse_line(line: &[u8], want: AuthHeader) -> Option<DigestParse> {
    let mut win = [0u8; UA_WINDOW];
    let n = core::cmp::min(line.len(), UA_WINDOW);
    win[..n].copy_from_slice(&line[..n]);
    let start = auth_name(&win, want)?;
    let mut d = DigestParse::default();
    d.start(start, want);
    let words = SliceWords(line);
    for _ in 0..AUTH_MAX_STEPS {
        if d.step(&words) {
            return Some(d);
        }
    }
    d.finish();
    Some(d)
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
