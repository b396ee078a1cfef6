//! Jails: fail2ban-style bans from SIP servers' auth-failure logs (SPEC §4).
//! (Being written: see the jails brief.)

use std::path::PathBuf;
use std::time::Duration;

/// One `[[jail]]` as the config module hands it over (already validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailSpec {
    pub name: String,
    pub logpath: PathBuf,
    /// Built-in filter name (kamailio, asterisk, opensips, freeswitch) or a
    /// path to a fail2ban filter file; `None` when only `failregex` is given.
    pub filter: Option<String>,
    /// Extra patterns, fail2ban syntax with `<HOST>`.
    pub failregex: Vec<String>,
    pub ignoreregex: Vec<String>,
    pub maxretry: u32,
    pub findtime: Duration,
    pub bantime: Duration,
}
