//! What the daemon reports: the data of the control protocol's replies
//! (`banned`, `stats`, `status`, ...) and the values they are made of
//! ([`Net`], [`Lasts`]). The core produces these; `control::protocol`
//! wraps them in its envelope and says which request gets which. Their
//! serde form is the wire form.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shield_common::dest::DestClass;
use shield_common::{Counter, Method, Reason, Verdict};

use crate::origin::Origin;

mod calls;
pub use calls::{CallItem, CallsReply, CallsSnapshot, Histogram, TopDestination, DURATION_BUCKETS};

/// An address (a host) or a network, as text on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net(pub IpNet);

impl Serialize for Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Net, D::Error> {
        let text = String::deserialize(d)?;
        crate::config::parse_cidr(&text)
            .map(Net)
            .map_err(|e| de::Error::custom(format_args!("net: {e}")))
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Kernel vocabularies ([`Verdict`], [`Reason`]) by their names; a name
/// this version does not know is an error.
mod by_name {
    use serde::de::{self, Deserialize, Deserializer};
    use serde::Serializer;
    use shield_common::{Reason, Verdict};

    pub trait Named: Copy + 'static {
        const ALL: &'static [Self];
        fn name(self) -> &'static str;
    }

    impl Named for Verdict {
        const ALL: &'static [Verdict] = &Verdict::ALL;
        fn name(self) -> &'static str {
            self.as_str()
        }
    }

    impl Named for Reason {
        const ALL: &'static [Reason] = &Reason::ALL;
        fn name(self) -> &'static str {
            self.as_str()
        }
    }

    pub fn serialize<T: Named, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.name())
    }

    pub fn deserialize<'de, T: Named, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        T::ALL
            .iter()
            .copied()
            .find(|v| v.name() == text)
            .ok_or_else(|| de::Error::custom(format_args!("unknown name {text:?}")))
    }
}

/// How long a ban lasts, or has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lasts {
    Forever,
    Secs(u64),
}

impl Serialize for Lasts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Lasts::Forever => s.serialize_str("forever"),
            Lasts::Secs(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Lasts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lasts, D::Error> {
        d.deserialize_any(LastsVisitor { zero_ok: false })
    }
}

impl Lasts {
    /// A time left, in a reply: unlike a duration asked for, 0 is fine
    /// (under a second left, or expired since and not yet swept).
    pub fn deserialize_left<'de, D: Deserializer<'de>>(d: D) -> Result<Lasts, D::Error> {
        d.deserialize_any(LastsVisitor { zero_ok: true })
    }
}

struct LastsVisitor {
    zero_ok: bool,
}

impl Visitor<'_> for LastsVisitor {
    type Value = Lasts;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("seconds or \"forever\"")
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Lasts, E> {
        match n {
            0 if !self.zero_ok => Err(E::custom(
                "duration: 0 s; a ban that ends at once is no ban (use \"forever\" for no end)",
            )),
            n => Ok(Lasts::Secs(n)),
        }
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Lasts, E> {
        u64::try_from(n)
            .map_err(|_| E::custom(format_args!("duration: {n} s is negative")))
            .and_then(|n| self.visit_u64(n))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Lasts, E> {
        match s {
            "forever" => Ok(Lasts::Forever),
            other => Err(E::custom(format_args!(
                "duration: {other:?} is neither seconds nor \"forever\""
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListOp {
    Add,
    Del,
    List,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanInfo {
    pub net: Net,
    /// On the wire `origin` (`manual`, `escalation`, `kernel`, the jail's
    /// name, `crowdsec/<LAPI origin>`) and `origin_kind` (`manual`,
    /// `escalation`, `kernel`, `jail`, `crowdsec`).
    #[serde(flatten)]
    pub origin: Origin,
    pub reason: String,
    /// Unix seconds.
    pub created: u64,
    /// Time left.
    #[serde(deserialize_with = "Lasts::deserialize_left")]
    pub expires_in_secs: Lasts,
    /// How often this network has been banned, this ban included (within
    /// `[bans] history`); in replies that change or look up one ban.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BannedReply {
    pub bans: Vec<BanInfo>,
}

/// `banned ADDR`: one source's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReply {
    /// The source asked about, as a network.
    pub source: Net,
    /// Bans in force that cover it, narrowest first.
    pub bans: Vec<SourceBan>,
    /// How often the source itself was banned within `[bans] history`.
    pub times_banned: u32,
    /// Its history and that of the bans covering it, newest first.
    pub history: Vec<HistoryItem>,
    /// Usernames it tried in failed digest authentications seen on the
    /// wire (SPEC §12), escaped; oldest first, bounded.
    #[serde(default)]
    pub auth_usernames: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBan {
    #[serde(flatten)]
    pub ban: BanInfo,
    /// What the ban was made from: a jail's log line, an offender report.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// Unix seconds.
    pub at: u64,
    pub net: String,
    pub action: crate::store::Action,
    pub origin: String,
    pub reason: String,
    pub detail: String,
    pub who: String,
    /// Unix seconds; `None`: until unbanned (or an unban).
    pub expires: Option<u64>,
}

/// `verified`: the verified sources and the unverified budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedReply {
    /// All live entries (`entries` holds at most [`MAX_VERIFIED_SHOWN`]).
    pub total: usize,
    pub entries: Vec<VerifiedInfo>,
    /// `[verify] unverified_per_second`; 0: no budget.
    pub unverified_per_second: u32,
    /// Tokens left in the shared budget now (none without a budget).
    pub budget_tokens: Option<u64>,
    pub under_pressure: bool,
}

/// Entries a `verified` reply lists (the LRU holds up to a million).
pub const MAX_VERIFIED_SHOWN: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedInfo {
    pub net: Net,
    /// `reply` (a final 2xx), `operator` (shieldctl) or `config`.
    pub how: String,
    /// Time left.
    #[serde(deserialize_with = "Lasts::deserialize_left")]
    pub expires_in_secs: Lasts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnverifyReply {
    pub net: Net,
    /// Whether it was verified.
    pub removed: bool,
}

/// `refused`: kept refusals, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedReply {
    pub refusals: Vec<RefusalItem>,
    /// The most rows asked for (more may be kept).
    pub limit: usize,
    /// Records waiting for the store (it failed; retried).
    pub unsaved: u64,
    /// Records dropped since start because the store failed too long.
    pub lost: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalItem {
    /// Unix milliseconds.
    pub at_ms: u64,
    pub source: String,
    /// Normalised, in full (`shieldctl` masks it unless asked not to).
    pub number: String,
    pub rule: String,
    /// `destination` or `destination_rate`.
    pub reason: String,
    /// Escaped by the daemon; may be empty.
    pub user_agent: String,
    /// A 403 was sent.
    pub replied: bool,
}

/// `destination NUMBER`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationReply {
    /// E.164 (`+` and digits), national as dialled, or `other` /
    /// `unreadable` for no number.
    pub number: String,
    /// `national`, `international` or `other`.
    pub class: String,
    /// E.164 country code (`+33`), for an international number.
    pub country: Option<String>,
    pub refused: bool,
    /// The deciding rule when refused: the entry as configured,
    /// `allow_international` or `unreadable`.
    pub rule: Option<String>,
    /// The `allow_international` entry that lets it through, if one does.
    pub allowed_by: Option<String>,
    /// `reject` (403) or `drop`: what a refusal does.
    pub action: String,
    /// Passed by the lists, but each source's INVITEs to international
    /// numbers spend from a bucket of this rate (`international_rate`).
    pub international_per_minute: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnbanReply {
    pub removed: Vec<Net>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub net: Net,
    /// `config` (from the config file) or `cli` (added with shieldctl).
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReply {
    pub list: String,
    pub entries: Vec<ListEntry>,
    /// For add/del: what changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRow {
    #[serde(with = "by_name")]
    pub verdict: Verdict,
    #[serde(with = "by_name")]
    pub reason: Reason,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceStats {
    pub interface: String,
    pub counters: Vec<CounterRow>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopSource {
    pub source: Net,
    pub drops: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub source: Net,
    #[serde(with = "by_name")]
    pub reason: Reason,
    pub drops: u32,
    /// Unix seconds when the daemon received it.
    pub at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// Summed over interfaces.
    pub totals: Vec<CounterRow>,
    pub interfaces: Vec<IfaceStats>,
    /// Sources with the most rate/scanner/malformed drops in their current
    /// escalation window (from the kernel's SOURCES map).
    pub top_sources: Vec<TopSource>,
    /// The latest escalation reports from the kernel, newest first.
    pub recent_escalations: Vec<Escalation>,
    pub bans_active: u64,
    pub bans_total: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceStatus {
    pub name: String,
    pub ifindex: u32,
    pub mode: String,
    pub link_id: u32,
    /// The program attached there: the XDP program, or in mode `tc` the
    /// tc ingress program (the XDP program stays loaded for its maps).
    #[serde(default)]
    pub program_id: u32,
    /// Counter slot (1 + position in `[shield] interfaces`).
    pub slot: u32,
    /// The egress classifier's hook (`tcx`, `clsact`), if attached.
    #[serde(default)]
    pub egress: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub version: String,
    pub pid: u32,
    pub config: String,
    pub enforce: bool,
    pub program_id: u32,
    pub pin_path: String,
    pub state_dir: String,
    pub interfaces: Vec<IfaceStatus>,
    pub bans_active: u64,
    pub jails: Vec<String>,
    pub metrics: Option<String>,
    pub uptime_secs: u64,
    /// `[crowdsec]`; absent without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<CrowdsecStatus>,
    /// The ban store was found deleted or replaced under the daemon and
    /// rewritten: when, how, how often. Absent if it never was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_notice: Option<String>,
}

/// The CrowdSec bouncer's state in `shieldctl status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrowdsecStatus {
    pub lapi_url: String,
    /// The last decisions call succeeded.
    pub up: bool,
    /// A full list has been applied since start.
    pub synced: bool,
    pub last_ok_secs_ago: Option<u64>,
    pub last_error: Option<String>,
    /// Decisions enforced.
    pub decisions: u64,
    /// `origin/scope` → decisions.
    pub by_origin: std::collections::BTreeMap<String, u64>,
    /// Why listed decisions were not enforced → how many.
    pub skipped: std::collections::BTreeMap<String, u64>,
    pub push: Option<PushStatus>,
}

/// `[crowdsec.push]`'s state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushStatus {
    pub machine_id: String,
    /// Bans and unbans waiting for LAPI.
    pub queued: u64,
    /// Alerts LAPI took.
    pub pushed: u64,
    /// Decisions deleted on LAPI after an unban here.
    pub deleted: u64,
    /// Dropped from a full queue.
    pub dropped: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    pub config: String,
    /// What changed, one line each.
    pub changes: Vec<String>,
    /// Settings that need a restart to take effect.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachReply {
    pub interfaces: Vec<String>,
    pub pin_path: String,
}

// ---- Metrics ---------------------------------------------------------------

/// Everything one scrape reports, read in one request to the core.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// (interface, verdict, reason) → counter; only combinations the
    /// kernel can produce are listed, zeros included (stable series).
    pub packets: Vec<(String, Verdict, Reason, Counter)>,
    /// (interface, method, verdict) → requests.
    pub sip: Vec<(String, Method, Verdict, u64)>,
    pub bans_active: u64,
    /// Times the ban store was found deleted or replaced and rewritten.
    pub store_rewrites: u64,
    /// Offender reports lost to a full ring buffer.
    pub events_lost: u64,
    /// By origin: manual, escalation, kernel, or a jail's name.
    pub bans_total: BTreeMap<String, u64>,
    pub jail_failures: BTreeMap<String, u64>,
    /// (map, entries)
    pub map_entries: Vec<(String, u64)>,
    /// (map, capacity)
    pub map_capacity: Vec<(String, u64)>,
    /// (interface, mode) of every attachment.
    pub attached: Vec<(String, String)>,
    /// (interface, CSeq method, status class 1..=6) → responses sent.
    pub responses: Vec<(String, Method, u8, u64)>,
    /// Live verified sources and networks (SPEC §8).
    pub verified_sources: u64,
    /// The unverified budget is dropping.
    pub under_pressure: bool,
    /// (interface, rule, action) → INVITEs refused by the destination
    /// policy (SPEC §11), counts of earlier policies included.
    pub dest_refused: Vec<(String, String, String, u64)>,
    /// (interface, class) → initial INVITEs, every class listed.
    pub invites_by_class: Vec<(String, DestClass, u64)>,
    /// (interface, E.164 country code) → initial INVITEs to international
    /// numbers; codes never seen are absent.
    pub invites_by_country: Vec<(String, u32, u64)>,
    /// Calls seen on the wire (SPEC §13).
    pub calls: CallsSnapshot,
    /// (interface, method, result) → digest attempts (SPEC §12).
    pub auth_attempts: Vec<(String, &'static str, &'static str, u64)>,
    /// Usernames at `[auth] user_failures` within the window.
    pub auth_targeted_users: u64,
    /// `[crowdsec]` (SPEC §9); `None` without it (no series at all).
    pub crowdsec: Option<CrowdsecSnapshot>,
    pub version: String,
}

/// The CrowdSec bouncer's figures.
#[derive(Clone, Debug, Default)]
pub struct CrowdsecSnapshot {
    pub up: bool,
    /// (origin, scope, decisions enforced)
    pub decisions: Vec<(String, String, u64)>,
    /// (route, outcome, requests)
    pub requests: Vec<(String, String, u64)>,
    /// (why, decisions listed but not enforced)
    pub skipped: Vec<(String, u64)>,
    pub push_queued: u64,
}

/// Every (verdict, reason) pair a packet can be counted under.
pub fn verdict_reason_pairs() -> impl Iterator<Item = (Verdict, Reason)> {
    Verdict::ALL.into_iter().flat_map(|v| {
        Reason::ALL
            .into_iter()
            .filter(move |r| match v {
                Verdict::Pass => !r.drops(),
                Verdict::Drop | Verdict::WouldDrop => r.drops(),
            })
            .map(move |r| (v, r))
    })
}

/// `auth`: failed digest authentications within `[auth] window` (SPEC §12).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthReply {
    pub enabled: bool,
    pub failures: u32,
    pub user_failures: u32,
    pub window_secs: u64,
    /// Usernames by failures, most first (escaped by the daemon).
    pub users: Vec<AuthUser>,
    /// Sources with failures in the window, most first.
    pub sources: Vec<AuthSource>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthUser {
    pub username: String,
    pub failures: u64,
    pub sources: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSource {
    pub source: String,
    pub failures: u64,
}
