//! The per-CPU scratch space the header searches work in (off the 512-byte
//! stack), and `launder`, which runs values through it.
//!
//! Why a pointer from `SCRATCH.get_ptr_mut(0)` (or `EGRESS_SCRATCH`) is
//! valid and ours alone for the whole run, the claim every "scratch slot"
//! SAFETY comment rests on: a per-CPU array's slot lives as long as the
//! map, which outlives the program; a program runs to completion on one CPU
//! with bottom halves off (XDP in NAPI, tc egress under `rcu_read_lock_bh`),
//! so no second run on that CPU can interleave; and the two programs have
//! separate maps.

use shield_common::{
    dest::{self, URI_WINDOW},
    sip::{UaKey, HEAD_LEN, UA_WINDOW},
    txn::TxnIds,
    RefusalEvent, SrcState,
};

/// Per-CPU scratch space for the header searches (see `find_line`): off
/// the 512-byte stack. The XDP program has `SCRATCH`, the egress
/// classifier `EGRESS_SCRATCH`.
#[repr(C)]
pub(crate) struct Scratch {
    /// Offsets are laundered through here.
    pub(crate) off: u64,
    /// The candidate header line.
    pub(crate) win: [u8; UA_WINDOW],
    /// The User-Agent product token found, the scanner map's key.
    pub(crate) ua: UaKey,
    /// The Call-ID and CSeq found (see `txn`, `walk`).
    pub(crate) ids: TxnIds,
    /// The first payload bytes, for the first-line classifier.
    pub(crate) head: [u8; HEAD_LEN],
    /// The Request-URI of an initial INVITE (see `dest`).
    pub(crate) uri: [u8; URI_WINDOW],
    /// The INVITE's addresses, for its 403 (see `dest`).
    pub(crate) invite: Invite,
    /// The INVITE's dialled number (see `dest`).
    pub(crate) dialled: dest::Dialled,
    /// A refusal report being built (see `dest`).
    pub(crate) event: RefusalEvent,
    /// A new source's state, built here (see `source`).
    pub(crate) new_source: SrcState,
    /// The INVITE step 9b read, for its call (see `calls`): its payload's
    /// `offset << 16 | length`, 0 for none.
    pub(crate) call_at: u64,
    /// The header-line walk's state and findings (see `walk`).
    pub(crate) walk: Walk,
    /// The call being opened (see `calls`).
    pub(crate) call: shield_common::calls::Call,
    /// What the walk for a message's end found (see `lines::message_end`).
    pub(crate) framing: shield_common::framing::Framing,
    /// The destination of the reply being read, keyed like a source (the
    /// egress classifier's; see `egress::shield_egress_dst`).
    pub(crate) dst: shield_common::SrcKey,
}

/// The INVITE's addresses and ports, as the caller found them.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Invite {
    pub(crate) src: [u8; 16],
    pub(crate) dst: [u8; 16],
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) family: u8,
    /// Step 2 let the source through: never escalated.
    pub(crate) allowlisted: u8,
    /// The request-line method index `dest::shield_invite_at` read, for
    /// a packet it had to classify itself (an allowlisted source's, a TCP
    /// segment's), else `NO_METHOD`: an allowlisted CANCEL is read by it.
    pub(crate) method: u8,
    pub(crate) _pad: u8,
}

/// `Invite::method` when none was read.
pub(crate) const NO_METHOD: u8 = 0xff;
const _: () = assert!(shield_common::Method::COUNT < NO_METHOD as usize);

/// Returns `v` after a round trip through per-CPU memory. The verifier does
/// not track values through map memory, so what comes back is "some
/// number": after masking, all the paths that computed `v` differently
/// continue as one verifier state instead of being checked one by one.
#[inline(always)]
pub(crate) fn launder(scratch: *mut Scratch, v: usize) -> usize {
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run.
    unsafe {
        core::ptr::write_volatile(&raw mut (*scratch).off, v as u64);
        core::ptr::read_volatile(&raw const (*scratch).off) as usize
    }
}

/// The walk's state and what it found, in `Scratch::walk`.
#[repr(C)]
pub(crate) struct Walk {
    /// Kinds searched on this packet's payload (cleared at each packet).
    pub(crate) searched: u64,
    /// Kinds found: a product token in `Scratch::ua`; a To line with a
    /// tag; a settled Call-ID/CSeq search (`Scratch::ids` holds what it
    /// found either way); a credentials line at `creds_at`.
    pub(crate) found: u64,
    /// Kinds the pass under way still looks for.
    pub(crate) open: u64,
    /// Their first letters, one per byte: what `scan_block_set` looks for.
    pub(crate) letters: u64,
    /// Lines of each kind looked at, one byte per kind (see `index`).
    pub(crate) seen: u64,
    /// Packet offset of the credentials line, and of its value in the
    /// line (what `auth_name` found: not searched again).
    pub(crate) creds_at: u64,
    pub(crate) creds_value: u64,
    /// The payload walked: `offset << 16 | length` (in scratch rather than
    /// in arguments: fewer values live in `shield_walk`'s frame).
    pub(crate) at: u64,
}
