//! The dial-string table (SPEC §11's normalisation) and the rule logic.

extern crate std;
use std::{format, string::String};

use super::*;

/// strip ["9"], international ["00", "011"], as a NANP-and-Europe PBX.
fn policy() -> DestPolicy {
    let mut p = DestPolicy::default();
    p.strip[0] = DigitPrefix::parse(b"9").unwrap();
    p.n_strip = 1;
    p.intl[0] = DigitPrefix::parse(b"00").unwrap();
    p.intl[1] = DigitPrefix::parse(b"011").unwrap();
    p.n_intl = 2;
    p
}

fn window(uri: &str) -> [u8; URI_WINDOW] {
    let mut w = [0u8; URI_WINDOW];
    let n = uri.len().min(URI_WINDOW);
    w[..n].copy_from_slice(&uri.as_bytes()[..n]);
    w
}

/// The number as text: `+` and digits for international, digits for
/// national, `other` or `unreadable`.
fn show(d: Dialled) -> String {
    match d {
        d if d.unreadable => "unreadable".into(),
        d if !d.is_number() => "other".into(),
        Dialled { class, digits, .. } => {
            let mut s = String::new();
            if class == DestClass::International {
                s.push('+');
            }
            let (mut hi, mut lo) = (digits.hi, digits.lo);
            for _ in 0..digits.len {
                s.push(char::from(b'0' + (hi >> 60) as u8));
                hi = hi << 4 | lo >> 60;
                lo <<= 4;
            }
            s
        }
    }
}

fn dialled(uri: &str) -> String {
    show(normalise(user_part(&window(uri)), &policy()))
}

#[test]
fn dial_strings() {
    let long = format!("sip:{}@h SIP/2.0", "1".repeat(40));
    let padded = format!("sip:{}00899123@h SIP/2.0", "%2D".repeat(40));
    let far_at = format!("sip:00899123;{}@h SIP/2.0", "x".repeat(200));
    let table: &[(&str, &str)] = &[
        // Plain forms, every scheme, any case.
        ("sip:00899123456@pbx SIP/2.0", "+899123456"),
        ("sips:00899123456@pbx SIP/2.0", "+899123456"),
        ("SIP:00899123456@pbx SIP/2.0", "+899123456"),
        ("SiPs:00899123456@pbx SIP/2.0", "+899123456"),
        ("tel:+899123456 SIP/2.0", "+899123456"),
        ("TEL:+899123456 SIP/2.0", "+899123456"),
        ("sip:+899123456@pbx SIP/2.0", "+899123456"),
        ("sip:011899123456@pbx SIP/2.0", "+899123456"),
        // Escapes.
        ("sip:%2B899123456@pbx SIP/2.0", "+899123456"),
        ("sip:%2b899123456@pbx SIP/2.0", "+899123456"),
        ("sip:%30%30899123456@pbx SIP/2.0", "+899123456"),
        ("sip:00%38%39%39123@pbx SIP/2.0", "+899123"),
        ("sip:0089%40x@pbx SIP/2.0", "other"),
        ("sip:0089%zz1@pbx SIP/2.0", "other"),
        ("sip:0089%2@pbx SIP/2.0", "other"),
        // Visual separators.
        ("sip:00-899-123.456@pbx SIP/2.0", "+899123456"),
        ("tel:+1-(415)-555-0100 SIP/2.0", "+14155550100"),
        ("sip:00%20899%20123@pbx SIP/2.0", "+899123"),
        ("sip:(00)899@pbx SIP/2.0", "+899"),
        // Parameters and passwords end the number.
        ("tel:+14155550100;phone-context=example.com SIP/2.0", "+14155550100"),
        ("sip:+14155550100;phone-context=x@pbx;user=phone SIP/2.0", "+14155550100"),
        ("sip:0033123@pbx;user=phone SIP/2.0", "+33123"),
        ("sip:00899123:secret@pbx SIP/2.0", "+899123"),
        ("sip:00899123?subject=x@pbx SIP/2.0", "+899123"),
        ("tel:0800123?x SIP/2.0", "0800123"),
        // Strip prefixes: one, and not from a `+` number.
        ("sip:900899123@pbx SIP/2.0", "+899123"),
        ("sip:9011899123@pbx SIP/2.0", "+899123"),
        ("sip:99123@pbx SIP/2.0", "9123"),
        ("sip:+9123@pbx SIP/2.0", "+9123"),
        // National numbers stay as dialled.
        ("sip:0800123456@pbx SIP/2.0", "0800123456"),
        ("sip:2125550100@pbx SIP/2.0", "2125550100"),
        // No number.
        ("sip:alice@pbx SIP/2.0", "other"),
        ("sip:00899abc@pbx SIP/2.0", "other"),
        ("sip:*97@pbx SIP/2.0", "other"),
        ("sip:%2A97@pbx SIP/2.0", "other"),
        ("sip:12%2334@pbx SIP/2.0", "other"),
        ("sip:00899+1@pbx SIP/2.0", "other"),
        ("sip:00@pbx SIP/2.0", "other"),
        ("sip:9@pbx SIP/2.0", "other"),
        ("sip:@pbx SIP/2.0", "other"),
        ("sip:-.-@pbx SIP/2.0", "other"),
        ("sip:192.168.1.10 SIP/2.0", "other"),
        ("sip:192.168.1.10:5060;transport=udp SIP/2.0", "other"),
        ("urn:service:sos SIP/2.0", "other"),
        ("mailto:00899@x SIP/2.0", "other"),
        ("sip:00899123", "other"),
        // 15+ digits: 16 compared, 32 kept.
        ("sip:+123456789012345678@pbx SIP/2.0", "+123456789012345678"),
        (&long, "11111111111111111111111111111111"),
        // Truncation: a number running past the window.
        (&padded, "unreadable"),
        (&far_at, "+899123"),
    ];
    assert!(table.len() >= 40);
    for (uri, want) in table {
        assert_eq!(dialled(uri), *want, "{uri}");
    }
}

#[test]
fn keys_keep_classes_apart_and_stop_at_16_digits() {
    let p = policy();
    let intl = normalise(user_part(&window("tel:+899 SIP/2.0")), &p);
    let nat = normalise(user_part(&window("tel:899 SIP/2.0")), &p);
    let (li, ki) = intl.key().unwrap();
    let (ln, kn) = nat.key().unwrap();
    assert_eq!((li, ln), (8 + 12, 8 + 12));
    assert_ne!(ki[0], kn[0]);
    assert_eq!(ki[1..3], [0x89, 0x90]);
    let long = normalise(user_part(&window("tel:+12345678901234567890 SIP/2.0")), &p);
    assert_eq!(long.key().unwrap().0, 8 + 4 * MAX_DIGITS);
    assert_eq!(Dialled::OTHER.key(), None);
}

#[test]
fn entries_normalise_like_numbers_without_strip() {
    let p = policy();
    assert_eq!(entry(b"00899", &p), entry(b"+899", &p));
    assert_eq!(show(entry(b"011 899", &p)), "+899");
    assert_eq!(show(entry(b"900", &p)), "900");
    assert_eq!(entry(b"abc", &p), Dialled::OTHER);
    assert_eq!(entry(b"+899;x", &p), Dialled::OTHER);
    assert_eq!(entry(b"", &p), Dialled::OTHER);
}

#[test]
fn lists_decide_longest_first() {
    let mut p = policy();
    let d = normalise(user_part(&window("tel:+899123 SIP/2.0")), &p);
    let deny = DestRule { id: 3, kind: RULE_DENY };
    let allow = DestRule { id: 4, kind: RULE_ALLOW };
    assert_eq!(listed(&d, Some(deny), &p), Listed::Refused(3));
    assert_eq!(listed(&d, Some(allow), &p), Listed::Pass);
    assert_eq!(listed(&d, None, &p), Listed::Pass);
    p.flags |= D_ALLOW_INTERNATIONAL;
    assert_eq!(listed(&d, None, &p), Listed::Refused(RULE_ALLOW_INTERNATIONAL));
    let nat = normalise(user_part(&window("tel:0800 SIP/2.0")), &p);
    assert_eq!(listed(&nat, None, &p), Listed::Pass);
    assert_eq!(listed(&Dialled::UNREADABLE, None, &p), Listed::Refused(RULE_UNREADABLE));
    assert_eq!(listed(&Dialled::OTHER, None, &p), Listed::Pass);
    p.flags = 0;
    assert_eq!(listed(&Dialled::UNREADABLE, None, &p), Listed::Pass);
}

#[test]
fn country_codes() {
    let p = policy();
    let cc = |n: &str| country(&normalise(user_part(&window(&format!("tel:{n} SIP/2.0"))), &p));
    assert_eq!(cc("+14155550100"), 1);
    assert_eq!(cc("+74951234567"), 7);
    assert_eq!(cc("+33123456789"), 33);
    assert_eq!(cc("+442071234567"), 44);
    assert_eq!(cc("+899123"), 899);
    assert_eq!(cc("+353123"), 353);
    assert_eq!(cc("+35"), 0);
    assert_eq!(cc("0800123"), 0);
}

#[test]
fn to_tags() {
    let line = |s: &str| {
        let mut w = [0u8; UA_WINDOW];
        let n = s.len().min(UA_WINDOW);
        w[..n].copy_from_slice(&s.as_bytes()[..n]);
        to_line(&w)
    };
    assert_eq!(line("To: <sip:bob@x>;tag=abc\r\n"), ToLine::Tagged);
    assert_eq!(line("to:<sip:bob@x>;TAG=abc\r\n"), ToLine::Tagged);
    // The spaced form is missed: checked as initial, the safe side.
    assert_eq!(line("to:<sip:bob@x> ; tag = abc\r\n"), ToLine::Untagged);
    assert_eq!(line("To: <sip:bob@x>;x=\"a;tag=1\"\r\n"), ToLine::Untagged);
    assert_eq!(line("To: <sip:b@x>\r\nCall-ID: 1;tag=2\r\n"), ToLine::Untagged);
    assert_eq!(line("t: sip:bob@x;tag=1\r\n"), ToLine::Tagged);
    assert_eq!(line("To: <sip:bob@x>\r\n"), ToLine::Untagged);
    assert_eq!(line("To: \"a;tag=x\" <sip:bob@x>\r\n"), ToLine::Untagged);
    assert_eq!(line("To: \"a\\\";tag=x\" <sip:bob@x>\r\n"), ToLine::Untagged);
    assert_eq!(line("To: <sip:bob@x;tag=x>\r\n"), ToLine::Untagged);
    assert_eq!(line("To: <sip:bob@x>;tagx=1\r\n"), ToLine::Untagged);
    assert_eq!(line("Timestamp: 1;tag=2\r\n"), ToLine::NotTo);
    let long = format!("To: \"{}\" <sip:bob@x>;tag=1\r\n", "n".repeat(80));
    assert_eq!(line(&long), ToLine::Untagged);
}

/// The byte-at-a-time parse `to_line` replaced: same answer on any window.
fn to_line_bytes(win: &[u8; UA_WINDOW]) -> ToLine {
    let l = |i: usize| byte(win, i).to_ascii_lowercase();
    if l(0) != b't' {
        return ToLine::NotTo;
    }
    let j = if l(1) == b'o' { 2 } else { 1 };
    let j = crate::sip::skip_lws(win, j);
    if byte(win, j) != b':' {
        return ToLine::NotTo;
    }
    let mut tagged = false;
    let mut i = j + 1;
    while i < UA_WINDOW {
        let c = byte(win, i);
        if matches!(c, b'\r' | b'\n' | 0) {
            return if tagged { ToLine::Tagged } else { ToLine::Untagged };
        }
        if c == b'>' || c == b'"' {
            tagged = false;
        } else if c == b';' && l(i + 1) == b't' && l(i + 2) == b'a' && l(i + 3) == b'g' && byte(win, i + 4) == b'=' {
            tagged = true;
        }
        i += 1;
    }
    ToLine::Untagged
}

#[test]
fn to_line_eight_bytes_at_a_time_answers_as_byte_by_byte() {
    // Windows made of the bytes that matter, in every arrangement a
    // small generator reaches, plus the unit cases above.
    const ALPHABET: &[u8] = b";tagTAG=>\"<: \r\n\0x";
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for n in 0..200_000 {
        let mut w = [0u8; UA_WINDOW];
        let head: &[u8] = match n % 4 {
            0 => b"To: ",
            1 => b"t:",
            2 => b"TO \t :",
            _ => b"To:",
        };
        w[..head.len()].copy_from_slice(head);
        let len = head.len() + (next() % (UA_WINDOW - head.len()) as u64) as usize;
        for b in &mut w[head.len()..len] {
            let r = next();
            *b = if r % 3 == 0 { b"tag="[(r >> 8) as usize % 4] } else { ALPHABET[(r >> 8) as usize % ALPHABET.len()] };
        }
        assert_eq!(to_line(&w), to_line_bytes(&w), "{:?}", String::from_utf8_lossy(&w));
    }
}
