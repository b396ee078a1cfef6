//! Loading a million bans: SIP Shield's batch map update (the library call
//! shieldd uses), shieldd starting with a million bans in its state
//! directory, and an nftables set of the same size loaded with `nft -f`.
//! The addresses are map keys only (100.64.0.0 and up): nothing is sent to
//! them.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use shield::kernel::{monotonic_ns, MapId};
use shield::store::{now_ms, BanRecord, Store};
use shield::{Capacity, Shield};

use crate::lab::nft::{load_ban_file, write_ban_file, NftTable};
use crate::lab::probe::PROBE_PORT;
use crate::lab::shieldd::LabConfig;
use crate::lab::topology::{probe_source, PROBE_SOURCES, SBC_SIP_IP};
use crate::lab::Topology;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BanLoad {
    pub count: u32,
    /// `ShieldMaps::ban_batch` (BPF_MAP_UPDATE_BATCH) into a loaded program's map.
    pub shield_batch_secs: f64,
    /// shieldd from start to answering, with the bans in its state dir.
    pub shieldd_ready_with_bans_secs: f64,
    /// The same with an empty state dir (program load, verifier, attach).
    pub shieldd_ready_empty_secs: f64,
    pub shieldd_bans_active: u64,
    /// `nft -f` of a file adding them to a set (parse + one transaction).
    pub nft_secs: f64,
    pub nft_file_bytes: u64,
}

/// The `i`-th address of the ban benchmarks (here and in [`super::store`]):
/// 100.64.0.0 and up, map keys only.
pub fn ban_key(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x6440_0000 + i)
}

/// The store's records of `count` manual bans of [`ban_key`]`(0..count)`,
/// made now, for an hour.
pub fn ban_records(count: u32) -> Vec<BanRecord> {
    let now = now_ms();
    (0..count)
        .map(|i| BanRecord {
            net: IpNet::from(IpAddr::V4(ban_key(i))),
            origin: "manual".into(),
            reason: "bulk import".into(),
            created_ms: now,
            expires_ms: Some(now + 3_600_000),
        })
        .collect()
}

pub fn run(
    topo: &Topology,
    dir: &Path,
    count: u32,
    progress: &mut dyn FnMut(&str),
) -> Result<BanLoad> {
    let mut r = BanLoad {
        count,
        ..Default::default()
    };

    progress("SIP Shield: batch update into the kernel map");
    {
        let mut shield =
            Shield::load(Capacity::default(), None).context("loading the XDP program")?;
        let until = monotonic_ns() + 3_600_000_000_000;
        let bans: Vec<(IpNet, u64)> = (0..count)
            .map(|i| (IpNet::from(IpAddr::V4(ban_key(i))), until))
            .collect();
        let t = Instant::now();
        let n = shield.maps.ban_batch(&bans)?;
        r.shield_batch_secs = t.elapsed().as_secs_f64();
        ensure!(n == count as usize, "ban_batch wrote {n} of {count}");
        let in_map = shield.maps.entry_count(MapId::Bans)?;
        ensure!(
            in_map == Some(count as usize),
            "the ban map holds {in_map:?} entries, not {count}"
        );
    }

    progress("SIP Shield: shieldd start, empty state");
    let capacity = (count + 64).to_string();
    {
        let d = dir.join("shieldd-empty");
        std::fs::create_dir_all(&d)?;
        let t = Instant::now();
        let s = LabConfig::new(&d)
            .set("capacity", "bans", &capacity)
            .start(&topo.sbc)?;
        r.shieldd_ready_empty_secs = t.elapsed().as_secs_f64();
        drop(s);
    }

    progress("SIP Shield: shieldd start with the bans in its state dir");
    {
        let d = dir.join("shieldd-bans");
        std::fs::create_dir_all(&d)?;
        let mut s = LabConfig::new(&d)
            .set("capacity", "bans", &capacity)
            .daemon(&topo.sbc)?;
        let records = ban_records(count);
        Store::open(&s.state)?.import(&records, "bench")?;
        drop(records);
        let t = Instant::now();
        s.check()?;
        s.try_start()?;
        r.shieldd_ready_with_bans_secs = t.elapsed().as_secs_f64();
        r.shieldd_bans_active = s.status()?.bans_active;
        drop(s);
    }

    progress("nftables: nft -f into a set");
    {
        // Three of the keys are the attacker's probe addresses, at the start,
        // the middle and the end of the file: after the load, one packet from
        // each must be dropped by the ban rule. (Listing a million-element
        // set back takes nft minutes.)
        let probes = [
            probe_source(PROBE_SOURCES - 3),
            probe_source(PROBE_SOURCES - 2),
            probe_source(PROBE_SOURCES - 1),
        ];
        let at = [0, count / 2, count - 1];
        let addr = |i: u32| {
            at.iter()
                .position(|&a| a == i)
                .map_or(ban_key(i), |p| probes[p])
        };
        let table = NftTable::load(&topo.sbc)?;
        let file = dir.join("bans.nft");
        write_ban_file(&file, (0..count).map(addr))?;
        r.nft_file_bytes = std::fs::metadata(&file)?.len();
        r.nft_secs = load_ban_file(&topo.sbc, &file)?.as_secs_f64();
        let _ = std::fs::remove_file(&file);
        for p in probes {
            topo.attacker.run(|| -> Result<()> {
                let s = UdpSocket::bind((p, 0))?;
                s.send_to(b"probe", (SBC_SIP_IP, PROBE_PORT))?;
                Ok(())
            })?;
        }
        std::thread::sleep(Duration::from_millis(300));
        let dropped = table.counters()?.get("ban").copied().unwrap_or(0);
        ensure!(
            dropped == probes.len() as u64,
            "after the load, {dropped} of 3 probes from banned addresses were dropped"
        );
        drop(table);
    }
    Ok(r)
}
