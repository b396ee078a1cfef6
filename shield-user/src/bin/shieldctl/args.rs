//! The command line: global options and one variant per verb. Each verb's
//! own arguments live in its module, beside what it sends and prints.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{
    auth, ban, banned, calls, destination, detach, lists, refused, reload, stats, status, unban, unverify,
    verified, verify, watch,
};

#[derive(Parser)]
#[command(name = "shieldctl", version, about = "Control the SIP Shield daemon")]
pub struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "config")]
    pub socket: Option<PathBuf>,
    /// Take the socket (and, for an offline detach, the pin path) from this
    /// configuration file [default: /etc/shield/shield.toml if it exists].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Machine-readable output (JSON).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Ban an address or network.
    Ban(ban::Args),
    /// Lift a ban, or all of them.
    Unban(unban::Args),
    /// List bans: address, origin, reason, time left. With ADDR: that
    /// source's bans, how often it was banned, and its history.
    Banned(banned::Args),
    /// Show or change the allowlist (always passes, beats bans).
    Allow(lists::Allow),
    /// Show or change the denylist (always dropped unless allowlisted).
    Deny(lists::Deny),
    /// Verified sources (a final 2xx from the server, an operator, the
    /// config) and the shared budget of everything else.
    Verified(verified::Args),
    /// Verify an address or network: it skips the unverified budget.
    Verify(verify::Args),
    /// End an address's or network's verification.
    Unverify(unverify::Args),
    /// INVITEs refused by the destination policy (toll fraud), newest
    /// first: time, source, number, rule, reason, 403 sent, User-Agent.
    /// Numbers are masked to their last 4 digits unless --full; --json
    /// always carries them in full.
    Refused(refused::Args),
    /// Failed digest authentications seen on the wire within [auth]
    /// window: top usernames with their sources, sources with failures.
    Auth(auth::Args),
    /// What the destination policy shieldd has loaded decides about a
    /// dialled number: normalised form, class, country code, deciding
    /// rule. Sends nothing.
    Destination(destination::Args),
    /// Calls in progress (source, destination country, number masked to
    /// its last 4 digits, ringing or answered, age) and the destinations
    /// called in the last hour.
    Calls(calls::Args),
    /// Packet counters by verdict and reason, top offending sources.
    Stats(stats::Args),
    /// Interfaces, attach mode, program id, enforcement, version.
    Status(status::Args),
    /// Re-read the configuration file (nothing changes if it is invalid).
    Reload(reload::Args),
    /// Remove the shield from the kernel: program, links and pins. The
    /// daemon exits; bans stay in state_dir. Works without a daemon too.
    Detach(detach::Args),
    /// Live view of what XDP drops: drops per second by reason, top sources
    /// (ban time left, verified), sampled dropped packets decoded (source,
    /// method, Request-URI user masked, User-Agent, reason); --json: one
    /// JSON object a line; --pcap FILE: the sampled frames. Turns kernel
    /// sampling on while it runs (root: it opens the pinned maps).
    Watch(watch::WatchArgs),
}
