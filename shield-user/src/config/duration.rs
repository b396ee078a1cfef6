//! fail2ban-style durations: `30s`, `10m`, `1h`, `2d`, `1w`, combinations such
//! as `1h30m`, or plain seconds (`600`).
//!
//! Every duration in the product ends up as a `bpf_ktime_get_ns` offset, so
//! the longest accepted one is the longest a `u64` of nanoseconds can hold
//! (about 584 years); anything longer is an overflow, not a silent clamp.

use std::time::Duration;

use thiserror::Error;

/// Longest duration accepted, in whole seconds (`u64::MAX` nanoseconds).
pub const MAX_DURATION_SECS: u64 = u64::MAX / 1_000_000_000;

/// The units, largest first (the order [`format_duration`] writes them in).
const UNITS: [(&str, u64); 5] = [
    ("w", 604_800),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
];

/// Why a duration string was rejected.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("negative durations are not allowed")]
    Negative,
    #[error("unit `{0}` has no number before it")]
    MissingNumber(String),
    #[error("`{0}` has no unit (write one right after the number: 30s, 10m, 1h, 2d, 1w)")]
    MissingUnit(String),
    #[error("unknown unit `{0}` (expected s, m, h, d or w)")]
    UnknownUnit(String),
    #[error("unexpected character {0:?}")]
    InvalidChar(char),
    #[error("too long: at most {MAX_DURATION_SECS} seconds (about 584 years)")]
    Overflow,
}

/// Parses a duration. Whitespace around the whole string and between parts is
/// allowed (`"1h 30m"`); a unit may repeat (`"1h1h"` is two hours), as in
/// fail2ban. A bare number is seconds, but only on its own: in `"1h30"` the
/// `30` is an error rather than a guess.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut rest = s;
    let mut total: u64 = 0;
    while let Some(first) = rest.chars().next() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        if number.is_empty() {
            return Err(match (unit, first) {
                ("", '-') => DurationError::Negative,
                ("", c) => DurationError::InvalidChar(c),
                (u, _) => DurationError::MissingNumber(u.to_owned()),
            });
        }
        let multiplier = match unit {
            "" if number.len() == s.len() => 1,
            "" => {
                return Err(match tail.chars().next() {
                    Some(c) if !c.is_whitespace() => DurationError::InvalidChar(c),
                    _ => DurationError::MissingUnit(number.to_owned()),
                })
            }
            u => match UNITS.iter().find(|&&(name, _)| name == u) {
                Some(&(_, m)) => m,
                None => return Err(DurationError::UnknownUnit(u.to_owned())),
            },
        };
        // A run of digits too long for u64 is an overflow, not a syntax error.
        let n: u64 = number.parse().map_err(|_| DurationError::Overflow)?;
        total = n
            .checked_mul(multiplier)
            .and_then(|secs| total.checked_add(secs))
            .ok_or(DurationError::Overflow)?;
        rest = tail.trim_start();
    }
    duration_from_secs(total)
}

/// Whole seconds as a [`Duration`], with the same upper bound as
/// [`parse_duration`] (for TOML integers, which are plain seconds).
pub fn duration_from_secs(secs: u64) -> Result<Duration, DurationError> {
    if secs > MAX_DURATION_SECS {
        return Err(DurationError::Overflow);
    }
    Ok(Duration::from_secs(secs))
}

/// Formats whole seconds the way an operator writes them: `1w2d`, `1h30m`,
/// `45s`, `0s`. Sub-second parts are dropped. [`parse_duration`] reads the
/// result back to the same number of seconds.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        if secs >= size {
            out.push_str(&(secs / size).to_string());
            out.push_str(unit);
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: &str) -> Result<u64, DurationError> {
        parse_duration(s).map(|d| d.as_secs())
    }

    #[test]
    fn units_and_plain_seconds() {
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("10m"), Ok(600));
        assert_eq!(secs("1h"), Ok(3_600));
        assert_eq!(secs("2d"), Ok(172_800));
        assert_eq!(secs("1w"), Ok(604_800));
        assert_eq!(secs("600"), Ok(600));
        assert_eq!(secs("0"), Ok(0));
        assert_eq!(secs("0s"), Ok(0));
        assert_eq!(secs("007m"), Ok(420));
    }

    #[test]
    fn combinations_and_whitespace() {
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs("1w2d3h4m5s"), Ok(604_800 + 172_800 + 10_800 + 240 + 5));
        assert_eq!(secs(" 1h 30m "), Ok(5_400));
        assert_eq!(secs("30m1h"), Ok(5_400));
        assert_eq!(secs("1h1h"), Ok(7_200));
    }

    #[test]
    fn rejects() {
        assert_eq!(secs(""), Err(DurationError::Empty));
        assert_eq!(secs("   "), Err(DurationError::Empty));
        assert_eq!(secs("-5m"), Err(DurationError::Negative));
        assert_eq!(secs("-600"), Err(DurationError::Negative));
        assert_eq!(secs("1h-5m"), Err(DurationError::Negative));
        assert_eq!(secs("h"), Err(DurationError::MissingNumber("h".into())));
        assert_eq!(secs("1h30"), Err(DurationError::MissingUnit("30".into())));
        assert_eq!(secs("10 m"), Err(DurationError::MissingUnit("10".into())));
        assert_eq!(secs("5x"), Err(DurationError::UnknownUnit("x".into())));
        assert_eq!(secs("5min"), Err(DurationError::UnknownUnit("min".into())));
        assert_eq!(secs("5H"), Err(DurationError::UnknownUnit("H".into())));
        assert_eq!(secs("1.5h"), Err(DurationError::InvalidChar('.')));
        assert_eq!(secs("+5m"), Err(DurationError::InvalidChar('+')));
        assert_eq!(secs("５m"), Err(DurationError::InvalidChar('５')));
    }

    #[test]
    fn overflow() {
        assert_eq!(secs(&MAX_DURATION_SECS.to_string()), Ok(MAX_DURATION_SECS));
        assert_eq!(
            secs(&(MAX_DURATION_SECS + 1).to_string()),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            secs("99999999999999999999999s"),
            Err(DurationError::Overflow)
        );
        assert_eq!(secs("30500000000w"), Err(DurationError::Overflow));
        assert_eq!(secs("18446744073709551615w"), Err(DurationError::Overflow));
        assert_eq!(duration_from_secs(u64::MAX), Err(DurationError::Overflow));
        // The longest duration still fits the kernel's nanosecond clock.
        assert!(Duration::from_secs(MAX_DURATION_SECS).as_nanos() <= u128::from(u64::MAX));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(691_200)), "1w1d");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s");
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse_duration(&s);
        }

        #[test]
        fn never_panics_on_duration_like_text(s in "[0-9smhdw \\-]{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn format_round_trips(n in 0..=MAX_DURATION_SECS) {
            let d = Duration::from_secs(n);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn plain_seconds_round_trip(n in 0..=MAX_DURATION_SECS) {
            prop_assert_eq!(secs(&n.to_string()), Ok(n));
        }
    }
}
