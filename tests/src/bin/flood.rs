//! `flood`: the lab's SIP flood sender. Sends distinct SIP requests as raw
//! Ethernet frames from many source addresses, with the in-kernel XDP
//! generator (`--engine xdp`), AF_PACKET into an XDP redirect hop
//! (`--engine redirect`), either of them as the kernel allows (`--engine
//! auto`, the default) or with `sendmmsg` on an AF_PACKET socket
//! (`--engine packet`), at a paced rate or as fast as the machine goes;
//! stops at its duration or packet bound, or on SIGINT/SIGTERM; prints a
//! JSON summary naming the engine. See `tests/src/lab/flood.rs`.
//!
//! Runs in the namespace of the host it sends from, e.g.
//!
//! ```text
//! nsenter --net=/run/netns/ATTACKER -- target/release/flood --iface eth0 \
//!     --dst-mac 02:..:.. --dst 198.51.100.1:5060 \
//!     --sources 198.51.100.100/64 --methods INVITE,REGISTER --rate 0 --seconds 10
//! ```
//!
//! Spoofed sources, a random one per packet from a whole prefix, instead
//! of `--sources` (either engine; IPv6 needs an IPv6 `--dst`):
//!
//! ```text
//! flood ... --dst 198.51.100.1:5060 --spoof 10.64.0.0/12
//! flood ... --dst '[2001:db8::1]:5060' --spoof 2001:db8:5::/48
//! ```
//!
//! Only for the lab: it refuses destinations outside the RFC 5737 and
//! RFC 3849 documentation networks, and spoofed sources outside the
//! documentation, private (RFC 1918, RFC 4193), shared (RFC 6598) and
//! benchmarking (RFC 2544) ranges, so no real host is ever named as a
//! source.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ipnet::IpNet;
use shield_tests::lab::flood::{run, Engine, FloodMethod, FloodSpec, Spoof};
use shield_tests::packet::parse_mac;
use shield_tests::lab::signals;
use shield_tests::process::pin_to_cpus;

#[derive(Parser)]
#[command(
    about = "SIP flood sender for the SIP Shield lab (in-kernel XDP generator or AF_PACKET + sendmmsg)",
    after_help = "Spoofed-source floods: --spoof 10.64.0.0/12 --dst 198.51.100.1:5060 (IPv4), \
                  --spoof 2001:db8:5::/48 --dst '[2001:db8::1]:5060' (IPv6/UDP, valid UDP checksums); \
                  every packet from a random address of the prefix, with either --engine."
)]
struct Args {
    /// `auto`: xdp where the kernel allows live-frames test runs, else
    /// redirect (one line on stderr says why). `xdp`: the in-kernel
    /// generator (BPF_PROG_TEST_RUN live frames). `redirect`: AF_PACKET
    /// into a veth pair of its own whose XDP program redirects each frame
    /// to --iface. Both give the receiver XDP frames, as from a NIC.
    /// `packet`: AF_PACKET + sendmmsg (the receiver gets socket buffers).
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Interface to send on.
    #[arg(long)]
    iface: String,
    /// MAC address of the receiving interface.
    #[arg(long)]
    dst_mac: String,
    /// Destination address:port (must be in 192.0.2.0/24, 198.51.100.0/24
    /// or 203.0.113.0/24; IPv6, `[addr]:port` in 2001:db8::/32, only with an
    /// IPv6 --spoof).
    #[arg(long)]
    dst: SocketAddr,
    /// Source addresses: FIRST/COUNT (consecutive) or a comma list; the xdp
    /// engine needs them consecutive within one /24. Required unless
    /// --spoof is given.
    #[arg(long, required_unless_present = "spoof", conflicts_with = "spoof")]
    sources: Option<String>,
    /// Spoofed sources: every packet from a random address of this prefix
    /// (all bits below the prefix random), e.g. 10.64.0.0/12 (1,048,576
    /// addresses) or 2001:db8:5::/48 (random subnet and interface bits: many
    /// /64s). IPv4 /8 to /32, to an IPv4 --dst; IPv6 /8 to /128, sent as
    /// IPv6/UDP to an IPv6 --dst. Both engines; each frame's checksums are
    /// fixed per frame. Must lie in a documentation, private (10/8,
    /// 172.16/12, 192.168/16, fc00::/7), shared (100.64/10) or benchmarking
    /// (198.18/15) range.
    #[arg(long, value_name = "PREFIX")]
    spoof: Option<IpNet>,
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

/// An address the lab may send to: RFC 5737 or RFC 3849 documentation.
fn lab_destination(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => documentation_net(a),
        IpAddr::V6(_) => net("2001:db8::/32").contains(&ip),
    }
}

/// A prefix the lab may spoof sources from: nobody's real addresses.
fn spoofable(prefix: &IpNet) -> bool {
    const RANGES: [&str; 10] = [
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "198.18.0.0/15",
        "2001:db8::/32",
        "fc00::/7",
    ];
    RANGES.iter().any(|r| net(r).contains(prefix))
}

fn net(s: &str) -> IpNet {
    s.parse().expect("a valid prefix")
}

/// The spoof of `--spoof` (`None` without it), and the IPv4 destination
/// for [`FloodSpec::dst`].
fn spoof(a: &Args) -> Result<(Option<Spoof>, SocketAddrV4)> {
    let unused = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    let (spoof, dst) = match (a.spoof, a.dst) {
        (None, SocketAddr::V4(d)) => (None, d),
        (None, SocketAddr::V6(_)) => bail!("an IPv6 --dst needs an IPv6 --spoof prefix"),
        (Some(IpNet::V4(n)), SocketAddr::V4(d)) => (Some(Spoof::V4(n.trunc())), d),
        (Some(IpNet::V6(n)), SocketAddr::V6(d)) => (
            Some(Spoof::V6 {
                net: n.trunc(),
                dst: d,
            }),
            unused,
        ),
        (Some(n), d) => bail!("--spoof {n} and --dst {d} are not the same IP version"),
    };
    if let Some(s) = &spoof {
        s.check()?;
        if !spoofable(&s.net()) {
            bail!(
                "--spoof {}: not a documentation, private, shared or benchmarking range",
                s.net()
            );
        }
    }
    Ok((spoof, dst))
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
    if !lab_destination(a.dst.ip()) {
        bail!(
            "--dst {} is not in an RFC 5737/3849 documentation network: the lab sends nowhere else",
            a.dst
        );
    }
    let (spoof, dst) = spoof(&a)?;
    let sources = match &a.sources {
        Some(s) => parse_sources(s)?,
        None => Vec::new(),
    };
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
        dst,
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
        spoof,
    };
    let report = run(&spec, signals::interrupted)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
