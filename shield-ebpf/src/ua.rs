//! SPEC §2 step 8: the `User-Agent` search and the scanner list.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use shield_common::{
    sip::{self, UaLine, UA_MAX_U_LINES},
    Policy, Reason, F_SCAN_UA,
};

use crate::lines::{self, LINE_BAD, LINE_FOUND, LINE_OTHER};
use crate::maps::{SCANNERS, SCRATCH};
use crate::pkt::{Outcome, Pkt, Src};
use crate::scratch::Scratch;
use crate::source::offence;

/// Step 8: a scanner's `User-Agent` in the SIP message at `pay` (`plen`
/// bytes).
#[inline(always)]
pub(crate) fn scanner(
    ctx: &XdpContext,
    p: &Policy,
    src: &Src,
    pay: usize,
    plen: usize,
    method: usize,
    scratch: *mut Scratch,
) -> Option<Outcome> {
    if p.has(F_SCAN_UA)
        && shield_user_agent(ctx.ctx, pay as u64, plen as u64) == 1
        // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
        && unsafe { SCANNERS.get(&(*scratch).ua) }.is_some()
    {
        return Some(offence(src, p, Reason::Scanner, method));
    }
    None
}

/// Looks for the `User-Agent` header (see `lines::find_line`); returns 1
/// with the product token in `SCRATCH.ua`, or 0. The line itself is parsed
/// by the shared `sip::ua_line`.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_user_agent(ctx: *mut xdp_md, pay: u64, plen: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let pkt = Pkt::new(&XdpContext::new(ctx));
    lines::find_line(
        &pkt,
        scratch,
        pay,
        plen,
        UA_MAX_U_LINES,
        |j, limit| shield_scan_block(ctx, pay, j, limit),
        |at, avail| shield_ua_line(ctx, at, avail),
    )
}

/// `sip::ua_line` on the line at payload offset `at` (`avail` bytes
/// left); a token goes to `SCRATCH.ua`.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_ua_line(ctx: *mut xdp_md, at: u64, avail: u64) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return LINE_BAD;
    };
    if !lines::copy_window(&Pkt::new(&XdpContext::new(ctx)), scratch, at, avail) {
        return LINE_BAD;
    }
    // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
    match sip::ua_line(unsafe { &(*scratch).win }) {
        UaLine::NotUa => LINE_OTHER,
        UaLine::NoToken => LINE_BAD,
        UaLine::Token(k) => {
            // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
            unsafe { (*scratch).ua = k };
            LINE_FOUND
        }
    }
}

/// `lines::scan_block` for lines starting with `u` or `U`.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_scan_block(ctx: *mut xdp_md, pay: u64, j: u64, limit: u64) -> u64 {
    lines::scan_block(&Pkt::new(&XdpContext::new(ctx)), pay, j, limit, b'u')
}
