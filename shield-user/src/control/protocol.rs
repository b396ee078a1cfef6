//! The control protocol: one JSON object per line each way. A connection
//! may carry several requests; each gets exactly one response line.
//!
//! ```text
//! → {"cmd":"ban","net":"198.51.100.7","duration":3600,"reason":"scan"}
//! ← {"ok":true,"data":{"net":"198.51.100.7/32","expires_in_secs":3600,...}}
//! → {"cmd":"ban","net":"198.51.100.7/8","duration":"forever"}
//! ← {"ok":false,"error":{"kind":"bad_input","message":"net: ..."}}
//! ```
//!
//! Addresses travel as text and are typed on both ends ([`Net`]): parsed
//! once, when a request is read, like the config file's CIDRs. How long a
//! ban lasts has one encoding, [`Lasts`]: seconds, or `"forever"`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

// The replies' data: what the daemon reports, defined beside the core
// that produces it; this module adds the envelope, the requests and which
// reply each request gets.
pub use crate::origin::Origin;
pub use crate::report::*;

/// Values that fail to parse are the client's bad input (exit 2), not a
/// malformed request: their errors start with the field's name.
const VALUE_FIELDS: [&str; 2] = ["net: ", "duration: "];

/// Longest request line the daemon reads; longer is refused.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// A request. On the wire every field it does not know is an error, so a
/// misspelt or newer option is never silently ignored (each request's
/// struct denies unknown fields, the commands without arguments too).
/// Each request has its reply type ([`Call`]).
///
/// A new request: its struct here with a [`Call`] impl naming its reply,
/// a variant below, its `name`/`changes_state` arms, and its handler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// `remote = "Self"`: the derives become `Request::serialize` /
// `Request::deserialize`, which the trait impls below wrap.
#[serde(remote = "Self", tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Ban(Ban),
    Unban(Unban),
    /// Every ban; with `net`, one source's record and history.
    Banned(Banned),
    Allow(Allow),
    Deny(Deny),
    /// Verified sources (SPEC §8).
    Verified(Verified),
    Verify(Verify),
    Unverify(Unverify),
    /// Refusals by the destination policy (SPEC §11), newest first.
    Refused(Refused),
    /// What the destination policy in force decides about a number;
    /// nothing is sent.
    Destination(Destination),
    /// Calls in progress and the last hour's destinations (SPEC §13).
    Calls(Calls),
    Stats(Stats),
    Status(Status),
    Reload(Reload),
    Detach(Detach),
    /// Failed digest authentications seen on the wire (SPEC §12).
    Auth(Auth),
}

/// A request and the type of its reply's `data`: the daemon must answer
/// with it, and the client reads it as that.
pub trait Call: Into<Request> {
    type Reply: Serialize + serde::de::DeserializeOwned;
}

/// Declares the request structs without arguments, and every request's
/// reply type and conversion into [`Request`].
macro_rules! calls {
    (empty: $($empty:ident),*; $($name:ident => $reply:ty),* $(,)?) => {
        $(
            #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
            #[serde(deny_unknown_fields)]
            pub struct $empty {}
        )*
        $(
            impl Call for $name {
                type Reply = $reply;
            }
            impl From<$name> for Request {
                fn from(r: $name) -> Request {
                    Request::$name(r)
                }
            }
        )*
    };
}

calls! {
    empty: Verified, Calls, Stats, Status, Reload, Detach, Auth;
    Ban => BanInfo,
    Unban => UnbanReply,
    Allow => ListReply,
    Deny => ListReply,
    Verified => VerifiedReply,
    Verify => VerifiedInfo,
    Unverify => UnverifyReply,
    Refused => RefusedReply,
    Destination => DestinationReply,
    Calls => CallsReply,
    Stats => StatsReply,
    Status => StatusReply,
    Reload => ReloadReply,
    Detach => DetachReply,
    Auth => AuthReply,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    pub net: Net,
    /// `None`: `[bans] bantime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Lasts>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Admit a prefix wider than `[bans] min_prefix_v4/v6`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unban {
    #[serde(default)]
    pub net: Option<Net>,
    #[serde(default)]
    pub all: bool,
}

/// `banned`: two calls on the wire's one command, as their replies differ
/// ([`BannedAll`], [`BannedSource`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Banned {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Net>,
}

/// Every ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BannedAll;

/// One source's bans and history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BannedSource {
    pub net: Net,
}

impl Call for BannedAll {
    type Reply = BannedReply;
}

impl From<BannedAll> for Request {
    fn from(_: BannedAll) -> Request {
        Request::Banned(Banned { net: None })
    }
}

impl Call for BannedSource {
    type Reply = SourceReply;
}

impl From<BannedSource> for Request {
    fn from(b: BannedSource) -> Request {
        Request::Banned(Banned { net: Some(b.net) })
    }
}

/// `allow` and `deny` take the same arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListChange {
    pub op: ListOp,
    #[serde(default)]
    pub net: Option<Net>,
    /// `add` of a prefix wider than `[bans] min_prefix_v4/v6`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Allow(pub ListChange);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Deny(pub ListChange);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub net: Net,
    /// `None`: `[verify] ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Lasts>,
    /// Admit a prefix wider than `[bans] min_prefix_v4/v6`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unverify {
    pub net: Net,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refused {
    /// Sources within this network only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Net>,
    /// Refused within the last this many seconds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// At most this many rows (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub number: String,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Request::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Request {
    /// Through [`UniqueKeys`] first: a key repeated anywhere is refused.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Request, D::Error> {
        use serde::de::Error;
        let fields = d.deserialize_map(UniqueKeys)?;
        Request::deserialize(serde_json::Value::Object(fields)).map_err(D::Error::custom)
    }
}
/// Reads a JSON object into a map, refusing a key repeated in any object
/// at any depth: `serde_json`'s own maps keep the last of them, so
/// `{"cmd":"status","cmd":"detach"}` would be a detach.
struct UniqueKeys;

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = serde_json::Map<String, serde_json::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{key}`: each key may appear once"
                )));
            }
            let UniqueValue(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(out)
    }
}

/// Any JSON value, its objects read by [`UniqueKeys`].
struct UniqueValue(serde_json::Value);

impl<'de> Deserialize<'de> for UniqueValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UniqueValue, D::Error> {
        d.deserialize_any(UniqueValueVisitor).map(UniqueValue)
    }
}

struct UniqueValueVisitor;

impl<'de> Visitor<'de> for UniqueValueVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<serde_json::Value, E> {
        Ok(b.into())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<serde_json::Value, E> {
        Ok(n.into())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<serde_json::Value, E> {
        Ok(n.into())
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<serde_json::Value, E> {
        Ok(n.into())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<serde_json::Value, E> {
        Ok(s.into())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<serde_json::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(UniqueValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(out.into())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<serde_json::Value, A::Error> {
        UniqueKeys.visit_map(map).map(serde_json::Value::Object)
    }
}

impl Request {
    /// Parses one request line; the error is the reply to send.
    pub fn parse(line: &[u8]) -> Result<Request, Response> {
        serde_json::from_slice::<Request>(line).map_err(|e| {
            let text = e.to_string();
            match VALUE_FIELDS.iter().any(|f| text.starts_with(f)) {
                // serde_json appends " at line 1 column N": not for people.
                true => Response::error(
                    ErrorKind::BadInput,
                    text.split(" at line ").next().unwrap_or(&text).to_string(),
                ),
                false => Response::error(ErrorKind::BadRequest, format!("malformed request: {e}")),
            }
        })
    }

    /// The `cmd` of the request.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ban(_) => "ban",
            Request::Unban(_) => "unban",
            Request::Banned(_) => "banned",
            Request::Allow(_) => "allow",
            Request::Deny(_) => "deny",
            Request::Verified(_) => "verified",
            Request::Verify(_) => "verify",
            Request::Unverify(_) => "unverify",
            Request::Refused(_) => "refused",
            Request::Destination(_) => "destination",
            Request::Calls(_) => "calls",
            Request::Stats(_) => "stats",
            Request::Status(_) => "status",
            Request::Reload(_) => "reload",
            Request::Detach(_) => "detach",
            Request::Auth(_) => "auth",
        }
    }

    /// Whether the request changes state (logged with the peer's uid).
    pub fn changes_state(&self) -> bool {
        match self {
            Request::Banned(_)
            | Request::Verified(_)
            | Request::Refused(_)
            | Request::Destination(_)
            | Request::Calls(_)
            | Request::Stats(_)
            | Request::Auth(_)
            | Request::Status(_) => false,
            Request::Allow(Allow(l)) | Request::Deny(Deny(l)) => l.op != ListOp::List,
            _ => true,
        }
    }
}

/// Why a request failed; decides `shieldctl`'s exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not a request at all (malformed JSON, too long, unknown command).
    BadRequest,
    /// A well-formed request with a bad argument, or a configuration file
    /// that does not validate (exit 2).
    BadInput,
    /// The daemon or the kernel failed (exit 1).
    Failed,
    /// The daemon serves as many control connections as it allows (for
    /// this peer, or in total) and refused this one before reading
    /// anything from it: retrying soon is safe, nothing was done.
    Busy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
    /// Further lines, e.g. every problem of a config file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    /// A success with a caveat, e.g. a change in force in the kernel that
    /// could not be saved to state_dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl Response {
    pub fn ok(data: impl Serialize) -> Response {
        match serde_json::to_value(data) {
            Ok(data) => Response {
                ok: true,
                error: None,
                data,
                warning: None,
            },
            Err(e) => Response::error(ErrorKind::Failed, format!("encoding the reply: {e}")),
        }
    }

    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(ErrorBody {
                kind,
                message: message.into(),
                details: Vec::new(),
            }),
            data: serde_json::Value::Null,
            warning: None,
        }
    }

    pub fn error_with(
        kind: ErrorKind,
        message: impl Into<String>,
        details: Vec<String>,
    ) -> Response {
        Response {
            ok: false,
            error: Some(ErrorBody {
                kind,
                message: message.into(),
                details,
            }),
            data: serde_json::Value::Null,
            warning: None,
        }
    }

    /// The data of a successful reply to a `C`, as `C`'s reply type.
    pub fn into_reply<C: Call>(self) -> Result<C::Reply, serde_json::Error> {
        serde_json::from_value(self.data)
    }

    /// The same reply carrying `warning`.
    pub fn with_warning(mut self, warning: Option<String>) -> Response {
        self.warning = warning;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shield_common::{Reason, Verdict};

    fn net(s: &str) -> Net {
        Net(s.parse().unwrap())
    }

    #[test]
    fn bad_values_are_bad_input_naming_the_field_and_the_rest_bad_requests() {
        for (line, kind, has) in [
            (r#"{"cmd":"ban","net":"198.51.100.0/8"}"#, ErrorKind::BadInput, "net: "),
            (r#"{"cmd":"ban","net":"nonsense"}"#, ErrorKind::BadInput, "net: "),
            (r#"{"cmd":"ban","net":"192.0.2.1","duration":0}"#, ErrorKind::BadInput, "duration: 0 s"),
            (r#"{"cmd":"ban","net":"192.0.2.1","duration":-5}"#, ErrorKind::BadInput, "negative"),
            (r#"{"cmd":"ban","net":"192.0.2.1","duration":"always"}"#, ErrorKind::BadInput, "forever"),
            (r#"{"cmd":"ban","net":"192.0.2.1","bogus":1}"#, ErrorKind::BadRequest, "bogus"),
            ("not json", ErrorKind::BadRequest, "malformed"),
        ] {
            let e = Request::parse(line.as_bytes()).unwrap_err();
            let body = e.error.expect("an error");
            assert_eq!(body.kind, kind, "{line}: {}", body.message);
            assert!(body.message.contains(has), "{line}: {}", body.message);
            if kind == ErrorKind::BadInput {
                assert!(!body.message.contains(" at line "), "{}", body.message);
            }
        }
        let forever: Request =
            serde_json::from_str(r#"{"cmd":"ban","net":"2001:db8::1","duration":"forever"}"#).unwrap();
        assert_eq!(
            forever,
            Request::Ban(Ban {
                net: net("2001:db8::1/128"),
                duration: Some(Lasts::Forever),
                reason: None,
                force: false,
            })
        );
    }

    #[test]
    fn requests_parse_from_their_wire_form() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"ban","net":"192.0.2.1","duration":60}"#).unwrap();
        assert_eq!(
            r,
            Request::Ban(Ban {
                net: net("192.0.2.1/32"),
                duration: Some(Lasts::Secs(60)),
                reason: None,
                force: false,
            })
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"allow","op":"list"}"#).unwrap();
        assert!(!r.changes_state());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"ban","net":"x","bogus":1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(),
            Request::Status(Status {})
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"format_disk"}"#).is_err());
        let line = serde_json::to_string(&Request::Unban(Unban {
            net: None,
            all: true,
        }))
        .unwrap();
        assert_eq!(line, r#"{"cmd":"unban","net":null,"all":true}"#);
    }

    #[test]
    fn unknown_fields_are_refused_by_name_for_every_command() {
        for line in [
            r#"{"cmd":"ban","net":"192.0.2.1","bogus":1}"#,
            r#"{"bogus":1,"cmd":"unban","all":true}"#,
            r#"{"cmd":"allow","op":"list","bogus":null}"#,
            r#"{"cmd":"status","bogus":1}"#,
            r#"{"cmd":"banned","bogus":{}}"#,
            r#"{"cmd":"detach","bogus":"now"}"#,
            r#"{"cmd":"refused","bogus":1}"#,
            r#"{"cmd":"destination","number":"1","bogus":1}"#,
        ] {
            let e = serde_json::from_str::<Request>(line)
                .unwrap_err()
                .to_string();
            assert!(e.contains("unknown field `bogus`"), "{line}: {e}");
        }
        assert!(serde_json::from_str::<Request>("[\"status\"]").is_err());
        assert!(serde_json::from_str::<Request>(r#"{"net":"192.0.2.1"}"#).is_err());
    }

    #[test]
    fn a_repeated_key_is_refused_by_name_at_any_depth() {
        for (line, key) in [
            (r#"{"cmd":"status","cmd":"detach"}"#, "cmd"),
            (r#"{"cmd":"detach","c\u006dd":"status"}"#, "cmd"),
            (
                r#"{"cmd":"ban","net":"192.0.2.1","net":"192.0.2.2"}"#,
                "net",
            ),
            (r#"{"cmd":"banned","net":null,"x":[{"k":1,"k":2}]}"#, "k"),
        ] {
            let body = Request::parse(line.as_bytes()).unwrap_err().error.unwrap();
            assert_eq!(body.kind, ErrorKind::BadRequest, "{line}");
            assert!(
                body.message.contains(&format!("duplicate key `{key}`")),
                "{line}: {}",
                body.message
            );
        }
        // Equal keys in different objects are no repeat.
        let r = Request::parse(br#"{"cmd":"ban","net":"192.0.2.1","reason":"x"}"#).unwrap();
        assert!(matches!(r, Request::Ban(_)));
        assert!(serde_json::from_str::<Request>(r#"["status"]"#).is_err());
    }

    #[test]
    fn every_request_round_trips() {
        let all = [
            Request::Ban(Ban {
                net: net("192.0.2.0/24"),
                duration: Some(Lasts::Forever),
                reason: Some("r".into()),
                force: true,
            }),
            Request::Unban(Unban {
                net: Some(net("192.0.2.1/32")),
                all: false,
            }),
            BannedAll.into(),
            BannedSource {
                net: net("198.51.100.7/32"),
            }
            .into(),
            Allow(ListChange {
                op: ListOp::Add,
                net: Some(net("192.0.2.1/32")),
                force: false,
            })
            .into(),
            Deny(ListChange {
                op: ListOp::List,
                net: None,
                force: false,
            })
            .into(),
            Verified {}.into(),
            Verify {
                net: net("192.0.2.0/24"),
                ttl: Some(Lasts::Secs(60)),
                force: true,
            }
            .into(),
            Unverify {
                net: net("192.0.2.0/24"),
            }
            .into(),
            Refused {
                net: Some(net("2001:db8::/32")),
                since: Some(3600),
                limit: Some(5),
            }
            .into(),
            Refused::default().into(),
            Destination {
                number: "+33 1 23".into(),
            }
            .into(),
            Stats {}.into(),
            Status {}.into(),
            Reload {}.into(),
            Detach {}.into(),
        ];
        for r in all {
            let line = serde_json::to_string(&r).unwrap();
            assert!(
                line.contains(&format!("\"cmd\":\"{}\"", r.name())),
                "{line}"
            );
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        }
    }

    #[test]
    fn a_time_left_may_be_zero_where_a_duration_may_not() {
        let ban = r#"{"net":"192.0.2.1/32","origin":"manual","origin_kind":"manual","reason":"r","created":1,"expires_in_secs":0}"#;
        let listed: BannedReply = serde_json::from_str(&format!(r#"{{"bans":[{ban}]}}"#)).unwrap();
        assert_eq!(listed.bans[0].expires_in_secs, Lasts::Secs(0));
        let one: SourceReply = serde_json::from_str(&format!(
            r#"{{"source":"192.0.2.1/32","bans":[{}],"times_banned":1,"history":[]}}"#,
            ban.replace('}', r#","detail":""}"#)
        ))
        .unwrap();
        assert_eq!(one.bans[0].ban.expires_in_secs, Lasts::Secs(0));
        let v: VerifiedInfo =
            serde_json::from_str(r#"{"net":"192.0.2.1/32","how":"operator","expires_in_secs":0}"#)
                .unwrap();
        assert_eq!(v.expires_in_secs, Lasts::Secs(0));
        assert!(Request::parse(br#"{"cmd":"ban","net":"192.0.2.1","duration":0}"#).is_err());
    }

    #[test]
    fn replies_are_typed_and_keep_their_wire_form() {
        let ban = r#"{"net":"192.0.2.0/24","origin":"kam","origin_kind":"jail","reason":"r","created":1,"expires_in_secs":5}"#;
        let b: BanInfo = serde_json::from_str(ban).unwrap();
        assert_eq!(b.net, net("192.0.2.0/24"));
        assert_eq!(b.origin, Origin::Jail("kam".into()));
        assert_eq!(serde_json::to_string(&b).unwrap(), ban);
        for bad in [
            ban.replace(r#""jail""#, r#""bogus""#),
            ban.replace("192.0.2.0/24", "not a net"),
        ] {
            assert!(serde_json::from_str::<BanInfo>(&bad).is_err(), "{bad}");
        }
        let row = r#"{"verdict":"would_drop","reason":"destination_rate","packets":1,"bytes":2}"#;
        let c: CounterRow = serde_json::from_str(row).unwrap();
        assert_eq!((c.verdict, c.reason), (Verdict::WouldDrop, Reason::DestinationRate));
        assert_eq!(serde_json::to_string(&c).unwrap(), row);
        assert!(serde_json::from_str::<CounterRow>(&row.replace("would_drop", "maybe")).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::error(ErrorKind::BadInput, "net: bad");
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"ok":false,"error":{"kind":"bad_input","message":"net: bad"}}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), r);
    }
}
