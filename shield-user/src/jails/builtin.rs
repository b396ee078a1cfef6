//! The built-in filters: fail2ban-format files from `config/filters/`,
//! compiled into the binary so a jail can say `filter = "kamailio"`.
//!
//! | name         | counts                                                                  |
//! |--------------|-------------------------------------------------------------------------|
//! | `kamailio`   | `sipshield: auth failed for USER from IP:PORT`, logged by the script      |
//! | `asterisk`   | chan_pjsip "No matching endpoint found" / "Failed to authenticate", chan_sip "Wrong password" / "No matching peer found" / "Username/auth name mismatch" / "Not a local domain" |
//! | `opensips`   | `sipshield: auth failed for USER from IP:PORT`, logged by the script      |
//! | `freeswitch` | "SIP auth failure (…) … from ip IP", "Can't find user [...] from IP"      |
//!
//! Each file documents the log format and, for Kamailio and OpenSIPS, the
//! script line to add. `config/samples/NAME.log` holds real-format lines
//! that must and must not match; the tests below check every one of them.

const BUILTINS: [(&str, &str); 4] = [
    (
        "kamailio",
        include_str!("../../../config/filters/kamailio.conf"),
    ),
    (
        "asterisk",
        include_str!("../../../config/filters/asterisk.conf"),
    ),
    (
        "opensips",
        include_str!("../../../config/filters/opensips.conf"),
    ),
    (
        "freeswitch",
        include_str!("../../../config/filters/freeswitch.conf"),
    ),
];

/// Names of the built-in filters.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(name, _)| *name)
}

/// The text of a built-in filter file.
pub fn source(name: &str) -> Option<&'static str> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::filter::{Filter, FilterOptions};
    use super::*;

    /// Sample logs: every log line follows a `# expect: <address>|none` line.
    fn expectations(sample: &str) -> Vec<(usize, &str, Option<IpAddr>)> {
        let mut out = Vec::new();
        let mut expect: Option<Option<IpAddr>> = None;
        for (index, line) in sample.lines().enumerate() {
            let lineno = index + 1;
            if let Some(rest) = line.strip_prefix("# expect:") {
                let word = rest.split_whitespace().next().unwrap_or_default();
                let want = if word == "none" {
                    None
                } else {
                    Some(
                        word.parse()
                            .unwrap_or_else(|e| panic!("line {lineno}: bad address {word}: {e}")),
                    )
                };
                expect = Some(want);
            } else if line.starts_with('#') || line.trim().is_empty() {
                continue;
            } else {
                let want = expect
                    .take()
                    .unwrap_or_else(|| panic!("line {lineno} has no `# expect:` line"));
                out.push((lineno, line, want));
            }
        }
        out
    }

    fn check(name: &str, sample: &str) {
        let filter =
            Filter::builtin(name, &FilterOptions::new()).expect("built-in filter compiles");
        assert!(
            filter.warnings().is_empty(),
            "{name}: {:?}",
            filter.warnings()
        );
        let cases = expectations(sample);
        assert!(
            cases.iter().filter(|c| c.2.is_some()).count() >= 4,
            "{name}: too few matching samples"
        );
        assert!(
            cases.iter().filter(|c| c.2.is_none()).count() >= 4,
            "{name}: too few non-matching samples"
        );
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|(lineno, line, want)| {
                let got = filter.match_line(line);
                (got != *want)
                    .then(|| format!("{name}.log:{lineno}: want {want:?}, got {got:?}: {line}"))
            })
            .collect();
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn kamailio_sample() {
        check(
            "kamailio",
            include_str!("../../../config/samples/kamailio.log"),
        );
    }

    #[test]
    fn asterisk_sample() {
        check(
            "asterisk",
            include_str!("../../../config/samples/asterisk.log"),
        );
    }

    #[test]
    fn opensips_sample() {
        check(
            "opensips",
            include_str!("../../../config/samples/opensips.log"),
        );
    }

    #[test]
    fn freeswitch_sample() {
        check(
            "freeswitch",
            include_str!("../../../config/samples/freeswitch.log"),
        );
    }

    #[test]
    fn every_builtin_has_a_sample_and_no_includes() {
        for name in names() {
            let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../config/samples")
                .join(format!("{name}.log"));
            assert!(sample.is_file(), "missing {}", sample.display());
            assert!(source(name).is_some_and(|s| !s.contains("[INCLUDES]")));
        }
        assert_eq!(source("sshd"), None);
    }
}
