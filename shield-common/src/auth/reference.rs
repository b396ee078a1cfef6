//! The 8-bytes-at-a-time parser against a plain byte-by-byte reading of
//! the same grammar, on generated header lines: quoted and unquoted values,
//! escapes, folds, commas and blanks in odd places, repeats, long values,
//! truncation anywhere and stray bytes. The reference below is what the
//! module's documentation says, written the obvious way; a difference is a
//! word-boundary bug in the fast parser (or a gap in the documentation).

extern crate std;
use std::{format, string::String, vec, vec::Vec};

use proptest::prelude::*;

use super::*;

/// What a line yields, as both parsers report it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    nonce: Option<(u64, bool)>,
    user: Option<(Vec<u8>, u64, bool)>,
    stale: bool,
}

/// The byte-by-byte reading: `line` from its first byte, its value from
/// `start`; bytes past the payload or `AUTH_LINE_MAX` read as 0.
fn reference(line: &[u8], start: usize, creds: bool) -> Seen {
    let end = line.len().min(AUTH_LINE_MAX);
    let at = |i: usize| if i < end { line[i] } else { 0 };
    let mut seen = Seen {
        nonce: None,
        user: None,
        stale: false,
    };
    let mut i = start;
    // Blanks (CR counts as one; LF then a blank is a fold), and commas
    // if `commas`: the next other byte, or None at the line's end.
    let skip = |i: &mut usize, commas: bool| -> Option<u8> {
        loop {
            let c = at(*i);
            let blank = c == b' ' || c == b'\t' || c == b'\r' || (commas && c == b',');
            if blank || (c == b'\n' && is_lws(at(*i + 1))) {
                *i += 1;
            } else if c == b'\n' || c == 0 {
                return None;
            } else {
                return Some(c);
            }
        }
    };
    if skip(&mut i, false).is_none() {
        return seen;
    }
    let scheme: Vec<u8> = (0..6).map(|k| at(i + k).to_ascii_lowercase()).collect();
    if scheme != b"digest" || !matches!(at(i + 6), b' ' | b'\t' | b'\r' | b'\n' | 0) {
        return seen;
    }
    i += 6;
    let name_end = |c: u8| matches!(c, b'\r' | b'\n' | 0 | b' ' | b'\t' | b',' | b'=' | b'"');
    loop {
        if skip(&mut i, true).is_none() {
            return seen;
        }
        let s = i;
        while !name_end(at(i)) {
            i += 1;
        }
        if i == s {
            return seen;
        }
        let name: Vec<u8> = line[s..i].iter().map(u8::to_ascii_lowercase).collect();
        match at(i) {
            b'=' => i += 1,
            b' ' | b'\t' | b'\r' | b'\n' => match skip(&mut i, false) {
                Some(b'=') => i += 1,
                _ => return seen,
            },
            _ => return seen,
        }
        let Some(c) = skip(&mut i, false) else {
            return seen;
        };
        let (value, complete) = if c == b'"' {
            i += 1;
            quoted(&at, &mut i)
        } else if c == b',' {
            return seen;
        } else {
            // A CR is dropped, in a token too: the LF after it decides.
            let mut v = Vec::new();
            loop {
                match at(i) {
                    b',' | b' ' | b'\t' | b'\n' | 0 => break,
                    b'\r' => i += 1,
                    c => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            (v, true)
        };
        let max = NONCE_MAX as usize;
        if name == b"nonce" && seen.nonce.is_none() && !value.is_empty() {
            // A cut quoted nonce counts only once it is known to be long.
            if complete || value.len() > max {
                let h = word_hash(&value[..value.len().min(max)]);
                seen.nonce = Some((h, value.len() > max));
            }
        } else if name == b"username" && seen.user.is_none() && complete {
            let h = word_hash(&value);
            let kept = value[..value.len().min(USER_MAX)].to_vec();
            seen.user = Some((kept, h, value.len() > USER_MAX));
        } else if name == b"stale" && complete && value.eq_ignore_ascii_case(b"true") {
            seen.stale = true;
        }
        if !complete || (creds && seen.nonce.is_some() && seen.user.is_some()) {
            return seen;
        }
        match skip(&mut i, false) {
            Some(b',') => i += 1,
            _ => return seen,
        }
    }
}

/// A quoted value from just after its opening quote: its bytes (escapes
/// resolved, CRs dropped, a fold's LF dropped) and whether it was closed.
fn quoted(at: &impl Fn(usize) -> u8, i: &mut usize) -> (Vec<u8>, bool) {
    let mut v = Vec::new();
    loop {
        match at(*i) {
            b'"' => {
                *i += 1;
                return (v, true);
            }
            b'\\' => {
                let e = at(*i + 1);
                if matches!(e, 0 | b'\r' | b'\n') {
                    return (v, false);
                }
                v.push(e);
                *i += 2;
            }
            b'\r' => *i += 1,
            b'\n' if is_lws(at(*i + 1)) => *i += 1,
            b'\n' | 0 => return (v, false),
            c => {
                v.push(c);
                *i += 1;
            }
        }
    }
}

fn fast(line: &[u8], want: AuthHeader) -> Option<Seen> {
    let d = parse_line(line, want)?;
    Some(Seen {
        nonce: d
            .has_nonce()
            .then_some((d.nonce_hash, d.flags & DIGEST_NONCE_LONG != 0)),
        user: (d.flags & DIGEST_USER != 0).then(|| {
            (
                d.username().to_vec(),
                d.user_hash,
                d.flags & DIGEST_USER_LONG != 0,
            )
        }),
        stale: d.flags & DIGEST_STALE != 0,
    })
}

fn value_bytes() -> impl Strategy<Value = String> {
    // Plain bytes, the ones that matter, and folds; up to past NONCE_MAX.
    proptest::collection::vec(
        prop_oneof![
            8 => "[a-zA-Z0-9+/.:@-]",
            1 => Just(",".into()), 1 => Just(" ".into()), 1 => Just("\t".into()),
            1 => Just("\\\"".into()), 1 => Just("\\\\".into()), 1 => Just("\"".into()),
            1 => Just("=".into()), 1 => Just("\r\n ".into()), 1 => Just("\\".into()),
        ],
        0..150,
    )
    .prop_map(|v| v.concat())
}

fn param() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("nonce"),
        Just("NONCE"),
        Just("Nonce"),
        Just("username"),
        Just("UserName"),
        Just("stale"),
        Just("STALE"),
        Just("realm"),
        Just("uri"),
        Just("nonc"),
        Just("noncex"),
        Just("usernam"),
        Just("usernamex"),
        Just("response"),
        Just("algorithm"),
        Just("a"),
    ];
    let eq = prop_oneof![
        Just("="),
        Just(" = "),
        Just("\t="),
        Just("\r\n ="),
        Just("= "),
        Just(" ")
    ];
    let value = prop_oneof![
        value_bytes().prop_map(|v| format!("\"{v}\"")),
        "[a-zA-Z0-9+/.:@-]{0,140}",
        Just("true".into()),
        Just("\"TRUE\"".into()),
        Just("tru".into()),
        Just("\"\"".into()),
        value_bytes(),
    ];
    (name, eq, value).prop_map(|(n, e, v)| format!("{n}{e}{v}"))
}

fn line() -> impl Strategy<Value = (String, bool)> {
    let scheme = prop_oneof![
        6 => Just("Digest "), 1 => Just("digest\t"), 1 => Just("DIGEST\r\n "), 1 => Just("Digest"),
        1 => Just("Basic "), 1 => Just("Digestx "), 1 => Just("Digest,"),
    ];
    let sep = prop_oneof![
        Just(","),
        Just(", "),
        Just(" ,"),
        Just(",,"),
        Just(",\r\n "),
        Just(" , "),
        Just("\t,"),
        Just(" "),
        Just(""),
    ];
    let end = prop_oneof![
        Just("\r\n"),
        Just("\r\nVia: x\r\n"),
        Just(""),
        Just("\n"),
        Just("\r\n\t, nonce=z\r\n")
    ];
    (
        any::<bool>(),
        Just(()).prop_flat_map(|_| prop_oneof![Just(" "), Just(""), Just("  \t")]),
        scheme,
        proptest::collection::vec((param(), sep), 0..8),
        end,
    )
        .prop_map(|(creds, pre, scheme, params, end)| {
            let name = if creds {
                "Authorization:"
            } else {
                "WWW-Authenticate:"
            };
            let body: String = params.into_iter().map(|(p, s)| format!("{p}{s}")).collect();
            (format!("{name}{pre}{scheme}{body}{end}"), creds)
        })
}

fn check(bytes: &[u8], creds: bool) -> Result<(), TestCaseError> {
    let want = if creds {
        AuthHeader::Credentials
    } else {
        AuthHeader::Challenge
    };
    let colon = bytes.iter().position(|&c| c == b':').unwrap_or(0);
    let Some(got) = fast(bytes, want) else {
        return Ok(()); // the name itself was cut: nothing to compare
    };
    let mut want_seen = reference(bytes, colon + 1, creds);
    if creds {
        want_seen.stale = got.stale; // credentials stop early; `stale` is a challenge's
    }
    prop_assert_eq!(got, want_seen, "line {:?}", String::from_utf8_lossy(bytes));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_parser_reads_what_the_reference_reads((l, creds) in line()) {
        check(l.as_bytes(), creds)?;
    }

    #[test]
    fn cut_anywhere_and_with_a_stray_byte((l, creds) in line(), cut in any::<proptest::sample::Index>(),
            stray in any::<proptest::sample::Index>(),
            b in prop_oneof![Just(0u8), Just(b'"'), Just(b'\\'), Just(b','), Just(b'\n'), Just(b'\r'), Just(b'='), any::<u8>()]) {
        let mut bytes = l.into_bytes();
        let n = cut.index(bytes.len() + 1);
        bytes.truncate(n);
        check(&bytes, creds)?;
        if !bytes.is_empty() {
            let k = stray.index(bytes.len());
            bytes[k] = b;
            check(&bytes, creds)?;
        }
    }
}
