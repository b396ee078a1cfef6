//! The daemon's configuration: `shield.toml` (SPEC §7) read into a typed,
//! fully resolved [`Config`], or every problem with it.
//!
//! ```text
//! text ──toml_edit──▶ document with spans ──schema──▶ Config
//!                                              └──▶ ConfigErrors (all of them)
//! ```
//!
//! Rules the whole module follows:
//! - Nothing is silently ignored: unknown keys, wrong types, bad CIDRs,
//!   durations, ports and out-of-range numbers are errors with file, line and
//!   dotted key (`shield.toml:12: limits.burst: must be at least 1 (got 0)`).
//! - Every problem is reported, not just the first; a value that fails is
//!   replaced by its default so reading can go on.
//! - Every section and key is optional; an empty file is the defaults.
//! - Relative paths (list files, jail log and filter files, pin path, state
//!   directory, control socket) are relative to the config file's directory.
//! - Values are resolved: list files are read and merged into the CIDR lists,
//!   durations are [`Duration`]s, jails are [`JailSpec`]s.
//!
//! Choices where the spec is silent: duplicate ports and CIDRs are merged
//! without comment (harmless); an interface listed twice is an error (it
//! cannot be attached twice); durations must be at least one second; a jail's
//! `logpath` need not exist yet (the follower waits for it) but a filter file
//! must. `[limits.methods]` absent means the default buckets, present and
//! empty means none.

pub mod auth;
mod cidr;
mod crowdsec;
mod calls;
mod destinations;
mod duration;
mod error;
mod reader;
mod schema;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use shield_common::{policy as pol, Bucket, Method, Policy};
use toml_edit::ImDocument;

pub use self::cidr::{parse_cidr, parse_cidr_list, CidrError};
pub use self::crowdsec::{CaFile, Crowdsec, Push, Scope, Secret};
pub use self::calls::Calls;
pub use crate::dest::{parse_entry, set_prefixes};
pub use self::duration::{
    duration_from_secs, format_duration, parse_duration, DurationError, MAX_DURATION_SECS,
};
pub use self::error::{ConfigError, ConfigErrors};
pub use self::schema::BUILTIN_FILTERS;
use crate::jails::JailSpec;

/// `[capacity]`: BPF map sizes in entries. It is the loader's own type, so a
/// config's capacities go to [`crate::kernel::Shield::load`] unchanged.
pub use crate::kernel::{AttachMode, Capacity};

/// Where `shieldd` looks without `--config`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/shield/shield.toml";

/// A validated configuration. Build it with [`Config::load`] or
/// [`Config::parse`]; [`Config::default`] is what an empty file gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file this was read from (for reload and messages).
    pub source_path: PathBuf,
    pub shield: ShieldSection,
    pub ports: Ports,
    pub allow: Allow,
    pub deny: Deny,
    pub limits: Limits,
    pub sip: Sip,
    pub bans: Bans,
    pub capacity: Capacity,
    pub verify: Verify,
    pub metrics: Metrics,
    pub control: Control,
    /// `[crowdsec]` (SPEC §9); `None`: not part of a fleet.
    pub crowdsec: Option<Crowdsec>,
    /// `[destinations]` (SPEC §11).
    pub destinations: crate::dest::Destinations,
    /// `[calls]` (SPEC §13).
    pub calls: Calls,
    /// `[auth]` (SPEC §12).
    pub auth: auth::Auth,
    /// The `[[jail]]`s with `enabled = true`, in file order.
    pub jails: Vec<JailSpec>,
}

/// `[shield]`: where and how the XDP program runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShieldSection {
    /// Network interfaces to attach to (each a valid Linux name, no repeats).
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    /// `false` is a dry run: drops are counted as `would_drop` and passed.
    pub enforce: bool,
    pub pin_path: PathBuf,
    pub state_dir: PathBuf,
    /// Detach on SIGTERM instead of leaving the kernel enforcing.
    pub detach_on_exit: bool,
}


/// `[ports]`: the protected ports, deduplicated, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    pub udp: Vec<u16>,
    pub tcp: Vec<u16>,
}

/// `[allow]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allow {
    /// `cidrs` and the contents of `files`, deduplicated, in file order.
    pub nets: Vec<IpNet>,
    /// Protected ports accept allowlisted sources only.
    pub trunk_only: bool,
}

/// `[deny]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deny {
    /// `cidrs` and the contents of `files`, deduplicated, in file order.
    pub nets: Vec<IpNet>,
}

/// `[limits]`: per-source token buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Packet bucket rate; 0 = no packet bucket.
    pub packets_per_second: u32,
    pub burst: u32,
    /// IPv6 sources share a bucket per prefix of this length (1..=128).
    pub ipv6_prefix: u8,
    /// `[limits.methods]`, in file order (at most [`pol::METHOD_BUCKETS`]).
    pub methods: Vec<(Method, RateLimit)>,
    pub tcp: TcpLimits,
}

/// One `[limits.methods]` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// `[limits.tcp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    /// SYN bucket rate; 0 = no SYN bucket.
    pub syn_per_second: u32,
    pub syn_burst: u32,
}

/// `[sip]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sip {
    pub drop_malformed: bool,
    /// User-Agent product tokens to drop, as written (each passes
    /// [`shield_common::sip::ua_key`]); empty turns the check off.
    pub scanner_user_agents: Vec<String>,
}

/// `[verify]` (SPEC §8): verified sources and the unverified budget.
/// `capacity` goes to [`Capacity::verified`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verify {
    /// A final 2xx to one of these marks its destination verified.
    pub methods: Vec<Method>,
    pub ttl: Duration,
    /// Always verified.
    pub cidrs: Vec<IpNet>,
    /// The shared budget of all unverified sources; 0: no budget (the
    /// default: an upgrade changes no verdict until the operator opts in).
    pub unverified_per_second: u32,
    pub unverified_burst: u32,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            methods: vec![Method::Register, Method::Invite],
            ttl: Duration::from_secs(3600),
            cidrs: Vec::new(),
            unverified_per_second: 0,
            unverified_burst: 1000,
        }
    }
}

/// `[bans]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bans {
    /// Default ban length (jails without their own, manual bans).
    pub bantime: Duration,
    pub scope: BanScope,
    /// Never banned (the allowlist never is either).
    pub ignoreip: Vec<IpNet>,
    /// Double a repeat offender's ban, up to `maxtime`.
    pub increment: bool,
    /// At least `bantime`.
    pub maxtime: Duration,
    /// Shorter IPv4 prefixes (bans, allow/deny entries from shieldctl) are
    /// refused unless forced: `ban 0.0.0.0/0` cuts off everyone.
    pub min_prefix_v4: u8,
    /// The same for IPv6.
    pub min_prefix_v6: u8,
    /// How long the ban store keeps its history of bans and unbans.
    pub history: Duration,
    pub escalate: Escalate,
}

/// `[bans] scope`: what deny and ban entries drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanScope {
    /// All traffic from the source.
    All,
    /// Only traffic to protected ports.
    Sip,
}

/// `[bans.escalate]`: kernel-reported repeat offenders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escalate {
    /// Counted drops within `window` that trigger a ban; 0 disables.
    pub drops: u32,
    pub window: Duration,
    pub bantime: Duration,
}

/// `[metrics]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// `None`: no metrics endpoint (`listen = ""` or `"off"`).
    pub listen: Option<SocketAddr>,
}

/// `[control]`: the `shieldctl` socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub socket: PathBuf,
    /// Group owning the socket; empty = root's group only.
    pub group: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source_path: PathBuf::from(DEFAULT_CONFIG_PATH),
            shield: ShieldSection::default(),
            ports: Ports::default(),
            allow: Allow::default(),
            deny: Deny::default(),
            limits: Limits::default(),
            sip: Sip::default(),
            bans: Bans::default(),
            capacity: Capacity::default(),
            verify: Verify::default(),
            metrics: Metrics::default(),
            control: Control::default(),
            crowdsec: None,
            destinations: crate::dest::Destinations::default(),
            calls: Calls::default(),
            auth: auth::Auth::default(),
            jails: Vec::new(),
        }
    }
}

impl Default for ShieldSection {
    fn default() -> Self {
        ShieldSection {
            interfaces: Vec::new(),
            mode: AttachMode::Auto,
            enforce: true,
            pin_path: PathBuf::from("/sys/fs/bpf/shield"),
            state_dir: PathBuf::from("/var/lib/shield"),
            detach_on_exit: false,
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            udp: vec![5060],
            tcp: vec![5060, 5061],
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            packets_per_second: 50,
            burst: 100,
            ipv6_prefix: 64,
            methods: vec![
                (
                    Method::Register,
                    RateLimit {
                        per_second: 5,
                        burst: 10,
                    },
                ),
                (
                    Method::Invite,
                    RateLimit {
                        per_second: 10,
                        burst: 20,
                    },
                ),
            ],
            tcp: TcpLimits::default(),
        }
    }
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            syn_per_second: 10,
            syn_burst: 20,
        }
    }
}

impl Default for Sip {
    fn default() -> Self {
        Sip {
            drop_malformed: true,
            scanner_user_agents: shield_common::sip::DEFAULT_SCANNERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl Default for Bans {
    fn default() -> Self {
        Bans {
            bantime: Duration::from_secs(3_600),
            scope: BanScope::All,
            ignoreip: Vec::new(),
            increment: true,
            maxtime: Duration::from_secs(7 * 86_400),
            min_prefix_v4: 8,
            min_prefix_v6: 32,
            history: Duration::from_secs(30 * 86_400),
            escalate: Escalate::default(),
        }
    }
}

impl Default for Escalate {
    fn default() -> Self {
        Escalate {
            drops: 1_000,
            window: Duration::from_secs(10),
            bantime: Duration::from_secs(600),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9814))),
        }
    }
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: PathBuf::from("/run/shield/control.sock"),
            group: String::new(),
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let error = |line, message| {
            Err(ConfigErrors::one(ConfigError {
                file: path.to_path_buf(),
                line,
                key: String::new(),
                message,
            }))
        };
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Config::parse(&text, path),
                Err(e) => {
                    let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                    let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
                    let column = valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
                    error(
                        Some(line),
                        format!("not valid UTF-8 (byte {} of the file, column {column}); TOML files are UTF-8", valid.len() + 1),
                    )
                }
            },
            Err(e) => error(None, format!("cannot read: {e}")),
        }
    }

    /// Validates `text` as if read from `origin`, which names the file in
    /// errors and anchors relative paths. List and filter files named in the
    /// text are read from disk.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigErrors> {
        let cx = reader::Ctx::new(text, origin);
        let doc = match ImDocument::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                // One line: `toml_edit` puts "expected ..." on a line of its own.
                let message = e.message().trim().replace('\n', "; ");
                return Err(ConfigErrors::one(ConfigError {
                    file: origin.to_path_buf(),
                    line: cx.line_of(e.span()),
                    key: String::new(),
                    message: format!("TOML syntax error: {message}"),
                }));
            }
        };
        let config = schema::read(&cx, doc.as_table());
        match ConfigErrors::from_vec(cx.into_errors(), origin) {
            None => Ok(config),
            Some(errors) => Err(errors),
        }
    }

    /// The kernel's policy record. The loader adds the `F_ALLOW_*`,
    /// `F_DENY_*` and `F_BAN_NETS_*` flags once it knows which tries hold
    /// entries.
    pub fn policy(&self) -> Policy {
        let flag = |on: bool, f: u32| if on { f } else { 0 };
        let mut p = Policy {
            flags: flag(self.shield.enforce, pol::F_ENFORCE)
                | flag(self.allow.trunk_only, pol::F_TRUNK_ONLY)
                | flag(self.sip.drop_malformed, pol::F_DROP_MALFORMED)
                | flag(self.bans.scope == BanScope::Sip, pol::F_SCOPE_SIP)
                | flag(!self.sip.scanner_user_agents.is_empty(), pol::F_SCAN_UA),
            ipv6_prefix: u32::from(self.limits.ipv6_prefix),
            packet: Bucket::new(
                self.limits.packets_per_second.into(),
                self.limits.burst.into(),
            ),
            syn: Bucket::new(
                self.limits.tcp.syn_per_second.into(),
                self.limits.tcp.syn_burst.into(),
            ),
            escalate_drops: self.bans.escalate.drops,
            // Parsed durations always fit; saturate for hand-built configs.
            escalate_window_ns: u64::try_from(self.bans.escalate.window.as_nanos())
                .unwrap_or(u64::MAX),
            unverified: Bucket::new(
                self.verify.unverified_per_second.into(),
                self.verify.unverified_burst.into(),
            ),
            verify_ttl_ns: u64::try_from(self.verify.ttl.as_nanos()).unwrap_or(u64::MAX),
            verify_methods: self
                .verify
                .methods
                .iter()
                .fold(0, |bits, m| bits | 1 << *m as u32),
            ..Policy::default()
        };
        // Slots beyond METHOD_BUCKETS cannot come out of `parse`; a
        // hand-built config with more simply has no bucket for the rest.
        for (slot, (method, rate)) in self
            .limits
            .methods
            .iter()
            .enumerate()
            .take(pol::METHOD_BUCKETS)
        {
            p.method[slot] = Bucket::new(rate.per_second.into(), rate.burst.into());
            p.method_slot[*method as usize] = slot as u8 + 1;
        }
        p
    }
}
