//! Text from outside (log lines a jail matched, control clients, the
//! kernel's names) shown to an operator or written to the daemon's log.
//!
//! Such text must not be able to drive the terminal that displays it: an
//! attacker who gets `ESC ] 0 ; … BEL` or `ESC [ 2 J` into a ban reason could
//! retitle or clear the operator's terminal, forge log lines with a newline,
//! or reorder what is shown with a bidi override. Everything that could do
//! that is rendered as a visible escape instead; all other text (including
//! non-ASCII letters) is shown as is.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// Displays `self.0` with control characters escaped: C0 and DEL as
/// `\x1b`, C1 and Unicode bidi / line-breaking controls as `\u{202e}`.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Copy runs of safe text in one go; most text has nothing to escape.
        let mut rest = self.0;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
            f.write_str(&rest[..at])?;
            write_escape(f, c)?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// `text` with control characters escaped (see [`Escaped`]); borrowed when
/// there is nothing to escape.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if text.chars().any(needs_escape) {
        Cow::Owned(Escaped(text).to_string())
    } else {
        Cow::Borrowed(text)
    }
}

/// JSON text (as serde_json writes it) with the characters serde_json
/// leaves raw but a terminal may act on (DEL, C1, bidi controls) written as
/// `\uXXXX` escapes. serde_json already escapes C0 inside strings; outside
/// strings it writes only ASCII punctuation and whitespace, so replacing
/// these characters anywhere keeps the document valid and equal.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    let unsafe_in_json = |c: char| needs_escape(c) && c > '\x1f';
    if !json.chars().any(unsafe_in_json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_in_json(c) {
            // Non-C0 escapes here are all in the BMP: one \uXXXX each.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether `c` can change how a terminal (or a log viewer) shows what
/// follows it.
fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL, C1
        || is_bidi_control(c)
        // Line and paragraph separators: line breaks to some viewers.
        || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The Unicode bidi formatting characters (UAX #9): they reorder the text
/// around them, e.g. to make `evil.exe` read `exe.live`.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

fn write_escape(f: &mut impl Write, c: char) -> fmt::Result {
    match c as u32 {
        n @ (0..=0x1f | 0x7f) => write!(f, "\\x{n:02x}"),
        n => write!(f, "\\u{{{n:x}}}"),
    }
}

/// An error and its sources on one line (aya leaves the errno to the
/// source); a source already quoted by its parent is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_escaped() {
        assert_eq!(
            Escaped("\x1b]0;pwned\x07\x1b[2J").to_string(),
            r"\x1b]0;pwned\x07\x1b[2J"
        );
        assert_eq!(escaped("a\nb\rc\td\0"), r"a\x0ab\x0dc\x09d\x00");
        assert_eq!(escaped("del\x7f"), r"del\x7f");
        assert_eq!(escaped("csi\u{9b}31m"), r"csi\u{9b}31m");
        assert_eq!(escaped("\u{85}next line"), r"\u{85}next line");
    }

    #[test]
    fn bidi_and_line_separators_are_escaped() {
        assert_eq!(escaped("user\u{202e}gpj.exe"), r"user\u{202e}gpj.exe");
        for c in [
            '\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{2066}', '\u{2069}',
        ] {
            assert_eq!(escaped(&c.to_string()), format!("\\u{{{:x}}}", c as u32));
        }
        assert_eq!(escaped("a\u{2028}b"), r"a\u{2028}b");
    }

    #[test]
    fn ordinary_text_is_unchanged_and_borrowed() {
        for s in [
            "",
            "198.51.100.7/32",
            "5 failures: user \"ålice\" 日本",
            r"C:\x1b",
        ] {
            assert!(matches!(escaped(s), Cow::Borrowed(_)), "{s}");
            assert_eq!(Escaped(s).to_string(), s);
        }
    }

    #[test]
    fn escaping_respects_multibyte_boundaries() {
        assert_eq!(escaped("é\x1bü\u{202e}ß"), r"é\x1bü\u{202e}ß");
    }

    #[test]
    fn json_keeps_its_meaning_and_loses_raw_controls() {
        let reason = "\x1b]0;pwned\x07 \u{9b}2J \u{202e}x\x7f";
        let v = serde_json::json!({ "reason": reason, "n": 1 });
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        let safe = json_safe(&pretty);
        assert!(
            !safe.chars().any(|c| needs_escape(c) && c != '\n'),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, v);
        assert!(matches!(json_safe("{\n  \"a\": 1\n}"), Cow::Borrowed(_)));
    }
}


/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ` (UTC), for history read-outs.
pub fn utc(secs: u64) -> String {
    rfc3339(secs).replacen('T', " ", 1)
}

/// The last second RFC 3339's four-digit years can write (9999-12-31
/// 23:59:59Z): later times (a corrupt record) are shown as that.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// Unix seconds as RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`), as CrowdSec's API
/// takes them.
pub fn rfc3339(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.min(LAST_RFC3339_SECOND));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod utc_tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(super::utc(1_796_004_245), "2026-11-30 02:04:05Z");
        assert_eq!(super::rfc3339(1_796_024_323), "2026-11-30T07:38:43Z");
        assert_eq!(super::utc(u64::MAX), "9999-12-31 23:59:59Z");
    }
}
