//! Authentication seen on the wire (SPEC §12) in the model: the same
//! parser as both programs (`shield_common::auth`), the header-line walk
//! for two first letters written out, and the maps as plain collections.

use std::collections::HashMap;
use std::net::IpAddr;

use shield_common::auth::{
    auth_method, challenges, outcome, parse_line, Attempt, AuthHeader, DigestParse, NonceKey,
    NonceSeen, AUTH_MAX_CHALLENGES, AUTH_MAX_LINES, CHALLENGE_LETTERS, CREDENTIALS_LETTERS, DIGEST_STALE,
    RESULT_STALE, RESULT_SUCCESS, USER_MAX,
};
use shield_common::{Method, SrcKey, TxnKey};

use super::{txn_ids, Model};

/// The model's `AUTH_*` maps.
#[derive(Clone, Debug, Default)]
pub struct AuthState {
    /// `AUTH_CONFIG`: on or off.
    pub on: bool,
    pub nonces: HashMap<NonceKey, NonceSeen>,
    pub attempts: HashMap<TxnKey, Attempt>,
    /// `AUTH_STATS`, all interfaces: (method slot, result) → count.
    pub stats: HashMap<(u32, u32), u64>,
    /// `AUTH_EVENTS`: (address, success, username).
    pub events: Vec<(IpAddr, bool, Vec<u8>)>,
}

/// Every challenge line (at most `AUTH_MAX_CHALLENGES`) among the first
/// `AUTH_MAX_LINES` starting with `w`/`p` within `UA_SCAN_LIMIT` bytes,
/// before the blank line, parsed.
pub fn challenges_in(payload: &[u8]) -> Vec<DigestParse> {
    let (a, b) = CHALLENGE_LETTERS;
    let mut found = Vec::new();
    super::header_lines(payload, &[a, b], AUTH_MAX_LINES, |rest| {
        if let Some(d) = parse_line(rest, AuthHeader::Challenge) {
            found.push(d);
        }
        found.len() == AUTH_MAX_CHALLENGES
    });
    found
}

/// The first header line of kind `want` among those starting within
/// `UA_SCAN_LIMIT` bytes, before the blank line, among the first
/// `AUTH_MAX_LINES` that start with either letter, parsed.
pub fn digest(payload: &[u8], want: AuthHeader) -> Option<DigestParse> {
    let (a, b) = match want {
        AuthHeader::Challenge => CHALLENGE_LETTERS,
        AuthHeader::Credentials => CREDENTIALS_LETTERS,
    };
    let mut found = None;
    super::header_lines(payload, &[a, b], AUTH_MAX_LINES, |rest| {
        found = parse_line(rest, want);
        found.is_some()
    });
    found
}

impl Model {
    /// A REGISTER or INVITE from `key` passed with UDP `payload`: a proven
    /// attempt is remembered, an unproven one counted.
    pub(super) fn auth_attempt(&mut self, payload: &[u8], key: SrcKey, method: Method, now: u64) {
        let Some(m) = auth_method(method as usize) else {
            return;
        };
        if !self.auth.on {
            return;
        }
        let Some(d) = digest(payload, AuthHeader::Credentials) else {
            return;
        };
        if !d.has_nonce() {
            return;
        }
        let nk = NonceKey {
            src: key,
            nonce: d.nonce_hash,
        };
        if !self.auth.nonces.get(&nk).is_some_and(|n| n.proves(now)) {
            *self.auth.stats.entry((m, shield_common::auth::RESULT_UNPROVEN)).or_default() += 1;
            return;
        }
        let ids = txn_ids(payload);
        let (Some(call_id), Some((cseq, cseq_method))) = (ids.call_id, ids.cseq) else {
            return;
        };
        let tk = TxnKey {
            src: key,
            call_id,
            cseq,
            _pad: 0,
        };
        let attempt = Attempt {
            seen_ns: now,
            user_hash: d.user_hash,
            cseq_method: cseq_method as u32,
            method: method as u32,
            user_len: d.user_len,
            _pad: 0,
            user: d.user,
        };
        self.auth.attempts.insert(tk, attempt);
    }

    /// A final response (`status`) to `dst` with Call-ID hash `call_id`,
    /// CSeq `cseq`, CSeq method index `method`, UDP/TCP `payload`: learns
    /// its challenge, settles the attempt it answers. True on a success.
    pub(super) fn auth_settle(
        &mut self,
        payload: &[u8],
        dst: IpAddr,
        (call_id, cseq, method): (u64, u32, u32),
        status: u16,
        now: u64,
    ) -> bool {
        if !self.auth.on {
            return false;
        }
        let key = self.key(dst);
        let mut stale = false;
        if challenges(status) {
            for d in challenges_in(payload).iter().filter(|d| d.has_nonce()) {
                stale |= d.flags & DIGEST_STALE != 0;
                let nk = NonceKey {
                    src: key,
                    nonce: d.nonce_hash,
                };
                self.auth.nonces.insert(nk, NonceSeen { seen_ns: now });
            }
        }
        let tk = TxnKey {
            src: key,
            call_id,
            cseq,
            _pad: 0,
        };
        let Some(t) = self.auth.attempts.get(&tk).copied() else {
            return false;
        };
        if t.cseq_method != method {
            return false;
        }
        self.auth.attempts.remove(&tk);
        let (Some(result), Some(m)) = (outcome(status, stale), auth_method(t.method as usize)) else {
            return false;
        };
        *self.auth.stats.entry((m, result)).or_default() += 1;
        if result == RESULT_STALE {
            return false;
        }
        let n = (t.user_len as usize).min(USER_MAX);
        let success = result == RESULT_SUCCESS;
        self.auth.events.push((dst, success, t.user[..n].to_vec()));
        success
    }
}
