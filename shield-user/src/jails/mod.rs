//! Jails: fail2ban-style bans from SIP servers' auth-failure logs (SPEC §4).
//!
//! A [`Jail`] follows one log file ([`follow()`]), recognises failure lines with
//! a [`Filter`] (a built-in filter, a fail2ban filter file and/or the jail's
//! own `failregex`), counts failures per address ([`Tracker`]) and reports
//! to the daemon through a channel:
//!
//! * [`JailEvent::Failure`] for every counted failure (the daemon exports
//!   `sipshield_jail_failures_total{jail}`);
//! * [`JailEvent::Ban`] when an address reaches `maxretry` failures within
//!   `findtime`; the daemon applies `ignoreip`/allowlist, `increment` and
//!   writes the ban into the kernel map.
//!
//! Failures are timed by when the line was *read*, not by the timestamp in
//! it: the log is followed live from its end, so the two agree, and a bad
//! clock in a log line cannot stretch or shrink `findtime`.
//!
//! fail2ban compatibility is described in the `filter` module: filter files
//! load as they are (includes, interpolation, `<HOST>` and the other tags,
//! `prefregex`, `datepattern`); Python-only regex constructs are reported with
//! file, line, option and construct; multi-line matching is not supported.

pub mod builtin;
mod dates;
pub mod filter;
pub mod follow;
mod ini;
mod pyregex;
pub mod tracker;

#[cfg(test)]
mod compat_tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use filter::{Filter, FilterError, FilterOptions, Outcome};
pub use follow::{follow, Follower, LogLine, StopHandle};
pub use ini::{ConfigError, Location};
pub use tracker::Tracker;

/// One `[[jail]]` as the config module hands it over (already validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailSpec {
    pub name: String,
    pub logpath: PathBuf,
    /// Built-in filter name (kamailio, asterisk, opensips, freeswitch) or a
    /// path to a fail2ban filter file; `None` when only `failregex` is given.
    /// Filter options may follow in brackets, as in fail2ban:
    /// `/etc/fail2ban/filter.d/freeswitch.conf[mode=normal]`.
    pub filter: Option<String>,
    /// Extra patterns, fail2ban syntax with `<HOST>`.
    pub failregex: Vec<String>,
    pub ignoreregex: Vec<String>,
    pub maxretry: u32,
    pub findtime: Duration,
    pub bantime: Duration,
}

/// What a running jail reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JailEvent {
    /// A counted failure (not ignored, with an IP address).
    Failure { jail: String, host: IpAddr },
    /// `host` reached `maxretry` failures within `findtime`.
    Ban {
        jail: String,
        host: IpAddr,
        bantime: Duration,
        /// Failures within `findtime` that led to the ban.
        failures: u32,
        /// The line that completed the count.
        line: String,
        /// When that line was read (for log-to-kernel latency).
        seen_at: Instant,
    },
}

/// Why a jail could not be built; always names the jail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JailError {
    #[error("jail `{jail}`: filter `{filter}`: {error}")]
    Filter {
        jail: String,
        filter: String,
        error: Box<FilterError>,
    },
    #[error("jail `{jail}`: {error}")]
    Patterns {
        jail: String,
        error: Box<FilterError>,
    },
    #[error("jail `{jail}`: neither `filter` nor `failregex` is set, so nothing would ever match")]
    NothingToMatch { jail: String },
}

/// A jail ready to run: its filter compiled, its counters empty.
#[derive(Debug)]
pub struct Jail {
    name: String,
    logpath: PathBuf,
    bantime: Duration,
    filter: Filter,
    tracker: Tracker,
}

impl Jail {
    /// Compiles the jail's filter and patterns.
    pub fn new(spec: &JailSpec) -> Result<Jail, JailError> {
        // Where the jail's own patterns come from, in errors (after the jail name).
        let label = "[[jail]]";
        let filter = match &spec.filter {
            Some(name) => Filter::from_spec(name)
                .map_err(|error| JailError::Filter {
                    jail: spec.name.clone(),
                    filter: name.clone(),
                    error: Box::new(error),
                })?
                .with_patterns(&spec.failregex, &spec.ignoreregex, label),
            None if spec.failregex.is_empty() => {
                return Err(JailError::NothingToMatch {
                    jail: spec.name.clone(),
                })
            }
            None => Filter::from_patterns(&spec.failregex, &spec.ignoreregex, label),
        }
        .map_err(|error| JailError::Patterns {
            jail: spec.name.clone(),
            error: Box::new(error),
        })?;
        Ok(Jail {
            name: spec.name.clone(),
            logpath: spec.logpath.clone(),
            bantime: spec.bantime,
            filter,
            tracker: Tracker::new(spec.maxretry, spec.findtime),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The failing address in `line`, if it is a counted failure (pure; no counting).
    pub fn match_line(&self, line: &str) -> Option<IpAddr> {
        self.filter.match_line(line)
    }

    /// Processes one line read at `seen_at`: a failure event, and a ban
    /// event when the count is reached.
    pub fn observe(&mut self, line: &str, seen_at: Instant) -> Vec<JailEvent> {
        let Some(host) = self.filter.match_line(line) else {
            return Vec::new();
        };
        let mut events = vec![JailEvent::Failure {
            jail: self.name.clone(),
            host,
        }];
        if let Some(failures) = self.tracker.record(host, seen_at) {
            events.push(JailEvent::Ban {
                jail: self.name.clone(),
                host,
                bantime: self.bantime,
                failures,
                line: line.to_string(),
                seen_at,
            });
        }
        events
    }

    /// Follows the log and sends events until the receiver is dropped or the
    /// task is aborted (which also stops the follower thread).
    pub fn spawn(mut self, tx: mpsc::Sender<JailEvent>) -> JoinHandle<()> {
        for warning in self.filter.warnings() {
            tracing::warn!(jail = %self.name, "{warning}");
        }
        if !follow::parent_exists(&self.logpath) {
            tracing::warn!(jail = %self.name, path = %self.logpath.display(), "log directory does not exist yet; waiting for it");
        }
        tokio::spawn(async move {
            let mut follower = match follow(&self.logpath) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(jail = %self.name, path = %self.logpath.display(), "cannot follow log: {e}");
                    return;
                }
            };
            while let Some(line) = follower.recv().await {
                for event in self.observe(&line.text, line.read_at) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn spec(filter: Option<&str>, failregex: &[&str]) -> JailSpec {
        JailSpec {
            name: "test".into(),
            logpath: PathBuf::from("/nonexistent/test.log"),
            filter: filter.map(String::from),
            failregex: failregex.iter().map(|s| s.to_string()).collect(),
            ignoreregex: vec![],
            maxretry: 3,
            findtime: Duration::from_secs(600),
            bantime: Duration::from_secs(3600),
        }
    }

    const KAMAILIO_FAIL: &str =
        "Mar 14 09:12:07 sbc1 /usr/sbin/kamailio[2215]: NOTICE: <script>: sipshield: auth failed for 100 from 203.0.113.10:5060";

    #[test]
    fn errors_name_the_jail_and_the_problem() {
        let e = Jail::new(&spec(Some("nosuchfilter"), &[])).expect_err("unknown");
        assert!(
            e.to_string()
                .starts_with("jail `test`: filter `nosuchfilter`: unknown filter"),
            "{e}"
        );
        let e = Jail::new(&spec(None, &[])).expect_err("empty");
        assert!(matches!(e, JailError::NothingToMatch { .. }), "{e}");
        let e = Jail::new(&spec(Some("kamailio"), &["(?<=x)<HOST>"])).expect_err("lookbehind");
        let msg = e.to_string();
        assert!(
            msg.contains("jail `test`")
                && msg.contains("failregex #1")
                && msg.contains("lookbehind"),
            "{msg}"
        );
        let e = Jail::new(&spec(Some("/nonexistent/dir/f.conf"), &[])).expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/dir/f.conf"), "{e}");
    }

    #[test]
    fn observe_counts_and_bans() {
        let mut jail =
            Jail::new(&spec(Some("kamailio"), &[r"^ sbc1 custom: denied <HOST>$"])).expect("jail");
        let t0 = Instant::now();
        let host: IpAddr = "203.0.113.10".parse().expect("ip");
        assert_eq!(jail.match_line(KAMAILIO_FAIL), Some(host));
        assert!(jail.observe("unrelated", t0).is_empty());
        assert_eq!(
            jail.observe(KAMAILIO_FAIL, t0),
            vec![JailEvent::Failure {
                jail: "test".into(),
                host
            }]
        );
        // The jail's own pattern counts towards the same host.
        assert_eq!(
            jail.observe("Mar 14 09:12:08 sbc1 custom: denied 203.0.113.10", t0)
                .len(),
            1
        );
        let events = jail.observe(KAMAILIO_FAIL, t0 + Duration::from_secs(1));
        assert_eq!(
            events,
            vec![
                JailEvent::Failure {
                    jail: "test".into(),
                    host
                },
                JailEvent::Ban {
                    jail: "test".into(),
                    host,
                    bantime: Duration::from_secs(3600),
                    failures: 3,
                    line: KAMAILIO_FAIL.into(),
                    seen_at: t0 + Duration::from_secs(1),
                },
            ]
        );
        // Counting starts over after the ban.
        assert_eq!(
            jail.observe(KAMAILIO_FAIL, t0 + Duration::from_secs(2))
                .len(),
            1
        );
    }

    #[test]
    fn ignoreregex_suppresses_a_line() {
        let mut s = spec(Some("kamailio"), &[]);
        s.ignoreregex = vec![r"for 100 from".into()];
        let mut jail = Jail::new(&s).expect("jail");
        assert_eq!(jail.match_line(KAMAILIO_FAIL), None);
        assert!(jail.observe(KAMAILIO_FAIL, Instant::now()).is_empty());
    }

    #[tokio::test]
    async fn spawned_jail_bans_from_a_followed_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec(Some("kamailio"), &[]);
        s.logpath = dir.path().join("kamailio.log");
        s.maxretry = 2;
        std::fs::write(&s.logpath, format!("{KAMAILIO_FAIL}\n")).expect("history");
        let (tx, mut rx) = mpsc::channel(16);
        let handle = Jail::new(&s).expect("jail").spawn(tx);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&s.logpath)
            .expect("open");
        // History before the start is not counted: two new lines are needed.
        writeln!(log, "{KAMAILIO_FAIL}").expect("write");
        writeln!(log, "{KAMAILIO_FAIL}").expect("write");
        let wait = Duration::from_secs(10);
        let mut kinds = Vec::new();
        while kinds.len() < 3 {
            let event = tokio::time::timeout(wait, rx.recv())
                .await
                .expect("in time")
                .expect("event");
            kinds.push(match event {
                JailEvent::Failure { .. } => "failure",
                JailEvent::Ban { failures, .. } => {
                    assert_eq!(failures, 2);
                    "ban"
                }
            });
        }
        assert_eq!(kinds, ["failure", "failure", "ban"]);
        handle.abort();
    }

    /// Every built-in, each with an extra jail pattern.
    static FUZZ_JAILS: std::sync::LazyLock<Vec<Jail>> = std::sync::LazyLock::new(|| {
        builtin::names()
            .map(|name| Jail::new(&spec(Some(name), &[r"from <HOST>"])).expect("jail"))
            .collect()
    });

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic(line in ".{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let lossy = String::from_utf8_lossy(&bytes);
            for jail in FUZZ_JAILS.iter() {
                let _ = jail.match_line(&line);
                let _ = jail.match_line(&lossy);
            }
        }
    }

    proptest! {
        // Each case compiles regexes, which is slow in debug builds.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_patterns_never_panic(pattern in ".{0,60}") {
            let _ = Filter::from_patterns(std::slice::from_ref(&pattern), &[], "fuzz");
            let _ = Filter::from_patterns(&[format!("{pattern} <HOST>")], &[pattern], "fuzz");
        }
    }
}
