//! fail2ban compatibility, proven on fail2ban's own files: the stock
//! `asterisk.conf` and `freeswitch.conf` from the installed package, run
//! against fail2ban's own test logs (`# failJSON:` annotated) and against
//! real-format lines. These files are read at test time, never copied into
//! the repository. Without them the tests fail: install fail2ban.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::filter::{Filter, FilterOptions, Outcome};

const FILTER_DIR: &str = "/etc/fail2ban/filter.d";
/// Where Debian's fail2ban package installs its test logs.
const LOG_DIRS: &[&str] = &[
    "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs",
    "/usr/share/fail2ban/fail2ban/tests/files/logs",
];

fn required(path: PathBuf) -> PathBuf {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        path.is_file(),
        "{} is missing{}: install fail2ban (`apt-get install fail2ban`); \
         these compatibility tests load fail2ban's own filters",
        path.display(),
        if ci { " in CI" } else { "" },
    );
    path
}

fn filter_file(name: &str) -> PathBuf {
    required(Path::new(FILTER_DIR).join(name))
}

fn test_log(name: &str) -> PathBuf {
    let found = LOG_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    required(found.unwrap_or_else(|| Path::new(LOG_DIRS[0]).join(name)))
}

fn load(name: &str, options: &[(&str, &str)]) -> Filter {
    let options: FilterOptions = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let path = filter_file(name);
    Filter::from_file(&path, &options)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()))
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("test address"))
}

/// Runs a fail2ban test log through a stock filter, honouring its
/// `# filterOptions:` (filter parameters and `test.prefix-line`) and checking
/// every `# failJSON:` expectation: whether the line matches and which host.
fn run_fail2ban_samples(filter: &str, log: &str) -> usize {
    let path = test_log(log);
    let text = std::fs::read_to_string(&path).expect("readable test log");
    let mut filters: HashMap<String, Filter> = HashMap::new();
    let mut option_sets: Vec<serde_json::Map<String, Value>> = vec![Default::default()];
    let mut expect: Option<Value> = None;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (index, line) in text.lines().enumerate() {
        let lineno = index + 1;
        if let Some(json) = line.strip_prefix("# filterOptions:") {
            option_sets = serde_json::from_str(json.trim()).expect("filterOptions JSON");
            continue;
        }
        if let Some(json) = line.strip_prefix("# failJSON:") {
            expect = Some(serde_json::from_str(json.trim()).expect("failJSON"));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let want = expect
            .take()
            .unwrap_or_else(|| panic!("{log}:{lineno}: line without failJSON"));
        let should_match = want["match"].as_bool().expect("failJSON match");
        let want_host = want["host"].as_str().map(|h| h.parse::<IpAddr>().ok());
        for options in &option_sets {
            let prefix = options
                .get("test.prefix-line")
                .and_then(Value::as_str)
                .unwrap_or("");
            let params: Vec<(String, String)> = options
                .iter()
                .filter(|(k, _)| !k.starts_with("test."))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let key = format!("{params:?}");
            let f = filters.entry(key).or_insert_with(|| {
                let borrowed: Vec<(&str, &str)> = params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                load(filter, &borrowed)
            });
            let full = format!("{prefix}{line}");
            let outcome = f.examine(&full);
            let ok = match (outcome, should_match, want_host) {
                (Outcome::Failure { host, .. }, true, Some(want)) => host == want,
                (Outcome::Failure { .. }, true, None) => true,
                (Outcome::NoMatch | Outcome::Ignored, false, _) => true,
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{log}:{lineno} {options:?}: want {want}, got {outcome:?}: {full}"
                ));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    checked
}

#[test]
fn fail2ban_asterisk_filter_matches_fail2ban_test_log() {
    let checked = run_fail2ban_samples("asterisk.conf", "asterisk");
    assert!(checked >= 40, "only {checked} lines checked");
}

#[test]
fn fail2ban_freeswitch_filter_matches_fail2ban_test_log() {
    let checked = run_fail2ban_samples("freeswitch.conf", "freeswitch");
    assert!(checked >= 10, "only {checked} lines checked");
}

#[test]
fn fail2ban_asterisk_filter_on_real_format_lines() {
    let f = load("asterisk.conf", &[]);
    // The SecurityEvent pattern's `(?!RemoteAddress=)` guards are the only
    // constructs that need dropping; they are reported, not hidden.
    assert_eq!(f.warnings().len(), 2, "{:?}", f.warnings());
    assert!(
        f.warnings()[0].contains("(?!RemoteAddress=)"),
        "{:?}",
        f.warnings()
    );
    let cases = [
        (
            "[2024-03-14 09:15:02] NOTICE[2231] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:1001@pbx.example.com>' failed for '203.0.113.50:5060' (callid: 8b3a0c1e) - No matching endpoint found",
            ip("203.0.113.50"),
        ),
        (
            "[2024-03-14 09:15:04] NOTICE[2232]: res_pjsip/pjsip_distributor.c:716 log_failed_request: Request 'INVITE' from '\"Bob\" <sip:bob@pbx.example.com>' failed for '198.51.100.14:5062' (callid: a84b4c76e66710) - Failed to authenticate",
            ip("198.51.100.14"),
        ),
        (
            "[2024-03-14 09:20:15] NOTICE[2303] chan_sip.c: Registration from '<sip:400@pbx.example.com>' failed for '203.0.113.80:5071' - Wrong password",
            ip("203.0.113.80"),
        ),
        (
            "Mar 14 09:21:00 pbx1 asterisk[1201]: NOTICE[1305]: chan_sip.c:24100 in handle_request_register: Registration from '<sip:300@pbx.example.com>' failed for '192.0.2.77:5060' - No matching peer found",
            ip("192.0.2.77"),
        ),
        (
            "[2024-03-14 09:15:10] VERBOSE[2235] res_pjsip_registrar.c: Added contact 'sip:1001@198.51.100.20:5060;ob' to AOR '1001' with expiration of 300 seconds",
            None,
        ),
    ];
    for (line, want) in cases {
        assert_eq!(f.match_line(line), want, "{line}");
    }
}

#[test]
fn fail2ban_freeswitch_filter_modes() {
    let failure = "2024-03-14 09:40:00.123456 [WARNING] sofia_reg.c:1787 SIP auth failure (REGISTER) on sofia profile 'internal' for [1000@pbx.example.com] from ip 203.0.113.120";
    let challenge = "2024-03-14 09:40:00.023456 [WARNING] sofia_reg.c:1842 SIP auth challenge (REGISTER) on sofia profile 'internal' for [1000@pbx.example.com] from ip 203.0.113.121";
    let unknown = "2024-03-14 09:40:01.223344 [WARNING] sofia_reg.c:3210 Can't find user [9999@pbx.example.com] from 198.51.100.121";
    // Default mode "extra" counts challenges too (fail2ban's choice)...
    let extra = load("freeswitch.conf", &[]);
    assert!(extra.warnings().is_empty(), "{:?}", extra.warnings());
    assert_eq!(extra.match_line(failure), ip("203.0.113.120"));
    assert_eq!(extra.match_line(challenge), ip("203.0.113.121"));
    assert_eq!(extra.match_line(unknown), ip("198.51.100.121"));
    // ...`filter = ".../freeswitch.conf[mode=normal]"` does not.
    let normal = Filter::from_spec(&format!(
        "{}[mode=normal]",
        filter_file("freeswitch.conf").display()
    ))
    .expect("loads with options");
    assert_eq!(normal.match_line(failure), ip("203.0.113.120"));
    assert_eq!(normal.match_line(challenge), None);
    assert_eq!(normal.match_line(unknown), ip("198.51.100.121"));
}
