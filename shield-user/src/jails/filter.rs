//! Filters: which log lines are authentication failures, and from which address.
//!
//! A [`Filter`] is built from a built-in filter, a fail2ban filter file (read
//! as fail2ban reads it, see the `ini` module) and/or a jail's own
//! `failregex`/`ignoreregex`. Matching a line works like fail2ban:
//!
//! 1. the timestamp is cut out (`datepattern`, see the `dates` module), so `^`
//!    anchors after the date;
//! 2. if the filter has a `prefregex`, it must match, and its `<F-CONTENT>`
//!    part (if any) is what the next steps see;
//! 3. the first `failregex` that matches decides; if an `ignoreregex` matches
//!    the same text, the line is ignored instead;
//! 4. the jail's own patterns (from the SIP Shield config) are tried on the
//!    date-stripped line when the filter file's did not match, and the jail's
//!    `ignoreregex` suppresses any failure.
//!
//! The address comes from `<HOST>` & co. (or a legacy `(?P<host>…)` group) and
//! is parsed as an IP address; anything else (a host name) yields no address:
//! SIP Shield never resolves names. IPv4-mapped IPv6 addresses become IPv4.
//!
//! Not supported, by design: multi-line matching (`maxlines` > 1,
//! `<SKIPLINES>`, `<F-MLFID>` merging) — each line is matched on its own and
//! a warning says so — and journal backends (`journalmatch` is ignored).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use regex::{Captures, Regex, RegexBuilder};

use super::builtin;
use super::dates::DateDetector;
use super::ini::{Config, ConfigError, Definition, Entry, Location, Vars};
use super::pyregex::{self, HOST_GROUPS};

/// Options passed to a filter, as in fail2ban's `filter = name[key=value]`.
pub type FilterOptions = BTreeMap<String, String>;

/// Compiled-program limit per regex: generous for stock filters, bounded for
/// hostile ones.
const REGEX_SIZE_LIMIT: usize = 32 << 20;

/// Why a filter could not be built. Every variant names the file (or jail),
/// the option and, for patterns, the entry and the offending construct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{at}: {option} #{index} `{pattern}`: {message}")]
    Pattern {
        at: Location,
        option: String,
        /// 1-based position among the option's patterns.
        index: usize,
        pattern: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Definition { file: String, message: String },
    #[error(
        "unknown filter `{0}`: not a built-in ({builtins}) and not a path to a fail2ban filter file",
        builtins = builtin::names().collect::<Vec<_>>().join(", ")
    )]
    Unknown(String),
    #[error("filter `{spec}`: bad options: {message}")]
    Options { spec: String, message: String },
}

/// What a filter makes of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// No failregex matched.
    NoMatch,
    /// A failregex matched but an ignoreregex did too.
    Ignored,
    /// A failure; `host` is `None` when the captured text is not an IP address.
    Failure {
        host: Option<IpAddr>,
        /// The failregex that matched, as written in the filter.
        pattern: &'a str,
    },
}

/// One set of patterns and the text they are matched against.
#[derive(Debug, Clone, Default)]
struct Rules {
    prefregex: Option<Regex>,
    failregex: Vec<(Regex, String)>,
    ignoreregex: Vec<Regex>,
}

impl Rules {
    fn examine<'a>(&'a self, text: &str) -> Outcome<'a> {
        let pre = match &self.prefregex {
            Some(re) => match re.captures(text) {
                Some(caps) => Some(caps),
                None => return Outcome::NoMatch,
            },
            None => None,
        };
        let content = pre
            .as_ref()
            .and_then(|c| c.name("content"))
            .map_or(text, |m| m.as_str());
        for (re, source) in &self.failregex {
            let Some(caps) = re.captures(content) else {
                continue;
            };
            if self.ignored(content) {
                return Outcome::Ignored;
            }
            let host = host_of(&caps).or_else(|| pre.as_ref().and_then(host_of));
            return Outcome::Failure {
                host,
                pattern: source,
            };
        }
        Outcome::NoMatch
    }

    fn ignored(&self, text: &str) -> bool {
        self.ignoreregex.iter().any(|re| re.is_match(text))
    }
}

/// The address captured by the first participating host group.
fn host_of(caps: &Captures<'_>) -> Option<IpAddr> {
    let text = HOST_GROUPS.iter().find_map(|g| caps.name(g))?.as_str();
    parse_ip(text)
}

/// An IP address, also from `[v6]`, `v4:port` or `[v6]:port` (legacy `host` groups).
fn parse_ip(text: &str) -> Option<IpAddr> {
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

fn has_host(re: &Regex) -> bool {
    re.capture_names()
        .flatten()
        .any(|n| HOST_GROUPS.contains(&n))
}

fn compile(entry: &Entry, warnings: &mut Vec<String>) -> Result<Regex, FilterError> {
    let fail = |message: String| FilterError::Pattern {
        at: entry.at.clone(),
        option: entry.option.to_string(),
        index: entry.index,
        pattern: entry.text.clone(),
        message,
    };
    if entry.text.trim().is_empty() {
        return Err(fail("empty pattern".into()));
    }
    let translated = pyregex::translate(&entry.text, true).map_err(|e| fail(e.to_string()))?;
    for dropped in translated.dropped {
        warnings.push(format!(
            "{}: {} #{}: {dropped} ignored (the regex engine has no lookaround), \
             so the pattern may match more lines than under fail2ban",
            entry.at, entry.option, entry.index
        ));
    }
    RegexBuilder::new(&translated.pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| fail(format!("does not compile: {e}")))
}

fn no_host(entry: &Entry) -> FilterError {
    FilterError::Pattern {
        at: entry.at.clone(),
        option: entry.option.to_string(),
        index: entry.index,
        pattern: entry.text.clone(),
        message: "captures no address: use <HOST> (or <ADDR>, <IP4>, <IP6>); \
                  SIP Shield bans addresses, never names or IDs"
            .into(),
    }
}

/// A compiled filter. Cheap to query from many lines; immutable.
#[derive(Debug, Clone)]
pub struct Filter {
    name: String,
    dates: DateDetector,
    /// Patterns of the filter file (or built-in), if any.
    file: Option<Rules>,
    /// The jail's own patterns, matched against the date-stripped line.
    extra: Rules,
    warnings: Vec<String>,
}

impl Filter {
    /// A filter as named in a jail: a built-in name or a path to a fail2ban
    /// filter file, optionally with options (`freeswitch.conf[mode=normal]`).
    pub fn from_spec(spec: &str) -> Result<Filter, FilterError> {
        let (name, options) = split_spec(spec)?;
        if builtin::source(name).is_some() {
            Filter::builtin(name, &options)
        } else if name.contains('/') || name.ends_with(".conf") || name.ends_with(".local") {
            Filter::from_file(Path::new(name), &options)
        } else {
            Err(FilterError::Unknown(name.to_string()))
        }
    }

    /// One of the built-in filters (see [`builtin::names`]).
    pub fn builtin(name: &str, options: &FilterOptions) -> Result<Filter, FilterError> {
        let Some(text) = builtin::source(name) else {
            return Err(FilterError::Unknown(name.to_string()));
        };
        let label = format!("built-in filter `{name}`");
        let config = Config::from_source(&label, text)?;
        Filter::from_definition(label, config.filter_definition(&lowercase(options))?)
    }

    /// A fail2ban filter file, with its includes and `.local` overrides.
    pub fn from_file(path: &Path, options: &FilterOptions) -> Result<Filter, FilterError> {
        let config = Config::load(path)?;
        Filter::from_definition(
            path.display().to_string(),
            config.filter_definition(&lowercase(options))?,
        )
    }

    /// Only a jail's own patterns (fail2ban syntax), no filter file.
    pub fn from_patterns(
        failregex: &[String],
        ignoreregex: &[String],
        label: &str,
    ) -> Result<Filter, FilterError> {
        let empty = Filter {
            name: label.to_string(),
            dates: DateDetector::default_formats(),
            file: None,
            extra: Rules::default(),
            warnings: Vec::new(),
        };
        empty.with_patterns(failregex, ignoreregex, label)
    }

    /// Adds a jail's own patterns; `label` names their origin in errors.
    pub fn with_patterns(
        mut self,
        failregex: &[String],
        ignoreregex: &[String],
        label: &str,
    ) -> Result<Filter, FilterError> {
        let entries = |option: &'static str, list: &[String]| -> Vec<Entry> {
            list.iter()
                .enumerate()
                .map(|(i, text)| Entry {
                    text: text.clone(),
                    option,
                    index: i + 1,
                    at: Location {
                        file: label.into(),
                        line: None,
                    },
                })
                .collect()
        };
        for entry in entries("failregex", failregex) {
            let re = compile(&entry, &mut self.warnings)?;
            if !has_host(&re) {
                return Err(no_host(&entry));
            }
            self.extra.failregex.push((re, entry.text));
        }
        for entry in entries("ignoreregex", ignoreregex) {
            self.extra
                .ignoreregex
                .push(compile(&entry, &mut self.warnings)?);
        }
        Ok(self)
    }

    fn from_definition(name: String, def: Definition) -> Result<Filter, FilterError> {
        let mut warnings = Vec::new();
        let dates = if def.datepattern.is_empty() {
            DateDetector::default_formats()
        } else {
            DateDetector::from_patterns(&def.datepattern).map_err(|message| {
                FilterError::Definition {
                    file: name.clone(),
                    message,
                }
            })?
        };
        let prefregex = match &def.prefregex {
            Some(entry) => Some(compile(entry, &mut warnings)?),
            None => None,
        };
        let prefix_has_host = prefregex.as_ref().is_some_and(has_host);
        let mut failregex = Vec::new();
        for entry in &def.failregex {
            let re = compile(entry, &mut warnings)?;
            if !prefix_has_host && !has_host(&re) {
                return Err(no_host(entry));
            }
            failregex.push((re, entry.text.clone()));
        }
        if failregex.is_empty() {
            return Err(FilterError::Definition {
                file: name,
                message: "defines no failregex".into(),
            });
        }
        let ignoreregex = def
            .ignoreregex
            .iter()
            .map(|e| compile(e, &mut warnings))
            .collect::<Result<_, _>>()?;
        if let Some(maxlines) = def.maxlines.filter(|m| m.trim() != "1") {
            warnings.push(format!(
                "{name}: maxlines = {maxlines}: multi-line matching is not supported; \
                 every line is matched on its own"
            ));
        }
        Ok(Filter {
            name,
            dates,
            file: Some(Rules {
                prefregex,
                failregex,
                ignoreregex,
            }),
            extra: Rules::default(),
            warnings,
        })
    }

    /// The filter file or built-in this filter came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Things that load but behave differently than under fail2ban.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Full verdict on one line.
    pub fn examine(&self, line: &str) -> Outcome<'_> {
        let line = self.dates.strip(line);
        let outcome = match &self.file {
            Some(rules) => rules.examine(&line),
            None => Outcome::NoMatch,
        };
        let outcome = match outcome {
            Outcome::NoMatch => self.extra.examine(&line),
            other => other,
        };
        match outcome {
            Outcome::Failure { .. } if self.extra.ignored(&line) => Outcome::Ignored,
            other => other,
        }
    }

    /// The failing address in `line`, if the line is a (not ignored) failure.
    pub fn match_line(&self, line: &str) -> Option<IpAddr> {
        match self.examine(line) {
            Outcome::Failure { host, .. } => host,
            Outcome::NoMatch | Outcome::Ignored => None,
        }
    }
}

fn lowercase(options: &FilterOptions) -> Vars {
    options
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v.clone()))
        .collect()
}

/// `name[key=value, key2="value, 2"]` → name and options.
fn split_spec(spec: &str) -> Result<(&str, FilterOptions), FilterError> {
    let spec = spec.trim();
    let bad = |message: &str| FilterError::Options {
        spec: spec.to_string(),
        message: message.to_string(),
    };
    let Some((name, body)) = spec.strip_suffix(']').and_then(|s| s.split_once('[')) else {
        return Ok((spec, FilterOptions::new()));
    };
    let mut options = FilterOptions::new();
    let mut items = Vec::new();
    let (mut current, mut quote) = (String::new(), None);
    for c in body.chars() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            (',', None) => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quote.is_some() {
        return Err(bad("unterminated quote"));
    }
    items.push(current);
    for item in items.iter().filter(|i| !i.trim().is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(bad(&format!("`{}` is not key=value", item.trim())));
        };
        let key = key.trim().to_lowercase();
        if key.is_empty() {
            return Err(bad("empty option name"));
        }
        options.insert(key, value.trim().to_string());
    }
    Ok((name.trim(), options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn patterns(fail: &[&str], ignore: &[&str]) -> Filter {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Filter::from_patterns(&own(fail), &own(ignore), "test jail").expect("compiles")
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("test address"))
    }

    #[test]
    fn host_variants_through_a_whole_filter() {
        let f = patterns(&[r"auth failed from <HOST>$"], &[]);
        assert_eq!(f.match_line("auth failed from 192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(
            f.match_line("auth failed from 192.0.2.1:5060"),
            ip("192.0.2.1")
        );
        assert_eq!(
            f.match_line("auth failed from 2001:db8::1"),
            ip("2001:db8::1")
        );
        assert_eq!(
            f.match_line("auth failed from [2001:db8::1]"),
            ip("2001:db8::1")
        );
        assert_eq!(
            f.match_line("auth failed from [2001:db8::1]:5060"),
            ip("2001:db8::1")
        );
        assert_eq!(
            f.match_line("auth failed from ::ffff:192.0.2.8"),
            ip("192.0.2.8")
        );
        assert_eq!(
            f.match_line("auth failed from [::ffff:192.0.2.9]:5060"),
            ip("192.0.2.9")
        );
        // Not addresses: a failure without a host (never a DNS lookup) or no match.
        assert_eq!(f.match_line("auth failed from 999.1.1.1"), None);
        assert_eq!(
            f.examine("auth failed from sip.example.com"),
            Outcome::NoMatch
        );
        // Legacy named group.
        let f = patterns(&[r"from (?P<host>\S+) failed"], &[]);
        assert_eq!(
            f.match_line("from [2001:db8::5]:5060 failed"),
            ip("2001:db8::5")
        );
        assert_eq!(f.match_line("from gateway.example failed"), None);
    }

    #[test]
    fn ignoreregex_and_date_anchoring() {
        let f = patterns(&[r"^\s*auth failed from <HOST>"], &[r"from 192\.0\.2\.99"]);
        // `^` anchors after the timestamp (the space after it remains, as in fail2ban).
        assert_eq!(
            f.match_line("2024-03-14 10:00:00 auth failed from 192.0.2.1"),
            ip("192.0.2.1")
        );
        assert_eq!(
            f.match_line("Mar 14 10:00:00 auth failed from 192.0.2.2"),
            ip("192.0.2.2")
        );
        assert_eq!(
            f.examine("2024-03-14 10:00:00 auth failed from 192.0.2.99"),
            Outcome::Ignored
        );
        assert_eq!(f.examine("x auth failed from 192.0.2.1"), Outcome::NoMatch);
    }

    #[test]
    fn patterns_without_host_are_rejected() {
        let e =
            Filter::from_patterns(&["auth failed".into()], &[], "jail `j`").expect_err("no host");
        let msg = e.to_string();
        assert!(
            msg.contains("jail `j`") && msg.contains("failregex #1") && msg.contains("<HOST>"),
            "{msg}"
        );
    }

    #[test]
    fn lookbehind_error_names_file_line_and_construct() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.conf");
        std::fs::write(
            &path,
            "[Definition]\nfailregex = ^ok <HOST>$\n            ^(?<=x)bad <HOST>$\nignoreregex =\n",
        )
        .expect("write");
        let e = Filter::from_file(&path, &FilterOptions::new()).expect_err("lookbehind");
        let msg = e.to_string();
        assert!(msg.contains("bad.conf:3"), "{msg}");
        assert!(msg.contains("failregex #2"), "{msg}");
        assert!(msg.contains("lookbehind `(?<=...)`"), "{msg}");
        let e =
            Filter::from_patterns(&[r"(a)\1 <HOST>".into()], &[], "jail `j`").expect_err("backref");
        assert!(e.to_string().contains("backreference `\\1`"), "{e}");
    }

    #[test]
    fn prefregex_content_and_file_features() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("common.conf"),
            "[DEFAULT]\n__prefix = \\s*(?:\\S+ )?%(_daemon)s\\[\\d+\\]:\n",
        )
        .expect("write");
        let path = dir.path().join("svc.conf");
        std::fs::write(
            &path,
            "[INCLUDES]\nbefore = common.conf\n[Init]\nmaxlines = 1\n[Definition]\n_daemon = svc\n\
             prefregex = ^%(__prefix)s <F-CONTENT>.+</F-CONTENT>$\n\
             failregex = ^bad password for \\S+ from <HOST>$\n\
             \x20           ^unknown user from <HOST>$\n\
             ignoreregex = ^bad password for admin\n\
             datepattern = {^LN-BEG}\n",
        )
        .expect("write");
        let f = Filter::from_file(&path, &FilterOptions::new()).expect("loads");
        assert!(f.warnings().is_empty(), "{:?}", f.warnings());
        let line = "Mar 14 10:00:00 host svc[12]: bad password for bob from 192.0.2.4";
        assert_eq!(f.match_line(line), ip("192.0.2.4"));
        assert_eq!(
            f.match_line("Mar 14 10:00:00 host svc[12]: unknown user from 2001:db8::4"),
            ip("2001:db8::4")
        );
        assert_eq!(
            f.examine("Mar 14 10:00:00 host svc[12]: bad password for admin from 192.0.2.4"),
            Outcome::Ignored
        );
        // The prefix must match: another daemon's line is not a failure.
        assert_eq!(
            f.examine("Mar 14 10:00:00 host other[12]: bad password for bob from 192.0.2.4"),
            Outcome::NoMatch
        );
        // Jail patterns extend the file's and see the whole (date-stripped) line.
        let f = f
            .with_patterns(
                &[r"^ host other\[\d+\]: denied <HOST>$".into()],
                &[r"192\.0\.2\.200".into()],
                "jail",
            )
            .expect("extends");
        assert_eq!(
            f.match_line("Mar 14 10:00:00 host other[1]: denied 192.0.2.5"),
            ip("192.0.2.5")
        );
        assert_eq!(
            f.examine("Mar 14 10:00:00 host svc[12]: unknown user from 192.0.2.200"),
            Outcome::Ignored
        );
    }

    #[test]
    fn specs_and_options() {
        assert!(matches!(
            Filter::from_spec("sshd"),
            Err(FilterError::Unknown(_))
        ));
        assert!(Filter::from_spec("kamailio").is_ok());
        let (name, options) =
            split_spec(r#"/x/f.conf[mode=normal, logtype="journal, x"]"#).expect("ok");
        assert_eq!(name, "/x/f.conf");
        assert_eq!(options.get("mode").map(String::as_str), Some("normal"));
        assert_eq!(
            options.get("logtype").map(String::as_str),
            Some("journal, x")
        );
        assert!(split_spec("f.conf[mode]").is_err());
        assert!(split_spec("f.conf[mode='x]").is_err());
        let missing = PathBuf::from("/nonexistent/filter.conf");
        let e = Filter::from_spec(&missing.display().to_string()).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/filter.conf"), "{e}");
    }
}
