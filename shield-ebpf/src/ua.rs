//! SPEC §2 step 8: the `User-Agent` search and the scanner list.

use aya_ebpf::EbpfContext;
use shield_common::{Policy, Reason, F_SCAN_UA};

use crate::hook::Ctx;
use crate::maps::SCANNERS;
use crate::pkt::{Outcome, Src};
use crate::scratch::Scratch;
use crate::source::offence;
use crate::walk::{shield_walk, W_UA};
use crate::wants::{shield_packet_wants, W_REPLY};

/// Step 8: a scanner's `User-Agent` in the SIP message at `pay` (`plen`
/// bytes). The packet's one header walk happens here (see `walk`): it also
/// finds what the later steps read for this method (`reply`: a status
/// line).
#[inline(always)]
pub(crate) fn scanner(
    ctx: &Ctx,
    p: &Policy,
    src: &Src,
    (pay, plen): (usize, usize),
    method: usize,
    reply: bool,
    scratch: *mut Scratch,
) -> Option<Outcome> {
    let want = shield_packet_wants((method as u64 & 0xff) << 8 | if reply { W_REPLY } else { 0 });
    let found = shield_walk(ctx.as_ptr().cast(), pay as u64, plen as u64, want);
    if p.has(F_SCAN_UA)
        && found & W_UA != 0
        // SAFETY: this CPU's scratch slot, valid and ours for the whole run (see `scratch`).
        && unsafe { SCANNERS.get(&(*scratch).ua) }.is_some()
    {
        return Some(offence(src, p, Reason::Scanner, method));
    }
    None
}
