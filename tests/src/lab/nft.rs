//! nftables in the SBC's namespace: the ruleset equivalent to SIP Shield
//! (`lab/nft/shield-equivalent.nft`), its counters, and bulk loads into its
//! ban set. The table lives in the lab's namespace, so deleting the
//! namespace deletes it; [`NftTable`] also deletes it on drop.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::paths::{lab_file, system_tool};
use crate::process::{in_ns, run_ok};
use crate::netns::Netns;

pub const TABLE: &str = "sipshield_lab";
pub const FAMILY: &str = "netdev";
/// The dynamic sets the ruleset keeps per source (flushed between runs).
pub const DYNAMIC_SETS: [&str; 6] = [
    "bans4",
    "pkt4",
    "invite4",
    "register4",
    "syn4",
    "offenders4",
];

/// Runs `nft ARGS` in `ns`.
pub fn nft(ns: &Netns, args: &[&str]) -> Result<String> {
    let nft = system_tool("nft", "the Debian package nftables")?;
    let mut cmd = in_ns(ns, nft.to_str().context("path")?);
    cmd.args(args);
    run_ok(cmd, Duration::from_secs(300))
}

/// The loaded equivalent ruleset.
pub struct NftTable<'a> {
    ns: &'a Netns,
}

impl<'a> NftTable<'a> {
    pub fn load(ns: &'a Netns) -> Result<NftTable<'a>> {
        Self::load_file(ns, "nft/shield-equivalent.nft")
    }

    /// Another ruleset under `lab/` (its table must be [`TABLE`], family
    /// [`FAMILY`]), e.g. `nft/global-limit.nft`.
    pub fn load_file(ns: &'a Netns, file: &str) -> Result<NftTable<'a>> {
        let path = lab_file(file);
        nft(ns, &["-f", path.to_str().context("path")?])
            .with_context(|| format!("loading lab/{file}"))?;
        Ok(NftTable { ns })
    }

    /// Named counters (packets), by SIP Shield reason.
    pub fn counters(&self) -> Result<BTreeMap<String, u64>> {
        let text = nft(self.ns, &["-j", "list", "counters", "table", FAMILY, TABLE])?;
        let v: serde_json::Value = serde_json::from_str(&text).context("nft -j output")?;
        let mut out = BTreeMap::new();
        for item in v["nftables"].as_array().into_iter().flatten() {
            if let Some(c) = item.get("counter") {
                if let (Some(name), Some(p)) = (c["name"].as_str(), c["packets"].as_u64()) {
                    out.insert(name.to_string(), p);
                }
            }
        }
        Ok(out)
    }

    /// Packets the rules dropped, all reasons.
    pub fn dropped(&self) -> Result<u64> {
        let c = self.counters()?;
        Ok(["deny", "ban", "malformed", "rate", "unverified"]
            .iter()
            .map(|k| c.get(*k).copied().unwrap_or(0))
            .sum())
    }

    /// Empties the per-source state and the bans, zeroes the counters.
    pub fn reset(&self) -> Result<()> {
        for set in DYNAMIC_SETS {
            nft(self.ns, &["flush", "set", FAMILY, TABLE, set])?;
        }
        nft(self.ns, &["reset", "counters", "table", FAMILY, TABLE])?;
        Ok(())
    }

    /// Number of elements in `set`.
    pub fn set_len(&self, set: &str) -> Result<usize> {
        let text = nft(self.ns, &["-j", "list", "set", FAMILY, TABLE, set])?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let n = v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("set"))
            .map(|s| s["elem"].as_array().map_or(0, Vec::len))
            .sum();
        Ok(n)
    }
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        let _ = nft(self.ns, &["delete", "table", FAMILY, TABLE]);
    }
}

/// Writes an `nft -f` file adding `addrs` to the ban set (they expire after
/// the set's default timeout, 1 h).
pub fn write_ban_file(path: &Path, addrs: impl Iterator<Item = Ipv4Addr>) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    // One command per 10,000 elements: all in one transaction all the same.
    let mut n = 0usize;
    for a in addrs {
        if n.is_multiple_of(10_000) {
            if n > 0 {
                writeln!(f, " }}")?;
            }
            write!(f, "add element {FAMILY} {TABLE} bans4 {{ ")?;
        } else {
            write!(f, ", ")?;
        }
        write!(f, "{a}")?;
        n += 1;
    }
    if n > 0 {
        writeln!(f, " }}")?;
    }
    f.flush()?;
    Ok(())
}

/// Loads a file written by [`write_ban_file`]; how long `nft -f` took.
pub fn load_ban_file(ns: &Netns, path: &Path) -> Result<Duration> {
    let t = Instant::now();
    nft(ns, &["-f", path.to_str().context("path")?])?;
    Ok(t.elapsed())
}
