//! Calls (SPEC §13) in the model: the same state machine as the kernel
//! (`shield_common::calls`), the call table and the callers' counts as
//! plain collections.

use std::collections::HashMap;
use std::net::IpAddr;

use shield_common::calls::{self, Call, CallConfig, CallEvent, CallOutcome, Step, CALL_ANSWERED, CALL_CANCELLING, CALL_COUNTED};
use shield_common::dest::{self, RULE_CALLS, URI_WINDOW};
use shield_common::{txn::TxnIds, Method, Reason, SrcKey, FAMILY_V4, FAMILY_V6};

use super::{txn_ids, Model};

/// Bytes of `INVITE ` before the Request-URI.
const URI_AT: usize = 7;

/// `CALLS`, `CALL_COUNTS`, `CALL_CFG` and what `CALL_EVENTS` received.
#[derive(Clone, Debug, Default)]
pub struct CallTable {
    pub calls: HashMap<u64, Call>,
    pub counts: HashMap<SrcKey, u64>,
    pub events: Vec<CallEvent>,
}

impl CallTable {
    pub fn clear(&mut self) {
        self.calls.clear();
        self.counts.clear();
        self.events.clear();
    }

    /// Forgets call `id` with `outcome`, giving its count back, if it is
    /// there.
    fn end(&mut self, id: u64, outcome: CallOutcome, status: u8, now: u64, report: bool) {
        let Some(c) = self.calls.remove(&id) else { return };
        if c.flags & CALL_COUNTED != 0 {
            if let Some(n) = self.counts.get_mut(&c.src) {
                *n = calls::count_down(*n);
            }
        }
        if report {
            self.events.push(c.ended(id, outcome, status, now));
        }
    }
}

impl Model {
    /// After step 9b let the INVITE `payload` from `src` through: opens
    /// its call if it is an initial one (`limited`: not allowlisted).
    /// `Some(Reason::Calls)` when the source is at its limit.
    pub(super) fn open_call(&mut self, payload: &[u8], src: IpAddr, limited: bool, now: u64) -> Option<Reason> {
        if !self.tables.calls.on() || payload.len() <= URI_AT || super::dest::in_dialog(payload) {
            return None;
        }
        let id = txn_ids(payload).call_id?;
        if self.calls.calls.contains_key(&id) {
            return None; // a retransmission
        }
        let mut win = [0u8; URI_WINDOW];
        let uri = &payload[URI_AT..];
        let n = uri.len().min(URI_WINDOW);
        win[..n].copy_from_slice(&uri[..n]);
        let d = dest::normalise(dest::user_part(&win), &self.tables.dest);
        let key = self.key(src);
        let family = if src.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 };
        if !self.tables.calls.counts() {
            // No limit: no count kept.
            self.calls.calls.insert(id, Call::open(key, family, 0, &d, now));
            return None;
        }
        let limit = if limited { self.tables.calls.max_per_source } else { 0 };
        let count = self.calls.counts.entry(key).or_insert(0);
        if !calls::within_limit(*count, limit) {
            // Counted as a refusal of rule `RULE_CALLS`; never escalated.
            *self.dest_refused.entry(RULE_CALLS).or_insert(0) += 1;
            return Some(Reason::Calls);
        }
        *count += 1;
        let mut c = Call::open(key, family, 0, &d, now);
        c.flags = CALL_COUNTED;
        self.calls.calls.insert(id, c);
        None
    }

    /// A CANCEL `payload` from `src` that passed.
    pub(super) fn cancel_call(&mut self, payload: &[u8], src: IpAddr) {
        let Some(id) = txn_ids(payload).call_id else { return };
        let key = self.key(src);
        if let Some(c) = self.calls.calls.get_mut(&id) {
            if calls::cancels(c, &key) {
                c.flags |= CALL_CANCELLING;
            }
        }
    }

    /// The egress classifier's final response (class `class`) to `dst`.
    pub(super) fn call_reply(&mut self, ids: &TxnIds, dst: IpAddr, class: u8, challenge: bool, now: u64) {
        if !self.tables.calls.on() {
            return;
        }
        let (Some(id), Some((_, m))) = (ids.call_id, ids.cseq) else { return };
        if !matches!(m, Method::Invite | Method::Bye) {
            return;
        }
        let to = self.key(dst);
        let Some(c) = self.calls.calls.get_mut(&id) else { return };
        match calls::on_final(c, m, class, challenge, c.src == to) {
            Step::Keep => {}
            Step::Answer => {
                c.answer_ns = now;
                c.state = CALL_ANSWERED;
            }
            Step::End(outcome, status) => self.calls.end(id, outcome, status, now, true),
            Step::Forget => self.calls.end(id, CallOutcome::Failed, 4, now, false),
        }
    }

    /// `shield_calls_expire` on call `id` at `now`: true if it forgot it.
    pub fn expire_call(&mut self, id: u64, now: u64) -> bool {
        let cfg: CallConfig = self.tables.calls;
        match self.calls.calls.get(&id) {
            Some(c) if c.expired(now, cfg.max_duration_ns) => {
                self.calls.end(id, CallOutcome::Expired, 0, now, true);
                true
            }
            _ => false,
        }
    }
}
