//! `kmem`: the kernel memory the XDP program's maps take at the default
//! capacities, idle (just loaded) and with every user-written map full, as
//! the kernel accounts it (`memlock` in each map fd's fdinfo), and the time
//! of the batch update that writes a million bans. As root; creates no
//! interface and attaches nothing (the maps live as long as the process).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use anyhow::{Context, Result};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use shield::kernel::{monotonic_ns, List, VerifiedBy};
use shield::{Capacity, Shield};

const MIB: f64 = 1024.0 * 1024.0;

/// `map_id -> memlock bytes` of every BPF map this process holds an fd of.
fn memlock_by_id() -> Result<BTreeMap<u32, u64>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fdinfo")? {
        let Ok(text) = std::fs::read_to_string(e?.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(mem)) = (field("map_id:"), field("memlock:")) {
            out.insert(id as u32, mem);
        }
    }
    Ok(out)
}

/// Memlock per map name (the maps of this process), largest first.
fn report(what: &str) -> Result<f64> {
    let mem = memlock_by_id()?;
    let mut rows = Vec::new();
    for info in aya::maps::loaded_maps() {
        let info = info?;
        if let Some(m) = mem.get(&info.id()) {
            let name = info.name_as_str().unwrap_or("?").to_string();
            rows.push((name, *m));
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    let total: u64 = rows.iter().map(|r| r.1).sum();
    println!(
        "\n{what}: {:.1} MiB in {} maps",
        total as f64 / MIB,
        rows.len()
    );
    for (name, m) in rows.iter().filter(|r| r.1 as f64 >= 0.1 * MIB) {
        println!("  {name:<16} {:>8.1} MiB", *m as f64 / MIB);
    }
    Ok(total as f64 / MIB)
}

fn main() -> Result<()> {
    shield_tests::kernel::require_root();
    let cap = Capacity::default();
    let mut shield = Shield::load(cap, None).context("loading the XDP program")?;
    let idle = report("idle (default capacities, just loaded)")?;

    // The capacity is for both families together (one `BANS` map): the
    // batch is timed with IPv4 bans (as before the maps were merged),
    // then half of them are swapped for IPv6 ones.
    let until = monotonic_ns() + 3_600_000_000_000;
    let v4: Vec<(IpNet, u64)> = (0..cap.bans)
        .map(|i| {
            (
                IpNet::from(IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))),
                until,
            )
        })
        .collect();
    let t = Instant::now();
    let n = shield.maps.ban_batch(&v4)?;
    let v4_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(n == cap.bans as usize, "wrote {n} IPv4 bans");
    println!(
        "\nbatch update (BPF_MAP_UPDATE_BATCH via ShieldMaps::ban_batch), {} IPv4 bans: {v4_secs:.3} s",
        cap.bans
    );
    report(&format!("with {} IPv4 host bans", cap.bans))?;
    let half = cap.bans / 2;
    for (net, _) in &v4[..half as usize] {
        shield.maps.unban(*net)?;
    }
    let v6: Vec<(IpNet, u64)> = (0..half)
        .map(|i| {
            let a = Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i));
            (IpNet::from(IpAddr::V6(a)), until)
        })
        .collect();
    let t = Instant::now();
    let n = shield.maps.ban_batch(&v6)?;
    let v6_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(n == half as usize, "wrote {n} IPv6 bans");
    println!("\nbatch update, {half} IPv6 bans: {v6_secs:.3} s");
    report(&format!(
        "with {} IPv4 + {half} IPv6 host bans",
        cap.bans - half
    ))?;

    fill_tries(&mut shield, cap)?;
    let full = report("full (host bans, allow/deny, CIDR bans and verified CIDRs at capacity)")?;
    println!("\nsummary: idle {idle:.1} MiB, full {full:.1} MiB");
    Ok(())
}

/// Every trie at its capacity: distinct /32 (/128) prefixes.
fn fill_tries(shield: &mut Shield, cap: Capacity) -> Result<()> {
    let v4 = |base: u32, i: u32| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(base + i), 32).unwrap());
    let v6 = |base: u128, i: u32| {
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(base + u128::from(i)), 128).unwrap())
    };
    let m = &mut shield.maps;
    for i in 0..cap.allow {
        m.list_add(List::Allow, v4(0x0a00_0000, i))?;
        m.list_add(List::Allow, v6(0x2001_0db8_0001_u128 << 80, i))?;
    }
    for i in 0..cap.deny {
        m.list_add(List::Deny, v4(0x0b00_0000, i))?;
        m.list_add(List::Deny, v6(0x2001_0db8_0002_u128 << 80, i))?;
    }
    let until = monotonic_ns() + 3_600_000_000_000;
    let mut nets = Vec::new();
    for i in 0..cap.ban_nets {
        nets.push((
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0c00_0000 + (i << 8)), 24)?),
            until,
        ));
        nets.push((
            IpNet::V6(Ipv6Net::new(
                Ipv6Addr::from((0x2001_0db8_0003_u128 << 80) + (u128::from(i) << 64)),
                64,
            )?),
            until,
        ));
    }
    m.ban_batch(&nets)?;
    for i in 0..shield_common::default_size::VERIFY_NETS {
        m.verify(v4(0x0d00_0000, i), until, VerifiedBy::Operator)?;
        m.verify(
            v6(0x2001_0db8_0004_u128 << 80, i),
            until,
            VerifiedBy::Operator,
        )?;
    }
    Ok(())
}
