//! Destinations (SPEC §11): the dialled number of an initial INVITE, read
//! from its Request-URI and normalised, and the policy that decides it.
//!
//! The XDP program copies the Request-URI's first [`URI_WINDOW`] bytes
//! into scratch and runs [`user_part`] and [`normalise`] on them; the
//! reference model and `shieldctl destination` run the same code. Digits
//! travel as 4-bit nibbles in two words (most significant first), so a
//! prefix test is a shift and a compare, and the rule tries' keys are the
//! first [`MAX_DIGITS`] nibbles behind a class byte (national and
//! international numbers never match each other's rules).

use crate::bucket::Bucket;
use crate::sip::{byte, bytes_eq, word_or_zero, HIGH, ONES, UA_WINDOW};

/// Bytes of the Request-URI (from the byte after `INVITE `) the kernel
/// copies and [`user_part`] reads. A user part that runs past them is
/// [`Raw::Unreadable`]: refused under any policy (SPEC §11 leaves the case
/// open; padding a number past the window must not be a way around it).
pub const URI_WINDOW: usize = 128;
/// Digits kept from the user part (strip and international prefixes come
/// off these); further digits are not needed by any rule.
pub const RAW_DIGITS: u32 = 32;
/// Digits a rule compares (E.164 numbers have at most 15).
pub const MAX_DIGITS: u32 = 16;
/// `strip_prefixes` / `international_prefixes` entries the kernel holds.
pub const MAX_PREFIXES: usize = 8;
/// Digits of one such prefix.
pub const MAX_PREFIX_DIGITS: u32 = 8;
/// Bytes of a rule trie key's data: the class, then 16 nibbles.
pub const KEY_BYTES: usize = 9;

/// A number's class (metrics `class` label; the key's first byte is
/// `class as u8 + 1`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DestClass {
    National = 0,
    International = 1,
    /// No number: letters, `*`, `#`, no user part.
    Other = 2,
}

impl DestClass {
    pub const COUNT: usize = 3;
    pub const ALL: [DestClass; Self::COUNT] =
        [DestClass::National, DestClass::International, DestClass::Other];

    pub const fn as_str(self) -> &'static str {
        match self {
            DestClass::National => "national",
            DestClass::International => "international",
            DestClass::Other => "other",
        }
    }
}

/// Up to [`RAW_DIGITS`] decimal digits as nibbles, the first in the top
/// nibble of `hi`. `len` counts the digits kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digits {
    pub hi: u64,
    pub lo: u64,
    pub len: u32,
}

impl Digits {
    #[inline(always)]
    fn push(&mut self, d: u8) {
        if self.len < 16 {
            self.hi |= (d as u64) << (60 - 4 * self.len);
        } else if self.len < RAW_DIGITS {
            self.lo |= (d as u64) << (60 - 4 * (self.len - 16));
        } else {
            return;
        }
        self.len += 1;
    }

    /// Whether the digits start with `p`.
    #[inline(always)]
    pub fn starts_with(&self, p: &DigitPrefix) -> bool {
        p.len >= 1
            && p.len <= MAX_PREFIX_DIGITS
            && self.len >= p.len
            && self.hi >> (64 - 4 * p.len) == p.digits
    }

    /// The digits after the first `n` (1..=`MAX_PREFIX_DIGITS`).
    #[inline(always)]
    fn drop_first(&self, n: u32) -> Digits {
        if n == 0 || n > MAX_PREFIX_DIGITS || n > self.len {
            return *self;
        }
        let s = 4 * n;
        Digits {
            hi: self.hi << s | self.lo >> (64 - s),
            lo: self.lo << s,
            len: self.len - n,
        }
    }

    /// Digit `i` (0-based), if there is one among the first 16.
    #[inline(always)]
    pub fn digit(&self, i: u32) -> Option<u8> {
        if i < self.len && i < 16 {
            Some((self.hi >> (60 - 4 * i)) as u8 & 0xf)
        } else {
            None
        }
    }
}

/// A digit string the policy names (a strip or international prefix):
/// its `len` digits as a number in nibbles (`0x00` for "00").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DigitPrefix {
    pub digits: u64,
    pub len: u32,
    pub _pad: u32,
}

/// What a user part is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Digits (see `Raw::digits`).
    Number,
    /// Not a number: letters, `*`, `#`, a bad escape, no user part.
    Other,
    /// The user part runs past the window.
    Unreadable,
}

/// The Request-URI's user part, before the policy's prefixes. Plain
/// fields, always all set, rather than an enum with data: LLVM may read a
/// variant's field on a path where it is dead, and the verifier rejects
/// whatever that register held there (a pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw {
    pub kind: Kind,
    /// A leading `+`.
    pub plus: bool,
    pub digits: Digits,
}

impl Raw {
    pub const OTHER: Raw = Raw {
        kind: Kind::Other,
        plus: false,
        digits: Digits { hi: 0, lo: 0, len: 0 },
    };
    pub const UNREADABLE: Raw = Raw {
        kind: Kind::Unreadable,
        ..Raw::OTHER
    };
}

/// The number as the rules see it: `class` `Other` for no number (then
/// `unreadable` tells a user part past the window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialled {
    pub class: DestClass,
    pub digits: Digits,
    pub unreadable: bool,
}

impl Dialled {
    pub const OTHER: Dialled = Dialled {
        class: DestClass::Other,
        digits: Digits { hi: 0, lo: 0, len: 0 },
        unreadable: false,
    };
    pub const UNREADABLE: Dialled = Dialled {
        unreadable: true,
        ..Dialled::OTHER
    };

    #[inline(always)]
    pub const fn class(&self) -> DestClass {
        self.class
    }

    #[inline(always)]
    pub const fn is_number(&self) -> bool {
        !matches!(self.class, DestClass::Other)
    }

    /// The rule tries' key: the class byte, then the first `MAX_DIGITS`
    /// nibbles, and its prefix length in bits. `None` for no number.
    #[inline(always)]
    pub fn key(&self) -> Option<(u32, [u8; KEY_BYTES])> {
        if !self.is_number() {
            return None;
        }
        let len = self.digits.len;
        let n = if len < MAX_DIGITS { len } else { MAX_DIGITS };
        let h = self.digits.hi.to_be_bytes();
        Some((
            8 + 4 * n,
            [self.class as u8 + 1, h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]],
        ))
    }
}

/// Character classes of the user-part walk. Looked up in tables, not
/// computed: the BPF ISA has no conditional set, so every comparison is a
/// branch, and the verifier walks each path of the loop's body apart.
const C_END: u8 = 0;
const C_DELIM: u8 = 1;
const C_DIGIT: u8 = 2;
const C_PLUS: u8 = 3;
const C_SEP: u8 = 4;
const C_PCT: u8 = 5;
const C_OTHER: u8 = 6;

/// A literal character's class: the Request-URI ends at a blank, CR, LF
/// or the payload's end (NUL in the window); `;` `@` `?` `:` end the user
/// part; `-` `.` `(` `)` are SPEC §11's visual separators.
static LITERAL: [u8; 256] = classes(true);
/// An escaped character's class: data, never a delimiter (`%40` is no
/// `@`), and a space is a separator.
static ESCAPED: [u8; 256] = classes(false);
/// A hex digit's value, or 16.
static HEX: [u8; 256] = {
    let mut t = [16u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => 16,
        };
        c += 1;
    }
    t
};

const fn classes(literal: bool) -> [u8; 256] {
    let mut t = [C_OTHER; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = match b {
            b'0'..=b'9' => C_DIGIT,
            b'+' => C_PLUS,
            b'-' | b'.' | b'(' | b')' => C_SEP,
            b' ' if !literal => C_SEP,
            b' ' | b'\t' | b'\r' | b'\n' | 0 if literal => C_END,
            b';' | b'@' | b'?' | b':' if literal => C_DELIM,
            b'%' if literal => C_PCT,
            _ => C_OTHER,
        };
        c += 1;
    }
    t
}

#[inline(always)]
fn class(table: &[u8; 256], c: u8) -> u8 {
    table[c as usize]
}

/// The characters SPEC §11 calls visual separators (for entries).
#[inline(always)]
const fn is_separator(c: u8) -> bool {
    matches!(c, b'-' | b'.' | b'(' | b')' | b' ')
}


/// The scheme's length, and whether the URI needs an `@` for a user part
/// (`sip:`, `sips:`), or 0 for another scheme.
#[inline(always)]
fn scheme(win: &[u8; URI_WINDOW]) -> (usize, bool) {
    let l = |i: usize| byte(win, i).to_ascii_lowercase();
    if l(0) == b't' && l(1) == b'e' && l(2) == b'l' && l(3) == b':' {
        return (4, false);
    }
    if l(0) != b's' || l(1) != b'i' || l(2) != b'p' {
        return (0, false);
    }
    match l(3) {
        b':' => (4, true),
        b's' if l(4) == b':' => (5, true),
        _ => (0, false),
    }
}

/// Reads the user part of the Request-URI whose first bytes are in `win`
/// (zero-filled past the payload): up to `;`, `@`, `?` or `:` (a
/// password), `%XX` decoded, separators dropped. A `sip:`/`sips:` URI has
/// a user part only if an `@` follows before the URI ends; when the window
/// ends first it is assumed to (refusing too much, never too little).
/// Every index is bounded by the window: the kernel runs this code.
#[inline(always)]
pub fn user_part(win: &[u8; URI_WINDOW]) -> Raw {
    user_part_with(win, |n| n)
}

/// [`user_part`], with the digit count passed through `opaque` (the
/// identity) on every byte. The kernel passes a function the verifier
/// cannot see through (a round trip through map memory): a count it knew
/// exactly would make every (position, count) pair a state of its own,
/// past the verifier's budget; unknown, they are one.
#[inline(always)]
pub fn user_part_with(win: &[u8; URI_WINDOW], opaque: impl Fn(u32) -> u32) -> Raw {
    let (start, needs_at) = scheme(win);
    if start == 0 {
        return Raw::OTHER;
    }
    // A `sip:` URI has a user part only if an `@` comes before its end.
    if needs_at && !has_at(win, start) {
        return Raw::OTHER;
    }
    // A leading `+`, literal or escaped, before the loop: the position
    // and the digits are then the loop's only state (anything that is no
    // number returns), so the verifier walks it once, not once per flag.
    let mut i = start;
    let plus = if byte(win, i) == b'+' {
        i += 1;
        true
    } else if byte(win, i) == b'%' && byte(win, i + 1) == b'2' && (byte(win, i + 2) | 0x20) == b'b' {
        i += 3;
        true
    } else {
        false
    };
    let mut digits = Digits::default();
    while i < URI_WINDOW {
        let c = byte(win, i);
        let mut cls = class(&LITERAL, c);
        if cls <= C_DELIM {
            return number(plus, digits);
        }
        let (mut d, mut step) = (c, 1);
        if cls == C_PCT {
            if i + 2 >= URI_WINDOW {
                return Raw::UNREADABLE;
            }
            let (h, l) = (class(&HEX, byte(win, i + 1)), class(&HEX, byte(win, i + 2)));
            if (h | l) >= 16 {
                return Raw::OTHER; // a bad escape
            }
            d = h << 4 | l;
            step = 3;
            cls = class(&ESCAPED, d);
        }
        if cls == C_DIGIT {
            digits.push(d.wrapping_sub(b'0') & 0xf);
        } else if cls != C_SEP {
            return Raw::OTHER; // letters, `*`, `#`, a `+` not in front...
        }
        // At the end of the body: every path meets the loop's head with
        // the same (unknown) count.
        digits.len = opaque(digits.len);
        i += step;
    }
    Raw::UNREADABLE
}

/// Whether an `@` comes at or after `from`, before the Request-URI ends.
/// Running out of window counts as yes: the number is then checked
/// (refusing too much, never too little). An escaped `%40` is no `@`, and
/// the user part's first `@` ends it: so the first literal one decides.
#[inline(always)]
fn has_at(win: &[u8; URI_WINDOW], from: usize) -> bool {
    let mut i = from;
    while i < URI_WINDOW {
        let c = byte(win, i);
        if c == b'@' {
            return true;
        }
        if class(&LITERAL, c) == C_END {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn number(plus: bool, digits: Digits) -> Raw {
    if digits.len == 0 {
        return Raw::OTHER;
    }
    Raw {
        kind: Kind::Number,
        plus,
        digits,
    }
}

/// The longest of `n` prefixes in `list` that `d` starts with: its length,
/// or 0.
#[inline(always)]
fn longest(d: &Digits, list: &[DigitPrefix; MAX_PREFIXES], n: u32) -> u32 {
    let mut best = 0;
    let mut k = 0;
    while k < MAX_PREFIXES {
        if (k as u32) < n && list[k].len > best && d.starts_with(&list[k]) {
            best = list[k].len;
        }
        k += 1;
    }
    best
}

/// SPEC §11's normalisation: one strip prefix (the longest) off, then a
/// leading `+` or the longest international prefix makes the number
/// international (E.164, the prefix off); otherwise it is national, as
/// dialled.
#[inline(always)]
pub fn normalise(raw: Raw, p: &DestPolicy) -> Dialled {
    match raw.kind {
        Kind::Number => {}
        Kind::Other => return Dialled::OTHER,
        Kind::Unreadable => return Dialled::UNREADABLE,
    }
    let (plus, digits) = (raw.plus, raw.digits);
    let d = if plus {
        digits
    } else {
        digits.drop_first(longest(&digits, &p.strip, p.n_strip))
    };
    let (class, d) = if plus {
        (DestClass::International, d)
    } else {
        match longest(&d, &p.intl, p.n_intl) {
            0 => (DestClass::National, d),
            n => (DestClass::International, d.drop_first(n)),
        }
    };
    if d.len == 0 {
        return Dialled::OTHER;
    }
    Dialled {
        class,
        digits: d,
        unreadable: false,
    }
}

impl DigitPrefix {
/// A prefix from its digits (1..=`MAX_PREFIX_DIGITS` of them, nothing
    /// else), or `None`.
    pub fn parse(text: &[u8]) -> Option<DigitPrefix> {
        if text.is_empty() || text.len() > MAX_PREFIX_DIGITS as usize {
            return None;
        }
        let mut digits = 0u64;
        for &c in text {
            if !c.is_ascii_digit() {
                return None;
            }
            digits = digits << 4 | (c - b'0') as u64;
        }
        Some(DigitPrefix {
            digits,
            len: text.len() as u32,
            _pad: 0,
        })
    }
}

/// A `deny` or `allow_international` entry normalised as a dialled
/// `tel:` number would be, but without `strip_prefixes` (entries name
/// numbers as dialled after the outside-line prefix, and a strip prefix
/// must not eat a rule's own first digits): `+899` and `00899` are one.
pub fn entry(text: &[u8], p: &DestPolicy) -> Dialled {
    let mut win = [0u8; URI_WINDOW];
    win[..4].copy_from_slice(b"tel:");
    if text.len() > URI_WINDOW - 5
        || !text.iter().all(|&c| c.is_ascii_digit() || c == b'+' || is_separator(c))
    {
        return Dialled::OTHER;
    }
    for (w, &c) in win[4..].iter_mut().zip(text) {
        // A literal space would end the URI; in an entry it separates.
        *w = if c == b' ' { b'-' } else { c };
    }
    let unstripped = DestPolicy { n_strip: 0, ..*p };
    normalise(user_part(&win), &unstripped)
}

/// A rule trie's value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestRule {
    /// The rule's number, for its refusal counter and the metrics' `rule`
    /// label (user space keeps the names).
    pub id: u32,
    /// `RULE_DENY` or `RULE_ALLOW`.
    pub kind: u32,
}

pub const RULE_DENY: u32 = 1;
pub const RULE_ALLOW: u32 = 2;

/// Rule ids with no entry of their own.
pub const RULE_ALLOW_INTERNATIONAL: u32 = 0xffff_fff0;
pub const RULE_INTERNATIONAL_RATE: u32 = 0xffff_fff1;
pub const RULE_UNREADABLE: u32 = 0xffff_fff2;
/// The rule of a refusal for `[calls] max_concurrent_per_source` (SPEC §13).
pub const RULE_CALLS: u32 = 0xffff_fff3;
/// The first rule id no entry may have.
pub const RULE_IDS_RESERVED: u32 = 0xffff_fff0;

/// The `[destinations]` settings the kernel reads (`DEST_POLICY[0]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestPolicy {
    /// `D_*` bits.
    pub flags: u32,
    /// Refusals within `[bans.escalate] window` that ban a source; 0 = off.
    pub escalate: u32,
    pub n_strip: u32,
    pub n_intl: u32,
    pub strip: [DigitPrefix; MAX_PREFIXES],
    pub intl: [DigitPrefix; MAX_PREFIXES],
    /// `international_per_minute` / `international_burst`, per source.
    pub intl_rate: Bucket,
    /// `reject_per_second`: 403s, one bucket for the host.
    pub reject: Bucket,
    /// Refusal reports to the daemon, one bucket for the host (100/s).
    pub report: Bucket,
}

/// `DEST_SOURCES` value: a caller's international-call bucket and its
/// refusals in the current `[bans.escalate] window`. Apart from `SOURCES`
/// so the million-entry table of every source stays small.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestSource {
    pub intl_tat: u64,
    pub start_ns: u64,
    pub refusals: u64,
}

/// The rule tries hold entries (deny or allow).
pub const D_RULES: u32 = 1 << 0;
/// `allow_international` is not empty.
pub const D_ALLOW_INTERNATIONAL: u32 = 1 << 1;
/// `action = "reject"`.
pub const D_REJECT: u32 = 1 << 2;
/// `check_allowlisted = true`.
pub const D_CHECK_ALLOWLISTED: u32 = 1 << 3;

impl DestPolicy {
    #[inline(always)]
    pub const fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// Whether any number can be refused (rules, or a rate).
    #[inline(always)]
    pub const fn refuses(&self) -> bool {
        self.has(D_RULES | D_ALLOW_INTERNATIONAL) || self.intl_rate.is_limited()
    }
}

/// Whether the rule key `rule` (its first `bits` bits) is a prefix of the
/// number key `key`: what the rule trie answers, written out (user space
/// and the model search their copies of the rules with it).
pub fn covers(rule: &[u8; KEY_BYTES], bits: u32, key: &[u8; KEY_BYTES]) -> bool {
    let full = (bits / 8) as usize;
    if full > KEY_BYTES || rule[..full] != key[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || full == KEY_BYTES || (rule[full] ^ key[full]) >> (8 - rest) == 0
}

/// What the lists say about a number (the rate comes after).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    Pass,
    Refused(u32),
}

/// SPEC §11's lists: `hit` is the longest rule matching the number's key
/// (the trie's answer; a deny and an allow of one length are merged into
/// the deny at load).
#[inline(always)]
pub fn listed(d: &Dialled, hit: Option<DestRule>, p: &DestPolicy) -> Listed {
    if !d.is_number() {
        return if d.unreadable && p.has(D_RULES | D_ALLOW_INTERNATIONAL) {
            Listed::Refused(RULE_UNREADABLE)
        } else {
            Listed::Pass
        };
    }
    match hit {
        Some(r) if r.kind == RULE_DENY => Listed::Refused(r.id),
        Some(_) => Listed::Pass,
        None if d.class == DestClass::International && p.has(D_ALLOW_INTERNATIONAL) => {
            Listed::Refused(RULE_ALLOW_INTERNATIONAL)
        }
        None => Listed::Pass,
    }
}

/// E.164 country codes of two digits (`1` and `7` have one, every other
/// code three): bit `n` for code `n`, codes 0..64 in the first word and
/// 64..128 in the second (the BPF target has no 128-bit shifts).
const TWO_DIGIT_CODES: [u64; 2] = {
    let codes: [u8; 44] = [
        20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54,
        55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
    ];
    let mut bits = [0u64; 2];
    let mut i = 0;
    while i < codes.len() {
        bits[(codes[i] / 64) as usize] |= 1 << (codes[i] % 64);
        i += 1;
    }
    bits
};

#[inline(always)]
const fn two_digit_code(n: u32) -> bool {
    let word = if n < 64 { TWO_DIGIT_CODES[0] } else { TWO_DIGIT_CODES[1] };
    n < 128 && word & (1 << (n % 64)) != 0
}

/// Counter slots per interface in `DEST_STATS`: one per country code
/// (0..=999; 0 = no country: too short, or not international), then one
/// per class.
pub const DEST_STATS_PER_IFACE: u32 = 1024;
pub const DEST_CLASS_SLOT: u32 = 1000;
const _: () = assert!(DEST_CLASS_SLOT + DestClass::COUNT as u32 <= DEST_STATS_PER_IFACE);
pub const DEST_STATS_ENTRIES: u32 = crate::MAX_IFACE_SLOTS * DEST_STATS_PER_IFACE;

/// The E.164 country code of an international number, or 0.
#[inline(always)]
pub fn country(d: &Dialled) -> u32 {
    if d.class != DestClass::International {
        return 0;
    }
    let (Some(a), Some(b)) = (d.digits.digit(0), d.digits.digit(1)) else {
        return 0;
    };
    if a == 0 {
        return 0;
    }
    if a == 1 || a == 7 {
        return a as u32;
    }
    let two = a as u32 * 10 + b as u32;
    if two_digit_code(two) {
        return two;
    }
    match d.digits.digit(2) {
        Some(c) => two * 10 + c as u32,
        None => 0,
    }
}

/// `To` header lines (To, Timestamp...) looked at for the tag.
pub const TO_MAX_T_LINES: usize = 4;

/// What a header line starting with `t`/`T` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToLine {
    NotTo,
    /// A To header with a `tag` parameter: an in-dialog request.
    Tagged,
    /// A To header without one (as far as the window shows: a tag past it
    /// is missed, so such a request counts as initial and is checked).
    Untagged,
}

/// Parses a header line at `win[0]`: `To` or `t`, then the value. A tag
/// counts only as `;tag=` (any case) after the last `>` and the last `"`
/// of the line: a display name or the URI may contain that text, a
/// header parameter may not. The spaced form RFC 3261 also allows (`;
/// tag =`) is missed, and so is a tag past the window: such a request
/// counts as initial and is checked, the safe side. This rather than a
/// quote-and-bracket state machine: the verifier walks each of its states
/// apart.
#[inline(always)]
pub fn to_line(win: &[u8; UA_WINDOW]) -> ToLine {
    let l = |i: usize| byte(win, i).to_ascii_lowercase();
    if l(0) != b't' {
        return ToLine::NotTo;
    }
    let j = if l(1) == b'o' { 2 } else { 1 };
    let j = crate::sip::skip_lws(win, j);
    if byte(win, j) != b':' {
        return ToLine::NotTo;
    }
    // Eight bytes at a time: in each word, the positions of the line's
    // end, of `>` and `"`, and of `;` followed by `tag=`; the last of a
    // `>`/`"` and a tag in the words before the end decides (most To
    // lines of an initial INVITE hold no `;` at all).
    let start = j + 1;
    let mut tagged = false;
    let mut k = 0;
    while k < UA_WINDOW / 8 {
        let at = k * 8;
        let w = word_or_zero(win, at);
        // The name and colon are not looked at again.
        let valid = if at + 8 <= start {
            0
        } else if at >= start {
            HIGH
        } else {
            HIGH << (8 * (start - at))
        };
        let ends = (bytes_eq(w, b'\r') | bytes_eq(w, b'\n') | bytes_eq(w, 0)) & valid;
        // The positions before the first end in this word.
        let before = if ends == 0 {
            valid
        } else {
            (ends & ends.wrapping_neg()).wrapping_sub(1) & valid
        };
        let resets = (bytes_eq(w, b'>') | bytes_eq(w, b'"')) & before;
        let semis = bytes_eq(w, b';') & before;
        let tags = if semis == 0 { 0 } else { semis & tag_follows(win, at) };
        // (A position is one byte: the two masks share no bit, so the
        // larger holds the later event.)
        if tags | resets != 0 {
            tagged = tags > resets;
        }
        if ends != 0 {
            return if tagged { ToLine::Tagged } else { ToLine::Untagged };
        }
        k += 1;
    }
    // The line runs past the window: a `>` or `"` may follow.
    ToLine::Untagged
}

/// The top bit of each byte `b` of the word at `at` whose next four bytes
/// are `tag=` (`tag` in any case).
#[inline(always)]
fn tag_follows(win: &[u8; UA_WINDOW], at: usize) -> u64 {
    let lower = |o: usize| word_or_zero(win, at + o) | (ONES * 0x20);
    bytes_eq(lower(1), b't')
        & bytes_eq(lower(2), b'a')
        & bytes_eq(lower(3), b'g')
        & bytes_eq(word_or_zero(win, at + 4), b'=')
}

#[cfg(test)]
mod tests;
