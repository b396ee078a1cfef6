//! A refusal report from the kernel (`DEST_EVENTS`), decoded: who called
//! what, which rule refused it, and the INVITE itself for its 403.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use shield_common::dest::{self, URI_WINDOW};
use shield_common::{Reason, RefusalEvent, FAMILY_V4, REFUSAL_REPLY, REFUSAL_REPORT};

use super::Destinations;

/// Bytes of a `User-Agent` value kept (escaped) in a refusal's record.
const MAX_USER_AGENT: usize = 200;

/// A refused INVITE as the daemon keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The caller: the INVITE's source.
    pub source: SocketAddr,
    /// Where the INVITE was sent: the 403 leaves from here.
    pub local: SocketAddr,
    /// The dialled number, normalised (`+` and digits, or as dialled).
    pub number: String,
    /// The deciding rule, as configured (the metrics' `rule` label).
    pub rule: String,
    pub reason: Reason,
    /// The caller's `User-Agent`, escaped; empty if none.
    pub user_agent: String,
    pub ifindex: u32,
    /// The reply bucket granted a 403.
    pub reply: bool,
    /// The report bucket granted a record.
    pub report: bool,
    /// The INVITE's UDP payload (empty if it did not fit the report).
    pub invite: Vec<u8>,
}

impl Refusal {
    /// Decodes a ring-buffer record; `None` for one that is not a refusal
    /// report (short, or an unknown reason).
    pub fn decode(raw: &[u8], policy: &Destinations) -> Option<Refusal> {
        if raw.len() < std::mem::size_of::<RefusalEvent>() {
            return None;
        }
        // SAFETY: the kernel wrote a whole RefusalEvent (size checked); it
        // may be unaligned in the ring.
        let ev = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<RefusalEvent>()) };
        let reason = match Reason::from_u8(ev.reason)? {
            r @ (Reason::Destination | Reason::DestinationRate | Reason::Calls) => r,
            _ => return None,
        };
        let invite = ev.payload[..(ev.len as usize).min(ev.payload.len())].to_vec();
        Some(Refusal {
            source: SocketAddr::new(addr(ev.family, ev.src), ev.sport),
            local: SocketAddr::new(addr(ev.family, ev.dst), ev.dport),
            number: number(&invite, policy),
            rule: policy.rule_name(ev.rule),
            reason,
            user_agent: user_agent(&invite),
            ifindex: ev.ifindex,
            reply: ev.flags & REFUSAL_REPLY != 0,
            report: ev.flags & REFUSAL_REPORT != 0,
            invite,
        })
    }
}

fn addr(family: u8, a: [u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

/// The INVITE's dialled number, read as the kernel read it.
fn number(invite: &[u8], policy: &Destinations) -> String {
    let Some(uri) = invite.get(7..) else {
        return "unreadable".into();
    };
    let mut w = [0u8; URI_WINDOW];
    let n = uri.len().min(URI_WINDOW);
    w[..n].copy_from_slice(&uri[..n]);
    super::show(&dest::normalise(dest::user_part(&w), &policy.policy()))
}

/// The `User-Agent` header's value, escaped and bounded.
fn user_agent(invite: &[u8]) -> String {
    let text = String::from_utf8_lossy(invite);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.trim().eq_ignore_ascii_case("user-agent") {
            let v: String = value.trim().chars().take(MAX_USER_AGENT).collect();
            return crate::text::escaped(&v).into_owned();
        }
    }
    String::new()
}
