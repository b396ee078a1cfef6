//! The header-line search both programs share: find the header lines that
//! start with a given letter among the first `UA_SCAN_LIMIT` payload bytes
//! and hand each, as a window in per-CPU scratch, to a line parser from
//! `shield-common` (User-Agent in the XDP program, CSeq on egress).
//!
//! It is split into BTF-global functions on purpose: the verifier checks a
//! global function once, on its own, with unknown arguments, and a call to
//! it costs one instruction wherever it happens. Inlined, the same code
//! would be re-verified for every distinct state that reaches it (each
//! VLAN/extension-header shape, each scan-loop exit...) and blow through the
//! 1M-instruction limit. A global function's context argument has the
//! program's own type (`xdp_md`, `__sk_buff`), so each program has its own
//! thin globals around the bodies here.

use shield_common::{
    framing::{length_line, Framing, FRAMING_MAX_LINES},
    sip::UA_SCAN_LIMIT,
    txn::txn_line,
};

use crate::pkt::{Pkt, MAX_PAYLOAD_OFFSET};
use crate::scratch::{launder, Scratch};

/// A line parser's answer: not this header, keep looking.
pub(crate) const LINE_OTHER: u64 = 0;
/// A line parser's answer: found (the result is in scratch).
pub(crate) const LINE_FOUND: u64 = 1;
/// A line parser's answer: this is the header, but it does not parse.
pub(crate) const LINE_BAD: u64 = 2;

/// Looks for a header among the lines that start in the first
/// `UA_SCAN_LIMIT` bytes of the payload at `pay` (`plen` bytes), at most
/// `max_lines` of those starting with the scanned letter, up to the blank
/// line. `scan(j, limit)` is the program's `*_scan_block` global;
/// `line(at, avail)` its line-parser global, which copies the line at
/// payload offset `at` (`avail` bytes left) with [`copy_window`] and parses
/// it. Returns `LINE_FOUND` or 0. Same walk as the reference model's.
#[inline(always)]
pub(crate) fn find_line(
    pkt: &Pkt,
    scratch: *mut Scratch,
    pay: u64,
    plen: u64,
    max_lines: usize,
    scan: impl Fn(u64, u64) -> u64,
    line: impl Fn(u64, u64) -> u64,
) -> u64 {
    let (pay, plen) = (pay as usize, plen as usize);
    if pay > MAX_PAYLOAD_OFFSET || plen > 0xffff {
        return 0;
    }
    let limit = core::cmp::min(plen, UA_SCAN_LIMIT);
    let mut from = 0;
    for _ in 0..max_lines {
        let s = scan_from(from, limit, &scan);
        if s == SCAN_END {
            return 0;
        }
        // Every exit of the loop above continues in one verifier state.
        let s = launder(scratch, s as usize) & LINE_OFFSET_MASK;
        let Some(c) = pkt.byte_at(pay + s) else {
            return 0;
        };
        if c == b'\r' || c == b'\n' {
            return 0; // the blank line: end of the headers
        }
        match line((pay + s) as u64, (plen - s) as u64) {
            LINE_OTHER => from = s,
            LINE_FOUND => return LINE_FOUND,
            _ => return 0,
        }
    }
    0
}

/// The next line start `scan(j, limit)` (a program's scan global) finds
/// from payload position `from`, a block at a time: its offset, or
/// `SCAN_END`.
#[inline(always)]
fn scan_from(from: usize, limit: usize, scan: &impl Fn(u64, u64) -> u64) -> u64 {
    for b in 0..SCAN_BLOCKS {
        let r = scan((from + b * SCAN_BLOCK) as u64, limit as u64);
        if r != SCAN_MORE {
            return r;
        }
    }
    SCAN_END
}

/// Where the message at `pay` (`plen` bytes: the rest of its TCP
/// segment) ends and the next one starts, in bytes from `pay`; 0 when that
/// is unknown or past the segment (see `shield_common::framing`). The
/// header lines starting with `c`/`l` within `UA_SCAN_LIMIT` bytes, at most
/// `FRAMING_MAX_LINES` of them, go to `line(at, avail)` (the program's
/// global around [`take_length_line`]) until the blank line; `scan(j,
/// limit)` is the program's scan global for those letters. Same walk as
/// the reference model's `next_message`.
#[inline(always)]
pub(crate) fn message_end(
    pkt: &Pkt,
    scratch: *mut Scratch,
    pay: u64,
    plen: u64,
    scan: impl Fn(u64, u64) -> u64,
    line: impl Fn(u64, u64) -> u64,
) -> u64 {
    let (pay, plen) = (pay as usize, plen as usize);
    if pay > MAX_PAYLOAD_OFFSET || plen > 0xffff {
        return 0;
    }
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    unsafe { (*scratch).framing = Framing::default() };
    let limit = core::cmp::min(plen, UA_SCAN_LIMIT);
    let mut from = 0;
    for i in 0..=FRAMING_MAX_LINES {
        let s = scan_from(from, limit, &scan);
        if s == SCAN_END {
            return 0;
        }
        // Every exit of the loop above continues in one verifier state.
        let s = launder(scratch, s as usize) & LINE_OFFSET_MASK;
        let Some(c) = pkt.byte_at(pay + s) else {
            return 0;
        };
        if c == b'\r' || c == b'\n' {
            return blank_line(pkt, scratch, pay, s, c, plen);
        }
        // One line more than the budget: only the blank line may follow.
        if i == FRAMING_MAX_LINES || line((pay + s) as u64, (plen - s) as u64) != LINE_OTHER {
            return 0;
        }
        from = s;
    }
    0
}

/// [`message_end`] at the blank line `s` bytes into the message (first
/// byte `c`): `Framing::next` on what the walk found.
#[inline(always)]
fn blank_line(pkt: &Pkt, scratch: *mut Scratch, pay: usize, s: usize, c: u8, plen: usize) -> u64 {
    let b1 = if s + 1 < plen {
        pkt.byte_at(pay + s + 1).unwrap_or(0)
    } else {
        0
    };
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let f = unsafe { (*scratch).framing };
    match f.next(s, c, b1, plen) {
        Some(n) => n as u64,
        None => 0,
    }
}

/// Whether the line at payload offset `at` (`avail` bytes left), which
/// starts with `c`/`C` or `l`/`L`, may be a `Content-Length`: false only
/// for a line `length_line` calls `Other` for sure (a `c` line whose next
/// five letters are not `onten`, either case: Call-ID, CSeq, Contact), so
/// that those skip the window's copy and parse (a TCP INVITE has three).
#[inline(always)]
pub(crate) fn may_be_length(pkt: &Pkt, at: u64, avail: u64) -> bool {
    const PREFIX: u64 = u64::from_le_bytes(*b"conten\0\0");
    const MASK: u64 = 0x0000_ffff_ffff_ffff;
    let at = at as usize;
    if avail < 8 || at > MAX_PAYLOAD_OFFSET + UA_SCAN_LIMIT {
        return true; // near the end: the parser's zero fill decides
    }
    let Some(p) = pkt.ptr_at::<[u8; 8]>(at) else {
        return true;
    };
    // SAFETY: inside the frame: `ptr_at` checked all 8 bytes.
    let w = u64::from_le_bytes(unsafe { *p });
    // `| 0x20` equals a lower-case letter only for that letter in either case.
    let lower = w | 0x2020_2020_2020_2020;
    lower as u8 == LENGTH_COMPACT || lower & MASK == PREFIX
}

/// The compact form's letter (`l`), lower case.
const LENGTH_COMPACT: u8 = shield_common::framing::FRAMING_LETTERS.1;

/// The body of each program's `*_length_line` global: the line at
/// payload offset `at` (`avail` bytes left), if it may be a length line,
/// copied and taken into `scratch.framing` (see `take_length_line`).
#[inline(always)]
pub(crate) fn read_length_line(pkt: &Pkt, scratch: *mut Scratch, at: u64, avail: u64) -> u64 {
    if !may_be_length(pkt, at, avail) {
        return LINE_OTHER;
    }
    if !copy_window(pkt, scratch, at, avail) {
        return LINE_BAD;
    }
    take_length_line(scratch)
}

/// Takes the line in `scratch.win` into `scratch.framing`: `LINE_OTHER`
/// to go on, `LINE_BAD` when the walk must stop.
#[inline(always)]
pub(crate) fn take_length_line(scratch: *mut Scratch) -> u64 {
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let s = unsafe { &mut *scratch };
    if s.framing.take(length_line(&s.win)) {
        LINE_BAD
    } else {
        LINE_OTHER
    }
}

/// The start of the next line after the one at `from` (0: the request
/// line) that the scan finds: `scan(j)` is the program's `*_scan_block`
/// global on the block at payload position `j`. `None`: no more. The
/// answer is laundered: every exit of the block loop goes on as one
/// verifier state.
#[inline(always)]
pub(crate) fn next_line(
    scratch: *mut Scratch,
    from: usize,
    scan: impl Fn(u64) -> u64,
) -> Option<usize> {
    for b in 0..SCAN_BLOCKS {
        let r = scan((from + b * SCAN_BLOCK) as u64);
        if r == SCAN_END {
            return None;
        }
        if r != SCAN_MORE {
            return Some(launder(scratch, r as usize) & LINE_OFFSET_MASK);
        }
    }
    None
}

/// The line's first UA_WINDOW bytes (`avail` of them in the payload) into
/// `scratch.win`, zero-filled past the payload. In the line parsers'
/// globals: inlined in the walk, its 64 exits would each carry on as a
/// verifier state of their own.
#[inline(always)]
pub(crate) fn copy_window(pkt: &Pkt, scratch: *mut Scratch, at: u64, avail: u64) -> bool {
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    copy_into(pkt, unsafe { &mut (*scratch).win }, at, avail)
}

/// The `N` payload bytes at `at` (`avail` of them in the payload) into
/// `dst`, zero-filled past the payload: one copy when the frame has them
/// all, else byte by byte.
#[inline(always)]
pub(crate) fn copy_into<const N: usize>(pkt: &Pkt, dst: &mut [u8; N], at: u64, avail: u64) -> bool {
    let (at, avail) = (at as usize, avail as usize);
    if at > MAX_PAYLOAD_OFFSET + UA_SCAN_LIMIT || avail > 0xffff {
        return false;
    }
    match pkt.ptr_at::<[u8; N]>(at) {
        // SAFETY: `ptr_at` checked that all N bytes are in the frame; `dst` holds N.
        Some(w) if avail >= N => unsafe {
            core::ptr::copy_nonoverlapping(w.cast::<u8>(), dst.as_mut_ptr(), N)
        },
        _ => {
            *dst = [0; N];
            for (k, w) in dst.iter_mut().enumerate() {
                if k >= avail {
                    break;
                }
                match pkt.byte_at(at + k) {
                    Some(b) => *w = b,
                    None => break,
                }
            }
        }
    }
    true
}

/// Masks a laundered line start (below `UA_SCAN_LIMIT`) back into range.
const LINE_OFFSET_MASK: usize = UA_SCAN_LIMIT - 1;
const _: () = assert!(UA_SCAN_LIMIT.is_power_of_two());

/// Positions one `scan_block` call looks at: whole 8-byte words. (256 saves
/// a call for a User-Agent 300 bytes in, but sends every payload shorter
/// than a block to `scan_tail`: the egress classifier's 200 OK rose from
/// 175 to 205 ns in the datapath bench.)
const SCAN_BLOCK: usize = 128;
const _: () = assert!(SCAN_BLOCK % 8 == 0);
const SCAN_BLOCKS: usize = UA_SCAN_LIMIT / SCAN_BLOCK + 1;
/// `scan_block`: nothing in this block, go on.
const SCAN_MORE: u64 = 0;
/// `scan_block`: nothing (more) to find.
pub(crate) const SCAN_END: u64 = 0xffff;

/// Looks at payload positions `[j, j + SCAN_BLOCK)` for the first line start
/// `s` (the byte after a `\n`) whose first byte is `first` or `second`
/// (lower case, or upper case: the digest headers `w`/`p`, Call-ID and
/// CSeq `c`/`i`), `\r` or `\n`. Returns `s` if it is below `limit`,
/// `SCAN_END` if there is none below `limit`, `SCAN_MORE` if the next block
/// may have one. The body of each program's `*_scan_block` global function.
#[inline(always)]
pub(crate) fn scan_block2(pkt: &Pkt, pay: u64, j: u64, limit: u64, first: u8, second: u8) -> u64 {
    scan_block_with(pkt, pay, j, limit, |lower| {
        bytes_eq(lower, first) | bytes_eq(lower, second)
    })
}

/// [`scan_block`] for lines starting with any of the letters in `set`
/// (lower case, one per byte, 0 for none: a lower-cased byte is never 0).
#[inline(always)]
pub(crate) fn scan_block_set(pkt: &Pkt, pay: u64, j: u64, limit: u64, set: u64) -> u64 {
    scan_block_with(pkt, pay, j, limit, |lower| {
        // black_box: hoisted out of the word loop, the five letter words
        // would each hold a register across it and spill; this frame sits
        // under the XDP program's (512 bytes for the whole chain).
        let set = core::hint::black_box(set);
        let mut m = 0;
        for k in 0..SET_LETTERS {
            m |= bytes_eq(lower, (set >> (8 * k)) as u8);
        }
        m
    })
}

/// Letters a `scan_block_set` set holds at most.
const SET_LETTERS: usize = 6;

/// The scan: line starts whose first byte, lower-cased (`| 0x20` on every
/// byte of the word), `letters` marks (top bit of each matching byte), or
/// which are blank (`\r`, `\n`).
#[inline(always)]
fn scan_block_with(pkt: &Pkt, pay: u64, j: u64, limit: u64, letters: impl Fn(u64) -> u64) -> u64 {
    let (pay, j, limit) = (pay as usize, j as usize, limit as usize);
    if pay > MAX_PAYLOAD_OFFSET || j > 2 * UA_SCAN_LIMIT || limit > UA_SCAN_LIMIT {
        return SCAN_END;
    }
    if j + 1 >= limit {
        return SCAN_END;
    }
    // The whole block and the byte after it are in the frame: one bounds
    // check, then eight words at constant offsets.
    let Some(block) = pkt.ptr_at::<[u8; SCAN_BLOCK + 1]>(pay + j) else {
        return scan_tail(pkt, pay, j, limit, letters);
    };
    let block = block.cast::<u8>();
    for w in 0..SCAN_BLOCK / 8 {
        // One 8-byte load, though the address is rarely 8-aligned: the BPF
        // backend would split an unaligned-typed load into eight byte loads,
        // and the kernel allows unaligned packet loads where XDP runs
        // (x86-64, arm64: HAVE_EFFICIENT_UNALIGNED_ACCESS).
        #[allow(clippy::cast_ptr_alignment)]
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        let word = u64::from_le(unsafe { core::ptr::read(block.add(w * 8).cast::<u64>()) });
        // Most words hold no line break: the classic has-zero-byte test
        // (exact about *whether*, not *where*) costs five instructions.
        let x = word ^ (ONES * b'\n' as u64);
        if x.wrapping_sub(ONES) & !x & HIGH == 0 {
            continue;
        }
        let nl = bytes_eq(word, b'\n');
        // The byte after each position: this word shifted, plus the first
        // byte of the next word (inside the checked block + 1).
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        let next = (word >> 8) | ((unsafe { *block.add(w * 8 + 8) } as u64) << 56);
        let lower = next | (ONES * 0x20);
        let hit = nl & (letters(lower) | bytes_eq(next, b'\r') | bytes_eq(next, b'\n'));
        if hit != 0 {
            let s = j + w * 8 + lowest_byte(hit) + 1;
            return if s < limit { s as u64 } else { SCAN_END };
        }
    }
    SCAN_MORE
}

/// The block runs past the end of the frame: eight positions at a time
/// through a nine-byte window, the last window aligned to the frame's end.
#[inline(always)]
fn scan_tail(pkt: &Pkt, pay: usize, j0: usize, limit: usize, letters: impl Fn(u64) -> u64) -> u64 {
    let frame = pkt.len();
    for c in 0..SCAN_BLOCK / 8 {
        let mut j = j0 + c * 8;
        if j + 1 >= limit {
            return SCAN_END;
        }
        let last = pay + j + 9 > frame;
        if last {
            // Fewer than nine bytes left: look at the last nine of the
            // frame. Those before `j` were already seen (no hit), and a
            // User-Agent line needs more than nine bytes anyway.
            if frame < pay + 9 {
                return SCAN_END;
            }
            // `tail < j` always holds, and LLVM knows it: black_box keeps
            // the check, whose constant bound the verifier needs.
            let tail = core::hint::black_box(frame - pay - 9);
            if tail > 2 * UA_SCAN_LIMIT {
                return SCAN_END;
            }
            j = tail;
        }
        let Some(p) = pkt.ptr_at::<[u8; 9]>(pay + j) else {
            return SCAN_END;
        };
        let p = p.cast::<u8>();
        #[allow(clippy::cast_ptr_alignment)]
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        let w = u64::from_le(unsafe { core::ptr::read(p.cast::<u64>()) });
        // SAFETY: inside the frame: the bounds check above covers every byte read.
        let next = (w >> 8) | ((unsafe { *p.add(8) } as u64) << 56);
        let lower = next | (ONES * 0x20);
        let hit =
            bytes_eq(w, b'\n') & (letters(lower) | bytes_eq(next, b'\r') | bytes_eq(next, b'\n'));
        if hit != 0 {
            let s = j + lowest_byte(hit) + 1;
            return if s < limit { s as u64 } else { SCAN_END };
        }
        if last {
            return SCAN_END;
        }
    }
    SCAN_MORE
}

/// Byte number (0..8) of the lowest set top-of-byte bit of `m` (non-zero,
/// only top bits set): isolate it, then a multiply gathers the byte number
/// into the top byte. The BPF ISA has no count-trailing-zeros.
#[inline(always)]
fn lowest_byte(m: u64) -> usize {
    let low = m & m.wrapping_neg();
    ((low >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize & 7
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The top bit of each byte of `w` that equals `c`; exact, and branch-free.
#[inline(always)]
fn bytes_eq(w: u64, c: u8) -> u64 {
    let x = w ^ (ONES * c as u64);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Takes the line in `scratch.win` into `scratch.ids`: `LINE_FOUND` (stop)
/// once both are there or the line is garbled, else `LINE_OTHER`.
#[inline(always)]
pub(crate) fn take_txn_line(scratch: *mut Scratch) -> u64 {
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    let s = unsafe { &mut *scratch };
    if s.ids.take(txn_line(&s.win)) {
        LINE_FOUND
    } else {
        LINE_OTHER
    }
}
