//! Section 7, part 4: ban propagation across the fleet. shieldd on each of
//! the three SBCs pulls decisions (`[crowdsec]`) and pushes its own bans
//! (`[crowdsec.push]`, a machine each). Bans are made on SBC 0 with
//! `shieldctl ban 198.51.100.X --duration 10m` at random moments (a random
//! pause of 0.3 to 2.9 s after the previous one has spread, so they fall
//! anywhere in the pull cycle); each is timed from just before that
//! `shieldctl` to the moment SBC 1's and SBC 2's pinned `BANS` maps
//! hold the address (polled every 20 ms).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::fleet_setup::{crowdsec_section, new_shieldd, shieldd_config, tail, FleetOptions};
use crate::gen::Rng;
use crate::crowdsec::Lapi;
use crate::daemon::Shieldd;
use crate::fleet::Fleet;
use crate::lab::signals;

/// How long one ban may take to reach both other SBCs.
const SPREAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the three daemons may take to apply their first full stream.
const SYNC_TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(20);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Spread {
    pub bans: usize,
    /// Milliseconds from the ban on SBC 0 to each other SBC's map, per
    /// (SBC, ban): SBC 1's then SBC 2's.
    pub sbc1_ms: Vec<f64>,
    pub sbc2_ms: Vec<f64>,
    /// `shieldctl ban` itself (process start to exit).
    pub ctl_ms: Vec<f64>,
    /// Alerts SBC 0 reports pushed.
    pub pushed: u64,
    /// Decisions SBC 1 and 2 held once all had spread (the 100,000 and
    /// the pushed bans).
    pub decisions_sbc1: u64,
    pub decisions_sbc2: u64,
}

/// The `q` quantile (nearest rank) of `v`.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

impl Spread {
    /// Every (SBC, ban) pair.
    pub fn all_ms(&self) -> Vec<f64> {
        self.sbc1_ms.iter().chain(&self.sbc2_ms).copied().collect()
    }
}

/// Three daemons with `[crowdsec]` and `[crowdsec.push]`, started and
/// synced.
fn start_fleet(fleet: &Fleet, lapi: &Lapi, o: &FleetOptions) -> Result<Vec<Shieldd>> {
    let mut ds = Vec::new();
    for i in 0..3 {
        let mut d = new_shieldd(fleet, i, &o.work_dir.join(format!("spread-sbc{i}")))?;
        let cs = crowdsec_section(fleet, lapi, &d, i, o.every, true)?;
        d.write_config(&shieldd_config(&d, &cs));
        d.try_start().with_context(|| format!("starting shieldd on SBC {i}"))?;
        ds.push(d);
    }
    let t = Instant::now();
    for (i, d) in ds.iter().enumerate() {
        loop {
            let st: serde_json::Value = d.ctl_as(&["status"])?;
            if st["crowdsec"]["synced"] == true {
                break;
            }
            if t.elapsed() > SYNC_TIMEOUT {
                bail!("SBC {i}: no full stream after {SYNC_TIMEOUT:?}: {}; log:\n{}", st["crowdsec"], tail(&d.log_text(), 15));
            }
            signals::sleep(Duration::from_millis(200))?;
        }
    }
    Ok(ds)
}

/// `n` distinct addresses of 198.51.100.10 to .250.
fn ban_addresses(n: usize, rng: &mut Rng) -> Vec<Ipv4Addr> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    while out.len() < n.min(241) {
        let x = 10 + rng.below(241) as u8;
        if seen.insert(x) {
            out.push(Ipv4Addr::new(198, 51, 100, x));
        }
    }
    out
}

pub fn run(fleet: &Fleet, lapi: &Lapi, o: &FleetOptions, say: &mut dyn FnMut(&str)) -> Result<Spread> {
    let ds = start_fleet(fleet, lapi, o)?;
    let maps = [ds[1].ban_map()?, ds[2].ban_map()?];
    let mut rng = Rng::new(o.seed ^ 0x5eed);
    let addrs = ban_addresses(o.bans, &mut rng);
    let mut s = Spread { bans: addrs.len(), ..Spread::default() };
    for (n, a) in addrs.iter().enumerate() {
        signals::sleep(Duration::from_millis(300 + rng.below(2600) as u64))?;
        let t = Instant::now();
        ds[0].try_ctl_ok(&["ban", &a.to_string(), "--duration", "10m"])?;
        s.ctl_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let mut seen: [Option<f64>; 2] = [None, None];
        while seen.iter().any(Option::is_none) {
            for (k, m) in maps.iter().enumerate() {
                if seen[k].is_none() && m.contains(*a) {
                    seen[k] = Some(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            if t.elapsed() > SPREAD_TIMEOUT {
                bail!("ban {a} not on SBC 1 and 2 after {SPREAD_TIMEOUT:?} ({seen:?}); SBC 0's log:\n{}", tail(&ds[0].log_text(), 15));
            }
            std::thread::sleep(POLL);
        }
        s.sbc1_ms.push(seen[0].unwrap_or_default());
        s.sbc2_ms.push(seen[1].unwrap_or_default());
        if (n + 1) % 10 == 0 {
            say(&format!("{} of {} bans spread; median so far {:.0} ms", n + 1, addrs.len(), quantile(&s.all_ms(), 0.5)));
        }
    }
    let status = |d: &Shieldd| d.ctl_as::<serde_json::Value>(&["status"]);
    s.pushed = status(&ds[0])?["crowdsec"]["push"]["pushed"].as_u64().unwrap_or(0);
    s.decisions_sbc1 = status(&ds[1])?["crowdsec"]["decisions"].as_u64().unwrap_or(0);
    s.decisions_sbc2 = status(&ds[2])?["crowdsec"]["decisions"].as_u64().unwrap_or(0);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 5.0);
        assert_eq!(quantile(&v, 0.9), 9.0);
        assert_eq!(quantile(&v, 1.0), 10.0);
        assert_eq!(ban_addresses(30, &mut Rng::new(3)).len(), 30);
    }
}
