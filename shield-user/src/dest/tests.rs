use super::*;
use super::parse_entry;
use shield_common::dest::DestPolicy;

fn policy_with(entries: &[(&str, EntryKind)]) -> Destinations {
    let mut d = Destinations::default();
    let mut probe = DestPolicy::default();
    super::set_prefixes(&mut probe.intl, &mut probe.n_intl, &d.international_prefixes);
    for (t, k) in entries {
        d.entries.push(parse_entry(t, *k, &probe).unwrap());
    }
    d
}

#[test]
fn deny_and_allow_longest_wins_and_equal_means_deny() {
    let d = policy_with(&[
        ("00899", EntryKind::Deny),
        ("+8991", EntryKind::Allow),
        ("+44", EntryKind::Allow),
        ("0044", EntryKind::Deny),
    ]);
    assert_eq!(d.decide("00899223").refused_by.as_deref(), Some("00899"));
    assert_eq!(d.decide("008991234").refused_by, None);
    // +44 allowed and denied at one length: deny.
    assert_eq!(d.decide("+442071234567").refused_by.as_deref(), Some("0044"));
    // Outside allow_international.
    assert_eq!(d.decide("+33123").refused_by.as_deref(), Some("allow_international"));
    assert_eq!(d.decide("0800123").refused_by, None);
    assert_eq!(show(&d.decide("sip:00-899-1@x").dialled), "+8991");
    assert_eq!(d.trie().len(), 3);
}

#[test]
fn entries_that_are_no_numbers_are_refused_with_the_reason() {
    let probe = DestPolicy::default();
    assert!(parse_entry("abc", EntryKind::Deny, &probe).unwrap_err().contains("not a number"));
    assert!(parse_entry("12345678901234567", EntryKind::Deny, &probe).unwrap_err().contains("16"));
    let mut probe = DestPolicy::default();
    super::set_prefixes(&mut probe.intl, &mut probe.n_intl, &["00".to_owned()]);
    assert!(parse_entry("0800", EntryKind::Allow, &probe).unwrap_err().contains("not international"));
}

#[test]
fn masks_all_but_the_last_four_digits() {
    assert_eq!(masked("+899123456"), "+xxxxx3456");
    assert_eq!(masked("123"), "123");
}

#[test]
fn typed_numbers_are_checked_before_they_are_decided() {
    assert!(check_number("+33 1 23 45 67 89").is_ok());
    assert!(check_number("sip:00899123@example.com").is_ok());
    assert!(check_number("").unwrap_err().contains("empty"));
    assert!(check_number("  ").unwrap_err().contains("empty"));
    let long = "1".repeat(MAX_NUMBER_BYTES + 1);
    assert!(check_number(&long).unwrap_err().contains("longer than the 128"));
    assert!(check_number(&"1".repeat(MAX_NUMBER_BYTES)).is_ok());
    let e = check_number("0033\r\nVia: x").unwrap_err();
    assert!(e.contains("control character") && e.contains("byte 4"), "{e}");
    assert!(check_number("00\u{1b}[2J").unwrap_err().contains("control"));
    // Whatever passes the check is decided without a panic.
    let d = policy_with(&[("00899", EntryKind::Deny)]);
    for n in ["%", "%zz", "tel:", "sip:@", "+", "#31#", "ü€", "sip:+%2B%2B1;x", &"9".repeat(128)] {
        check_number(n).unwrap();
        let _ = d.decide(n);
    }
}
