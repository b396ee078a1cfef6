extern crate std;
use std::{format, string::String};

use super::*;

fn cred(l: &str) -> DigestParse {
    parse_line(l.as_bytes(), AuthHeader::Credentials).expect("an Authorization line")
}

fn chal(l: &str) -> DigestParse {
    parse_line(l.as_bytes(), AuthHeader::Challenge).expect("a challenge line")
}

const N: &str = "5f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";

#[test]
fn names_in_any_case_and_the_value_offset() {
    let w = |s: &str| {
        let mut win = [0u8; UA_WINDOW];
        let n = s.len().min(UA_WINDOW);
        win[..n].copy_from_slice(&s.as_bytes()[..n]);
        win
    };
    assert_eq!(
        auth_name(&w("Authorization: Digest"), AuthHeader::Credentials),
        Some(14)
    );
    assert_eq!(
        auth_name(&w("PROXY-authorization \t:x"), AuthHeader::Credentials),
        Some(22)
    );
    assert_eq!(
        auth_name(&w("www-AUTHENTICATE:x"), AuthHeader::Challenge),
        Some(17)
    );
    assert_eq!(
        auth_name(&w("Proxy-Authenticate: x"), AuthHeader::Challenge),
        Some(19)
    );
    assert_eq!(
        auth_name(&w("Authorization: x"), AuthHeader::Challenge),
        None
    );
    assert_eq!(
        auth_name(&w("WWW-Authenticate: x"), AuthHeader::Credentials),
        None
    );
    assert_eq!(
        auth_name(&w("Authorizations: x"), AuthHeader::Credentials),
        None
    );
    assert_eq!(
        auth_name(&w("Allow: INVITE"), AuthHeader::Credentials),
        None
    );
    assert_eq!(
        auth_name(&w("Authorization x"), AuthHeader::Credentials),
        None
    );
}

#[test]
fn quoted_unquoted_and_any_order_hash_the_same() {
    let a = cred(&format!(
        "Authorization: Digest username=\"1000\", realm=\"example.org\", nonce=\"{N}\", uri=\"sip:example.org\", response=\"abc\"\r\n"
    ));
    assert!(a.has_nonce());
    assert_eq!(a.nonce_hash, nonce_hash(N.as_bytes()));
    assert_eq!(a.username(), b"1000");
    assert_eq!(a.flags & DIGEST_BAD, 0);
    let b = cred(&format!(
        "authorization:DIGEST nonce={N},response=abc , username=1000\r\n"
    ));
    assert_eq!(
        (b.nonce_hash, b.username(), b.user_hash),
        (a.nonce_hash, a.username(), a.user_hash)
    );
    let c = cred(&format!(
        "Proxy-Authorization: digest Username=\"1000\",NONCE=\"{N}\"\r\nVia: x\r\n"
    ));
    assert_eq!(c.nonce_hash, a.nonce_hash, "param names in any case");
    assert_eq!(c.username(), b"1000");
}

#[test]
fn commas_blanks_and_escapes_inside_quotes() {
    let d = cred(
        "Authorization: Digest realm=\"a, nonce=\\\"evil\\\", b\", username=\"x, y\", nonce=\"n\\\"1\"\r\n",
    );
    assert_eq!(
        d.nonce_hash,
        nonce_hash(b"n\"1"),
        "a quoted-pair is the character"
    );
    assert_eq!(d.username(), b"x, y");
    assert!(d.has_nonce());
}

#[test]
fn stale_in_any_case_and_form() {
    for v in ["stale=true", "stale=TRUE", "stale=\"True\"", "STALE = true"] {
        let d = chal(&format!(
            "WWW-Authenticate: Digest realm=\"r\", nonce=\"{N}\", {v}, qop=\"auth\"\r\n"
        ));
        assert_ne!(d.flags & DIGEST_STALE, 0, "{v}");
        assert_eq!(d.nonce_hash, nonce_hash(N.as_bytes()));
    }
    for v in ["stale=false", "stale=\"truex\"", "stalex=true", "stale=tru"] {
        let d = chal(&format!("WWW-Authenticate: Digest nonce=\"{N}\", {v}\r\n"));
        assert_eq!(d.flags & DIGEST_STALE, 0, "{v}");
    }
}

#[test]
fn folded_lines_are_one_header() {
    let d = chal(&format!("WWW-Authenticate: Digest realm=\"r\",\r\n  nonce=\"{N}\",\r\n\tstale=true\r\nCSeq: 1 REGISTER\r\n"));
    assert!(d.has_nonce());
    assert_ne!(d.flags & DIGEST_STALE, 0);
    // Not folded: the next line is another header.
    let e = chal("WWW-Authenticate: Digest realm=\"r\"\r\nnonce: x\r\n");
    assert!(!e.has_nonce());
    assert_eq!(e.flags & DIGEST_BAD, 0);
    // Bare LF line ends work too.
    let f = chal(&format!(
        "WWW-Authenticate: Digest nonce=\"{N}\"\nstale: true\n"
    ));
    assert!(f.has_nonce());
    assert_eq!(f.flags & DIGEST_STALE, 0);
}

#[test]
fn only_digest() {
    let d = cred("Authorization: Basic dXNlcjpwYXNz\r\n");
    assert_eq!(d.flags & DIGEST_SCHEME, 0);
    assert!(!d.has_nonce());
    let e = cred("Authorization: Digestx nonce=\"a\"\r\n");
    assert!(!e.has_nonce());
    let f = cred("Authorization: Digest\r\n");
    assert_ne!(f.flags & DIGEST_SCHEME, 0);
    assert!(!f.has_nonce());
}

#[test]
fn the_first_nonce_and_username_count() {
    let d = cred(
        "Authorization: Digest nonce=\"a\", username=\"u1\", nonce=\"b\", username=\"u2\"\r\n",
    );
    assert_eq!(d.nonce_hash, nonce_hash(b"a"));
    assert_eq!(d.username(), b"u1");
}

#[test]
fn truncation_and_garbage_keep_what_was_read() {
    let full =
        format!("Authorization: Digest username=\"alice\", nonce=\"{N}\", response=\"x\"\r\n");
    for cut in 0..full.len() {
        // Never panics; a nonce is reported only complete.
        if let Some(d) = parse_line(&full.as_bytes()[..cut], AuthHeader::Credentials) {
            if d.has_nonce() {
                assert_eq!(d.nonce_hash, nonce_hash(N.as_bytes()), "cut at {cut}");
            }
        }
    }
    let d = cred(&format!(
        "Authorization: Digest nonce=\"{N}\", = , username=\"bob\"\r\n"
    ));
    assert!(d.has_nonce());
    assert_ne!(d.flags & DIGEST_BAD, 0);
    assert_eq!(d.flags & DIGEST_USER, 0, "nothing after the garbage");
    let e = cred("Authorization: Digest nonce=\"\"\r\n");
    assert!(!e.has_nonce(), "an empty nonce is none");
    let z = cred("Authorization: Digest nonce=\"ab\0cd\"\r\n");
    assert!(!z.has_nonce(), "a NUL ends the header");
}

#[test]
fn a_hundred_params() {
    let mut l = String::from("Authorization: Digest ");
    for i in 0..100 {
        l.push_str(&format!("p{i}=\"v{i}\", "));
    }
    l.push_str("nonce=\"n\"\r\n");
    // 100 params push the nonce past AUTH_LINE_MAX? Only if it is long.
    let d = cred(&l);
    if l.len() <= AUTH_LINE_MAX {
        assert!(d.has_nonce());
    } else {
        assert!(!d.has_nonce());
    }
    let mut early = String::from("Authorization: Digest nonce=\"n\", username=u");
    for i in 0..100 {
        early.push_str(&format!(", p{i}=v{i}"));
    }
    early.push_str("\r\n");
    let e = cred(&early);
    assert!(e.has_nonce() && e.username() == b"u");
}

#[test]
fn a_kilobyte_nonce_hashes_its_first_bytes_on_both_sides() {
    let long: String = (0..1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let c = chal(&format!(
        "WWW-Authenticate: Digest realm=\"r\", nonce=\"{long}\", qop=\"auth\"\r\n"
    ));
    let a = cred(&format!(
        "Authorization: Digest username=\"u\", realm=\"r\", nonce=\"{long}\", response=\"x\"\r\n"
    ));
    assert!(c.has_nonce() && a.has_nonce());
    assert_ne!(c.flags & DIGEST_NONCE_LONG, 0);
    assert_eq!(c.nonce_hash, a.nonce_hash);
    assert_eq!(c.nonce_hash, nonce_hash(long.as_bytes()));
    assert_eq!(a.username(), b"u");
    // Another nonce with the same first 128 bytes pairs too (documented).
    let other = format!("{}{}", &long[..128], "z".repeat(900));
    assert_eq!(nonce_hash(other.as_bytes()), c.nonce_hash);
}

#[test]
fn long_usernames_keep_their_first_bytes_and_a_full_hash() {
    let u = "u".repeat(40);
    let d = cred(&format!(
        "Authorization: Digest username=\"{u}\", nonce=\"n\"\r\n"
    ));
    assert_eq!(d.username(), "u".repeat(USER_MAX).as_bytes());
    assert_ne!(d.flags & DIGEST_USER_LONG, 0);
    let e = cred(&format!(
        "Authorization: Digest username=\"{u}x\", nonce=\"n\"\r\n"
    ));
    assert_ne!(d.user_hash, e.user_hash);
}

#[test]
fn what_follows_the_line_does_not_change_the_result() {
    let l = format!("Authorization: Digest username=\"alice\", nonce=\"{N}\", stale=true\r\n");
    let whole = cred(&l);
    let more = "Via: SIP/2.0/UDP x\r\n\r\nv=0\r\n";
    for cut in 0..=more.len() {
        assert_eq!(
            cred(&format!("{l}{}", &more[..cut])),
            whole,
            "followed by {cut} bytes"
        );
    }
    let c = chal(&format!(
        "WWW-Authenticate: Digest nonce={N}, stale=true\r\nWWW-Authenticate: x\r\n"
    ));
    assert!(c.has_nonce() && c.flags & DIGEST_STALE != 0);
}

#[test]
fn a_line_is_read_in_bounded_steps() {
    // A step per parameter: AUTH_MAX_STEPS tiny ones hide a nonce after
    // them, though the line is well under AUTH_LINE_MAX.
    let l = format!(
        "Authorization: Digest {}nonce=\"{N}\"\r\n",
        "a=1,".repeat(AUTH_MAX_STEPS)
    );
    assert!(l.len() < AUTH_LINE_MAX && !cred(&l).has_nonce());
    let l = format!(
        "Authorization: Digest {}nonce=\"{N}\"\r\n",
        "a=1,".repeat(AUTH_MAX_STEPS - 8)
    );
    assert!(cred(&l).has_nonce());
    // Blanks: 8 bytes a step.
    let l = format!("Authorization: Digest{}nonce=\"{N}\"\r\n", " ".repeat(1500));
    assert!(cred(&l).has_nonce());
    // Folded token values end at the fold; the header goes on.
    let f = cred(&format!(
        "Authorization: Digest username=u\r\n ,nonce={N}\r\n"
    ));
    assert!(f.has_nonce() && f.username() == b"u");
}

proptest::proptest! {
    /// The running hash the parser keeps (`absorb`, 0-8 bytes at a time,
    /// as words and quoted-pairs split a value) ends where `word_hash` of
    /// the whole value does; past `max` bytes nothing more counts.
    #[test]
    fn the_running_hash_is_the_word_hash_however_the_value_is_split(
        bytes in proptest::collection::vec(1u8..=255, 0..300),
        cuts in proptest::collection::vec(0usize..=8, 1..80),
        max in proptest::prop_oneof![proptest::strategy::Just(NONCE_MAX), proptest::strategy::Just(u32::MAX)],
    ) {
        let (mut h, mut acc, mut len, mut at) = (HASH_SEED, 0u64, 0u32, 0usize);
        for k in cuts.iter().cycle().take(400) {
            if at >= bytes.len() {
                break;
            }
            let k = (*k).min(bytes.len() - at);
            let mut w = [0xa5u8; 8]; // bytes past `k` are not the value's
            w[..k].copy_from_slice(&bytes[at..at + k]);
            absorb(&mut h, &mut acc, len, u64::from_le_bytes(w), k, max);
            len += k as u32;
            at += k;
        }
        let n = (len.min(max)) as usize;
        let counted = &bytes[..n];
        proptest::prop_assert_eq!(finish_hash(h, acc, n as u32), word_hash(counted));
    }
}

#[test]
fn the_word_hash_tells_lengths_and_blocks_apart() {
    assert_ne!(word_hash(b""), word_hash(b"\x00"));
    assert_ne!(word_hash(b"abcdefgh"), word_hash(b"abcdefgh\x00"));
    assert_ne!(word_hash(b"abcdefghi"), word_hash(b"abcdefgjh"));
    assert_ne!(
        word_hash(N.as_bytes()),
        nonce_hash(b"5f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3d")
    );
    let long = [b'x'; 200];
    assert_eq!(nonce_hash(&long), word_hash(&long[..NONCE_MAX as usize]));
}
