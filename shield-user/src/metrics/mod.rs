//! Prometheus metrics (SPEC §6).
//!
//! Counters are not kept in user space: at each scrape the daemon reads the
//! kernel's per-CPU counter arrays (summed over CPUs, interface slots named)
//! into a [`Snapshot`], and a `prometheus-client` collector encodes it. The
//! result is OpenMetrics; [`to_classic_text`] rewrites the descriptor lines
//! for clients that asked for the classic Prometheus text format (0.0.4),
//! whose linters reject OpenMetrics' `# TYPE x counter` + `x_total` pairing.

mod calls;
pub mod http;

use std::borrow::Cow;
use std::collections::HashMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use shield_common::{Reason, Verdict};

pub use crate::report::{verdict_reason_pairs, CrowdsecSnapshot, Snapshot};

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in rows {
        let values: Vec<Cow<str>> = labels.iter().map(|(_, v)| label_value(v)).collect();
        let labels: Labels = labels.iter().zip(&values).map(|((k, _), v)| (*k, v.as_ref())).collect();
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A label value as the exposition must carry it. prometheus-client writes
/// label values verbatim, and some come from outside (CrowdSec's decision
/// origins, jail and interface names): a `"` or a newline in one would end
/// the sample early and let the text after it forge series. Terminal
/// controls become visible escapes first ([`crate::text::Escaped`]: a
/// scrape read with curl cannot drive the terminal), then backslash, double
/// quote and line feed are escaped as both text formats require.
pub fn label_value(v: &str) -> Cow<'_, str> {
    let safe = crate::text::escaped(v);
    if !safe.contains(['\\', '"', '\n']) {
        return safe;
    }
    let mut out = String::with_capacity(safe.len() + 8);
    for c in safe.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        encode_traffic(s, &mut enc)?;
        encode_bans(s, &mut enc)?;
        encode_maps(s, &mut enc)?;
        encode_verify(s, &mut enc)?;
        encode_destinations(s, &mut enc)?;
        calls::encode_calls(&s.calls, &mut enc)?;
        encode_auth(s, &mut enc)?;
        if let Some(c) = &s.crowdsec {
            encode_crowdsec(c, &mut enc)?;
        }
        let info = Info::new(vec![("version", label_value(&s.version).into_owned())]);
        let m = enc.encode_descriptor(
            "sipshield_build",
            "Build information.",
            None,
            info.metric_type(),
        )?;
        info.encode(m)?;
        Ok(())
    }
}

/// The data plane's counters (SPEC §6): packets and bytes by verdict and
/// reason, SIP requests by method.
fn encode_traffic(s: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let pkt_labels = |i: &str, v: Verdict, r: Reason| {
        vec![
            ("interface", i.to_string()),
            ("verdict", v.as_str().into()),
            ("reason", r.as_str().into()),
        ]
    };
    family(
        enc,
        "sipshield_packets",
        "Packets seen by the XDP program, by interface, verdict and reason.",
        MetricType::Counter,
        s.packets
            .iter()
            .map(|(i, v, r, c)| (pkt_labels(i, *v, *r), ConstCounter::new(c.packets))),
    )?;
    family(
        enc,
        "sipshield_bytes",
        "Bytes seen by the XDP program, by interface, verdict and reason.",
        MetricType::Counter,
        s.packets
            .iter()
            .map(|(i, v, r, c)| (pkt_labels(i, *v, *r), ConstCounter::new(c.bytes))),
    )?;
    family(
        enc,
        "sipshield_sip_requests",
        "UDP SIP requests to protected ports, by interface, method and verdict.",
        MetricType::Counter,
        s.sip.iter().map(|(i, m, v, n)| {
            (
                vec![
                    ("interface", i.clone()),
                    ("method", m.as_str().into()),
                    ("verdict", v.as_str().into()),
                ],
                ConstCounter::new(*n),
            )
        }),
    )?;
    Ok(())
}

/// Bans, the store, and the kernel's lost offender reports.
fn encode_bans(s: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(
        "sipshield_bans_active",
        "Bans in force.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(s.bans_active as i64).encode(m)?;
    let m = enc.encode_descriptor(
        "sipshield_store_rewrites",
        "Times state_dir/shield.db was found deleted or replaced under the daemon and rewritten.",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(s.store_rewrites).encode(m)?;
    let m = enc.encode_descriptor(
        "sipshield_events_lost",
        "Offender reports the kernel could not queue (ring buffer full); each source is reported again on its next drop.",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(s.events_lost).encode(m)?;
    family(
        enc,
        "sipshield_bans",
        "Bans made since the daemon started, by origin (manual, escalation, kernel, or jail name).",
        MetricType::Counter,
        s.bans_total.iter().map(|(o, n)| (vec![("origin", o.clone())], ConstCounter::new(*n))),
    )?;
    family(
        enc,
        "sipshield_jail_failures",
        "Authentication failures counted by each jail.",
        MetricType::Counter,
        s.jail_failures
            .iter()
            .map(|(j, n)| (vec![("jail", j.clone())], ConstCounter::new(*n))),
    )?;
    Ok(())
}

/// The maps' fill and size, and where the program is attached.
fn encode_maps(s: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "sipshield_map_entries",
        "Entries in each BPF map.",
        MetricType::Gauge,
        s.map_entries
            .iter()
            .map(|(m, n)| (vec![("map", m.clone())], ConstGauge::new(*n as i64))),
    )?;
    family(
        enc,
        "sipshield_map_capacity",
        "Capacity (max_entries) of each BPF map.",
        MetricType::Gauge,
        s.map_capacity
            .iter()
            .map(|(m, n)| (vec![("map", m.clone())], ConstGauge::new(*n as i64))),
    )?;
    family(
        enc,
        "sipshield_xdp_attached",
        "1 for each interface the XDP program is attached to, with the attach mode.",
        MetricType::Gauge,
        s.attached.iter().map(|(i, m)| {
            (
                vec![("interface", i.clone()), ("mode", m.clone())],
                ConstGauge::new(1i64),
            )
        }),
    )?;
    Ok(())
}

/// The families of SPEC §8: responses by method and class, verified
/// sources, pressure on the unverified budget.
fn encode_verify(s: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "sipshield_sip_responses",
        "SIP responses sent from protected ports, by interface, CSeq method and status class.",
        MetricType::Counter,
        s.responses.iter().map(|(i, m, class, n)| {
            (
                vec![
                    ("interface", i.clone()),
                    ("method", m.as_str().into()),
                    ("class", format!("{class}xx")),
                ],
                ConstCounter::new(*n),
            )
        }),
    )?;
    let m = enc.encode_descriptor(
        "sipshield_verified_sources",
        "Sources and networks verified by a final 2xx, by an operator or by config.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(s.verified_sources as i64).encode(m)?;
    let m = enc.encode_descriptor(
        "sipshield_under_pressure",
        "1 while the shared budget of unverified sources is (nearly) empty and dropping.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(i64::from(s.under_pressure)).encode(m)
}

/// The families of SPEC §12: digest attempts by result, targeted users.
fn encode_auth(s: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "sipshield_auth_attempts",
        "Digest authentication attempts seen on the wire, by interface, method and result (success and failure only for attempts carrying a nonce the server sent to that source; unproven otherwise).",
        MetricType::Counter,
        s.auth_attempts.iter().map(|(i, m, r, n)| {
            (
                vec![("interface", i.clone()), ("method", (*m).into()), ("result", (*r).into())],
                ConstCounter::new(*n),
            )
        }),
    )?;
    let m = enc.encode_descriptor(
        "sipshield_auth_targeted_users",
        "Usernames with [auth] user_failures or more proven failures within the window, from any sources.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(s.auth_targeted_users as i64).encode(m)
}

/// The families of SPEC §11. Countries are labelled `+CC`: the numbers
/// themselves are personal data and never become labels.
fn encode_destinations(s: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "sipshield_destination_refused",
        "Initial INVITEs refused by the destination policy, by interface, deciding rule (the entry as configured, allow_international, international_rate or unreadable) and action.",
        MetricType::Counter,
        s.dest_refused.iter().map(|(i, rule, action, n)| {
            (
                vec![("interface", i.clone()), ("rule", rule.clone()), ("action", action.clone())],
                ConstCounter::new(*n),
            )
        }),
    )?;
    family(
        enc,
        "sipshield_invites_by_destination",
        "Initial INVITEs by interface and class of the dialled number (national, international, other).",
        MetricType::Counter,
        s.invites_by_class.iter().map(|(i, class, n)| {
            (
                vec![("interface", i.clone()), ("class", class.as_str().into())],
                ConstCounter::new(*n),
            )
        }),
    )?;
    family(
        enc,
        "sipshield_invites_by_country",
        "Initial INVITEs to international numbers by interface and E.164 country code (+33).",
        MetricType::Counter,
        s.invites_by_country.iter().map(|(i, code, n)| {
            (
                vec![("interface", i.clone()), ("country", crate::dest::country_label(*code))],
                ConstCounter::new(*n),
            )
        }),
    )
}

/// The families of SPEC §9.
fn encode_crowdsec(c: &CrowdsecSnapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(
        "sipshield_crowdsec_up",
        "1 while the last call to the CrowdSec LAPI's decision stream succeeded; 0 once one fails or has no answer for 5 s.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(i64::from(c.up)).encode(m)?;
    family(
        enc,
        "sipshield_crowdsec_decisions",
        "CrowdSec decisions enforced, by decision origin and scope.",
        MetricType::Gauge,
        c.decisions.iter().map(|(o, s, n)| {
            (
                vec![("origin", o.clone()), ("scope", s.clone())],
                ConstGauge::new(*n as i64),
            )
        }),
    )?;
    family(
        enc,
        "sipshield_crowdsec_requests",
        "Calls to the CrowdSec LAPI, by route and outcome (HTTP status, or error).",
        MetricType::Counter,
        c.requests.iter().map(|(r, o, n)| {
            (
                vec![("route", r.clone()), ("outcome", o.clone())],
                ConstCounter::new(*n),
            )
        }),
    )?;
    family(
        enc,
        "sipshield_crowdsec_skipped",
        "Decisions listed by LAPI but not enforced, by why (scope, type, origin, value, duration, protected).",
        MetricType::Counter,
        c.skipped
            .iter()
            .map(|(w, n)| (vec![("why", w.clone())], ConstCounter::new(*n))),
    )?;
    let m = enc.encode_descriptor(
        "sipshield_crowdsec_push_queued",
        "Local bans and unbans waiting to be pushed to LAPI.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(c.push_queued as i64).encode(m)
}

/// The snapshot in the OpenMetrics text format (with `# EOF`).
pub fn encode_openmetrics(s: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(s)));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Rewrites an OpenMetrics exposition into the classic Prometheus text
/// format 0.0.4: counter families are named with their `_total` suffix,
/// info families become gauges named `_info`, `# UNIT` and `# EOF` go.
/// Sample lines are the same in both formats.
pub fn to_classic_text(om: &str) -> String {
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                types.insert(name, kind);
            }
        }
    }
    let rename = |name: &str| -> (String, &'static str) {
        match types.get(name).copied() {
            Some("counter") => (format!("{name}_total"), "counter"),
            Some("info") => (format!("{name}_info"), "gauge"),
            Some("gauge") => (name.to_string(), "gauge"),
            Some("histogram") => (name.to_string(), "histogram"),
            Some("summary") => (name.to_string(), "summary"),
            _ => (name.to_string(), "untyped"),
        }
    };
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", rename(name).0));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_once(' ').map_or(rest, |(n, _)| n);
            let (name, kind) = rename(name);
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shield_common::dest::DestClass;
    use shield_common::{Counter, Method};

    fn sample() -> Snapshot {
        Snapshot {
            packets: verdict_reason_pairs()
                .map(|(v, r)| {
                    (
                        "eth0".to_string(),
                        v,
                        r,
                        Counter {
                            packets: 3,
                            bytes: 300,
                        },
                    )
                })
                .collect(),
            sip: vec![("eth0".into(), Method::Invite, Verdict::Drop, 7)],
            responses: vec![("eth0".into(), Method::Register, 2, 4)],
            auth_attempts: vec![("eth0".into(), "REGISTER", "failure", 9)],
            auth_targeted_users: 2,
            verified_sources: 12,
            under_pressure: true,
            dest_refused: vec![
                ("eth0".into(), "00899".into(), "reject".into(), 6),
                ("eth0".into(), "allow_international".into(), "reject".into(), 2),
            ],
            invites_by_class: DestClass::ALL.iter().map(|c| ("eth0".to_string(), *c, *c as u64 + 10)).collect(),
            invites_by_country: vec![("eth0".into(), 33, 8), ("eth0".into(), 1, 4)],
            calls: sample_calls(),
            bans_active: 2,
            store_rewrites: 1,
            events_lost: 3,
            bans_total: [("manual".to_string(), 1), ("kamailio".to_string(), 1)].into(),
            jail_failures: [("kamailio".to_string(), 5)].into(),
            map_entries: vec![("bans".into(), 2)],
            map_capacity: vec![("bans".into(), 1000)],
            attached: vec![("eth0".into(), "driver".into())],
            crowdsec: Some(CrowdsecSnapshot {
                up: true,
                decisions: vec![("CAPI".into(), "Range".into(), 40)],
                requests: vec![("decisions_stream".into(), "200".into(), 9)],
                skipped: vec![("scope".into(), 2)],
                push_queued: 1,
            }),
            version: "0.1.0".into(),
        }
    }

    fn sample_calls() -> crate::report::CallsSnapshot {
        use shield_common::calls::CallOutcome;
        use shield_common::dest::DestClass;
        let mut h = crate::report::Histogram::default();
        for secs in [10.0, 42.0, 20_000.0] {
            h.observe(secs);
        }
        crate::report::CallsSnapshot {
            totals: vec![("eth0".into(), DestClass::International, CallOutcome::Answered, 3)],
            active: vec![("eth0".into(), DestClass::National, 2)],
            durations: vec![(DestClass::International, h)],
            by_country: vec![("eth0".into(), 33, CallOutcome::Failed, 1)],
            long_calls: 1,
        }
    }

    #[test]
    fn pairs_cover_what_the_kernel_counts() {
        let pairs: Vec<_> = verdict_reason_pairs().collect();
        assert_eq!(pairs.len(), 2 + 10 * 2);
        assert!(pairs.contains(&(Verdict::WouldDrop, Reason::Ban)));
        assert!(!pairs.contains(&(Verdict::Drop, Reason::Ok)));
    }

    #[test]
    fn openmetrics_has_every_family() {
        let om = encode_openmetrics(sample());
        for needle in [
            "# TYPE sipshield_packets counter",
            r#"sipshield_packets_total{interface="eth0",verdict="drop",reason="ban"} 3"#,
            r#"sipshield_bytes_total{interface="eth0",verdict="pass",reason="ok"} 300"#,
            r#"sipshield_sip_requests_total{interface="eth0",method="INVITE",verdict="drop"} 7"#,
            "sipshield_bans_active 2",
            "sipshield_store_rewrites_total 1",
            "sipshield_events_lost_total 3",
            r#"sipshield_bans_total{origin="kamailio"} 1"#,
            r#"sipshield_jail_failures_total{jail="kamailio"} 5"#,
            r#"sipshield_map_entries{map="bans"} 2"#,
            r#"sipshield_map_capacity{map="bans"} 1000"#,
            r#"sipshield_xdp_attached{interface="eth0",mode="driver"} 1"#,
            r#"sipshield_sip_responses_total{interface="eth0",method="REGISTER",class="2xx"} 4"#,
            r#"sipshield_auth_attempts_total{interface="eth0",method="REGISTER",result="failure"} 9"#,
            "sipshield_auth_targeted_users 2",
            "sipshield_verified_sources 12",
            "sipshield_under_pressure 1",
            r#"sipshield_destination_refused_total{interface="eth0",rule="00899",action="reject"} 6"#,
            r#"sipshield_destination_refused_total{interface="eth0",rule="allow_international",action="reject"} 2"#,
            r#"sipshield_invites_by_destination_total{interface="eth0",class="national"} 10"#,
            r#"sipshield_invites_by_destination_total{interface="eth0",class="other"} 12"#,
            r#"sipshield_invites_by_country_total{interface="eth0",country="+33"} 8"#,
            r#"sipshield_invites_by_country_total{interface="eth0",country="+1"} 4"#,
            r#"sipshield_calls_total{interface="eth0",class="international",outcome="answered"} 3"#,
            r#"sipshield_calls_active{interface="eth0",class="national"} 2"#,
            r#"sipshield_calls_by_country_total{interface="eth0",country="+33",outcome="failed"} 1"#,
            r#"sipshield_call_duration_seconds_bucket{le="60.0",class="international"} 2"#,
            r#"sipshield_call_duration_seconds_bucket{le="+Inf",class="international"} 3"#,
            r#"sipshield_call_duration_seconds_count{class="international"} 3"#,
            "sipshield_long_calls 1",
            "sipshield_crowdsec_up 1",
            r#"sipshield_crowdsec_decisions{origin="CAPI",scope="Range"} 40"#,
            r#"sipshield_crowdsec_requests_total{route="decisions_stream",outcome="200"} 9"#,
            r#"sipshield_crowdsec_skipped_total{why="scope"} 2"#,
            "sipshield_crowdsec_push_queued 1",
            r#"sipshield_build_info{version="0.1.0"} 1"#,
        ] {
            assert!(om.contains(needle), "missing {needle:?} in\n{om}");
        }
        assert!(om.ends_with("# EOF\n"));
    }

    /// Text a hostile LAPI (or a config) can put into a label value: a
    /// quote and brace to close the sample, a newline to start a forged
    /// one, a terminal control.
    const HOSTILE: &str = "o\"r}\n\x1b[2J";

    /// [`sample`] with `text` in every label value that can come from
    /// outside.
    fn labelled(text: &str) -> Snapshot {
        let mut s = sample();
        s.jail_failures = [(format!("jail{text}\\"), 5)].into();
        s.bans_total = [(text.to_string(), 1)].into();
        s.attached = vec![(text.into(), "driver".into())];
        s.version = text.into();
        let c = s.crowdsec.as_mut().expect("sample has crowdsec");
        c.decisions = vec![(text.into(), "Ip".into(), 1)];
        c.requests = vec![("decisions_stream".into(), text.into(), 1)];
        s
    }

    fn hostile() -> Snapshot {
        labelled(HOSTILE)
    }

    #[test]
    fn hostile_label_values_stay_inside_their_quotes() {
        let benign_lines = encode_openmetrics(labelled("plain")).lines().count();
        let om = encode_openmetrics(hostile());
        // No line was added: nothing broke out of a label value.
        assert_eq!(om.lines().count(), benign_lines, "{om}");
        assert!(!om.contains('\x1b'), "a raw terminal control in\n{om}");
        for line in om.lines() {
            assert!(line.starts_with("# ") || line.starts_with("sipshield_"), "forged line {line:?}");
        }
        assert_eq!(label_value("plain-eth0.5"), "plain-eth0.5");
        assert_eq!(label_value("a\\b\"c\nd"), r#"a\\b\"c\\x0ad"#);
        for needle in [
            r#"sipshield_crowdsec_decisions{origin="o\"r}\\x0a\\x1b[2J",scope="Ip"} 1"#,
            r#"sipshield_jail_failures_total{jail="jailo\"r}\\x0a\\x1b[2J\\"} 5"#,
            r#"sipshield_build_info{version="o\"r}\\x0a\\x1b[2J"} 1"#,
        ] {
            assert!(om.contains(needle), "missing {needle:?} in\n{om}");
        }
    }

    /// promtool (Debian package prometheus) parses the classic text as
    /// Prometheus does: one bad label value rejects the whole scrape.
    #[test]
    fn hostile_label_values_pass_promtool() {
        let text = to_classic_text(&encode_openmetrics(hostile()));
        if let Err(e) = shield_tests::promtool::check_metrics(&text) {
            panic!("promtool check metrics: {e}\n{text}");
        }
    }

    #[test]
    fn classic_text_names_counters_with_total() {
        let text = to_classic_text(&encode_openmetrics(sample()));
        assert!(
            text.contains("# TYPE sipshield_packets_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP sipshield_packets_total Packets"),
            "{text}"
        );
        assert!(text.contains("# TYPE sipshield_build_info gauge"), "{text}");
        assert!(
            text.contains("# TYPE sipshield_bans_active gauge"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        // Every sample's family was declared under the sample's own name.
        // (A histogram's samples carry their family's name plus a suffix.)
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let histogram = ["_bucket", "_sum", "_count"].iter().any(|sfx| {
                name.strip_suffix(sfx)
                    .is_some_and(|base| text.contains(&format!("# TYPE {base} histogram")))
            });
            assert!(
                histogram || text.contains(&format!("# TYPE {name} ")),
                "{name} undeclared"
            );
        }
    }
}
