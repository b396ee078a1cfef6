//! What the daemon reports about calls (SPEC §13): `shieldctl calls`'s
//! reply, and the figures a scrape encodes.

use serde::{Deserialize, Serialize};
use shield_common::calls::CallOutcome;
use shield_common::dest::DestClass;

/// `calls`: calls in progress (oldest first) and the destinations called
/// in the last hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallsReply {
    pub calls: Vec<CallItem>,
    pub top: Vec<TopDestination>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallItem {
    /// The caller (an IPv4 address, or an IPv6 prefix's address).
    pub source: String,
    pub interface: String,
    /// E.164 country code (`+33`) of an international number, else empty.
    pub country: String,
    /// `national`, `international` or `other`.
    pub class: String,
    /// All but the last four digits masked (`+xxxxxxx6789`).
    pub number: String,
    /// `ringing` or `answered`.
    pub state: String,
    pub age_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopDestination {
    /// A country code (`+33`) or a class (`national`, `other`).
    pub destination: String,
    /// Calls started within the last hour.
    pub calls: u64,
}

/// Upper bounds of `sipshield_call_duration_seconds`' buckets: 5 s to 4 h
/// (a call's life, not a request's).
pub const DURATION_BUCKETS: [f64; 12] =
    [5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0];

/// A duration histogram: per-bucket counts (the last is +Inf), sum, count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, secs: f64) {
        let i = DURATION_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += secs;
        self.count += 1;
    }
}

/// What a scrape reports about calls.
#[derive(Clone, Debug, Default)]
pub struct CallsSnapshot {
    /// (interface, class, outcome) → ended calls.
    pub totals: Vec<(String, DestClass, CallOutcome, u64)>,
    /// (interface, class) → calls in progress.
    pub active: Vec<(String, DestClass, u64)>,
    /// class → answered calls' durations.
    pub durations: Vec<(DestClass, Histogram)>,
    /// (interface, country code, outcome) → ended international calls.
    pub by_country: Vec<(String, u32, CallOutcome, u64)>,
    pub long_calls: u64,
}

