//! SPEC §11 through the daemon: a real INVITE to a denied number is
//! answered with a 403 and never reaches the SBC's socket; the refusal is
//! kept in the store (`shieldctl refused`, masked and in full), decided
//! again by `shieldctl destination`, and counted in the metrics, whose
//! refusal counters survive a reload that renumbers the rules.

mod common;

use std::time::Duration;

use common::*;

const POLICY: &str = "deny = [\"00899\", \"00976\"]\n";

fn config(deny: &str) -> String {
    format!("{NO_LIMITS}\n[destinations]\n{deny}escalate = 0\n")
}

/// An initial INVITE (no To tag) from the peer to `number`.
fn invite(number: &str, call: u32) -> String {
    format!(
        "INVITE sip:{number}@{SBC_IP} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {PEER_IP}:5062;branch=z9hG4bK-{call}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:100@{SBC_IP}>;tag=f{call}\r\n\
         To: <sip:{number}@{SBC_IP}>\r\n\
         Call-ID: call-{call}@peer\r\n\
         CSeq: 1 INVITE\r\n\
         User-Agent: dialer/1.0 (fraud)\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Sends the INVITE; returns the reply the peer got, if any.
fn call(ends: &Ends, number: &str, n: u32) -> Option<String> {
    ends.peer.send_to(invite(number, n).as_bytes(), (SBC_IP, 5060)).expect("send");
    let mut buf = [0u8; 4096];
    ends.peer.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let (len, from) = ends.peer.recv_from(&mut buf).ok()?;
    assert_eq!(from.port(), 5060, "the 403 comes from the port the INVITE went to");
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// The value of the sample `line` starts with, if present.
fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_denied_number_is_refused_kept_shown_and_counted() {
    let lab = Lab::new();
    let ends = Ends::bind(&lab);
    let mut d = Shieldd::new(bins(), &lab.sbc, &config(POLICY));
    d.start();

    let reply = call(&ends, "00899123456", 1).expect("a 403 for the denied number");
    assert!(reply.starts_with("SIP/2.0 403 Forbidden\r\n"), "{reply}");
    assert!(reply.contains("Call-ID: call-1@peer"), "{reply}");
    ends.sbc.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let mut buf = [0u8; 4096];
    assert!(ends.sbc.recv_from(&mut buf).is_err(), "the refused INVITE reached the SBC");

    let rows = wait_for("the refusal kept", Duration::from_secs(5), || {
        let v = d.ctl_json(&["refused"]);
        let rows = v["refusals"].as_array()?.clone();
        (!rows.is_empty()).then_some(rows)
    });
    let r = &rows[0];
    assert_eq!(r["source"], PEER_IP.to_string(), "{r}");
    assert_eq!(r["number"], "+899123456", "--json carries the number in full: {r}");
    assert_eq!(r["rule"], "00899");
    assert_eq!(r["reason"], "destination");
    assert_eq!(r["replied"], true);
    assert_eq!(r["user_agent"], "dialer/1.0 (fraud)", "{r}");
    let table = d.ctl_ok(&["refused", &PEER_IP.to_string(), "--since", "1h"]);
    assert!(table.contains("+xxxxx3456") && !table.contains("+899123456"), "{table}");
    assert!(table.contains("dialer/1.0 (fraud)") && table.contains("403"), "{table}");
    let full = d.ctl_ok(&["refused", "--full"]);
    assert!(full.contains("+899123456"), "{full}");
    assert!(d.ctl_ok(&["refused", "192.0.2.0/24"]).contains("no refusals kept"));

    let v = d.ctl_json(&["destination", "00976 123"]);
    assert_eq!((v["number"].as_str(), v["class"].as_str()), (Some("+976123"), Some("international")), "{v}");
    assert_eq!((v["country"].as_str(), v["rule"].as_str()), (Some("+976"), Some("00976")), "{v}");
    let text = d.ctl_ok(&["destination", "0033 1 23 45 67 89"]);
    assert!(text.contains("+33123456789") && text.contains("country code +33") && text.contains("allowed"), "{text}");
    let bad = d.ctl(&["destination", "0033\u{7}"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(text_of(&bad.stderr).contains("control character"), "{bad:?}");

    hostile_requests_are_bad_input(&d);

    let m = d.metrics(&lab.sbc).expect("metrics");
    let refused = format!("sipshield_destination_refused_total{{interface=\"{SBC_IF}\",rule=\"00899\",action=\"reject\"}}");
    assert_eq!(sample(&m, &refused), Some(1), "{m}");
    let intl = format!("sipshield_invites_by_destination_total{{interface=\"{SBC_IF}\",class=\"international\"}}");
    assert_eq!(sample(&m, &intl), Some(1), "{m}");
    let cc = format!("sipshield_invites_by_country_total{{interface=\"{SBC_IF}\",country=\"+899\"}}");
    assert_eq!(sample(&m, &cc), Some(1), "{m}");

    // A reload that puts an entry first renumbers the rules: the count of
    // 00899 stays with 00899, the new rule counts from 0.
    let text = std::fs::read_to_string(&d.config).expect("config");
    d.write_config(&text.replace(POLICY, "deny = [\"+900\", \"00899\", \"00976\"]\n"));
    d.ctl_ok(&["reload"]);
    assert!(call(&ends, "00900555", 2).expect("a 403").starts_with("SIP/2.0 403"));
    let m = wait_for("the new refusal counted", Duration::from_secs(5), || {
        let m = d.metrics(&lab.sbc).ok()?;
        m.contains("rule=\"+900\"").then_some(m)
    });
    assert_eq!(sample(&m, &refused), Some(1), "00899's count moved or went backwards:\n{m}");
    let plus900 = refused.replace("00899", "+900");
    assert_eq!(sample(&m, &plus900), Some(1), "{m}");
}

/// The control socket is untrusted: requests shieldctl would never send
/// are refused by the daemon itself, naming what is wrong, and it lives on.
fn hostile_requests_are_bad_input(d: &Shieldd) {
    use std::io::{Read, Write};
    let exchange = |line: String| -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        s.write_all(line.as_bytes()).expect("write");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    for (req, needle) in [
        (r#"{"cmd":"destination","number":"0033\u0000\r\nVia: x"}"#.to_string(), "control character"),
        (format!(r#"{{"cmd":"destination","number":"{}"}}"#, "9".repeat(4000)), "longer than the 128"),
        (r#"{"cmd":"destination","number":""}"#.to_string(), "empty"),
        (r#"{"cmd":"refused","limit":0}"#.to_string(), "limit: 0"),
        (r#"{"cmd":"refused","net":"198.51.100.0/8"}"#.to_string(), "net:"),
    ] {
        let r = exchange(format!("{req}\n"));
        assert!(r.contains("\"kind\":\"bad_input\"") && r.contains(needle), "{req}: {r}");
    }
    let r = exchange("{\"cmd\":\"refused\",\"limit\":4294967295}\n".into());
    assert!(r.contains("\"ok\":true") && r.contains("\"limit\":10000"), "{r}");
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
