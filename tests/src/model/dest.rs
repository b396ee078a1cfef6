//! Step 9b, destinations (SPEC §11), in the model: the same normaliser and
//! list logic as the kernel (`shield_common::dest`), the trie's
//! longest-prefix match written out, the international bucket and the
//! refusal escalation as plain collections.

use std::net::IpAddr;

use shield_common::dest::{
    self, DestClass, DestPolicy, DestRule, DestSource, Listed, RULE_INTERNATIONAL_RATE,
    TO_MAX_T_LINES, URI_WINDOW,
};
use shield_common::{gcra, Reason};

use super::{header_walk, Model};

/// Bytes of `INVITE ` before the Request-URI.
const URI_AT: usize = 7;

/// A refusal: its reason and rule id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reason,
    pub rule: u32,
}

impl Model {
    /// Step 9b for an INVITE's UDP `payload` from `src` (allowlisted or
    /// not): `Some` when the destination policy refuses it.
    pub(super) fn destination(&mut self, payload: &[u8], src: IpAddr, allowlisted: bool, now: u64) -> Option<Refused> {
        let dp = self.tables.dest;
        if payload.len() <= URI_AT || in_dialog(payload) {
            return None;
        }
        let mut win = [0u8; URI_WINDOW];
        let uri = &payload[URI_AT..];
        let n = uri.len().min(URI_WINDOW);
        win[..n].copy_from_slice(&uri[..n]);
        let d = dest::normalise(dest::user_part(&win), &dp);
        if !dp.refuses() {
            return None;
        }
        let hit = if dp.has(dest::D_RULES) { self.longest(&d) } else { None };
        let key = self.key(src);
        let refused = match dest::listed(&d, hit, &dp) {
            Listed::Refused(rule) => Refused { reason: Reason::Destination, rule },
            Listed::Pass if d.class == DestClass::International && dp.intl_rate.is_limited() => {
                let st = self.dest_sources.entry(key).or_default();
                match gcra(st.intl_tat, now, &dp.intl_rate) {
                    Some(t) => {
                        st.intl_tat = t;
                        return None;
                    }
                    None => Refused {
                        reason: Reason::DestinationRate,
                        rule: RULE_INTERNATIONAL_RATE,
                    },
                }
            }
            Listed::Pass => return None,
        };
        *self.dest_refused.entry(refused.rule).or_insert(0) += 1;
        let keep = allowlisted || self.is_verified(src, now);
        if dp.escalate != 0 && !keep {
            self.escalate_refusal(&dp, key, src, now);
        }
        Some(refused)
    }

    /// The rule trie's answer: the longest entry that is a prefix of the
    /// number's key.
    fn longest(&self, d: &dest::Dialled) -> Option<DestRule> {
        let (len, key) = d.key()?;
        self.tables
            .dest_rules
            .iter()
            .filter(|(l, k, _)| *l <= len && dest::covers(k, *l, &key))
            .max_by_key(|(l, _, _)| *l)
            .map(|(_, _, r)| *r)
    }

    fn escalate_refusal(&mut self, dp: &DestPolicy, key: shield_common::SrcKey, src: IpAddr, now: u64) {
        let window = self.tables.policy.escalate_window_ns;
        let st: &mut DestSource = self.dest_sources.entry(key).or_default();
        if now.wrapping_sub(st.start_ns) >= window {
            st.start_ns = now;
            st.refusals = 0;
        }
        st.refusals += 1;
        if st.refusals != dp.escalate as u64 {
            return;
        }
        self.report(&key, src, Reason::Destination, dp.escalate, now);
    }
}

/// Whether the first To line (among the first `TO_MAX_T_LINES` lines
/// starting with `t`) has a tag.
pub(super) fn in_dialog(payload: &[u8]) -> bool {
    let mut tagged = false;
    header_walk(payload, &[b't'], TO_MAX_T_LINES, |win| match dest::to_line(win) {
        dest::ToLine::NotTo => false,
        dest::ToLine::Tagged => {
            tagged = true;
            true
        }
        dest::ToLine::Untagged => true,
    });
    tagged
}

