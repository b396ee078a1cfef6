//! Destination refusals (SPEC §11) on the daemon's side: the reports the
//! kernel sends, kept and logged.

use aya::maps::{MapData, RingBuf};

use super::Core;
use crate::dest::event::Refusal;
use crate::dest::{masked, Destinations};

impl Core {
    /// The ring buffer of refusal reports, for the task that reads it
    /// (once).
    pub fn take_refusal_events(&mut self) -> Option<RingBuf<MapData>> {
        self.shield.maps.dest.events.take()
    }

    /// The destination policy in force (to decode reports with).
    pub fn destinations(&self) -> &Destinations {
        &self.config.destinations
    }

    /// A refusal the report bucket let through: logged (the number masked
    /// to its last four digits).
    pub fn on_refusal(&mut self, r: &Refusal) {
        tracing::warn!(
            source = %r.source.ip(),
            number = %masked(&r.number),
            rule = %r.rule,
            reason = r.reason.as_str(),
            user_agent = %r.user_agent,
            replied = r.reply,
            "INVITE refused by the destination policy"
        );
    }
}
