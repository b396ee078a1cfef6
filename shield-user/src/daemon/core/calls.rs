//! Calls seen on the wire (SPEC §13) on the daemon's side: the kernel's
//! ended-call reports into the [`CallBook`], the sweep (expiry through
//! the kernel's expiry program, long calls, the active gauges), and
//! `shieldctl calls`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use shield_common::calls::{Call, CallEvent, CallOutcome, CALL_ANSWERED};
use shield_common::dest::DestClass;
use shield_common::FAMILY_V4;

use super::{Core, CtlError};
use crate::report::{CallItem, CallsReply, TopDestination};
use crate::daemon::calls::{class_of, destination_label, CallBook};
use crate::kernel::monotonic_ns;
use crate::report::CallsSnapshot;
use crate::store::now_ms;

/// Destinations `shieldctl calls` shows.
const TOP_SHOWN: usize = 10;

impl Core {
    /// The ring buffer of ended calls, for the task that reads it (once).
    pub fn take_call_events(&mut self) -> Option<crate::kernel::EventRing> {
        self.shield.maps.calls.events.take()
    }

    /// Ended calls the kernel reported: counted, and logged at debug.
    pub fn on_call_events(&mut self, events: &[CallEvent]) {
        let (now_mono, now_wall) = (monotonic_ns(), now_ms());
        let slots = self.slots();
        for ev in events {
            let iface = iface_name(&slots, ev.iface);
            let started = wall_ms(ev.start_ns, now_mono, now_wall);
            tracing::debug!(
                source = %source(&ev.src, ev.family),
                destination = %destination_label(ev.class, ev.country),
                outcome = ev.outcome().map_or("?", |o| o.as_str()),
                seconds = ev.duration_ns() / 1_000_000_000,
                "call ended"
            );
            self.calls.ended(&iface, ev, now_wall, started);
        }
    }

    /// Every sweep: calls past their time go (the kernel decides, by its
    /// clock, and gives their counts back), long calls are reported once,
    /// and the active gauges are refreshed.
    pub fn sweep_calls(&mut self) {
        let live = match self.shield.maps.calls.calls() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("reading CALLS failed: {e}");
                return;
            }
        };
        let now = monotonic_ns();
        let max_ns = self.config.calls.kernel().max_duration_ns;
        let mut kept = Vec::with_capacity(live.len());
        for (id, c) in live {
            if c.expired(now, max_ns) {
                match self.shield.expire_call(id) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => tracing::warn!("expiring a call failed: {e}"),
                }
            }
            kept.push((id, c));
        }
        let slots = self.slots();
        let names: Vec<String> = kept.iter().map(|(_, c)| iface_name(&slots, c.iface)).collect();
        let long_ns = u64::try_from(self.config.calls.long_call.as_nanos()).unwrap_or(u64::MAX);
        let rows = kept.iter().zip(&names).map(|((id, c), n)| (n.as_str(), *id, c));
        for (_, c) in self.calls.swept(rows, now, long_ns) {
            tracing::warn!(
                source = %source(&c.src, c.family),
                destination = %destination_label(c.class, c.country),
                number = %masked_number(&c),
                minutes = now.saturating_sub(c.answer_ns) / 60_000_000_000,
                "long call: still up after long_call"
            );
        }
    }

    /// `calls`: the calls in progress, oldest first, and the destinations
    /// of the last hour.
    pub fn calls(&mut self) -> Result<CallsReply, CtlError> {
        let live = self
            .shield
            .maps
            .calls
            .calls()
            .map_err(CtlError::map("reading CALLS"))?;
        let (now, wall) = (monotonic_ns(), now_ms());
        let slots = self.slots();
        let mut items: Vec<CallItem> = live
            .iter()
            .map(|(_, c)| CallItem {
                source: source(&c.src, c.family),
                interface: iface_name(&slots, c.iface),
                country: if c.country != 0 { crate::dest::country_label(c.country) } else { String::new() },
                class: class_of(c.class).as_str().into(),
                number: masked_number(c),
                state: if c.state == CALL_ANSWERED { "answered" } else { "ringing" }.into(),
                age_secs: now.saturating_sub(c.start_ns) / 1_000_000_000,
            })
            .collect();
        items.sort_by(|a, b| b.age_secs.cmp(&a.age_secs));
        let started = live
            .iter()
            .map(|(_, c)| (wall_ms(c.start_ns, now, wall), destination_label(c.class, c.country)));
        let top = self
            .calls
            .top_destinations(started.collect::<Vec<_>>(), wall, TOP_SHOWN)
            .into_iter()
            .map(|(destination, calls)| TopDestination { destination, calls })
            .collect();
        Ok(CallsReply { calls: items, top })
    }

    /// What a scrape reports: every (attached interface, class, outcome)
    /// listed, zeros included (stable series for rates and alerts).
    pub(super) fn calls_snapshot(&self) -> CallsSnapshot {
        let b: &CallBook = &self.calls;
        let mut ifaces: Vec<String> = self.attachments.iter().map(|a| a.iface.clone()).collect();
        for (i, _, _) in b.totals.keys() {
            if !ifaces.contains(i) {
                ifaces.push(i.clone());
            }
        }
        let mut s = CallsSnapshot {
            long_calls: b.long_now,
            ..CallsSnapshot::default()
        };
        for i in &ifaces {
            for class in DestClass::ALL {
                for o in CallOutcome::ALL {
                    let n = b.totals.get(&(i.clone(), class, o)).copied().unwrap_or(0);
                    s.totals.push((i.clone(), class, o, n));
                }
                let n = b.active.get(&(i.clone(), class)).copied().unwrap_or(0);
                s.active.push((i.clone(), class, n));
            }
        }
        s.durations = b.durations.iter().map(|(c, h)| (*c, h.clone())).collect();
        s.by_country = b.by_country.iter().map(|((i, c, o), n)| (i.clone(), *c, *o, *n)).collect();
        s
    }
}

/// The wall time (Unix ms) of monotonic `t_ns`, given both clocks now.
fn wall_ms(t_ns: u64, now_mono: u64, now_wall: u64) -> u64 {
    now_wall.saturating_sub(now_mono.saturating_sub(t_ns) / 1_000_000)
}

fn iface_name(slots: &[(String, u32)], slot: u8) -> String {
    slots
        .iter()
        .find(|(_, s)| *s == u32::from(slot))
        .map_or_else(|| "unregistered".into(), |(n, _)| n.clone())
}

/// A caller's key as text: an IPv4 address, or an IPv6 prefix's address.
fn source(key: &[u8; 16], family: u8) -> String {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(key[12], key[13], key[14], key[15])).to_string()
    } else {
        IpAddr::V6(Ipv6Addr::from(*key)).to_string()
    }
}

/// The dialled number with all but its last four digits masked (the
/// kernel keeps no more): `+xxxxxxx6789`, `xxxx1234`, or `other`.
pub fn masked_number(c: &Call) -> String {
    if class_of(c.class) == DestClass::Other || c.digits == 0 {
        return "other".into();
    }
    let shown = usize::from(c.digits.min(4));
    let tail: String = (0..shown)
        .map(|i| {
            let nib = (c.tail >> (4 * (shown - 1 - i))) & 0xf;
            char::from(b'0' + nib as u8)
        })
        .collect();
    let plus = if class_of(c.class) == DestClass::International { "+" } else { "" };
    format!("{plus}{}{tail}", "x".repeat(usize::from(c.digits) - shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_show_their_last_four_digits_only() {
        let mut c = Call { class: 1, digits: 11, tail: 0x6789, ..Call::default() };
        assert_eq!(masked_number(&c), "+xxxxxxx6789");
        c.class = 0;
        c.digits = 2;
        c.tail = 0x0012;
        assert_eq!(masked_number(&c), "12");
        c.class = 2;
        assert_eq!(masked_number(&c), "other");
        assert_eq!(source(&shield_common::src_key_v4([192, 0, 2, 1]), FAMILY_V4), "192.0.2.1");
        assert_eq!(wall_ms(1_000_000_000, 3_000_000_000, 10_000), 8_000);
    }
}
