//! The four set-ups the benchmark compares, each started fresh for every
//! measurement (no bans, meters or buckets carried over from the last one):
//!
//! * **none**: Kamailio with `sbc.cfg` (it still drops scanner User-Agents
//!   in its script, as Kamailio's default configuration does);
//! * **pike**: Kamailio with `sbc-antiflood.cfg`: pike + an htable ban list,
//!   Kamailio's default WITH_ANTIFLOOD;
//! * **nftables**: `sbc.cfg` behind `lab/nft/shield-equivalent.nft`;
//! * **shield**: `sbc.cfg` behind the real `shieldd` with the example
//!   configuration.
//!
//! The spoofed-source section ([`Defence::SPOOF`]) adds two:
//!
//! * **nft-global**: `sbc.cfg` behind `lab/nft/global-limit.nft`: the
//!   trunk allowlisted, one global limit for everything else to 5060;
//! * **shield-verify**: `shieldd` as above with `[verify]`'s unverified
//!   budget on ([`super::budget::with_budget`]).

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use shield::control::protocol::VerifiedReply;

use super::budget::with_budget;
use crate::daemon::{self, Shieldd};
use crate::lab::kamailio::{self, Kamailio, Script};
use crate::lab::nft::NftTable;
use crate::lab::shieldd::LabConfig;
use crate::lab::Topology;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Defence {
    None,
    Pike,
    Nftables,
    Shield,
    /// nftables with the trunk allowlisted and one global limit.
    NftGlobal,
    /// SIP Shield with the unverified budget on.
    ShieldVerify,
    /// SIP Shield attached in generic (skb) mode, as on a driver without
    /// native XDP (section 1b).
    ShieldGeneric,
    /// SIP Shield's decision as a tc ingress program (`mode = "tc"`), the
    /// other hook for such a driver (section 1b).
    ShieldTc,
}

impl Defence {
    pub const ALL: [Defence; 4] = [
        Defence::None,
        Defence::Pike,
        Defence::Nftables,
        Defence::Shield,
    ];

    /// The set-ups of the spoofed-source section.
    pub const SPOOF: [Defence; 5] = [
        Defence::None,
        Defence::Pike,
        Defence::NftGlobal,
        Defence::Shield,
        Defence::ShieldVerify,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Defence::None => "no protection",
            Defence::Pike => "Kamailio pike + htable",
            Defence::Nftables => "nftables (equivalent rules)",
            Defence::Shield => "SIP Shield (shieldd)",
            Defence::NftGlobal => "nftables (trunk allowlisted, one global limit)",
            Defence::ShieldVerify => "SIP Shield, [verify] budget on",
            Defence::ShieldGeneric => "SIP Shield (shieldd), generic XDP",
            Defence::ShieldTc => "SIP Shield (shieldd), tc ingress",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Defence::None => "none",
            Defence::Pike => "pike",
            Defence::Nftables => "nftables",
            Defence::Shield => "shield",
            Defence::NftGlobal => "nft-global",
            Defence::ShieldVerify => "shield-verify",
            Defence::ShieldGeneric => "shield-generic",
            Defence::ShieldTc => "shield-tc",
        }
    }

    /// Whose no-flood run is this set-up's baseline: the generic-mode
    /// and tc shields serve the same Kamailio as the native one, and a run
    /// without flood costs the same in any mode.
    pub fn baseline(self) -> Defence {
        match self {
            Defence::ShieldGeneric | Defence::ShieldTc => Defence::Shield,
            d => d,
        }
    }

    fn script(self) -> Script {
        match self {
            Defence::Pike => Script::SbcAntiflood,
            _ => Script::Sbc,
        }
    }
}

/// A defence and the Kamailio behind it, running.
pub struct Armed<'a> {
    pub defence: Defence,
    pub kamailio: Kamailio,
    nft: Option<NftTable<'a>>,
    shield: Option<Shieldd>,
}

impl<'a> Armed<'a> {
    /// Starts Kamailio and the defence, fresh. Files go to `dir`.
    pub fn start(
        defence: Defence,
        topo: &'a Topology,
        dir: &Path,
        kamailio_cpus: &[usize],
    ) -> Result<Armed<'a>> {
        std::fs::create_dir_all(dir)?;
        let opts = kamailio::Options {
            script: defence.script(),
            cpus: kamailio_cpus.to_vec(),
            ..Default::default()
        };
        let kamailio = Kamailio::start(&topo.sbc, dir, &opts)?;
        let nft = match defence {
            Defence::Nftables => Some(NftTable::load(&topo.sbc)?),
            Defence::NftGlobal => Some(NftTable::load_file(&topo.sbc, "nft/global-limit.nft")?),
            _ => None,
        };
        let shield = match defence {
            Defence::Shield => Some(LabConfig::new(dir).start(&topo.sbc)?),
            Defence::ShieldVerify => Some(with_budget(LabConfig::new(dir)).start(&topo.sbc)?),
            Defence::ShieldGeneric => Some(
                LabConfig::new(dir)
                    .set("shield", "mode", "\"generic\"")
                    .start(&topo.sbc)?,
            ),
            Defence::ShieldTc => Some(
                LabConfig::new(dir)
                    .set("shield", "mode", "\"tc\"")
                    .start(&topo.sbc)?,
            ),
            _ => None,
        };
        Ok(Armed {
            defence,
            kamailio,
            nft,
            shield,
        })
    }

    /// Packets the defence itself has dropped so far (Kamailio's script
    /// drops for pike; the table's counters for nftables; the kernel's drop
    /// counters for SIP Shield; none without protection).
    pub fn dropped(&self) -> Result<u64> {
        Ok(match self.defence {
            Defence::None => 0,
            Defence::Pike => {
                let s = self.kamailio.stats()?;
                let get = |k: &str| s.get(&format!("script:{k}")).copied().unwrap_or(0);
                get("pike_drops") + get("ipban_drops") + get("scanner_drops")
            }
            Defence::Nftables | Defence::NftGlobal => {
                self.nft.as_ref().map_or(Ok(0), NftTable::dropped)?
            }
            Defence::Shield | Defence::ShieldVerify | Defence::ShieldGeneric | Defence::ShieldTc => self
                .shield
                .as_ref()
                .map_or(Ok(0), |s| s.stats().map(|st| daemon::dropped(&st)))?,
        })
    }

    /// Sources the defence has banned so far.
    pub fn bans(&self) -> Result<u64> {
        Ok(match self.defence {
            Defence::None | Defence::NftGlobal => 0,
            Defence::Pike => {
                // Kamailio logs an ALERT line per pike ban, "(IP:addr:port)";
                // two workers may both catch the same source.
                let log = self.kamailio.log_text();
                let banned: std::collections::BTreeSet<&str> = log
                    .lines()
                    .filter(|l| l.contains("ALERT: pike blocking"))
                    .filter_map(|l| l.split("(IP:").nth(1)?.rsplit_once(':').map(|(ip, _)| ip))
                    .collect();
                banned.len() as u64
            }
            Defence::Nftables => self.nft.as_ref().map_or(Ok(0), |n| n.set_len("bans4"))? as u64,
            Defence::Shield | Defence::ShieldVerify | Defence::ShieldGeneric | Defence::ShieldTc => self
                .shield
                .as_ref()
                .map_or(Ok(0), |s| s.stats().map(|st| st.bans_active))?,
        })
    }

    /// `shieldctl verified` (SIP Shield only).
    pub fn verified(&self) -> Option<Result<VerifiedReply>> {
        self.shield.as_ref().map(Shieldd::verified)
    }

    pub fn shieldd_pid(&self) -> Option<u32> {
        self.shield.as_ref().map(Shieldd::pid)
    }
}
