//! Decisions as the daemon applies them: read from LAPI's JSON
//! ([`super::wire`]) and checked against `[crowdsec]` before they are sent to the
//! core, so the core never sees the wire format.

use std::time::Duration;

use ipnet::IpNet;

use crate::config::Scope;

/// A decision the maps can enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: i64,
    pub net: IpNet,
    pub scope: Scope,
    pub origin: String,
    pub scenario: String,
    /// Time left.
    pub lasts: Duration,
}

/// Why a listed decision is not enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// A scope other than the configured `Ip`/`Range` (`Country`, `AS`,
    /// `Username`, ...).
    Scope,
    /// A type other than `decision_types` (`captcha`, `throttle`, ...).
    Type,
    /// An origin not in `origins`.
    Origin,
    /// A value that is not an address or network of its scope.
    Value,
    /// A duration that does not parse, or is already over.
    Duration,
    /// The allowlist, `ignoreip`, this host's own addresses, the LAPI's
    /// address or the minimum prefix forbid banning it.
    Protected,
    /// Not a decision that can be read at all (a field of the wrong type,
    /// no positive id).
    Malformed,
}

impl Skip {
    pub const ALL: [Skip; 7] = [
        Skip::Scope,
        Skip::Type,
        Skip::Origin,
        Skip::Value,
        Skip::Duration,
        Skip::Protected,
        Skip::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Scope => "scope",
            Skip::Type => "type",
            Skip::Origin => "origin",
            Skip::Value => "value",
            Skip::Duration => "duration",
            Skip::Protected => "protected",
            Skip::Malformed => "malformed",
        }
    }
}

/// One `GET /v1/decisions/stream` reply, read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pull {
    /// Ids LAPI deleted.
    pub deleted: Vec<i64>,
    /// Each decision listed as new: enforceable, or why not.
    pub new: Vec<Result<Decision, Skip>>,
    /// Entries that could not be read at all, each described.
    pub unreadable: Vec<String>,
}

/// The scope and value LAPI files a network under.
pub fn scope_value(net: &IpNet) -> (Scope, String) {
    if net.prefix_len() == net.max_prefix_len() {
        (Scope::Ip, net.addr().to_string())
    } else {
        (Scope::Range, net.to_string())
    }
}

