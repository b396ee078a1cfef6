//! Who made a ban: one type for the ban book, the store's records and the
//! control protocol (where it travels as `origin` + `origin_kind`).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "OriginWire", into = "OriginWire")]
pub enum Origin {
    /// `shieldctl ban`.
    Manual,
    /// Failed digest authentications seen on the wire (SPEC §12).
    Auth,
    /// The kernel reported a repeat offender (`[bans.escalate]`).
    Escalation,
    /// Found in the kernel's map with no record (made by a daemon that
    /// died before persisting it).
    Kernel,
    /// A `[[jail]]`, by name.
    Jail(Arc<str>),
    /// A CrowdSec decision, by its LAPI origin (`crowdsec`, `cscli`,
    /// `CAPI`...). Never in the ban book: LAPI is its record.
    Crowdsec(Arc<str>),
}

/// An origin string that names none of the above.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown ban origin {0:?}")]
pub struct UnknownOrigin(pub String);

impl Origin {
    /// The name operators see (metrics label, `shieldctl banned`).
    pub fn label(&self) -> Cow<'_, str> {
        match self {
            Origin::Jail(name) => Cow::Borrowed(name),
            Origin::Crowdsec(o) => Cow::Owned(format!("crowdsec/{o}")),
            other => Cow::Borrowed(other.kind()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Manual => "manual",
            Origin::Escalation => "escalation",
            Origin::Auth => "auth",
            Origin::Kernel => "kernel",
            Origin::Jail(_) => "jail",
            Origin::Crowdsec(_) => "crowdsec",
        }
    }

    /// The store's form: jails are `jail:<name>`, so a jail called
    /// "manual" cannot be mistaken for an operator.
    pub fn to_record(&self) -> String {
        match self {
            Origin::Jail(name) => format!("jail:{name}"),
            Origin::Crowdsec(o) => format!("crowdsec:{o}"),
            other => other.kind().to_string(),
        }
    }

    /// The store's form read back; anything else is an error (a record
    /// this version cannot place is not silently the kernel's).
    pub fn from_record(s: &str) -> Result<Origin, UnknownOrigin> {
        match s {
            "manual" => Ok(Origin::Manual),
            "escalation" => Ok(Origin::Escalation),
            "auth" => Ok(Origin::Auth),
            "kernel" => Ok(Origin::Kernel),
            _ => match s.split_once(':') {
                Some(("jail", name)) if !name.is_empty() => Ok(Origin::Jail(name.into())),
                Some(("crowdsec", o)) if !o.is_empty() => Ok(Origin::Crowdsec(o.into())),
                _ => Err(UnknownOrigin(s.into())),
            },
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// The wire form: the label operators read, and its kind.
#[derive(Serialize, Deserialize)]
struct OriginWire {
    origin: String,
    origin_kind: String,
}

impl From<Origin> for OriginWire {
    fn from(o: Origin) -> OriginWire {
        OriginWire {
            origin: o.label().into_owned(),
            origin_kind: o.kind().into(),
        }
    }
}

impl TryFrom<OriginWire> for Origin {
    type Error = UnknownOrigin;

    fn try_from(w: OriginWire) -> Result<Origin, UnknownOrigin> {
        let unknown = || UnknownOrigin(format!("{}/{}", w.origin_kind, w.origin));
        let fixed = match w.origin_kind.as_str() {
            "jail" => return Ok(Origin::Jail(w.origin.as_str().into())),
            "crowdsec" => {
                let o = w.origin.strip_prefix("crowdsec/").ok_or_else(unknown)?;
                return Ok(Origin::Crowdsec(o.into()));
            }
            "manual" => Origin::Manual,
            "escalation" => Origin::Escalation,
            "auth" => Origin::Auth,
            "kernel" => Origin::Kernel,
            _ => return Err(unknown()),
        };
        match w.origin == fixed.kind() {
            true => Ok(fixed),
            false => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> [Origin; 7] {
        [
            Origin::Manual,
            Origin::Auth,
            Origin::Escalation,
            Origin::Kernel,
            Origin::Jail("manual".into()),
            Origin::Jail("kam".into()),
            Origin::Crowdsec("cscli".into()),
        ]
    }

    #[test]
    fn origins_round_trip_through_the_store_and_the_wire() {
        for o in all() {
            assert_eq!(Origin::from_record(&o.to_record()), Ok(o.clone()));
            let wire = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Origin>(&wire).unwrap(), o, "{wire}");
        }
        assert_eq!(Origin::Jail("kam".into()).label(), "kam");
        assert_eq!(
            serde_json::to_string(&Origin::Crowdsec("CAPI".into())).unwrap(),
            r#"{"origin":"crowdsec/CAPI","origin_kind":"crowdsec"}"#
        );
    }

    #[test]
    fn an_unknown_origin_is_an_error_not_the_kernel() {
        for s in ["", "bogus", "jail:", "crowdsec:", "Manual", "kernel:x"] {
            assert!(Origin::from_record(s).is_err(), "{s:?}");
        }
        for wire in [
            r#"{"origin":"x","origin_kind":"bogus"}"#,
            r#"{"origin":"kernel","origin_kind":"manual"}"#,
            r#"{"origin":"cscli","origin_kind":"crowdsec"}"#,
        ] {
            assert!(serde_json::from_str::<Origin>(wire).is_err(), "{wire}");
        }
    }
}
