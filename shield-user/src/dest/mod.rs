//! The destination policy (SPEC §11) in user space: `[destinations]` as
//! read, its kernel form (the `DEST_POLICY` record and the rule trie's
//! entries), the rule names behind the kernel's rule ids, and the same
//! decision the kernel makes, for `shieldctl destination`.

use std::collections::BTreeMap;

use shield_common::dest::{
    self, DestClass, DestPolicy, DestRule, Dialled, Listed, D_ALLOW_INTERNATIONAL,
    D_CHECK_ALLOWLISTED, D_REJECT, D_RULES, KEY_BYTES, RULE_ALLOW, RULE_ALLOW_INTERNATIONAL,
    RULE_CALLS, RULE_DENY, RULE_INTERNATIONAL_RATE, RULE_UNREADABLE, URI_WINDOW, DigitPrefix,
    MAX_DIGITS, MAX_PREFIXES,
};
use shield_common::Bucket;

pub mod event;
pub mod reply;

#[cfg(test)]
mod tests;

/// Refusal reports the kernel sends the daemon, at most (SPEC §11).
pub const REPORTS_PER_SECOND: u64 = 100;

/// `[destinations]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destinations {
    pub strip_prefixes: Vec<String>,
    pub international_prefixes: Vec<String>,
    /// `deny`, `deny_files` and `allow_international`, in that order.
    pub entries: Vec<Entry>,
    pub international_per_minute: u32,
    pub international_burst: u32,
    pub action: Action,
    pub reject_per_second: u32,
    pub check_allowlisted: bool,
    pub escalate: u32,
    /// Rule trie entries (the map's size).
    pub capacity: u32,
}

impl Default for Destinations {
    fn default() -> Self {
        Destinations {
            strip_prefixes: Vec::new(),
            international_prefixes: vec!["00".to_owned()],
            entries: Vec::new(),
            international_per_minute: 0,
            international_burst: 5,
            action: Action::Reject,
            reject_per_second: 100,
            check_allowlisted: true,
            escalate: 5,
            capacity: shield_common::default_size::DEST_RULES,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `403 Forbidden` to the caller.
    Reject,
    Drop,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::Drop => "drop",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Deny,
    Allow,
}

/// A configured entry, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// As configured: the metrics' `rule` label.
    pub text: String,
    pub kind: EntryKind,
    pub dialled: Dialled,
}

/// A rule trie entry: prefix length in bits, key data, value.
pub type TrieEntry = (u32, [u8; KEY_BYTES], DestRule);

impl Destinations {
    /// The `DEST_POLICY` record.
    pub fn policy(&self) -> DestPolicy {
        let mut p = DestPolicy::default();
        set_prefixes(&mut p.strip, &mut p.n_strip, &self.strip_prefixes);
        set_prefixes(&mut p.intl, &mut p.n_intl, &self.international_prefixes);
        if self.entries.iter().any(|e| e.kind == EntryKind::Deny) {
            p.flags |= D_RULES;
        }
        if self.entries.iter().any(|e| e.kind == EntryKind::Allow) {
            p.flags |= D_RULES | D_ALLOW_INTERNATIONAL;
        }
        if self.action == Action::Reject {
            p.flags |= D_REJECT;
        }
        if self.check_allowlisted {
            p.flags |= D_CHECK_ALLOWLISTED;
        }
        p.escalate = self.escalate;
        // Per minute: a token every 60 s / rate.
        p.intl_rate = if self.international_per_minute == 0 {
            Bucket::UNLIMITED
        } else {
            Bucket {
                interval_ns: 60_000_000_000 / self.international_per_minute as u64,
                tolerance_ns: (self.international_burst.max(1) as u64 - 1)
                    * (60_000_000_000 / self.international_per_minute as u64),
            }
        };
        p.reject = Bucket::new(self.reject_per_second as u64, self.reject_per_second.max(1) as u64);
        p.report = Bucket::new(REPORTS_PER_SECOND, REPORTS_PER_SECOND);
        p
    }

    /// The rule trie's entries: one per distinct key, a deny winning over
    /// an allow of the same prefix (SPEC §11), ids from 1 in entry order.
    pub fn trie(&self) -> Vec<TrieEntry> {
        let mut by_key: BTreeMap<(u32, [u8; KEY_BYTES]), DestRule> = BTreeMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            let Some(key) = e.dialled.key() else { continue };
            let rule = DestRule {
                id: i as u32 + 1,
                kind: match e.kind {
                    EntryKind::Deny => RULE_DENY,
                    EntryKind::Allow => RULE_ALLOW,
                },
            };
            by_key
                .entry(key)
                .and_modify(|r| {
                    if r.kind == RULE_ALLOW && rule.kind == RULE_DENY {
                        *r = rule;
                    }
                })
                .or_insert(rule);
        }
        by_key.into_iter().map(|((l, k), r)| (l, k, r)).collect()
    }

    /// The `rule` label of a rule id.
    pub fn rule_name(&self, id: u32) -> String {
        match id {
            RULE_ALLOW_INTERNATIONAL => "allow_international".into(),
            RULE_INTERNATIONAL_RATE => "international_rate".into(),
            RULE_UNREADABLE => "unreadable".into(),
            RULE_CALLS => "max_concurrent_per_source".into(),
            _ => match self.entries.get((id as usize).wrapping_sub(1)) {
                Some(e) => e.text.clone(),
                None => format!("rule {id}"),
            },
        }
    }

    /// What the kernel decides about `number` (a dialled string or a
    /// `sip:`/`sips:`/`tel:` URI), the rate aside.
    pub fn decide(&self, number: &str) -> Decision {
        let p = self.policy();
        let dialled = dest::normalise(dest::user_part(&window(number)), &p);
        let hit = self.longest(&dialled);
        let rule = match dest::listed(&dialled, hit, &p) {
            Listed::Refused(id) => Some(self.rule_name(id)),
            Listed::Pass => None,
        };
        let allowed_by = match hit {
            Some(r) if r.kind == RULE_ALLOW => Some(self.rule_name(r.id)),
            _ => None,
        };
        Decision {
            dialled,
            refused_by: rule,
            allowed_by,
        }
    }

    /// The trie's answer, computed here: the longest entry that is a
    /// prefix of the number's key.
    fn longest(&self, d: &Dialled) -> Option<DestRule> {
        let (len, key) = d.key()?;
        self.trie()
            .into_iter()
            .filter(|(l, k, _)| *l <= len && dest::covers(k, *l, &key))
            .max_by_key(|(l, _, _)| *l)
            .map(|(_, _, r)| r)
    }
}

/// `number` as the kernel's Request-URI window: a URI as given, anything
/// else as a `tel:` number.
fn window(number: &str) -> [u8; URI_WINDOW] {
    let lower = number.to_ascii_lowercase();
    let text = if ["sip:", "sips:", "tel:"].iter().any(|s| lower.starts_with(s)) {
        number.to_owned()
    } else {
        // A literal space would end the URI; in a typed number it separates.
        format!("tel:{}", number.replace(' ', "-"))
    };
    let mut w = [0u8; URI_WINDOW];
    let n = text.len().min(URI_WINDOW);
    w[..n].copy_from_slice(&text.as_bytes()[..n]);
    w
}

/// `shieldctl destination`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub dialled: Dialled,
    /// The deciding rule when refused.
    pub refused_by: Option<String>,
    /// The `allow_international` entry that lets it through, if one does.
    pub allowed_by: Option<String>,
}

/// The number as E.164 (`+` and digits) or as dialled; `other` and
/// `unreadable` for no number.
pub fn show(d: &Dialled) -> String {
    if d.unreadable {
        return "unreadable".into();
    }
    if !d.is_number() {
        return "other".into();
    }
    let mut s = String::new();
    if d.class == DestClass::International {
        s.push('+');
    }
    let (mut hi, mut lo) = (d.digits.hi, d.digits.lo);
    for _ in 0..d.digits.len {
        s.push(char::from(b'0' + (hi >> 60) as u8));
        hi = hi << 4 | lo >> 60;
        lo <<= 4;
    }
    s
}

/// `+CC` for an E.164 country code, `unknown` for 0 (the metrics label).
pub fn country_label(code: u32) -> String {
    if code == 0 {
        "unknown".into()
    } else {
        format!("+{code}")
    }
}

/// The number with all but its last 4 digits masked (logs, `shieldctl`).
pub fn masked(number: &str) -> String {
    let digits = number.chars().filter(|c| c.is_ascii_digit()).count();
    let mut seen = 0;
    number
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 4 <= digits { 'x' } else { c }
            } else {
                c
            }
        })
        .collect()
}

/// Longest number `shieldctl destination` takes: the bytes of the
/// Request-URI the kernel reads (a longer user part is unreadable there).
pub const MAX_NUMBER_BYTES: usize = URI_WINDOW;

/// Checks a number (or `sip:`/`sips:`/`tel:` URI) typed for `shieldctl
/// destination`: it comes over the control socket, so it is bounded and
/// must be printable. The error names what is wrong.
pub fn check_number(number: &str) -> Result<(), String> {
    if number.trim().is_empty() {
        return Err("empty; give a dialled number such as 0033123456789 or +33123456789".into());
    }
    if number.len() > MAX_NUMBER_BYTES {
        return Err(format!(
            "{} bytes, longer than the {MAX_NUMBER_BYTES} of a Request-URI the shield reads",
            number.len()
        ));
    }
    if let Some((i, c)) = number.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!("a control character ({:?}) at byte {i}", c));
    }
    Ok(())
}

/// The kernel's form of `prefixes` (already checked).
pub fn set_prefixes(slots: &mut [DigitPrefix; MAX_PREFIXES], n: &mut u32, prefixes: &[String]) {
    *n = 0;
    for (slot, p) in slots.iter_mut().zip(prefixes) {
        if let Some(d) = DigitPrefix::parse(p.as_bytes()) {
            *slot = d;
            *n += 1;
        }
    }
}

/// A `deny` or `allow_international` entry, normalised; the error says why
/// it cannot be one.
pub fn parse_entry(text: &str, kind: EntryKind, probe: &DestPolicy) -> Result<Entry, String> {
    let d = dest::entry(text.trim().as_bytes(), probe);
    if !d.is_number() {
        return Err(format!(
            "{text:?} is not a number prefix: digits, a leading '+' and the separators - . ( ) only"
        ));
    }
    if d.digits.len > MAX_DIGITS {
        return Err(format!("{text:?} is longer than {MAX_DIGITS} digits"));
    }
    if kind == EntryKind::Allow && d.class != DestClass::International {
        return Err(format!(
            "{text:?} is not international (start it with '+' or an international prefix)"
        ));
    }
    Ok(Entry {
        text: text.trim().to_owned(),
        kind,
        dialled: d,
    })
}

