//! The LAPI's JSON, as CrowdSec 1.4 sends and accepts it, and the step from
//! a wire decision to one the XDP maps can enforce.
//!
//! LAPI is trusted to be LAPI, not to be well-formed: every field may be
//! missing or odd, and a decision that cannot be enforced is skipped and
//! counted by why, never an error that stops the rest of the list.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::{Crowdsec, Scope};

pub use super::decision::{scope_value, Decision, Pull, Skip};

/// `GET /v1/decisions/stream`. Empty lists come as `null`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamReply {
    #[serde(default)]
    pub new: Option<Vec<Listed>>,
    #[serde(default)]
    pub deleted: Option<Vec<Listed>>,
}

/// One element of a list LAPI sends: a decision, or why it could not be
/// read. Read one by one so that a single malformed decision (an `id` as a
/// string, a value of the wrong type) is skipped and counted instead of
/// failing the whole list.
#[derive(Clone, Debug)]
pub enum Listed {
    Decision(WireDecision),
    Unreadable(String),
}

/// Longest excerpt of an unreadable decision quoted in its description.
const MAX_QUOTED: usize = 160;

impl<'de> Deserialize<'de> for Listed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(match WireDecision::deserialize(&v) {
            Ok(w) if w.id > 0 => Listed::Decision(w),
            // Ids key the bookkeeping (deletions, repeats); a missing or
            // non-positive one cannot be tracked.
            Ok(_) => Listed::Unreadable(format!("decision without a positive id: {}", excerpt(&v))),
            Err(e) => Listed::Unreadable(format!("unreadable decision ({e}): {}", excerpt(&v))),
        })
    }
}

/// `v` as JSON, cut to [`MAX_QUOTED`] characters.
fn excerpt(v: &serde_json::Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(MAX_QUOTED) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

impl Listed {
    /// The decision, or `None` (counted by the caller) if unreadable.
    pub fn decision(self) -> Option<WireDecision> {
        match self {
            Listed::Decision(w) => Some(w),
            Listed::Unreadable(_) => None,
        }
    }
}

/// One decision as LAPI lists it (and as an alert carries it).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct WireDecision {
    #[serde(default, skip_serializing)]
    pub id: i64,
    #[serde(default)]
    pub origin: String,
    #[serde(default)]
    pub scenario: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub value: String,
    /// A Go duration: `"3h59m56.745342504s"`; negative once deleted.
    #[serde(default)]
    pub duration: String,
}

impl StreamReply {
    /// The reply as decisions, each checked against `[crowdsec]`: what
    /// the daemon applies, read before it reaches the core.
    pub fn read(self, cfg: &Crowdsec) -> Pull {
        let mut pull = Pull::default();
        for l in self.deleted.unwrap_or_default() {
            match l {
                Listed::Decision(d) => pull.deleted.push(d.id),
                Listed::Unreadable(why) => pull.unreadable.push(why),
            }
        }
        for l in self.new.unwrap_or_default() {
            match l {
                Listed::Decision(w) => pull.new.push(w.enforceable(cfg)),
                Listed::Unreadable(why) => pull.unreadable.push(why),
            }
        }
        pull
    }
}

impl WireDecision {
    /// The decision, if `[crowdsec]` asks for it and the maps can hold it.
    pub fn enforceable(&self, cfg: &Crowdsec) -> Result<Decision, Skip> {
        let scope = Scope::parse(&self.scope)
            .filter(|s| cfg.scopes.contains(s))
            .ok_or(Skip::Scope)?;
        if !cfg
            .decision_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&self.kind))
        {
            return Err(Skip::Type);
        }
        if !cfg.origins.is_empty()
            && !cfg.origins.iter().any(|o| o.eq_ignore_ascii_case(&self.origin))
        {
            return Err(Skip::Origin);
        }
        let net = parse_value(self.value.trim()).ok_or(Skip::Value)?;
        let lasts = match parse_go_duration(&self.duration) {
            Some((false, d)) if !d.is_zero() => d,
            _ => return Err(Skip::Duration),
        };
        Ok(Decision {
            id: self.id,
            net,
            scope,
            origin: self.origin.clone(),
            scenario: self.scenario.clone(),
            lasts,
        })
    }
}

/// An address or a network, host bits cleared. An `Ip` decision with a
/// prefix is taken as the network it names: `cscli decisions import`
/// (1.4.6) files every line under its `--scope` flag, `Ip` by default, so
/// an imported range arrives so, and dropping only its network address
/// (what an address set does) would let the rest of it through.
fn parse_value(v: &str) -> Option<IpNet> {
    match v.parse::<IpAddr>() {
        Ok(a) => Some(IpNet::from(a)),
        Err(_) => v.parse::<IpNet>().ok().map(|n| n.trunc()),
    }
}

/// A Go `time.Duration` string (`"-1h2m3.5s"`, `"300ms"`, `"1.5µs"`,
/// `"0s"`): whether it is negative, and its length. `None` if malformed.
pub fn parse_go_duration(s: &str) -> Option<(bool, Duration)> {
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok().map(|d| (negative, d))
}

/// `POST /v1/watchers/login`.
#[derive(Debug, Serialize)]
pub struct Login<'a> {
    pub machine_id: &'a str,
    pub password: &'a str,
    pub scenarios: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginReply {
    #[serde(default)]
    pub token: String,
}

/// One alert of `POST /v1/alerts`: CrowdSec's required fields, filled for
/// a ban this host made, with the decision for the fleet.
#[derive(Debug, Serialize)]
pub struct Alert {
    pub scenario: String,
    pub scenario_hash: String,
    pub scenario_version: String,
    pub message: String,
    pub events_count: i32,
    pub events: Vec<serde_json::Value>,
    pub start_at: String,
    pub stop_at: String,
    pub capacity: i32,
    pub leakspeed: String,
    pub simulated: bool,
    pub remediation: bool,
    pub source: AlertSource,
    pub decisions: Vec<WireDecision>,
}

#[derive(Debug, Serialize)]
pub struct AlertSource {
    pub scope: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
}

/// A Go duration string for `d`, whole seconds (LAPI parses it with
/// `time.ParseDuration`).
pub fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn cfg() -> Crowdsec {
        Crowdsec {
            lapi_url: "http://127.0.0.1:8080/".into(),
            ca: None,
            api_key: Secret::new("k"),
            update_frequency: Duration::from_secs(10),
            scopes: vec![Scope::Ip, Scope::Range],
            origins: vec![],
            decision_types: vec!["ban".into()],
            push: None,
        }
    }

    fn wire(scope: &str, value: &str, duration: &str) -> WireDecision {
        WireDecision {
            id: 7,
            origin: "cscli".into(),
            scenario: "manual 'ban' from 'x'".into(),
            scope: scope.into(),
            kind: "ban".into(),
            value: value.into(),
            duration: duration.into(),
        }
    }

    #[test]
    fn a_stream_reply_is_read_into_decisions_before_the_core_sees_it() {
        let reply: StreamReply = serde_json::from_str(
            r#"{"new":[
                {"id":1,"origin":"cscli","scenario":"s","scope":"Ip","type":"ban","value":"192.0.2.7","duration":"1h"},
                {"id":2,"origin":"cscli","scenario":"s","scope":"Country","type":"ban","value":"FR","duration":"1h"},
                {"id":"x"}
            ],"deleted":[{"id":3,"duration":"-1h"}]}"#,
        )
        .unwrap();
        let pull = reply.read(&cfg());
        assert_eq!(pull.deleted, vec![3]);
        assert_eq!(pull.new.len(), 2);
        let first = pull.new[0].as_ref().expect("enforceable");
        assert_eq!((first.id, first.net), (1, "192.0.2.7/32".parse().unwrap()));
        assert_eq!(pull.new[1], Err(Skip::Scope));
        assert_eq!(pull.unreadable.len(), 1, "{:?}", pull.unreadable);
    }

    #[test]
    fn go_durations() {
        let d = |s| parse_go_duration(s);
        assert_eq!(
            d("3h59m56.745342504s"),
            Some((false, Duration::from_secs_f64(14396.745342504)))
        );
        assert_eq!(d("-1h2m3.5s"), Some((true, Duration::from_secs_f64(3723.5))));
        assert_eq!(d("300ms"), Some((false, Duration::from_millis(300))));
        assert_eq!(d("1.5µs"), Some((false, Duration::from_nanos(1500))));
        assert_eq!(d("0"), Some((false, Duration::ZERO)));
        assert_eq!(d("0s"), Some((false, Duration::ZERO)));
        for bad in ["", "-", "h", "1", "1x", "1h-2m", "..s", "1e9s", "s1"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
        // Absurd but well-formed: refused, not a panic.
        assert_eq!(d("99999999999999999999999h"), None);
    }

    #[test]
    fn decisions_become_networks_or_reasons() {
        let c = cfg();
        let ok = wire("Ip", "192.0.2.7", "4h").enforceable(&c).unwrap();
        assert_eq!(ok.net, "192.0.2.7/32".parse().unwrap());
        assert_eq!(ok.lasts, Duration::from_secs(4 * 3600));
        let r = wire("range", "2001:db8:1:2::5/64", "1m").enforceable(&c).unwrap();
        assert_eq!(r.net, "2001:db8:1:2::/64".parse().unwrap());
        assert_eq!(wire("Ip", "2001:db8::1", "1s").enforceable(&c).unwrap().net.prefix_len(), 128);
        assert_eq!(wire("Country", "FR", "1h").enforceable(&c), Err(Skip::Scope));
        // An Ip decision with a prefix (what `cscli decisions import` makes
        // of a range) bans the network.
        assert_eq!(wire("Ip", "100.64.0.7/28", "1h").enforceable(&c).unwrap().net, "100.64.0.0/28".parse().unwrap());
        assert_eq!(wire("Ip", "not-an-ip", "1h").enforceable(&c), Err(Skip::Value));
        assert_eq!(wire("Range", "10.0.0.0/33", "1h").enforceable(&c), Err(Skip::Value));
        assert_eq!(wire("Ip", "192.0.2.7", "-5m").enforceable(&c), Err(Skip::Duration));
        assert_eq!(wire("Ip", "192.0.2.7", "soon").enforceable(&c), Err(Skip::Duration));
        let mut captcha = wire("Ip", "192.0.2.7", "1h");
        captcha.kind = "captcha".into();
        assert_eq!(captcha.enforceable(&c), Err(Skip::Type));
        let only_ip = Crowdsec { scopes: vec![Scope::Ip], ..cfg() };
        assert_eq!(wire("Range", "10.0.0.0/8", "1h").enforceable(&only_ip), Err(Skip::Scope));
        let only_capi = Crowdsec { origins: vec!["CAPI".into()], ..cfg() };
        assert_eq!(wire("Ip", "192.0.2.7", "1h").enforceable(&only_capi), Err(Skip::Origin));
    }

    #[test]
    fn one_unreadable_decision_does_not_reject_the_reply() {
        // An id as a string, a value as a number, a decision that is not
        // an object: each is one bad entry, the good one still arrives.
        let json = r#"{"new":[
            {"id":"41","scope":"Ip","type":"ban","value":"198.51.100.41","duration":"1h"},
            {"id":42,"scope":"Ip","type":"ban","value":"192.0.2.150","duration":"1h","origin":"cscli"},
            {"id":44,"scope":"Ip","type":"ban","value":7,"duration":"1h"},
            "not a decision"
        ],"deleted":[{"id":[1]},{"id":45,"value":"192.0.2.9"}]}"#;
        let r: StreamReply = serde_json::from_str(json).expect("one bad decision rejected the reply");
        assert_eq!(r.new.as_ref().map_or(0, Vec::len), 4);
        assert_eq!(r.deleted.as_ref().map_or(0, Vec::len), 2);
        let new = r.new.unwrap();
        let good: Vec<WireDecision> = new.iter().cloned().filter_map(Listed::decision).collect();
        assert_eq!(good.len(), 1);
        assert_eq!((good[0].id, good[0].value.as_str()), (42, "192.0.2.150"));
        let Listed::Unreadable(why) = &new[0] else { panic!("{:?}", new[0]) };
        assert!(why.contains("\"41\"") && why.contains("198.51.100.41"), "{why}");
        assert!(matches!(&r.deleted.unwrap()[..], [Listed::Unreadable(_), Listed::Decision(_)]));
        // No id, or a non-positive one: nothing to track it by.
        for json in [r#"{"value":"192.0.2.1"}"#, r#"{"id":0}"#, r#"{"id":-3}"#] {
            let l: Listed = serde_json::from_str(json).unwrap();
            assert!(matches!(l, Listed::Unreadable(_)), "{json}: {l:?}");
        }
    }

    #[test]
    fn null_lists_and_missing_fields_parse() {
        let r: StreamReply = serde_json::from_str(r#"{"deleted":null,"new":null}"#).unwrap();
        assert!(r.new.is_none() && r.deleted.is_none());
        let r: StreamReply =
            serde_json::from_str(r#"{"new":[{"id":1,"value":"1.2.3.4","extra":1}]}"#).unwrap();
        assert_eq!(r.new.unwrap()[0].clone().decision().unwrap().value, "1.2.3.4");
    }
}
