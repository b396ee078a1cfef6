//! CrowdSec's Local API (LAPI), the engine fleets share bans through
//! (SPEC §9): its JSON ([`wire`]), the decisions read from it
//! ([`Decision`], [`Pull`]) and the calls shieldd makes
//! ([`client`]): as a bouncer, `GET /v1/decisions/stream`; as a watcher,
//! `POST /v1/alerts` and `DELETE /v1/decisions/{id}`. No HTTP is written
//! by hand: `reqwest` (rustls for `https://`).
//!
//! What the decisions do in the kernel is the daemon's business
//! (`daemon::core::crowdsec`, `daemon::fleet`).

pub mod client;
mod decision;
pub mod wire;

pub use decision::{scope_value, Decision, Pull, Skip};
