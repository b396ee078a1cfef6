//! Calls seen on the wire (SPEC §13): the call state machine, once, run
//! by the XDP program (an initial INVITE opens a call, a CANCEL marks it),
//! the egress classifier (the server's final responses answer or end it),
//! the expiry program and the reference model.
//!
//! A call is keyed by its Call-ID's hash (the transaction walk finds it).
//! Each caller's calls in progress are counted in `CALL_COUNTS`; the count
//! goes up when the call's record is inserted (`BPF_NOEXIST`: the first
//! insert owns it, so a retransmission never counts twice) and down when a
//! delete of that record succeeds, whoever deletes it (the egress path at
//! the call's end, or the expiry program): exactly once per call.
//!
//! Trust: only the server's own replies (egress) change a call's state. A
//! reply to the INVITE counts only when it goes to the caller; a 2xx to a
//! BYE (from either side, relayed by the server) ends it. A BYE that comes
//! in is not believed on its own: a caller could send one the server
//! rejects (481) and free a slot of the limit while the call stays up.

use crate::dest::{self, DestClass, Dialled};
use crate::maps::SrcKey;
use crate::sip::{Method, HEAD_LEN};

/// A call whose INVITE got no final answer (RFC 3261 Timer C: at least
/// three minutes) is forgotten after this, as `expired`: a forged INVITE
/// the server never answered must not hold a caller's slot for
/// `max_duration`.
pub const RING_TIMEOUT_NS: u64 = 180 * 1_000_000_000;

/// `Call::state`: INVITE seen, no final answer yet (trying or ringing).
pub const CALL_TRYING: u8 = 1;
/// `Call::state`: a 2xx to the INVITE went to the caller.
pub const CALL_ANSWERED: u8 = 2;

/// `Call::flags`: the caller sent a CANCEL while it was trying.
pub const CALL_CANCELLING: u8 = 1;
/// `Call::flags`: the call holds one of its source's `CALL_COUNTS` slots.
pub const CALL_COUNTED: u8 = 2;

/// How a call ended (metric label `outcome`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallOutcome {
    /// Answered, then ended by a BYE's 2xx.
    Answered = 0,
    /// A 3xx-6xx final response (its class in `CallEvent::status`).
    Failed = 1,
    /// A CANCEL before the answer.
    Cancelled = 2,
    /// No end seen: forgotten after `max_duration` (or the ring timeout).
    Expired = 3,
}

impl CallOutcome {
    pub const COUNT: usize = 4;
    pub const ALL: [CallOutcome; Self::COUNT] = [
        CallOutcome::Answered,
        CallOutcome::Failed,
        CallOutcome::Cancelled,
        CallOutcome::Expired,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Failed => "failed",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::Expired => "expired",
        }
    }

    pub const fn from_u8(v: u8) -> Option<CallOutcome> {
        match v {
            0 => Some(CallOutcome::Answered),
            1 => Some(CallOutcome::Failed),
            2 => Some(CallOutcome::Cancelled),
            3 => Some(CallOutcome::Expired),
            _ => None,
        }
    }
}

/// `CALLS` value: one call in progress.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Call {
    /// The caller, keyed like `SOURCES` (its `CALL_COUNTS` key).
    pub src: SrcKey,
    /// When the initial INVITE passed (`CLOCK_MONOTONIC_COARSE` ns).
    pub start_ns: u64,
    /// When the 2xx to it went out; 0 = not answered.
    pub answer_ns: u64,
    /// E.164 country code of an international number, else 0.
    pub country: u32,
    /// The number's last four digits as nibbles (the first in the top
    /// nibble); `digits` says how many the number has.
    pub tail: u16,
    pub digits: u8,
    /// `DestClass` of the dialled number.
    pub class: u8,
    /// `CALL_TRYING` or `CALL_ANSWERED`.
    pub state: u8,
    /// `CALL_*` flag bits.
    pub flags: u8,
    /// The interface slot the INVITE came in on.
    pub iface: u8,
    /// `FAMILY_V4` / `FAMILY_V6` of the caller.
    pub family: u8,
    pub _pad: u32,
}

/// `CALL_CFG[0]`: what `[calls]` says, as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallConfig {
    /// Calls in progress per source; 0 = no limit.
    pub max_per_source: u64,
    /// An answered call with no end seen is forgotten after this.
    pub max_duration_ns: u64,
    /// `CALLS_ON`, or 0: no call is tracked (before shieldd writes the
    /// record, and in the benchmark's "without" rows).
    pub flags: u64,
}

/// [`CallConfig::flags`]: calls are tracked (shieldd always sets it).
pub const CALLS_ON: u64 = 1;

impl CallConfig {
    #[inline(always)]
    pub const fn on(&self) -> bool {
        self.flags & CALLS_ON != 0
    }

    /// Whether calls hold a slot of their caller's count: only with a
    /// limit to enforce. Without one (the default), a new call costs no
    /// `CALL_COUNTS` insert or compare-and-swap; a limit configured later
    /// holds the calls opened from then on (`CALL_COUNTED` says which).
    #[inline(always)]
    pub const fn counts(&self) -> bool {
        self.max_per_source != 0
    }
}

/// `CALL_EVENTS` record: a call ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallEvent {
    pub call_id: u64,
    pub src: SrcKey,
    pub start_ns: u64,
    pub answer_ns: u64,
    pub end_ns: u64,
    pub country: u32,
    pub tail: u16,
    pub digits: u8,
    pub class: u8,
    /// `CallOutcome`.
    pub outcome: u8,
    /// Status class of the final response that failed it (3..=6), else 0.
    pub status: u8,
    pub iface: u8,
    pub family: u8,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all three): repr(C), Copy, integers and byte arrays only, no
    // padding byte (`sizes_without_padding`): every byte pattern is a value.
    unsafe impl aya::Pod for super::Call {}
    unsafe impl aya::Pod for super::CallConfig {}
    unsafe impl aya::Pod for super::CallEvent {}
}

impl Call {
    /// A call opened at `now` by an initial INVITE from `src` to `d`.
    #[inline(always)]
    pub fn open(src: SrcKey, family: u8, iface: u8, d: &Dialled, now: u64) -> Call {
        let (tail, digits) = last4(d);
        Call {
            src,
            start_ns: now,
            answer_ns: 0,
            country: dest::country(d),
            tail,
            digits,
            class: d.class as u8,
            state: CALL_TRYING,
            flags: 0,
            iface,
            family,
            _pad: 0,
        }
    }

    /// Whether the call was answered.
    #[inline(always)]
    pub const fn answered(&self) -> bool {
        self.state == CALL_ANSWERED
    }

    /// Whether the call has gone on too long without an end: unanswered
    /// for `RING_TIMEOUT_NS`, or answered for `max_duration_ns`.
    #[inline(always)]
    pub const fn expired(&self, now: u64, max_duration_ns: u64) -> bool {
        if self.state == CALL_ANSWERED {
            now >= self.answer_ns && now - self.answer_ns >= max_duration_ns
        } else {
            now >= self.start_ns && now - self.start_ns >= RING_TIMEOUT_NS
        }
    }

    /// The record of its end at `now`.
    #[inline(always)]
    pub fn ended(&self, call_id: u64, outcome: CallOutcome, status: u8, now: u64) -> CallEvent {
        CallEvent {
            call_id,
            src: self.src,
            start_ns: self.start_ns,
            answer_ns: self.answer_ns,
            end_ns: now,
            country: self.country,
            tail: self.tail,
            digits: self.digits,
            class: self.class,
            outcome: outcome as u8,
            status,
            iface: self.iface,
            family: self.family,
            _pad: 0,
        }
    }
}

impl CallEvent {
    /// Seconds the call was up (answer to end); 0 if never answered.
    pub fn duration_ns(&self) -> u64 {
        if self.answer_ns == 0 {
            0
        } else {
            self.end_ns.saturating_sub(self.answer_ns)
        }
    }

    pub fn outcome(&self) -> Option<CallOutcome> {
        CallOutcome::from_u8(self.outcome)
    }
}

/// The number's last four digits as nibbles and its digit count (at most
/// `dest::RAW_DIGITS`).
#[inline(always)]
pub fn last4(d: &Dialled) -> (u16, u8) {
    let ds = &d.digits;
    if d.class == DestClass::Other || ds.len == 0 {
        return (0, 0);
    }
    let mut tail: u16 = 0;
    let mut i = 0u32;
    while i < 4 {
        // Digit `len - 4 + i`, when the number has it.
        if ds.len + i >= 4 {
            let k = ds.len + i - 4;
            let nib = if k < 16 {
                (ds.hi >> (60 - 4 * k)) & 0xf
            } else {
                (ds.lo >> (60 - 4 * (k & 15))) & 0xf
            };
            tail |= (nib as u16) << (12 - 4 * i);
        }
        i += 1;
    }
    (tail, ds.len.min(255) as u8)
}

/// What a final response (egress) does to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing (a provisional, a retransmitted 2xx, a re-INVITE's answer,
    /// another transaction's reply, or one to someone else).
    Keep,
    /// The INVITE's 2xx: the call is answered.
    Answer,
    /// The call ended: remove it and report it.
    End(CallOutcome, u8),
    /// A digest challenge (401/407) to the INVITE: the caller sends it
    /// again with credentials, as a new initial INVITE (often with the same
    /// Call-ID). Removed, its count given back, not reported: a challenged
    /// attempt is no call, and it must not hold a slot (a forged INVITE
    /// would otherwise fill its victim's).
    Forget,
}

/// Whether a status line (`head`, the payload's first bytes) is a digest
/// challenge: `SIP/2.0 401 ` or `SIP/2.0 407 `.
#[inline(always)]
pub fn is_challenge(head: &[u8; HEAD_LEN]) -> bool {
    head[8] == b'4' && head[9] == b'0' && (head[10] == b'1' || head[10] == b'7')
}

/// The server's final response of status class `class` (2..=6), whose
/// CSeq method is `cseq_method`, to the call `c`; `challenge`: a 401 or
/// 407 (see [`is_challenge`]); `to_caller`: it goes to the call's source.
#[inline(always)]
pub fn on_final(c: &Call, cseq_method: Method, class: u8, challenge: bool, to_caller: bool) -> Step {
    if class < 2 || class > 6 {
        return Step::Keep;
    }
    match cseq_method {
        Method::Invite if to_caller && c.state == CALL_TRYING => {
            if challenge {
                Step::Forget
            } else if class == 2 {
                Step::Answer
            } else if c.flags & CALL_CANCELLING != 0 {
                Step::End(CallOutcome::Cancelled, 0)
            } else {
                Step::End(CallOutcome::Failed, class)
            }
        }
        // A BYE the other side accepted, whichever side sent it. (Before
        // the answer only in an early dialog: the call never went up.)
        Method::Bye if class == 2 => {
            if c.state == CALL_ANSWERED {
                Step::End(CallOutcome::Answered, 0)
            } else {
                Step::End(CallOutcome::Cancelled, 0)
            }
        }
        _ => Step::Keep,
    }
}

/// Whether a CANCEL from `from` marks the call `c` cancelling: only the
/// caller's, and only before the answer (its 487 then ends the call).
#[inline(always)]
pub fn cancels(c: &Call, from: &SrcKey) -> bool {
    c.state == CALL_TRYING && c.src == *from
}

/// Whether a caller with `in_progress` calls may open another.
#[inline(always)]
pub const fn within_limit(in_progress: u64, max_per_source: u64) -> bool {
    max_per_source == 0 || in_progress < max_per_source
}

/// `n` minus one, never below zero (a count reset by an eviction must
/// not wrap).
#[inline(always)]
pub const fn count_down(n: u64) -> u64 {
    n.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::{normalise, user_part, DestPolicy, URI_WINDOW};

    fn dialled(uri: &str) -> Dialled {
        let mut w = [0u8; URI_WINDOW];
        w[..uri.len()].copy_from_slice(uri.as_bytes());
        let mut p = DestPolicy::default();
        p.intl[0] = crate::dest::DigitPrefix::parse(b"00").unwrap();
        p.n_intl = 1;
        normalise(user_part(&w), &p)
    }

    fn call(uri: &str) -> Call {
        Call::open([1; 16], 4, 0, &dialled(uri), 1_000)
    }

    #[test]
    fn the_tail_is_the_last_four_digits() {
        assert_eq!(last4(&dialled("sip:0033123456789@x")), (0x6789, 11));
        assert_eq!(last4(&dialled("sip:12@x")), (0x0012, 2));
        assert_eq!(last4(&dialled("sip:alice@x")), (0, 0));
        // Past the first sixteen digits.
        let long = "sip:12345678901234567890@x";
        assert_eq!(last4(&dialled(long)), (0x7890, 20));
        let c = call("sip:+33123456789@x");
        assert_eq!((c.country, c.class), (33, DestClass::International as u8));
    }

    #[test]
    fn an_answered_call_ends_with_the_bye_2xx() {
        let mut c = call("sip:100@x");
        assert_eq!(on_final(&c, Method::Invite, 2, false, false), Step::Keep, "not to the caller");
        assert_eq!(on_final(&c, Method::Invite, 2, false, true), Step::Answer);
        c.state = CALL_ANSWERED;
        assert_eq!(on_final(&c, Method::Invite, 2, false, true), Step::Keep, "retransmitted 2xx");
        assert_eq!(on_final(&c, Method::Invite, 4, false, true), Step::Keep, "a re-INVITE's 488");
        assert_eq!(on_final(&c, Method::Bye, 4, false, true), Step::Keep, "a BYE refused (481)");
        assert_eq!(on_final(&c, Method::Options, 2, false, true), Step::Keep);
        assert_eq!(on_final(&c, Method::Bye, 2, false, false), Step::End(CallOutcome::Answered, 0));
    }

    #[test]
    fn failures_and_cancels() {
        let mut c = call("sip:100@x");
        assert_eq!(on_final(&c, Method::Invite, 4, false, true), Step::End(CallOutcome::Failed, 4));
        assert_eq!(on_final(&c, Method::Invite, 6, false, true), Step::End(CallOutcome::Failed, 6));
        assert_eq!(on_final(&c, Method::Invite, 1, false, true), Step::Keep, "provisional");
        assert!(cancels(&c, &[1; 16]));
        assert!(!cancels(&c, &[2; 16]), "someone else's CANCEL");
        c.flags |= CALL_CANCELLING;
        assert_eq!(on_final(&c, Method::Invite, 4, false, true), Step::End(CallOutcome::Cancelled, 0));
        // The CANCEL lost the race with the answer: the call is up.
        assert_eq!(on_final(&c, Method::Invite, 2, false, true), Step::Answer);
        c.state = CALL_ANSWERED;
        assert!(!cancels(&c, &[1; 16]));
    }

    #[test]
    fn a_challenge_forgets_the_attempt() {
        let c = call("sip:100@x");
        assert_eq!(on_final(&c, Method::Invite, 4, true, true), Step::Forget);
        assert_eq!(on_final(&c, Method::Invite, 4, true, false), Step::Keep, "someone else's");
        let mut head = [0u8; HEAD_LEN];
        for (line, want) in [(&b"SIP/2.0 407 Proxy"[..], true), (b"SIP/2.0 401 U", true), (b"SIP/2.0 403 F", false), (b"SIP/2.0 486 B", false)] {
            head[..line.len()].copy_from_slice(line);
            assert_eq!(is_challenge(&head), want);
        }
    }

    #[test]
    fn expiry() {
        let mut c = call("sip:100@x");
        assert!(!c.expired(1_000 + RING_TIMEOUT_NS - 1, 10));
        assert!(c.expired(1_000 + RING_TIMEOUT_NS, 10));
        assert!(!c.expired(0, 10), "a clock before the start");
        c.state = CALL_ANSWERED;
        c.answer_ns = 2_000;
        assert!(!c.expired(2_009, 10));
        assert!(c.expired(2_010, 10));
        let e = c.ended(7, CallOutcome::Expired, 0, 5_000);
        assert_eq!(e.duration_ns(), 3_000);
        assert_eq!(e.outcome(), Some(CallOutcome::Expired));
        let never = call("sip:1@x").ended(7, CallOutcome::Failed, 4, 5_000);
        assert_eq!(never.duration_ns(), 0);
    }

    #[test]
    fn limits_and_counts() {
        assert!(within_limit(5, 0));
        assert!(within_limit(1, 2));
        assert!(!within_limit(2, 2));
        assert_eq!(count_down(0), 0);
        assert_eq!(count_down(3), 2);
        for o in CallOutcome::ALL {
            assert_eq!(CallOutcome::from_u8(o as u8), Some(o));
        }
        assert_eq!(CallOutcome::from_u8(9), None);
    }

    #[test]
    fn sizes_without_padding() {
        assert_eq!(core::mem::size_of::<Call>(), 16 + 8 + 8 + 4 + 2 + 6 + 4);
        assert_eq!(core::mem::size_of::<CallEvent>(), 8 + 16 + 24 + 4 + 2 + 6 + 4);
        assert_eq!(core::mem::size_of::<CallConfig>(), 24);
    }
}
