//! `flood`: the lab's SIP flood sender. Sends distinct SIP requests as raw
//! Ethernet frames from many source addresses, either with the in-kernel
//! XDP generator (`--engine xdp`, default) or with `sendmmsg` on an
//! AF_PACKET socket (`--engine packet`), at a paced rate or as fast as the
//! machine goes; stops at its duration or packet bound, or on
//! SIGINT/SIGTERM; prints a JSON summary. See `tests/src/lab/flood.rs`.
//!
//! Runs in the namespace of the host it sends from, e.g.
//!
//! ```text
//! nsenter --net=/run/netns/ATTACKER -- target/release/flood --iface eth0 \
//!     --dst-mac 02:..:.. --dst 198.51.100.1:5060 \
//!     --sources 198.51.100.100/64 --methods INVITE,REGISTER --rate 0 --seconds 10
//! ```
//!
//! Only for the lab: it refuses destinations outside the RFC 5737
//! documentation networks.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use shield_tests::lab::flood::{parse_mac, run, Engine, FloodMethod, FloodSpec};
use shield_tests::lab::{process::pin_to_cpus, signals};

#[derive(Parser)]
#[command(about = "SIP flood sender for the SIP Shield lab (AF_PACKET + sendmmsg)")]
struct Args {
    /// `xdp`: the in-kernel generator (BPF_PROG_TEST_RUN live frames; the
    /// receiver gets XDP frames, as from a NIC); `packet`: AF_PACKET +
    /// sendmmsg (the receiver gets socket buffers).
    #[arg(long, default_value = "xdp")]
    engine: String,
    /// Interface to send on.
    #[arg(long)]
    iface: String,
    /// MAC address of the receiving interface.
    #[arg(long)]
    dst_mac: String,
    /// Destination address:port (must be in 192.0.2.0/24, 198.51.100.0/24
    /// or 203.0.113.0/24).
    #[arg(long)]
    dst: SocketAddrV4,
    /// Source addresses: FIRST/COUNT (consecutive) or a comma list.
    #[arg(long)]
    sources: String,
    #[arg(long, default_value_t = 5062)]
    source_port: u16,
    /// SIP methods sent in turn: INVITE, REGISTER, OPTIONS.
    #[arg(long, default_value = "INVITE")]
    methods: String,
    /// User-Agent header (the default is an ordinary phone's, so only rate
    /// limits and bans can stop the flood).
    #[arg(long, default_value = "Grandstream GXP2170 1.0.11.23")]
    user_agent: String,
    /// Packets per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Upper bound on packets sent.
    #[arg(long, default_value_t = 200_000_000)]
    max_packets: u64,
    /// Frames per sendmmsg call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Pin the sender to these CPUs (comma list).
    #[arg(long)]
    cpus: Option<String>,
}

fn documentation_net(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    matches!(
        (o[0], o[1], o[2]),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
    )
}

fn parse_sources(s: &str) -> Result<Vec<Ipv4Addr>> {
    if let Some((first, count)) = s.split_once('/') {
        let first: Ipv4Addr = first.parse().context("--sources FIRST")?;
        let count: u32 = count.parse().context("--sources COUNT")?;
        return Ok((0..count)
            .map(|i| Ipv4Addr::from(u32::from(first) + i))
            .collect());
    }
    s.split(',')
        .map(|a| a.trim().parse().with_context(|| format!("source {a:?}")))
        .collect()
}

fn main() -> ExitCode {
    signals::install();
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flood: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let a = Args::parse();
    if !documentation_net(*a.dst.ip()) {
        bail!(
            "--dst {} is not in an RFC 5737 documentation network: the lab sends nowhere else",
            a.dst
        );
    }
    let sources = parse_sources(&a.sources)?;
    if let Some(bad) = sources.iter().find(|s| !documentation_net(**s)) {
        bail!("source {bad} is not in an RFC 5737 documentation network");
    }
    if let Some(cpus) = &a.cpus {
        let list: Vec<usize> = cpus
            .split(',')
            .map(|c| c.trim().parse())
            .collect::<Result<_, _>>()
            .context("--cpus")?;
        pin_to_cpus(&list).context("pinning to --cpus")?;
    }
    let spec = FloodSpec {
        engine: Engine::parse(&a.engine)?,
        iface: a.iface,
        dst_mac: parse_mac(&a.dst_mac)?,
        dst: a.dst,
        sources,
        source_port: a.source_port,
        methods: a
            .methods
            .split(',')
            .map(FloodMethod::parse)
            .collect::<Result<_>>()?,
        user_agent: a.user_agent,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.seconds),
        max_packets: a.max_packets,
        batch: a.batch.clamp(1, 1024),
    };
    let report = run(&spec, signals::interrupted)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
