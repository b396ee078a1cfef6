//! What the daemon reports: `banned`, `stats`, `status` and the metrics
//! snapshot.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use shield_common::dest::DestClass;
use shield_common::{Method, Reason, Verdict, RESPONSE_CLASSES};

use crate::kernel::MapId;

use super::{Core, CtlError};
use crate::report::{
    BanInfo, BannedReply, Net, CounterRow, Lasts, HistoryItem, IfaceStats, IfaceStatus, SourceBan,
    SourceReply, StatsReply, StatusReply, TopSource,
};
use crate::daemon::bans::{Ban, Clock};
use crate::report::{verdict_reason_pairs, Snapshot};

/// The maps `sipshield_map_entries` / `_capacity` report.
fn reported_maps() -> impl Iterator<Item = MapId> {
    MapId::ALL.into_iter().filter(|m| m.holds_entries())
}

/// Counting a million-entry hash map takes a while; scrapes reuse a count
/// this young.
const COUNT_CACHE: Duration = Duration::from_secs(10);
const TOP_SOURCES: usize = 10;
/// History rows `banned ADDR` shows.
const HISTORY_SHOWN: usize = 50;

impl Core {
    pub(super) fn ban_info(&self, net: &IpNet, b: &Ban, now: &Clock) -> BanInfo {
        BanInfo {
            net: Net(*net),
            origin: b.origin.clone(),
            reason: b.reason.to_string(),
            created: b.created_ms / 1000,
            expires_in_secs: b
                .expiry
                .left(now)
                .map_or(Lasts::Forever, |d| Lasts::Secs(d.as_secs())),
            times: None,
        }
    }

    pub fn banned(&self) -> BannedReply {
        let now = Clock::now();
        let mut bans: Vec<(IpNet, BanInfo)> = self
            .book
            .iter()
            .filter(|(_, b)| !b.expiry.is_past(&now))
            .map(|(n, b)| (*n, self.ban_info(n, b, &now)))
            .collect();
        for n in self.decisions.nets() {
            bans.extend(self.decision_rows(n, &now).into_iter().map(|i| (*n, i)));
        }
        bans.sort_by_key(|b| b.0);
        BannedReply {
            bans: bans.into_iter().map(|(_, i)| i).collect(),
        }
    }

    /// `banned ADDR`: the bans that cover `net`, with their detail and
    /// counts, and its history (the bans' too) from the store.
    pub fn banned_source(&self, net: IpNet) -> Result<SourceReply, CtlError> {
        let net = net.trunc();
        let now = Clock::now();
        let mut covering: Vec<(IpNet, &Ban)> = self
            .book
            .iter()
            .filter(|(n, b)| n.contains(&net) && !b.expiry.is_past(&now))
            .map(|(n, b)| (*n, b))
            .collect();
        covering.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        let mut nets: Vec<IpNet> = covering.iter().map(|(n, _)| *n).collect();
        if !nets.contains(&net) {
            nets.insert(0, net);
        }
        let rec = self
            .store
            .source(&nets, HISTORY_SHOWN)
            .map_err(|e| CtlError::Failed(format!("reading the store: {e}")))?;
        let bans = covering
            .iter()
            .map(|(n, b)| {
                let key = n.to_string();
                let (detail, times) = rec
                    .bans
                    .iter()
                    .find(|(k, _, _)| *k == key)
                    .map(|(_, d, t)| (d.clone(), *t))
                    .unwrap_or_default();
                let mut ban = self.ban_info(n, b, &now);
                ban.times = Some(times);
                SourceBan { ban, detail }
            })
            .collect::<Vec<_>>();
        // CrowdSec's decisions covering it (never in the store's history).
        let mut decided: Vec<IpNet> = self.decisions.nets().filter(|n| n.contains(&net)).copied().collect();
        decided.sort_by_key(|n| std::cmp::Reverse(n.prefix_len()));
        let mut bans = bans;
        for n in decided {
            bans.extend(self.decision_rows(&n, &now).into_iter().map(|ban| SourceBan {
                detail: "CrowdSec decision (LAPI is its record)".into(),
                ban,
            }));
        }
        Ok(SourceReply {
            source: Net(net),
            bans,
            times_banned: rec.times,
            history: rec
                .history
                .into_iter()
                .map(|h| HistoryItem {
                    at: h.at_ms / 1000,
                    net: h.net,
                    action: h.action,
                    origin: h.origin,
                    reason: h.reason,
                    detail: h.detail,
                    who: h.who,
                    expires: h.expires_ms.map(|ms| ms / 1000),
                })
                .collect(),
            auth_usernames: self.auth_usernames(net.addr()),
        })
    }

    /// Bans in the book: those whose time is up leave it within one
    /// sweep (SWEEP_EVERY). Counted, not walked: status and scrapes stay
    /// cheap with a million bans.
    fn bans_active(&self) -> u64 {
        self.book.len() as u64
    }

    /// (name, counter slot) of each interface, slot 0 ("unregistered")
    /// included.
    pub(super) fn slots(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| (a.iface.clone(), i as u32 + 1))
            .collect();
        v.push(("unregistered".into(), 0));
        v
    }

    pub fn stats(&self) -> Result<StatsReply, CtlError> {
        let maps = &self.shield.maps;
        let mut totals: BTreeMap<(Verdict, Reason), (u64, u64)> = BTreeMap::new();
        let mut interfaces = Vec::new();
        for (name, slot) in self.slots() {
            let mut rows = Vec::new();
            for (v, r) in verdict_reason_pairs() {
                let c = maps
                    .counter(slot, v, r)
                    .map_err(CtlError::map("reading STATS"))?;
                if c.packets == 0 {
                    continue;
                }
                let t = totals.entry((v, r)).or_default();
                t.0 += c.packets;
                t.1 += c.bytes;
                rows.push(row(v, r, c.packets, c.bytes));
            }
            if slot != 0 || !rows.is_empty() {
                interfaces.push(IfaceStats {
                    interface: name,
                    counters: rows,
                });
            }
        }
        let top = maps
            .top_offenders(TOP_SOURCES, crate::kernel::monotonic_ns())
            .map_err(CtlError::map("reading SOURCES"))?;
        Ok(StatsReply {
            totals: totals
                .into_iter()
                .map(|((v, r), (p, b))| row(v, r, p, b))
                .collect(),
            interfaces,
            top_sources: top
                .into_iter()
                .map(|(n, d)| TopSource {
                    source: Net(n),
                    drops: d,
                })
                .collect(),
            recent_escalations: self.escalations.iter().cloned().collect(),
            bans_active: self.bans_active(),
            bans_total: self.bans_total.clone(),
        })
    }

    pub fn status(&self) -> StatusReply {
        StatusReply {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            config: self.config.source_path.display().to_string(),
            enforce: self.config.shield.enforce,
            program_id: self.program_id,
            pin_path: self.runtime.pin_path.display().to_string(),
            state_dir: self.runtime.state_dir.display().to_string(),
            interfaces: self
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| IfaceStatus {
                    name: a.iface.clone(),
                    ifindex: a.ifindex,
                    mode: a.mode.as_str().into(),
                    link_id: a.link_id,
                    program_id: self.attached_program(a.mode),
                    slot: i as u32 + 1,
                    egress: a.egress.as_ref().map(|e| e.kind().to_string()),
                })
                .collect(),
            bans_active: self.bans_active(),
            jails: self.config.jails.iter().map(|j| j.name.clone()).collect(),
            metrics: self.config.metrics.listen.map(|a| a.to_string()),
            uptime_secs: self.started.elapsed().as_secs(),
            crowdsec: self.crowdsec_status(),
            store_notice: self.store.notice(),
        }
    }

    /// Everything a scrape reports.
    pub fn snapshot(&mut self) -> Snapshot {
        let mut s = Snapshot {
            version: env!("CARGO_PKG_VERSION").into(),
            ..Snapshot::default()
        };
        let maps = &self.shield.maps;
        for (name, slot) in self.slots() {
            let mut rows = Vec::new();
            for (v, r) in verdict_reason_pairs() {
                rows.push((
                    name.clone(),
                    v,
                    r,
                    maps.counter(slot, v, r).unwrap_or_default(),
                ));
            }
            // Slot 0 only matters when something landed there.
            if slot == 0 && rows.iter().all(|r| r.3.packets == 0) {
                continue;
            }
            s.packets.extend(rows);
            for m in Method::ALL {
                for v in Verdict::ALL {
                    s.sip.push((
                        name.clone(),
                        m,
                        v,
                        maps.sip_counter(slot, m, v).unwrap_or(0),
                    ));
                }
                for class in 1..=RESPONSE_CLASSES as u8 {
                    let n = maps.response_count(slot, m, class).unwrap_or(0);
                    s.responses.push((name.clone(), m, class, n));
                }
            }
            if let Ok(c) = maps.auth.counts(slot) {
                for (m, row) in ["REGISTER", "INVITE"].into_iter().zip(c) {
                    // The stale slot is not a result SPEC §12 names.
                    for (r, n) in ["success", "failure", "unproven"].into_iter().zip(row) {
                        s.auth_attempts.push((name.clone(), m, r, n));
                    }
                }
            }
        }
        self.destination_counts(&mut s);
        s.calls = self.calls_snapshot();
        s.verified_sources = self.verified_sources();
        s.under_pressure = self.under_pressure();
        s.crowdsec = self.crowdsec_snapshot();
        let auth_cfg = self.config.auth;
        s.auth_targeted_users = self.auth.targeted_users(&auth_cfg, std::time::Instant::now()) as u64;
        s.bans_active = self.bans_active();
        s.store_rewrites = self.store.rewrites();
        s.events_lost = self.shield.maps.events_lost().unwrap_or(0);
        s.bans_total = self.bans_total.clone();
        s.jail_failures = self.jail_failures.clone();
        s.map_entries = self.map_counts();
        s.map_capacity = reported_maps()
            .filter_map(|m| {
                Some((
                    m.name().to_ascii_lowercase(),
                    u64::from(self.shield.maps.capacity(m)?),
                ))
            })
            .collect();
        s.attached = self
            .attachments
            .iter()
            .map(|a| (a.iface.clone(), a.mode.as_str().to_string()))
            .collect();
        s
    }

    /// SPEC §11's counters: INVITEs by class and country per interface
    /// (slot 0 only when something landed there), refusals by rule.
    fn destination_counts(&self, s: &mut Snapshot) {
        for (name, slot) in self.slots() {
            let Ok(c) = self.shield.maps.dest.counts(slot) else { continue };
            if slot == 0 && c.by_class.iter().all(|n| *n == 0) {
                continue;
            }
            for class in DestClass::ALL {
                s.invites_by_class.push((name.clone(), class, c.by_class[class as usize]));
            }
            for (code, n) in c.by_country {
                s.invites_by_country.push((name.clone(), code, n));
            }
        }
        s.dest_refused = self
            .refused_counts()
            .into_iter()
            .map(|((i, rule, action), n)| (i, rule, action, n))
            .collect();
    }

    /// Live verified entries, counted at most once per `COUNT_CACHE` (a
    /// walk of a hash of up to a million).
    fn verified_sources(&mut self) -> u64 {
        if let Some((at, n)) = self.verified_cache {
            if at.elapsed() < COUNT_CACHE {
                return n;
            }
        }
        let n = self.verified_count() as u64;
        self.verified_cache = Some((Instant::now(), n));
        n
    }

    fn map_counts(&mut self) -> Vec<(String, u64)> {
        if let Some((at, counts)) = &self.counts {
            if at.elapsed() < COUNT_CACHE {
                return counts.clone();
            }
        }
        let counts: Vec<(String, u64)> = reported_maps()
            .filter_map(|m| match self.shield.maps.entry_count(m) {
                Ok(Some(n)) => Some((m.name().to_ascii_lowercase(), n as u64)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(map = m.name(), "counting entries failed: {}", crate::text::chain(&e));
                    None
                }
            })
            .collect();
        self.counts = Some((Instant::now(), counts.clone()));
        counts
    }
}

fn row(v: Verdict, r: Reason, packets: u64, bytes: u64) -> CounterRow {
    CounterRow {
        verdict: v,
        reason: r,
        packets,
        bytes,
    }
}

