//! SPEC §2 steps 2-4: the allowlist, the denylist and bans.

use aya_ebpf::maps::lpm_trie::Key;
use shield_common::{
    BanKey, BanValue, Policy, Reason, ACL_ALLOW, ACL_DENY, F_ALLOW_V4, F_ALLOW_V6, F_BAN_NETS_V4,
    F_BAN_NETS_V6, F_DENY_V4, F_DENY_V6, F_SCOPE_SIP,
};

use crate::maps::{
    ALLOW_V4, ALLOW_V6, BANS, BAN_NETS_V4, BAN_NETS_V6, DENY_V4, DENY_V6,
};
use crate::pkt::{Outcome, Src};
use crate::source::now_ns;

/// Steps 2-4: allowlist, denylist, bans. `Ok(Some(deny or ban))`: the
/// source is denied or banned but `[bans] scope = "sip"` leaves it to the
/// port (step 5).
///
/// The lookups run in the order that is cheapest on the flood path; the
/// verdict follows SPEC §2's order. A source banned by address (the hash,
/// looked up first) carries its allow/deny bits cached in the ban entry, so
/// a banned flood costs one lookup per packet.
#[inline(always)]
pub(crate) fn lists_and_bans(p: &Policy, src: &Src) -> Result<Option<Reason>, Outcome> {
    let key = match *src {
        Src::V4(a) => BanKey::v4(a),
        Src::V6(a) => BanKey::v6(a),
    };
    let (banned, acl) = match BANS.get_ptr_mut(&key) {
        Some(b) if active(b) => (true, cached_acl(b, p, src)),
        _ => (ban_net(p, src), acl_of(p, src)),
    };
    if acl & ACL_ALLOW != 0 {
        return Err(Outcome::of(Reason::Allowlisted));
    }
    let held = if acl & ACL_DENY != 0 {
        Some(Reason::Deny)
    } else if banned {
        Some(Reason::Ban)
    } else {
        None
    };
    if let Some(r) = held {
        if !p.has(F_SCOPE_SIP) {
            // Deny and ban cover all traffic: no need to look at the transport.
            return Err(Outcome::of(r));
        }
    }
    Ok(held)
}

#[inline(always)]
fn active(b: *mut BanValue) -> bool {
    // SAFETY: a map value (or ring record) from a successful lookup, valid for this run; plain integers.
    unsafe { (*b).active(now_ns()) }
}

/// Whether a CIDR ban covers the source (empty tries are not looked up).
#[inline(always)]
fn ban_net(p: &Policy, src: &Src) -> bool {
    match *src {
        Src::V4(a) => ban_net_v4(p, a),
        Src::V6(a) => ban_net_v6(p, a),
    }
}

#[inline(always)]
fn ban_net_v4(p: &Policy, a: [u8; 4]) -> bool {
    p.has(F_BAN_NETS_V4)
        && BAN_NETS_V4
            .get(&Key::new(32, a))
            .is_some_and(|b| b.active(now_ns()))
}

#[inline(always)]
fn ban_net_v6(p: &Policy, a: [u8; 16]) -> bool {
    p.has(F_BAN_NETS_V6)
        && BAN_NETS_V6
            .get(&Key::new(128, a))
            .is_some_and(|b| b.active(now_ns()))
}

/// The source's `ACL_ALLOW` / `ACL_DENY` bits from the tries (empty tries
/// are not looked up).
#[inline(always)]
fn acl_of(p: &Policy, src: &Src) -> u32 {
    let (allow, deny) = match src {
        Src::V4(a) => (
            p.has(F_ALLOW_V4) && ALLOW_V4.get(&Key::new(32, *a)).is_some(),
            p.has(F_DENY_V4) && DENY_V4.get(&Key::new(32, *a)).is_some(),
        ),
        Src::V6(a) => (
            p.has(F_ALLOW_V6) && ALLOW_V6.get(&Key::new(128, *a)).is_some(),
            p.has(F_DENY_V6) && DENY_V6.get(&Key::new(128, *a)).is_some(),
        ),
    };
    (if allow { ACL_ALLOW } else { 0 }) | (if deny { ACL_DENY } else { 0 })
}

/// [`acl_of`] through the ban entry's cache: valid while the lists'
/// generation is the one it was filled in under.
#[inline(always)]
fn cached_acl(b: *mut BanValue, p: &Policy, src: &Src) -> u32 {
    // SAFETY: a ban entry from a successful lookup, valid for this run; plain integers.
    unsafe {
        if core::ptr::read_volatile(&raw const (*b).acl_gen) == p.acl_gen {
            return core::ptr::read_volatile(&raw const (*b).acl);
        }
        let acl = acl_of(p, src);
        // Bits first, then the generation that vouches for them.
        core::ptr::write_volatile(&raw mut (*b).acl, acl);
        core::ptr::write_volatile(&raw mut (*b).acl_gen, p.acl_gen);
        acl
    }
}
