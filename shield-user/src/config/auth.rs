//! `[auth]` (SPEC §12): failed digest authentications seen on the wire.
//! Bad values are config errors naming file, line and key (the reader's).

use std::time::Duration;

use super::reader::Section;

/// `[auth]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Auth {
    /// Proven failures within `window` that ban a source; 0 = no bans.
    pub failures: u32,
    pub window: Duration,
    /// The first ban's length; `[bans] increment` / `maxtime` apply.
    pub bantime: Duration,
    /// Proven failures against one username, all sources, within `window`
    /// that report it; 0 = no reports.
    pub user_failures: u32,
}

impl Default for Auth {
    /// Off unless the file has an `[auth]` section: see [`auth`].
    fn default() -> Self {
        Auth {
            failures: 0,
            window: Duration::from_secs(300),
            bantime: Duration::from_secs(3600),
            user_failures: 0,
        }
    }
}

impl Auth {
    /// SPEC §12's values: what a present `[auth]` section starts from.
    pub const SPEC: Auth = Auth {
        failures: 5,
        window: Duration::from_secs(300),
        bantime: Duration::from_secs(3600),
        user_failures: 20,
    };

    /// Whether the kernel should learn challenges and report attempts.
    pub fn enabled(&self) -> bool {
        self.failures > 0 || self.user_failures > 0
    }
}

/// Reads `[auth]`. Absent: off (a daemon upgraded in place keeps banning
/// only as it did); present: SPEC §12's defaults for what it leaves out.
pub(super) fn auth(mut s: Section) -> Auth {
    let d = if s.is_present() { Auth::SPEC } else { Auth::default() };
    let out = Auth {
        failures: s.int("failures", d.failures, 0..=1_000_000),
        window: s.duration("window", d.window),
        bantime: s.duration("bantime", d.bantime),
        user_failures: s.int("user_failures", d.user_failures, 0..=1_000_000),
    };
    if out.window.is_zero() {
        if let Some(v) = s.get("window") {
            v.error(format_args!("must be longer than 0s"));
        }
    }
    if out.bantime.is_zero() {
        if let Some(v) = s.get("bantime") {
            v.error(format_args!("must be longer than 0s"));
        }
    }
    s.finish();
    out
}
