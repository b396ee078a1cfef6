//! Translation of fail2ban's (Python `re`) patterns to the `regex` crate's syntax.
//!
//! fail2ban filters are written for Python's backtracking engine. The `regex`
//! crate is a finite-automaton engine: it shares most of the syntax and the
//! leftmost-first match semantics, but lacks a few constructs and spells some
//! others differently. This module rewrites what has an equivalent and
//! rejects, with the construct and its offset, what has none:
//!
//! | Python / fail2ban                       | here                                   |
//! |-----------------------------------------|----------------------------------------|
//! | `<HOST>`, `<ADDR>`, `<IP4>`, `<IP6>`, … | address sub-patterns (see [`ADDR`])     |
//! | `<F-NAME>…</F-NAME>`                    | `(?P<name>…)` (`id`→`fid`, `port`→`fport`) |
//! | `\Z`, `\<`, `\>`, `\0`, octal           | `\z`, `<`, `>`, hex escapes             |
//! | `{,n}`, a `{` that is no quantifier     | `{0,n}`, `\{`                           |
//! | `[`, `&&`, `--`, `~~` inside a class     | escaped (Rust reads them as set ops)    |
//! | `(?#comment)`, flags `a`/`L`/`u`        | removed                                 |
//! | negative lookahead `(?!…)`              | removed, reported as a note (see below) |
//! | lookbehind, `(?=…)`, backreferences, atomic groups, possessive quantifiers, conditionals, `<SKIPLINES>` | error |
//!
//! A negative lookahead only ever *narrows* a match. fail2ban's own
//! `asterisk.conf` uses one as a guard between `key="value"` fields; without
//! it the pattern still finds the same address on fail2ban's test corpus, so
//! dropping it (and telling the operator) keeps such stock filters usable.
//! Every other lookaround changes which text is captured, so it is an error.
//!
//! A flag group such as `(?i)` in the middle of a pattern applies to the rest
//! of its enclosing group here, to the whole pattern in older Pythons (fail2ban
//! itself rewrites `((?i)x)` to the scoped form).
//!
//! `<HOST>` behaves like fail2ban's `usedns = no`: SIP Shield never resolves
//! names, so it matches addresses only. It accepts IPv4, IPv6, either one in
//! brackets, IPv4-mapped IPv6, and an optional `:port` after an IPv4 or a
//! bracketed address (a port after a bare IPv6 address is ambiguous; a filter
//! that expects one writes `<HOST>:\d+`, which the engine resolves from the right).

use std::fmt;

/// Dotted quad (range checking happens when the capture is parsed).
const IPV4: &str = r"(?:\d{1,3}\.){3}\d{1,3}";
/// Hex groups separated by `:`, with room for one `::`. Deliberately loose:
/// captures are validated by parsing them into `std::net::IpAddr`.
const IPV6: &str = r"(?:[0-9A-Fa-f]{1,4}|:)(?::[0-9A-Fa-f]{0,4}){1,7}";
/// Optional port after an IPv4 or a bracketed address.
const PORT: &str = r"(?::\d{1,5})?";
/// `::ffff:` in front of an IPv4-mapped address.
const MAPPED: &str = r"(?:::[fF]{4}:)?";

/// Capture group names that carry an address, in the order they are consulted.
pub(crate) const HOST_GROUPS: &[&str] = &["ip4", "ip6", "ipbr", "host", "dns"];

/// The sub-pattern `<HOST>` and `<ADDR>` expand to: a bracketed address with
/// optional port, an IPv4 address with optional port, or a bare IPv6 address.
pub(crate) fn addr_pattern() -> String {
    format!(
        r"(?:\[(?P<ipbr>{MAPPED}{IPV4}|{IPV6})\]{PORT}|{MAPPED}(?P<ip4>{IPV4}){PORT}|(?P<ip6>{IPV6}))"
    )
}

/// Expansion of a fail2ban tag (the text between `<` and `>`), if it is one
/// with a fixed expansion.
fn fixed_tag(name: &str) -> Option<String> {
    let s = match name {
        "HOST" | "ADDR" | "F-ADDR/" => addr_pattern(),
        "IP4" | "F-IP4/" => format!(r"{MAPPED}(?P<ip4>{IPV4})"),
        "IP6" | "F-IP6/" => format!(r"(?P<ip6>{IPV6})"),
        "DNS" | "F-DNS/" => r"(?P<dns>[\w\-.^_]*\w)".to_string(),
        "CIDR" | "F-CIDR/" => r"(?P<cidr>\d+)".to_string(),
        // A subnet tag still bans only the address: bans are per address here.
        "SUBNET" | "F-SUBNET/" => {
            format!(r"\[?(?:{MAPPED}(?P<ip4>{IPV4})|(?P<ip6>{IPV6}))(?:/(?P<cidr>\d+))?\]?")
        }
        "F-ID/" => r"(?P<fid>\S+)".to_string(),
        "F-PORT/" => r"(?P<fport>\w+)".to_string(),
        _ => return None,
    };
    Some(s)
}

/// A construct that cannot be expressed for the `regex` crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// Byte offset of the construct in the original pattern.
    pub offset: usize,
    /// What it is, e.g. "lookbehind `(?<=`".
    pub construct: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {} is not supported",
            self.construct, self.offset
        )
    }
}

/// A translated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Translation {
    pub pattern: String,
    /// Constructs that were dropped (with offsets), for warnings.
    pub dropped: Vec<String>,
}

/// Translates a Python/fail2ban pattern. `tags` enables fail2ban's `<TAG>`
/// expansion (off for date patterns, where `<` is plain text).
pub(crate) fn translate(src: &str, tags: bool) -> Result<Translation, Unsupported> {
    let mut t = Translator {
        src,
        pos: 0,
        out: String::with_capacity(src.len() + 32),
        dropped: Vec::new(),
        open_tags: Vec::new(),
        tags,
    };
    t.run()?;
    Ok(Translation {
        pattern: t.out,
        dropped: t.dropped,
    })
}

struct Translator<'a> {
    src: &'a str,
    pos: usize,
    out: String,
    dropped: Vec<String>,
    open_tags: Vec<String>,
    tags: bool,
}

impl Translator<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn err<T>(&self, offset: usize, construct: impl Into<String>) -> Result<T, Unsupported> {
        Err(Unsupported {
            offset,
            construct: construct.into(),
        })
    }

    fn run(&mut self) -> Result<(), Unsupported> {
        while let Some(c) = self.peek() {
            match c {
                '\\' => self.escape(false)?,
                '[' => self.class()?,
                '(' => self.group()?,
                '{' => self.brace()?,
                '}' => {
                    self.bump();
                    self.out.push_str(r"\}");
                }
                '*' | '+' | '?' => {
                    self.bump();
                    self.out.push(c);
                    self.quantifier_suffix()?;
                }
                '<' if self.tags => self.tag()?,
                _ => {
                    self.bump();
                    self.out.push(c);
                }
            }
        }
        Ok(())
    }

    /// After a quantifier: a lazy `?` is fine, a possessive `+` is not.
    fn quantifier_suffix(&mut self) -> Result<(), Unsupported> {
        if self.peek() == Some('?') {
            self.bump();
            self.out.push('?');
        }
        if self.peek() == Some('+') {
            return self.err(self.pos, "possessive quantifier `+`");
        }
        Ok(())
    }

    fn escape(&mut self, in_class: bool) -> Result<(), Unsupported> {
        let start = self.pos;
        self.bump();
        let Some(c) = self.bump() else {
            return self.err(start, "trailing backslash");
        };
        match c {
            'd' | 'D' | 's' | 'S' | 'w' | 'W' | 'n' | 'r' | 't' | 'f' | 'v' | 'a' => {
                self.out.push('\\');
                self.out.push(c);
            }
            'b' if in_class => self.out.push_str(r"\x08"),
            'b' | 'B' | 'A' if !in_class => {
                self.out.push('\\');
                self.out.push(c);
            }
            'Z' if !in_class => self.out.push_str(r"\z"),
            'x' => {
                let hex = self.take_hex(2, start)?;
                self.push_codepoint(hex, start)?;
            }
            'u' => {
                let hex = self.take_hex(4, start)?;
                self.push_codepoint(hex, start)?;
            }
            'U' => {
                let hex = self.take_hex(8, start)?;
                self.push_codepoint(hex, start)?;
            }
            'N' => return self.err(start, "named character escape `\\N{...}`"),
            '0'..='9' => self.numeric_escape(c, in_class, start)?,
            c if c.is_ascii_alphanumeric() => {
                return self.err(start, format!("unknown escape `\\{c}`"));
            }
            // `\<` and `\>` are word boundaries in Rust but plain `<`/`>` in Python;
            // any other escaped symbol is a literal in both.
            _ => self.push_literal(c),
        }
        Ok(())
    }

    fn take_hex(&mut self, n: usize, start: usize) -> Result<u32, Unsupported> {
        let digits: String = self.rest().chars().take(n).collect();
        if digits.len() != n || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return self.err(start, format!("malformed escape (expected {n} hex digits)"));
        }
        self.pos += n;
        u32::from_str_radix(&digits, 16).or_else(|_| self.err(start, "malformed hex escape"))
    }

    fn push_codepoint(&mut self, cp: u32, start: usize) -> Result<(), Unsupported> {
        match char::from_u32(cp) {
            Some(c) => {
                self.push_literal(c);
                Ok(())
            }
            None => self.err(start, format!("escape of invalid code point {cp:#x}")),
        }
    }

    /// A literal character, escaped so it means itself in any context.
    fn push_literal(&mut self, c: char) {
        if c.is_ascii_alphanumeric() || c == '_' {
            self.out.push(c);
        } else {
            self.out.push_str(&format!(r"\x{{{:X}}}", c as u32));
        }
    }

    /// `\0`, `\12`, `\123`: octal or a backreference, by Python's rules.
    fn numeric_escape(
        &mut self,
        first: char,
        in_class: bool,
        start: usize,
    ) -> Result<(), Unsupported> {
        let more: String = self
            .rest()
            .chars()
            .take(2)
            .take_while(char::is_ascii_digit)
            .collect();
        let is_octal = |s: &str| s.chars().all(|c| ('0'..='7').contains(&c));
        let three = format!("{first}{more}");
        let octal_len = if first == '0' {
            // `\0` plus up to two more octal digits.
            1 + more.chars().take_while(|c| ('0'..='7').contains(c)).count()
        } else if three.len() == 3 && is_octal(&three) {
            3
        } else if in_class && is_octal(&first.to_string()) {
            1 + more.chars().take_while(|c| ('0'..='7').contains(c)).count()
        } else {
            let digits: String = three.chars().take(2).collect();
            return self.err(start, format!("backreference `\\{digits}`"));
        };
        let digits: String = three.chars().take(octal_len).collect();
        self.pos += octal_len - 1;
        let value = u32::from_str_radix(&digits, 8).unwrap_or(u32::MAX);
        if value > 0o377 {
            return self.err(start, format!("octal escape `\\{digits}` out of range"));
        }
        self.push_codepoint(value, start)
    }

    fn class(&mut self) -> Result<(), Unsupported> {
        let start = self.pos;
        self.bump();
        self.out.push('[');
        if self.peek() == Some('^') {
            self.bump();
            self.out.push('^');
        }
        // A `]` right after `[` or `[^` is a literal in Python.
        if self.peek() == Some(']') {
            self.bump();
            self.out.push_str(r"\]");
        }
        let mut prev_dash = false;
        loop {
            let Some(c) = self.peek() else {
                return self.err(start, "unterminated character class `[`");
            };
            let dash = c == '-';
            match c {
                ']' => {
                    self.bump();
                    self.out.push(']');
                    return Ok(());
                }
                '\\' => self.escape(true)?,
                // Nested classes and set operators in Rust; plain text in Python.
                // Whitespace and `#` are escaped so a `(?x)` flag keeps them.
                '[' | '&' | '~' | '#' | ' ' => {
                    self.bump();
                    self.push_literal(c);
                }
                '-' if prev_dash => {
                    self.bump();
                    self.out.push_str(r"\-");
                }
                _ => {
                    self.bump();
                    self.out.push(c);
                }
            }
            prev_dash = dash && !prev_dash;
        }
    }

    fn group(&mut self) -> Result<(), Unsupported> {
        let start = self.pos;
        self.bump();
        if self.peek() != Some('?') {
            self.out.push('(');
            return Ok(());
        }
        let rest = &self.src[self.pos..];
        if rest.starts_with("?:") {
            self.pos += 2;
            self.out.push_str("(?:");
        } else if rest.starts_with("?P<")
            || (rest.starts_with("?<") && !rest.starts_with("?<=") && !rest.starts_with("?<!"))
        {
            // Named group: Rust accepts both spellings.
            let skip = if rest.starts_with("?P<") { 3 } else { 2 };
            self.pos += skip;
            self.out.push_str("(?P<");
        } else if rest.starts_with("?P=") {
            return self.err(start, "named backreference `(?P=...)`");
        } else if rest.starts_with("?<=") {
            return self.err(start, "lookbehind `(?<=...)`");
        } else if rest.starts_with("?<!") {
            return self.err(start, "negative lookbehind `(?<!...)`");
        } else if rest.starts_with("?=") {
            return self.err(start, "lookahead `(?=...)`");
        } else if rest.starts_with("?!") {
            let end = self.skip_group(start)?;
            self.dropped.push(format!(
                "negative lookahead `{}` at offset {start}",
                &self.src[start..end]
            ));
            self.pos = end;
            // A quantifier on the removed group would now repeat nothing.
            if matches!(self.peek(), Some('*' | '?')) {
                self.bump();
                if self.peek() == Some('?') {
                    self.bump();
                }
            }
        } else if rest.starts_with("?#") {
            match self.src[self.pos..].find(')') {
                Some(i) => self.pos += i + 1,
                None => return self.err(start, "unterminated comment `(?#`"),
            }
        } else if rest.starts_with("?>") {
            return self.err(start, "atomic group `(?>...)`");
        } else if rest.starts_with("?(") {
            return self.err(start, "conditional group `(?(...)...)`");
        } else if rest.starts_with("?P>") {
            return self.err(start, "group call `(?P>...)`");
        } else {
            self.flags(start)?;
        }
        Ok(())
    }

    /// `(?imsx)`, `(?i:...)`, `(?i-s:...)`. Python's `a`, `L` and `u` only
    /// select the character tables; Unicode is what both engines use for text.
    fn flags(&mut self, start: usize) -> Result<(), Unsupported> {
        self.bump(); // '?'
        let mut on = String::new();
        let mut off = String::new();
        let mut negate = false;
        loop {
            let Some(c) = self.bump() else {
                return self.err(start, "unterminated group flags `(?`");
            };
            match c {
                'i' | 'm' | 's' | 'x' => {
                    if negate {
                        off.push(c)
                    } else {
                        on.push(c)
                    }
                }
                'a' | 'L' | 'u' if !negate => {}
                '-' if !negate => negate = true,
                ')' | ':' => {
                    let mut flags = on;
                    if !off.is_empty() {
                        flags.push('-');
                        flags.push_str(&off);
                    }
                    if c == ':' {
                        self.out.push_str(&format!("(?{flags}:"));
                    } else if !flags.is_empty() {
                        self.out.push_str(&format!("(?{flags})"));
                    }
                    return Ok(());
                }
                _ => return self.err(start, format!("unknown group extension `(?{c}`")),
            }
        }
    }

    /// Returns the offset just past the `)` closing the group opened at `start`.
    fn skip_group(&self, start: usize) -> Result<usize, Unsupported> {
        let bytes = self.src.as_bytes();
        let mut i = start + 1;
        let mut depth = 1usize;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'[' => {
                    i += 1;
                    if bytes.get(i) == Some(&b'^') {
                        i += 1;
                    }
                    if bytes.get(i) == Some(&b']') {
                        i += 1;
                    }
                    while i < bytes.len() && bytes[i] != b']' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'(' => {
                    depth += 1;
                    i += 1;
                }
                b')' => {
                    depth -= 1;
                    i += 1;
                    if depth == 0 {
                        return Ok(i);
                    }
                }
                _ => i += 1,
            }
        }
        self.err(start, "unterminated group `(`")
    }

    /// `{m}`, `{m,}`, `{m,n}`, `{,n}` are quantifiers; any other `{` is a literal.
    fn brace(&mut self) -> Result<(), Unsupported> {
        let rest = self.rest();
        let parsed = rest.find('}').and_then(|end| {
            let body = &rest[1..end];
            let (lo, hi) = match body.split_once(',') {
                Some((lo, hi)) => (lo, Some(hi)),
                None => (body, None),
            };
            let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
            let valid = digits(lo)
                && hi.is_none_or(digits)
                && (!lo.is_empty() || hi.is_some_and(|h| !h.is_empty()));
            valid.then(|| {
                let lo = if lo.is_empty() { "0" } else { lo };
                let q = match hi {
                    None => format!("{{{lo}}}"),
                    Some(hi) => format!("{{{lo},{hi}}}"),
                };
                (end + 1, q)
            })
        });
        match parsed {
            Some((len, q)) => {
                self.pos += len;
                self.out.push_str(&q);
                self.quantifier_suffix()
            }
            None => {
                self.bump();
                self.out.push_str(r"\{");
                Ok(())
            }
        }
    }

    /// fail2ban's `<TAG>` substitutions; unknown tags stay literal text.
    fn tag(&mut self) -> Result<(), Unsupported> {
        let rest = self.rest();
        let name = rest[1..]
            .find('>')
            .map(|end| &rest[1..end + 1])
            .filter(|n| {
                let core = n.trim_start_matches('/').trim_end_matches('/');
                !core.is_empty()
                    && core
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        let Some(name) = name else {
            self.bump();
            self.out.push('<');
            return Ok(());
        };
        let name = name.to_string();
        let start = self.pos;
        if name == "SKIPLINES" {
            return self.err(
                start,
                "multi-line tag `<SKIPLINES>` (SIP Shield matches single lines)",
            );
        }
        let replacement = if let Some(fixed) = fixed_tag(&name) {
            Some(fixed)
        } else if let Some(custom) = name.strip_prefix("F-").filter(|n| !n.ends_with('/')) {
            let group = group_name(custom);
            self.open_tags.push(custom.to_string());
            Some(format!("(?P<{group}>"))
        } else if let Some(custom) = name.strip_prefix("/F-") {
            // Closing tag: only meaningful if it was opened (as in fail2ban).
            match self.open_tags.iter().rposition(|t| t == custom) {
                Some(i) => {
                    self.open_tags.remove(i);
                    Some(")".to_string())
                }
                None => None,
            }
        } else {
            None
        };
        match replacement {
            Some(r) => {
                self.pos += name.len() + 2;
                self.out.push_str(&r);
            }
            None => {
                self.bump();
                self.out.push('<');
            }
        }
        Ok(())
    }
}

/// Group name for a custom `<F-NAME>` tag, with fail2ban's two renamings.
fn group_name(tag: &str) -> String {
    match tag.to_ascii_lowercase().as_str() {
        "id" => "fid".to_string(),
        "port" => "fport".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn tr(p: &str) -> String {
        translate(p, true).expect("translates").pattern
    }

    fn compile(p: &str) -> Regex {
        Regex::new(&tr(p)).expect("compiles")
    }

    fn host(re: &Regex, text: &str) -> Option<String> {
        let caps = re.captures(text)?;
        HOST_GROUPS
            .iter()
            .find_map(|g| caps.name(g))
            .map(|m| m.as_str().to_string())
    }

    #[test]
    fn host_tag_variants() {
        let re = compile(r"^from <HOST>$");
        assert_eq!(host(&re, "from 192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(
            host(&re, "from 192.0.2.1:5060").as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(
            host(&re, "from 2001:db8::1").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            host(&re, "from [2001:db8::1]").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            host(&re, "from [2001:db8::1]:5061").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            host(&re, "from [192.0.2.9]:5061").as_deref(),
            Some("192.0.2.9")
        );
        assert_eq!(
            host(&re, "from ::ffff:192.0.2.7").as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(host(&re, "from ::1").as_deref(), Some("::1"));
        assert_eq!(host(&re, "from sip.example.com"), None);
        // An explicit port after a bare IPv6 address is split off from the right.
        let re = compile(r"^from <HOST>:\d+$");
        assert_eq!(
            host(&re, "from 2001:db8::1:5060").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            host(&re, "from 192.0.2.1:5060").as_deref(),
            Some("192.0.2.1")
        );
        let re = compile(r"^<IP4> and <IP6>$");
        let caps = re.captures("192.0.2.3 and fe80::2").expect("match");
        assert_eq!(&caps["ip4"], "192.0.2.3");
        assert_eq!(&caps["ip6"], "fe80::2");
    }

    #[test]
    fn custom_tags_become_groups() {
        let re = compile(
            r"^user <F-USER>\S+</F-USER> id <F-ID/> from <ADDR> <F-CONTENT>.+</F-CONTENT>$",
        );
        let caps = re
            .captures("user bob id 42 from 192.0.2.5 rest of it")
            .expect("match");
        assert_eq!(&caps["user"], "bob");
        assert_eq!(&caps["fid"], "42");
        assert_eq!(&caps["content"], "rest of it");
        // Closing a tag that was never opened, and unknown tags, are literal text.
        assert_eq!(tr("a</F-X>b<sip:x>"), r"a</F-X>b<sip:x>");
    }

    #[test]
    fn python_spellings_are_rewritten() {
        assert_eq!(tr(r"end\Z"), r"end\z");
        assert_eq!(tr(r"\<tag\>"), r"\x{3C}tag\x{3E}");
        assert_eq!(tr(r"a{,3}b{2}c{1,}d{x}"), r"a{0,3}b{2}c{1,}d\{x\}");
        assert_eq!(
            tr(r"[[:a&&b~~+--]"),
            r"[\x{5B}:a\x{26}\x{26}b\x{7E}\x{7E}+-\-]"
        );
        assert_eq!(tr(r"[]x]"), r"[\]x]");
        assert_eq!(tr(r"a(?#note)b"), "ab");
        assert_eq!(tr(r"(?iu)x(?a:y)"), r"(?i)x(?:y)");
        assert_eq!(tr(r"\0\101[\1]"), r"\x{0}A[\x{1}]");
        assert_eq!(tr(r"\'\/\ "), r"\x{27}\x{2F}\x{20}");
        // Everything above must still compile.
        for p in [r"a{,3}d{x}", r"[[:a&&b~~+--]", r"\<tag\>", r"\0\101[\1]"] {
            compile(p);
        }
    }

    #[test]
    fn unsupported_constructs_are_named() {
        let cases = [
            (r"a(?<=b)c", "lookbehind", 1),
            (r"a(?<!b)c", "negative lookbehind", 1),
            (r"(?=x)", "lookahead", 0),
            (r"(a)\1", "backreference", 3),
            (r"(?P<a>x)(?P=a)", "named backreference", 8),
            (r"(?>x)", "atomic group", 0),
            (r"a++", "possessive", 2),
            (r"(?(1)a|b)", "conditional", 0),
            (r"x<SKIPLINES>y", "SKIPLINES", 1),
            (r"[abc", "unterminated character class", 0),
            (r"\q", "unknown escape", 0),
        ];
        for (pattern, what, offset) in cases {
            let e = translate(pattern, true).expect_err(pattern);
            assert!(e.construct.contains(what), "{pattern}: {e}");
            assert_eq!(e.offset, offset, "{pattern}");
        }
    }

    #[test]
    fn negative_lookahead_is_dropped_and_reported() {
        let t = translate(r#"(?:,(?!RemoteAddress=)\w+="[^"]*")*$"#, true).expect("ok");
        assert_eq!(t.pattern, r#"(?:,\w+="[^"]*")*$"#);
        assert_eq!(t.dropped.len(), 1);
        assert!(t.dropped[0].contains("(?!RemoteAddress=)"));
    }
}
