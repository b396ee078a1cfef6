//! `[destinations]` (SPEC §11): the destination policy against toll fraud.
//! Each `deny` and `allow_international` entry is normalised here, with
//! the code the kernel runs (`shield_common::dest`), so a bad entry is a
//! config error with file, line and key, never a rule that silently
//! matches nothing.

use shield_common::dest::{DestPolicy, DigitPrefix, MAX_PREFIXES};

use super::reader::{read_list_text, Section, Val};
use crate::dest::{parse_entry, set_prefixes, Action, Destinations, Entry, EntryKind};

/// A file full of garbage should not bury every other problem.
const MAX_FILE_ERRORS: usize = 10;

pub(super) fn destinations(mut s: Section) -> Destinations {
    let d = Destinations::default();
    let strip = prefixes(&mut s, "strip_prefixes", &d.strip_prefixes);
    let intl = prefixes(&mut s, "international_prefixes", &d.international_prefixes);
    // Entries normalise against the international prefixes just read.
    let mut probe = DestPolicy::default();
    set_prefixes(&mut probe.intl, &mut probe.n_intl, &intl);
    let mut entries = Vec::new();
    for v in s.array("deny").unwrap_or_default() {
        entry(&v, v.str(), EntryKind::Deny, &probe, &mut entries);
    }
    for v in s.array("deny_files").unwrap_or_default() {
        if let Some(path) = v.path() {
            entry_file(&v, &path, &probe, &mut entries);
        }
    }
    for v in s.array("allow_international").unwrap_or_default() {
        entry(&v, v.str(), EntryKind::Allow, &probe, &mut entries);
    }
    let out = Destinations {
        strip_prefixes: strip,
        international_prefixes: intl,
        entries,
        international_per_minute: s.int("international_per_minute", d.international_per_minute, 0..=1_000_000),
        international_burst: s.int("international_burst", d.international_burst, 1..=1_000_000),
        action: s.choice(
            "action",
            &[("reject", Action::Reject), ("drop", Action::Drop)],
            d.action,
        ),
        reject_per_second: s.int("reject_per_second", d.reject_per_second, 0..=1_000_000),
        check_allowlisted: s.bool("check_allowlisted", d.check_allowlisted),
        escalate: s.int("escalate", d.escalate, 0..=1_000_000),
        capacity: s.int("capacity", d.capacity, 1..=u32::MAX),
    };
    if let Some(v) = s.get("deny") {
        if out.entries.len() > out.capacity as usize {
            v.error(format_args!(
                "{} entries (deny, deny_files, allow_international) exceed capacity = {}",
                out.entries.len(),
                out.capacity
            ));
        }
    }
    s.finish();
    out
}

/// `strip_prefixes` / `international_prefixes`: up to `MAX_PREFIXES`
/// strings of 1 to 8 digits.
fn prefixes(s: &mut Section, key: &'static str, default: &[String]) -> Vec<String> {
    let Some(vals) = s.array(key) else {
        return default.to_vec();
    };
    if let Some(v) = vals.get(MAX_PREFIXES) {
        v.error(format_args!("at most {MAX_PREFIXES} prefixes"));
    }
    let mut out: Vec<String> = Vec::new();
    for v in vals.iter().take(MAX_PREFIXES) {
        let Some(p) = v.str() else { continue };
        if DigitPrefix::parse(p.as_bytes()).is_none() {
            v.error(format_args!("{p:?} is not a prefix: 1 to 8 digits, nothing else"));
        } else if !out.iter().any(|o| o == p) {
            out.push(p.to_owned());
        }
    }
    out
}

fn entry(v: &Val, text: Option<&str>, kind: EntryKind, probe: &DestPolicy, out: &mut Vec<Entry>) {
    let Some(text) = text else { return };
    match parse_entry(text, kind, probe) {
        Ok(e) => out.push(e),
        Err(why) => v.error(why),
    }
}

/// `deny_files`: one entry per line, `#` comments and blank lines skipped;
/// bad lines reported against the file and the key that named it.
fn entry_file(v: &Val, path: &std::path::Path, probe: &DestPolicy, out: &mut Vec<Entry>) {
    let Some(text) = read_list_text(v, path) else {
        return;
    };
    let mut bad = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse_entry(line, EntryKind::Deny, probe) {
            Ok(e) => out.push(e),
            Err(why) => {
                bad += 1;
                if bad <= MAX_FILE_ERRORS {
                    v.cx.error_in(path, Some(i + 1), &v.spot.key, why);
                }
            }
        }
    }
    if bad > MAX_FILE_ERRORS {
        v.error(format_args!(
            "{} more bad lines in {}",
            bad - MAX_FILE_ERRORS,
            path.display()
        ));
    }
}
