//! The lab: three hosts in network namespaces with real SIP software, for
//! the Kamailio jail test, `cargo xtask demo` and `cargo xtask bench`
//! (`cargo xtask demo -- --fleet` runs on a [`crate::fleet::Fleet`] instead).
//!
//! ```text
//!   attacker                          SBC                           carrier
//!   198.51.100.2/24 ── veth ── pub0 198.51.100.1/24
//!   (+ .100-.163 flood sources,       [XDP]          203.0.113.1/24 car0 ── veth ── 203.0.113.2/24
//!    .50 brute force, .77 scanner,                   [XDP]                  (+ .10 the trunk,
//!    .200-.239 latency probes)        Kamailio                              .20-.27 subscribers)
//!                                     PBX (sipp UAS) on 127.0.0.1:5070
//! ```
//!
//! All SIP goes to the SBC's one SIP address, 198.51.100.1: the carrier
//! reaches it over its own link (a host route via 203.0.113.1), so the
//! subscribers, the trunk and the attacker share Kamailio's socket and
//! workers, as they would on a real SBC.
//!
//! Each outside host has its own veth to the SBC, the way an SBC has a
//! public interface and a carrier interconnect. No bridge or router sits in
//! between: a flood packet costs the host exactly one veth transmit and the
//! SBC's receive path, so what the measurements see is the defence, not the
//! lab's plumbing. `shieldd` attaches to both SBC interfaces in native
//! (driver) mode; the example configuration's allowlisted trunk,
//! 203.0.113.10, is the carrier's trunk here.
//!
//! Everything a lab starts is stopped by a drop guard (processes are killed
//! by process group, namespaces deleted, which also removes their nftables
//! tables and XDP links; pins are removed), so a panic, a failed assertion
//! or Ctrl-C in the demo and the bench (see [`signals`]) leaves nothing
//! behind. If a driver is killed outright, the next demo or bench removes
//! what it left ([`sweep`]). Nothing is sent anywhere but to these
//! namespaces.
//!
//! | module | what |
//! |---|---|
//! | [`topology`] | the namespaces, veths, addresses |
//! | [`crate::process`], [`signals`], [`crate::paths`], [`progress`], [`sweep`] | children in their own process groups, Ctrl-C, where binaries and files are, the status line, leftovers |
//! | [`kamailio`] | Kamailio with `lab/kamailio/*.cfg`, its statistics over kamcmd |
//! | [`sipp`], [`legit`] | sipp with `lab/sipp/*.xml`; the legitimate load (subscribers, trunk calls, the PBX) |
//! | [`shieldd`] | `config/shield.toml` adapted for the real shieldd (run by [`crate::daemon::Shieldd`]: shieldctl, the pinned ban map, /metrics) |
//! | [`nft`], [`fail2ban`] | the nftables ruleset of `lab/nft/`, fail2ban with `lab/fail2ban/` |
//! | [`csbouncer`] | Debian's crowdsec-firewall-bouncer (nftables) in a namespace, for `fleetbench` |
//! | [`spoof`] | a spoofed-source flood (`flood --spoof`) at the SBC, and the route back that lets the SBC's stack take it |
//! | [`flood`], [`flood_frames`], [`xdpgen`], [`crate::csum`] | the flood sender behind `target/release/flood` (in-kernel XDP generator or AF_PACKET; a few sources or spoofed ones from a whole IPv4/IPv6 prefix), its frames, its checksums |
//! | [`scanners`] | SIPVicious svmap / svwar |
//! | [`cpu`], [`logwatch`], [`probe`] | CPU and packet accounting, log-line timing, drop timing |
//! | [`toll`] | SPEC §11 in the lab: the premium prefixes, the demo's toll-fraud stage, a 403 timer |
//! | [`mod@bench`] | `cargo xtask bench`: the comparison, BENCHMARKS.md, the figure |
//! | [`fleet_demo`] | `cargo xtask demo -- --fleet`: three SBCs sharing bans through a real CrowdSec LAPI ([`crate::fleet`], [`crate::crowdsec`]) |

pub mod bench;
pub mod cpu;
pub mod csbouncer;
pub mod fail2ban;
pub mod fleet_demo;
pub mod flood;
pub mod flood_frames;
pub mod forger;
pub mod hop;
pub mod kamailio;
pub mod legit;
pub mod logwatch;
pub mod nft;
pub mod probe;
pub mod progress;
pub mod scanners;
pub mod shieldd;
pub mod signals;
pub mod sipp;
pub mod spoof;
pub mod sweep;
pub mod toll;
pub mod topology;
pub mod xdpgen;

pub use topology::Topology;
