//! One pass over a request's header lines per packet: the lines the XDP
//! program's features read — `User-Agent` (step 8), `To` (step 9b and the
//! calls), `Call-ID` and `CSeq` (transactions, calls, attempts),
//! `Authorization` / `Proxy-Authorization` (SPEC §12) — found together
//! instead of one pass over the payload each.
//!
//! Each kind keeps exactly the search it had alone (the reference model's
//! walks, unchanged): the lines starting with its letters, at most its
//! budget of them, its parser from `shield-common`. The pass scans (8 bytes
//! at a time, `lines::scan_block_set`) for the first letters of the kinds
//! still open, hands each line to its kind's parser, and drops a kind from
//! the scan once it is settled (found, refused by its parser, or out of
//! lines); it ends when none is open, at the blank line, or at
//! `UA_SCAN_LIMIT`. So a kind's answer is the same whichever others are
//! searched with it.
//!
//! The first search of a packet (step 8's) asks for every kind the rest of
//! its verdict may read (`wants::shield_packet_wants`); a later step that needs a kind not
//! searched yet (an allowlisted or TCP INVITE, which skip step 8) walks
//! then, once. Results stay in `SCRATCH` for the packet.

use shield_common::{
    auth::{auth_name, AuthHeader, AUTH_MAX_LINES},
    dest::{to_line, ToLine, TO_MAX_T_LINES},
    sip::{ua_line, UaLine, UA_MAX_U_LINES, UA_SCAN_LIMIT},
    txn::{TxnIds, TXN_LETTERS, TXN_MAX_C_LINES},
};

use crate::hook::RawCtx;
use crate::lines::{self, LINE_BAD, LINE_FOUND, LINE_OTHER};
use crate::maps::SCRATCH;
use crate::pkt::{Pkt, MAX_PAYLOAD_OFFSET};
use crate::scratch::{launder, Scratch};

/// The kinds of line, as bits (`Walk::found`, `shield_walk`'s `want`).
pub(crate) const W_UA: u64 = 1;
pub(crate) const W_TO: u64 = 2;
pub(crate) const W_TXN: u64 = 4;
pub(crate) const W_CREDS: u64 = 8;
/// The Call-ID alone (a call's key): the `c` lines as for `W_TXN`, parsed
/// by the same parser, but the search settles once the Call-ID is found,
/// without going on to the CSeq (one line fewer for an INVITE whose
/// CSeq nothing else reads). A `W_TXN` search finds the same Call-ID, so
/// it counts as this one too; the two are never open at once.
pub(crate) const W_CID: u64 = 16;
const W_ALL: u64 = W_UA | W_TO | W_TXN | W_CREDS | W_CID;

/// At most this many lines are handed to parsers: every kind's budget.
const WALK_MAX_LINES: usize = UA_MAX_U_LINES + TO_MAX_T_LINES + TXN_MAX_C_LINES + AUTH_MAX_LINES;
// A kind's count of lines seen is one byte of `Walk::seen`.
const _: () = assert!(WALK_MAX_LINES < 256);

/// The payload offset and length `Walk::at` holds, masked into the range
/// `shield_walk` let through.
#[inline(always)]
fn walked(scratch: *mut Scratch) -> (u64, u64) {
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let at = unsafe { (*scratch).walk.at };
    ((at >> 16) & PAY_MASK, at & 0xffff)
}

/// Masks a payload offset (at most `MAX_PAYLOAD_OFFSET`).
const PAY_MASK: u64 = (2 * MAX_PAYLOAD_OFFSET).next_power_of_two() as u64 - 1;
const _: () = assert!(MAX_PAYLOAD_OFFSET as u64 <= PAY_MASK);

/// Forgets the previous packet's searches: called once per packet, before
/// any step reads a header line.
#[inline(always)]
pub(crate) fn start(scratch: *mut Scratch) {
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    unsafe { (*scratch).walk.searched = 0 };
}

/// Searches the payload at `pay` (`plen` bytes) for the kinds in `want`
/// not searched yet; returns the kinds found (all searches of the packet).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_walk(ctx: *mut RawCtx, pay: u64, plen: u64, want: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let want = want & W_ALL;
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let todo = want & !unsafe { (*scratch).walk.searched };
    // The CSeq search finds the Call-ID too (branch-free: fewer verifier
    // states through the walk).
    let todo = todo & !cid_of(todo);
    if todo != 0 && pay <= MAX_PAYLOAD_OFFSET as u64 && plen <= 0xffff {
        begin(scratch, todo);
        // `lines::find_line`'s walk, keeping fewer values live (this frame
        // is under the XDP program's): the blank line is the line
        // parser's to see.
        // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
        unsafe { (*scratch).walk.at = pay << 16 | plen };
        let mut from = 0;
        for _ in 0..WALK_MAX_LINES {
            let Some(s) = lines::next_line(scratch, from, |j| shield_walk_scan_block(ctx, j))
            else {
                break;
            };
            if shield_walk_line(ctx, s as u64) != LINE_OTHER {
                break;
            }
            from = s;
        }
    }
    // SAFETY: as above.
    unsafe { (*scratch).walk.found }
}

/// A pass for the kinds `todo` is about to start: their results cleared.
#[inline(always)]
fn begin(scratch: *mut Scratch, todo: u64) {
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let s = unsafe { &mut *scratch };
    // A Call-ID and CSeq search is a Call-ID search as well.
    let covers = todo | cid_of(todo);
    s.walk.searched |= covers;
    s.walk.found &= !covers;
    s.walk.open = todo;
    s.walk.letters = letters(todo);
    s.walk.seen = 0;
    if todo & (W_TXN | W_CID) != 0 {
        s.ids = TxnIds::default();
    }
}

/// `W_CID` if `kinds` has `W_TXN`, else 0.
#[inline(always)]
const fn cid_of(kinds: u64) -> u64 {
    (kinds & W_TXN) << 2
}
const _: () = assert!(W_TXN << 2 == W_CID);

/// The first letters (lower case) of the kinds in `kinds`, one per byte.
#[inline(always)]
const fn letters(kinds: u64) -> u64 {
    let mut l = 0;
    if kinds & W_UA != 0 {
        l |= b'u' as u64;
    }
    if kinds & W_TO != 0 {
        l |= (b't' as u64) << 8;
    }
    if kinds & (W_TXN | W_CID) != 0 {
        l |= (TXN_LETTERS.0 as u64) << 16 | (TXN_LETTERS.1 as u64) << 40;
    }
    if kinds & W_CREDS != 0 {
        l |= (b'a' as u64) << 24 | (b'p' as u64) << 32;
    }
    l
}

/// The kind whose lines start with `c` (any case), or 0.
#[inline(always)]
const fn kind_of(c: u8) -> u64 {
    match c | 0x20 {
        b'u' => W_UA,
        b't' => W_TO,
        b'c' | b'i' => W_TXN | W_CID, // (only one of them is ever open)
        b'a' | b'p' => W_CREDS,
        _ => 0,
    }
}

/// A kind's byte in `Walk::seen`, and its budget of lines.
#[inline(always)]
const fn index_and_budget(kind: u64) -> (u64, u64) {
    match kind {
        W_UA => (0, UA_MAX_U_LINES as u64),
        W_TO => (1, TO_MAX_T_LINES as u64),
        W_TXN | W_CID => (2, TXN_MAX_C_LINES as u64),
        _ => (3, AUTH_MAX_LINES as u64),
    }
}

/// The line `s` bytes into the payload walked (the blank line ends the
/// pass), which starts with a letter of an open kind: parsed by that kind's parser,
/// then the kind's count and state updated. `LINE_FOUND` when no kind is
/// left open (the pass ends). Each parser is a global of its own: this
/// frame stays small under the XDP program's (512 bytes for the chain).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_walk_line(ctx: *mut RawCtx, s: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return LINE_BAD;
    };
    let (pay, plen) = walked(scratch);
    if s >= plen {
        return LINE_BAD;
    }
    let (at, avail) = (pay + s, plen - s);
    if !lines::copy_window(&Pkt::of(ctx), scratch, at, avail) {
        return LINE_BAD;
    }
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let (first, open) = unsafe { ((*scratch).win[0], (*scratch).walk.open) };
    if first == b'\r' || first == b'\n' {
        return LINE_BAD; // the blank line: the headers end here
    }
    let kind = kind_of(first) & open;
    let r = match kind {
        W_UA => shield_walk_ua(),
        W_TO => shield_walk_to(),
        W_TXN | W_CID => shield_walk_txn(),
        W_CREDS => shield_walk_creds(at),
        _ => return LINE_OTHER, // a kind settled earlier in this pass
    };
    // Every parser's exit goes on in one verifier state.
    let r = launder(scratch, r as usize) as u64 & 3;
    let kind = launder(scratch, kind as usize) as u64 & W_ALL;
    settle(scratch, kind, r)
}

/// `sip::ua_line` on `SCRATCH.win`: a token goes to `SCRATCH.ua`.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_walk_ua() -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return LINE_BAD;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    match ua_line(unsafe { &(*scratch).win }) {
        UaLine::NotUa => LINE_OTHER,
        UaLine::NoToken => LINE_BAD,
        UaLine::Token(k) => {
            // SAFETY: as above.
            unsafe { (*scratch).ua = k };
            LINE_FOUND
        }
    }
}

/// `dest::to_line` on `SCRATCH.win`: found means tagged.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_walk_to() -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return LINE_BAD;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    match to_line(unsafe { &(*scratch).win }) {
        ToLine::NotTo => LINE_OTHER,
        ToLine::Tagged => LINE_FOUND,
        ToLine::Untagged => LINE_BAD,
    }
}

/// `txn::txn_line` on `SCRATCH.win` into `SCRATCH.ids`: found once both
/// are there or the line is garbled; for a `W_CID` search, once the
/// Call-ID is (the same Call-ID a whole search finds: it stops at a
/// garbled line too).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_walk_txn() -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return LINE_BAD;
    };
    // Laundered: the parser's exits go on as one verifier state.
    let r = launder(scratch, lines::take_txn_line(scratch) as usize) as u64 & 3;
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let (open, id) = unsafe { ((*scratch).walk.open, (*scratch).ids.call_id) };
    if r == LINE_OTHER && open & W_CID != 0 && id.is_some() {
        return LINE_FOUND;
    }
    r
}

/// The kinds of `want` found, walking first if one of them was not
/// searched yet on this packet (else no call: the answer is in scratch).
#[inline(always)]
pub(crate) fn walk_if_needed(ctx: *mut RawCtx, pay: u64, plen: u64, want: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let (searched, found) = unsafe { ((*scratch).walk.searched, (*scratch).walk.found) };
    if want & !searched == 0 {
        return found & want;
    }
    shield_walk(ctx, pay, plen, want) & want
}

/// `auth::auth_name` on `SCRATCH.win`: a credentials line, at packet
/// offset `at`, and where its value starts are remembered (parsed later,
/// if `[auth]` asks).
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_walk_creds(at: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return LINE_BAD;
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let s = unsafe { &mut *scratch };
    let Some(value) = auth_name(&s.win, AuthHeader::Credentials) else {
        return LINE_OTHER;
    };
    s.walk.creds_at = at;
    s.walk.creds_value = value as u64;
    LINE_FOUND
}

/// A line of `kind` parsed with result `r`: counted; the kind leaves the
/// scan once found, refused or out of budget.
#[inline(always)]
fn settle(scratch: *mut Scratch, kind: u64, r: u64) -> u64 {
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let w = unsafe { &mut (*scratch).walk };
    let (i, budget) = index_and_budget(kind);
    let shift = i * 8;
    let seen = ((w.seen >> shift) & 0xff) + 1;
    w.seen += 1u64 << shift;
    if r == LINE_FOUND {
        w.found |= kind;
    }
    if r != LINE_OTHER || seen >= budget {
        w.open &= !kind;
        w.letters = letters(w.open);
    }
    if w.open == 0 {
        LINE_FOUND
    } else {
        LINE_OTHER
    }
}

/// `lines::scan_block_set` for the open kinds' letters.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_walk_scan_block(ctx: *mut RawCtx, j: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return lines::SCAN_END;
    };
    let (pay, plen) = walked(scratch);
    let limit = core::cmp::min(plen, UA_SCAN_LIMIT as u64);
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let set = unsafe { (*scratch).walk.letters };
    lines::scan_block_set(&Pkt::of(ctx), pay, j, limit, set)
}

/// The credentials line `shield_walk` found in the payload at `pay`
/// (`plen` bytes): its packet offset, the payload bytes left from it and
/// its value's offset in the line, or `None`.
#[inline(always)]
pub(crate) fn creds_line(pay: u64, plen: u64) -> Option<(u64, u64, u64)> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let w = unsafe { &(*scratch).walk };
    let (found, at) = (w.found, w.creds_at);
    if found & W_CREDS == 0 || at < pay || at - pay >= plen || at > (MAX_PAYLOAD_OFFSET as u64) * 2
    {
        return None;
    }
    Some((at, plen - (at - pay), w.creds_value))
}
