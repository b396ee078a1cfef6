//! What the packet's one header walk (see `walk`) should look for: every
//! kind of line the rest of its verdict may read, from the policy and the
//! features that are on. Apart from `walk`, which only searches, so that
//! the walk depends on no feature and every feature may use the walk.

use shield_common::{auth::auth_method, Method, F_SCAN_UA};

use crate::maps::{DEST_POLICY, POLICY};
use crate::walk::{W_CID, W_CREDS, W_TO, W_TXN, W_UA};

/// `shield_packet_wants`' `arg`: a status line rather than a request.
pub(crate) const W_REPLY: u64 = 1 << 16;

/// Every kind a packet's verdict may read after step 8 (`arg`: the
/// request line's method index in bits 8-15, `W_REPLY` for a status line). Asking for one too many costs a little scanning; one too
/// few, a second pass later. A global: its map lookups stay out of the
/// XDP program's frame.
// SAFETY: the name is unique in the object (a global function the verifier checks on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn shield_packet_wants(arg: u64) -> u64 {
    let Some(p) = POLICY.get(0) else {
        return 0;
    };
    let method = ((arg >> 8) & 0xff) as usize;
    let mut w = 0;
    if p.has(F_SCAN_UA) {
        w |= W_UA;
    }
    let calls = crate::calls::on();
    if method == Method::Invite as usize {
        if calls {
            // The To line only for a Call-ID not tracked yet: `calls::invite`
            // walks again for it then.
            w |= W_CID;
        }
        if DEST_POLICY.get(0).is_some_and(|d| d.refuses()) {
            w |= W_TO;
        }
    }
    if method == Method::Cancel as usize && calls {
        w |= W_CID;
    }
    if p.verifies(method) || (arg & W_REPLY != 0 && p.verify_methods != 0) {
        w |= W_TXN;
    }
    // The attempt's Call-ID and CSeq in the same pass: a second pass for
    // them once credentials are found cost more than their two lines.
    if crate::auth::on() && auth_method(method).is_some() {
        w |= W_CREDS | W_TXN;
    }
    w
}
