//! Timestamp removal, the way fail2ban does it before matching.
//!
//! fail2ban finds the date in a line, cuts it out and matches the filter's
//! regexes against what is left, so `^` in a failregex anchors *after* the
//! date (an Asterisk line `[2024-01-02 03:04:05] NOTICE[1] …` is matched as
//! `[] NOTICE[1] …`, which is why fail2ban's `common.conf` has `__date_ambit`).
//! This module reproduces that cut. The time itself is not parsed: SIP Shield
//! follows logs live and counts failures by the time a line was read.
//!
//! Supported `datepattern` entries: `{^LN-BEG}` (the default formats, at the
//! start of the line), `{DEFAULT}`, `{NONE}`, `EPOCH`/`LEPOCH`/`TAI64N`
//! (optionally `^`- or `{^LN-BEG}`-prefixed), `{UNB}` and strftime-style
//! patterns with fail2ban's directives (`%Y`, `%ExY`, `%m`, `%d`, `%H`, `%k`,
//! `%M`, `%S`, `%f`, `%b`, `%a`, `%z`, … including `{DATE}`). A filter without
//! `datepattern` uses the default formats anywhere in the line, preferring
//! one at the start.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use super::pyregex;

const YEAR: &str = r"(?:19|20)\d{2}";
const MONTH_NAME: &str = r"(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)";
const DAY_NAME: &str = r"(?i:mon|tue|wed|thu|fri|sat|sun)";
const TIME: &str = r"[0-2]?\d:[0-5]\d:[0-6]\d";
const FRACTION: &str = r"(?:[.,]\d{1,9})?";
const ZONE: &str = r"(?:\s*(?:Z|UTC|GMT|[+-][01]\d(?::?\d{2})?))?";

/// The default formats: the common log timestamps (ISO 8601 and variants,
/// syslog/asctime, Apache, day-first and month-first numeric dates).
fn default_formats() -> Vec<String> {
    vec![
        format!(
            r"{YEAR}(?:-\d{{1,2}}-|/\d{{1,2}}/|\.\d{{1,2}}\.)\d{{1,2}}(?:T| {{1,2}}){TIME}{FRACTION}{ZONE}"
        ),
        format!(
            r"(?:{DAY_NAME} )?{MONTH_NAME} {{1,2}}\d{{1,2}} {{1,2}}{TIME}{FRACTION}(?: {YEAR})?"
        ),
        format!(r"(?:{DAY_NAME} )?{MONTH_NAME} \d{{1,2}} {YEAR} {TIME}{FRACTION}"),
        format!(r"\d{{1,2}}(?:-\d{{1,2}}-|/\d{{1,2}}/)(?:{YEAR}|\d{{2}}) {TIME}{FRACTION}"),
        format!(
            r"\d{{1,2}}(?:-{MONTH_NAME}-|/{MONTH_NAME}/){YEAR}[ :]?{TIME}{FRACTION}(?: [+-]\d{{4}})?"
        ),
        format!(r"\d{{1,2}}/\d{{1,2}}/{YEAR}:{TIME}"),
    ]
}

/// Formats fail2ban only accepts at the start of a line.
fn line_start_only_formats() -> Vec<String> {
    vec![epoch(false), r"@[0-9a-f]{24}".to_string(), TIME.to_string()]
}

fn epoch(long: bool) -> String {
    if long {
        r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?".to_string()
    } else {
        r"\d{10,11}(?:\.\d{3,6})?".to_string()
    }
}

/// Allows up to two non-word characters (`[`, `(`, …) before a date at line start.
const LINE_START: &str = r"^\W{0,2}";
/// fail2ban's word boundary, `(?=^|\b|\W)`: not in the middle of a word.
const BOUNDARY: &str = r"(?:\b{start-half}|\b{end-half})";

/// One way of finding a date: the date is the first participating group.
#[derive(Debug, Clone)]
struct Template {
    re: Regex,
}

impl Template {
    fn alternation(prefix: &str, formats: &[String]) -> Template {
        let body: Vec<String> = formats.iter().map(|f| format!("({f})")).collect();
        let pattern = format!("{prefix}(?:{}){BOUNDARY}", body.join("|"));
        Template {
            // The formats are constants of this module, tested below.
            re: Regex::new(&pattern).expect("built-in date formats compile"),
        }
    }

    fn find(&self, line: &str) -> Option<(usize, usize)> {
        let caps = self.re.captures(line)?;
        let m = caps.iter().skip(1).flatten().next()?;
        Some((m.start(), m.end()))
    }
}

/// Finds and removes the timestamp of a log line.
#[derive(Debug, Clone)]
pub(crate) struct DateDetector {
    templates: Vec<Template>,
}

impl DateDetector {
    /// fail2ban's behaviour without `datepattern`.
    pub(crate) fn default_formats() -> DateDetector {
        DateDetector {
            templates: vec![anchored_defaults(), unanchored_defaults()],
        }
    }

    /// From a filter's `datepattern` lines.
    pub(crate) fn from_patterns<S: AsRef<str>>(lines: &[S]) -> Result<DateDetector, String> {
        let mut templates = Vec::new();
        for line in lines {
            let line = line.as_ref().trim();
            if line.is_empty() {
                continue;
            }
            let upper = line.to_ascii_uppercase();
            match upper.as_str() {
                "{NONE}" => {
                    return Ok(DateDetector {
                        templates: Vec::new(),
                    })
                }
                "{^LN-BEG}" => templates.push(anchored_defaults()),
                "{DEFAULT}" => {
                    templates.push(anchored_defaults());
                    templates.push(unanchored_defaults());
                }
                "EPOCH" | "LEPOCH" => {
                    let f = [epoch(upper == "LEPOCH")];
                    templates.push(Template::alternation(BOUNDARY, &f));
                }
                "^EPOCH" | "{^LN-BEG}EPOCH" | "^LEPOCH" | "{^LN-BEG}LEPOCH" => {
                    let f = [epoch(upper.ends_with("LEPOCH"))];
                    templates.push(Template::alternation(LINE_START, &f));
                }
                "TAI64N" => {
                    templates.push(Template::alternation("", &[r"@[0-9a-f]{24}".to_string()]))
                }
                "^TAI64N" | "{^LN-BEG}TAI64N" => templates.push(Template::alternation(
                    LINE_START,
                    &[r"@[0-9a-f]{24}".to_string()],
                )),
                _ => templates.push(custom(line)?),
            }
        }
        Ok(DateDetector { templates })
    }

    /// The line without its timestamp (unchanged when none is found).
    pub(crate) fn strip<'a>(&self, line: &'a str) -> Cow<'a, str> {
        for t in &self.templates {
            if let Some((start, end)) = t.find(line) {
                let mut out = String::with_capacity(line.len() - (end - start));
                out.push_str(&line[..start]);
                out.push_str(&line[end..]);
                return Cow::Owned(out);
            }
        }
        Cow::Borrowed(line)
    }
}

/// The default formats at line start (compiled once: every jail uses them).
fn anchored_defaults() -> Template {
    static TEMPLATE: LazyLock<Template> = LazyLock::new(|| {
        let mut formats = default_formats();
        formats.extend(line_start_only_formats());
        Template::alternation(LINE_START, &formats)
    });
    TEMPLATE.clone()
}

/// The default formats anywhere in the line.
fn unanchored_defaults() -> Template {
    static TEMPLATE: LazyLock<Template> =
        LazyLock::new(|| Template::alternation(BOUNDARY, &default_formats()));
    TEMPLATE.clone()
}

/// A strftime-style `datepattern` line.
fn custom(line: &str) -> Result<Template, String> {
    let (mut pattern, mut bounded, mut line_start) = (line, true, false);
    if let Some(rest) = pattern.strip_prefix("{UNB}") {
        pattern = rest;
        bounded = false;
    }
    if let Some(rest) = pattern.strip_prefix("{^LN-BEG}") {
        pattern = rest;
        line_start = true;
    }
    let expanded = expand_directives(pattern)?;
    let translated =
        pyregex::translate(&expanded, false).map_err(|e| format!("datepattern `{line}`: {e}"))?;
    if let Some(d) = translated.dropped.first() {
        return Err(format!("datepattern `{line}`: {d} is not supported here"));
    }
    let body = translated.pattern;
    let has_group = Regex::new(&body)
        .map_err(|e| format!("datepattern `{line}`: {e}"))?
        .captures_len()
        > 1;
    // The cut is the first capture group; without one, the whole pattern
    // (after a leading `^`) is the date.
    let (anchor, body) = match body.strip_prefix('^') {
        Some(rest) => ("^", rest.to_string()),
        None => ("", body),
    };
    let ends_bounded = body.ends_with('$') || body.ends_with(r"\b") || body.ends_with(r"\s");
    let suffix = if bounded && !ends_bounded {
        BOUNDARY
    } else {
        ""
    };
    let body = if has_group { body } else { format!("({body})") };
    let prefix = if line_start {
        LINE_START
    } else if bounded && anchor.is_empty() {
        BOUNDARY
    } else {
        anchor
    };
    let pattern = format!("{prefix}{body}{suffix}");
    let re = Regex::new(&pattern).map_err(|e| format!("datepattern `{line}`: {e}"))?;
    Ok(Template { re })
}

/// Replaces `%X` / `%ExX` directives by sub-patterns (Python syntax, no groups).
fn expand_directives(pattern: &str) -> Result<String, String> {
    if pattern.contains("{DATE}") {
        let any = format!("(?:{})", default_formats().join("|"));
        return expand_directives(&pattern.replace("{DATE}", &any));
    }
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut name = String::new();
        if chars.peek() == Some(&'E') {
            chars.next();
            if chars.next() != Some('x') {
                return Err(format!("datepattern `{pattern}`: unknown directive `%E`"));
            }
            name.push_str("Ex");
        }
        let Some(d) = chars.next() else {
            return Err(format!("datepattern `{pattern}`: `%` at the end"));
        };
        name.push(d);
        let sub = match name.as_str() {
            "%" => "%",
            "Y" => r"\d{4}",
            "ExY" => r"20\d{2}",
            "y" | "Exy" => r"\d{2}",
            "m" => r"(?:1[0-2]|0?[1-9])",
            "Exm" => r"(?:1[0-2]|0[1-9])",
            "d" => r"(?:3[01]|[12]\d|[0 ]?[1-9])",
            "Exd" => r"(?:3[01]|[12]\d|0[1-9])",
            "H" => r"(?:2[0-3]|[01]?\d)",
            "ExH" => r"(?:2[0-3]|[01]\d)",
            "k" | "Exk" => r"(?: ?(?:2[0-3]|[01]?\d))",
            "I" => r"(?:1[0-2]|0?[1-9])",
            "l" | "Exl" => r"(?: ?(?:1[0-2]|[1-9]))",
            "M" => r"[0-5]?\d",
            "ExM" => r"[0-5]\d",
            "S" => r"(?:6[01]|[0-5]?\d)",
            "ExS" => r"(?:6[01]|[0-5]\d)",
            "f" => r"\d{1,6}",
            "p" => r"(?i:am|pm)",
            "a" => DAY_NAME,
            "A" => r"(?i:monday|tuesday|wednesday|thursday|friday|saturday|sunday)",
            "b" => MONTH_NAME,
            "B" => {
                r"(?i:january|february|march|april|may|june|july|august|september|october|november|december)"
            }
            "j" => r"(?:36[0-6]|3[0-5]\d|[12]\d{2}|0?[1-9]\d|0{0,2}[1-9])",
            "U" | "W" => r"(?:5[0-3]|[0-4]?\d)",
            "w" => r"[0-6]",
            "z" => r"(?:Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)",
            "Exz" => r"(?:(?:[A-Z](?:[A-Z]{2,4})?)?[+-][01]\d(?::?\d{2})?|[A-Z](?:[A-Z]{2,4})?)",
            "Z" => r"(?:Z|[A-Z]{3,5})",
            "ExZ" => r"[A-Z](?:[A-Z]{2,4})?",
            other => {
                return Err(format!(
                    "datepattern `{pattern}`: unsupported directive `%{other}`"
                ))
            }
        };
        out.push_str(sub);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_formats_are_cut_at_line_start() {
        let d = DateDetector::from_patterns(&["{^LN-BEG}"]).expect("ok");
        let cases = [
            ("[2012-02-13 17:21:54] NOTICE[1638] x", "[] NOTICE[1638] x"),
            ("[Jan 18 17:39:50] NOTICE[1] x", "[] NOTICE[1] x"),
            (
                "Nov  4 18:30:40 host asterisk[1]: x",
                " host asterisk[1]: x",
            ),
            ("2013-12-31 17:39:54.767815 [WARNING] x", " [WARNING] x"),
            ("2016-09-25T18:57:58.150982 host x", " host x"),
            ("2024-03-14T09:12:01.123+01:00 host x", " host x"),
            ("1700000000.123 x", " x"),
            (
                "no date 2012-02-13 17:21:54 here",
                "no date 2012-02-13 17:21:54 here",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(d.strip(line), want, "{line}");
        }
    }

    #[test]
    fn without_datepattern_a_date_anywhere_is_cut() {
        let d = DateDetector::default_formats();
        assert_eq!(d.strip("host x: 2012-02-13 17:21:54 y"), "host x:  y");
        assert_eq!(d.strip("Jan 18 17:39:50 y"), " y");
        // Not in the middle of a word.
        assert_eq!(d.strip("id12012-02-13 17:21:54"), "id12012-02-13 17:21:54");
    }

    #[test]
    fn custom_patterns() {
        // fail2ban's freeswitch.conf, after `%%` interpolation.
        let d = DateDetector::from_patterns(&[r"^(?:%Y-)?%m-%d[ T]%H:%M:%S(?:\.%f)?", "{^LN-BEG}"])
            .expect("ok");
        assert_eq!(d.strip("08-03 07:56:53.026292 [WARN] x"), " [WARN] x");
        assert_eq!(
            d.strip("2013-12-31 17:39:54.767815 [WARNING] x"),
            " [WARNING] x"
        );
        // An explicit group is what gets cut.
        let d = DateDetector::from_patterns(&[r"^stamp=(%d/%b/%Y:%H:%M:%S) "]).expect("ok");
        assert_eq!(d.strip("stamp=13/Feb/2012:17:21:54 x"), "stamp= x");
        assert!(DateDetector::from_patterns(&["%Q"]).is_err());
        assert_eq!(
            DateDetector::from_patterns(&["{NONE}"])
                .expect("ok")
                .strip("Jan 18 17:39:50 y"),
            "Jan 18 17:39:50 y"
        );
    }
}
