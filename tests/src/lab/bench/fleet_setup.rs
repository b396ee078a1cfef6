//! What the fleet benchmark's sections share (BENCHMARKS.md section 7,
//! [`super::fleet`]): the options, which SBC runs what, and the shieldd of
//! an SBC with its `[crowdsec]` section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::crowdsec::Lapi;
use crate::daemon::{Binaries, Shieldd, METRICS_PORT};
use crate::fleet::{Fleet, PUB_IF};
use crate::gen::Rng;
use crate::lab::shieldd::LAB_PINS;

/// The SBC running shieldd in sections 1 to 3, and the one running the
/// nftables bouncer.
pub const SHIELDD_SBC: usize = 0;
pub const NFT_SBC: usize = 1;

/// What to run.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub decisions: usize,
    /// Range decisions probed from inside (half IPv4, half IPv6).
    pub range_probes: usize,
    /// Ip decisions probed (half IPv4, half IPv6).
    pub ip_probes: usize,
    /// Packets per probed address.
    pub probe_packets: u32,
    /// Section 3: packets/s, seconds per flood, rounds per bouncer.
    pub flood_rate: u64,
    pub flood_secs: f64,
    pub flood_rounds: usize,
    /// Section 4: bans made on SBC 0.
    pub bans: usize,
    /// `update_frequency` of every bouncer.
    pub every: Duration,
    pub work_dir: PathBuf,
    /// Seed of the samples and the ban moments.
    pub seed: u64,
}

/// The `[crowdsec]` section for SBC `i` (key and password files written
/// into the daemon's directory); `push`: also `[crowdsec.push]` as
/// machine `sbc<i>`, registered on LAPI.
pub fn crowdsec_section(fleet: &Fleet, lapi: &Lapi, d: &Shieldd, i: usize, every: Duration, push: bool) -> Result<String> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key = lapi.bouncer_key(&format!("shieldd-sbc{i}-{n}"))?;
    let key_file = d.dir.join("crowdsec.key");
    std::fs::write(&key_file, format!("{key}\n")).context("key file")?;
    let mut s = format!(
        "[crowdsec]\nlapi_url = \"{}\"\napi_key_file = \"{}\"\nupdate_frequency = \"{}s\"\n",
        fleet.lapi_url(i),
        key_file.display(),
        every.as_secs().max(1)
    );
    if push {
        let password = format!("fleetbench-sbc{i}-{:016x}", Rng::new(i as u64 + 7).next_u64());
        lapi.add_machine(&format!("sbc{i}"), &password)?;
        let pass_file = d.dir.join("crowdsec.pass");
        std::fs::write(&pass_file, format!("{password}\n")).context("password file")?;
        s += &format!("\n[crowdsec.push]\nmachine_id = \"sbc{i}\"\npassword_file = \"{}\"\n", pass_file.display());
    }
    Ok(s)
}

/// A shieldd config for an SBC of the fleet: XDP on `pub0`, no rate
/// limits (probes and floods are about bans only), then `extra`.
pub fn shieldd_config(d: &Shieldd, extra: &str) -> String {
    format!(
        "[shield]\ninterfaces = [\"{PUB_IF}\"]\npin_path = \"{}\"\nstate_dir = \"{}\"\n\n\
         [control]\nsocket = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{METRICS_PORT}\"\n\n\
         [limits]\npackets_per_second = 0\n\n{extra}",
        d.pin.display(),
        d.state.display(),
        d.socket.display()
    )
}

/// A shieldd for SBC `i` in `dir`, config written, not started.
pub fn new_shieldd(fleet: &Fleet, i: usize, dir: &Path) -> Result<Shieldd> {
    let _ = std::fs::remove_dir_all(dir);
    Shieldd::in_dir(Binaries::built()?, fleet.sbc(i), dir, LAB_PINS)
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
