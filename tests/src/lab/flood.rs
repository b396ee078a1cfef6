//! The lab's flood sender (the `flood` binary is its command line): SIP
//! requests as complete Ethernet frames, from many source addresses, paced
//! to a target rate or as fast as possible, bounded in packets and time.
//! Two engines:
//!
//! * [`Engine::Xdp`] (the default): the in-kernel generator of
//!   [`super::xdpgen`] — frames reach the SBC's veth as XDP frames, the way
//!   a NIC delivers them, at the highest rates this machine can make; every
//!   frame has a random source (from the range) and random letters in its
//!   Call-ID, branch and tag.
//! * [`Engine::Packet`]: an `AF_PACKET` socket and `sendmmsg(2)`, 64 frames
//!   per system call, qdisc bypassed; every frame is a socket buffer from
//!   the start (the receiver's XDP runs on an skb), sources in turn and a
//!   counter in the Call-ID, branch and tag.
//!
//! Sources are either a few addresses ([`FloodSpec::sources`], at most a
//! /24's worth for the xdp engine) or, for a spoofed-source flood
//! ([`FloodSpec::spoof`], [`Spoof`]), a random address of a whole prefix
//! per packet: an IPv4 prefix (/8 to /32: a /12 is 1,048,576 addresses)
//! or an IPv6 one (/8 to /128; with a prefix shorter than /64 the subnet
//! bits are random too, so the sources spread over many /64s), the IPv6
//! flood going in IPv6/UDP frames to an IPv6 destination. Both engines
//! spoof: the packet engine picks each source in user space, the xdp
//! engine in the kernel.
//! Each frame's checksums follow what changed in it (RFC 1624 updates
//! against the template, see [`crate::csum`]): the IPv4 header checksum,
//! and the UDP checksum of IPv6 frames (source and Call-ID, branch, tag
//! letters); an IPv4 frame's UDP checksum is 0, as IPv4 allows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use super::flood_frames::{sip_payload, sip_payload_to, udp6_frame, udp_frame, FloodMethod};
use super::flood_frames::{COUNTER_DIGITS, MARK};
use crate::csum::{self, Layout, Tracked};
use crate::gen::Rng;
use crate::packet::PacketSocket;

/// How frames are put on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// `xdp` where the kernel allows live-frames test runs, else
    /// `redirect` (see [`choose`]).
    #[default]
    Auto,
    #[serde(alias = "Xdp")]
    Xdp,
    Redirect,
    #[serde(alias = "Packet")]
    Packet,
}

impl Engine {
    pub fn parse(s: &str) -> Result<Engine> {
        match s {
            "auto" => Ok(Engine::Auto),
            "xdp" => Ok(Engine::Xdp),
            "redirect" => Ok(Engine::Redirect),
            "packet" => Ok(Engine::Packet),
            _ => bail!("unknown engine {s:?} (auto, xdp, redirect or packet)"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Xdp => "xdp",
            Engine::Redirect => "redirect",
            Engine::Packet => "packet",
        }
    }

    /// How the engine's frames reach the receiver, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Engine::Auto => "the xdp engine where the kernel allows it, else redirect",
            Engine::Xdp => {
                "an in-kernel generator, `BPF_PROG_TEST_RUN` in live-frames mode: the frames reach the SBC's \
                 veth as XDP frames, the way a NIC hands packets to its driver"
            }
            Engine::Redirect => {
                "AF_PACKET + `sendmmsg` into a veth pair of the sender's own whose far end runs an XDP program \
                 that makes each frame different and `XDP_REDIRECT`s it to the SBC's veth: the frames reach the \
                 SBC's XDP program as XDP frames (`xdp_frame`s from `ndo_xdp_xmit`), the way a NIC hands packets \
                 to its driver, with no socket buffer on the SBC's side"
            }
            Engine::Packet => {
                "AF_PACKET + `sendmmsg`: every frame is a socket buffer from the start, as from a driver \
                 without native XDP (generic mode)"
            }
        }
    }
}

impl Engine {
    /// This engine with `auto` decided, as a flood from `ns` sending on
    /// `iface` would decide it: for a benchmark that decides once and
    /// names the engine in its report. The line says why, if it fell back.
    pub fn resolve(self, ns: &crate::netns::Netns, iface: &str) -> (Engine, Option<String>) {
        match self {
            Engine::Auto => {
                let dev = iface.to_string();
                choose(&ns.run(move || super::xdpgen::XdpGen::live_frames(&dev)))
            }
            e => (e, None),
        }
    }
}

/// The engine `auto` runs, given what one live-frames test run gave, and
/// the line that says why when it is not `xdp`.
pub fn choose(live_frames: &std::io::Result<()>) -> (Engine, Option<String>) {
    match live_frames {
        Ok(()) => (Engine::Xdp, None),
        Err(e) => (
            Engine::Redirect,
            Some(format!(
                "flood: the kernel refused a live-frames test run ({e}): using the redirect engine"
            )),
        ),
    }
}

/// What to send.
#[derive(Clone, Debug)]
pub struct FloodSpec {
    pub engine: Engine,
    /// Interface to send on (in the calling process's namespace).
    pub iface: String,
    /// Next hop's MAC address (the SBC's interface).
    pub dst_mac: [u8; 6],
    pub dst: SocketAddrV4,
    /// Source addresses, used in turn.
    pub sources: Vec<Ipv4Addr>,
    pub source_port: u16,
    /// Methods, used in turn (after every round of sources).
    pub methods: Vec<FloodMethod>,
    pub user_agent: String,
    /// Packets per second; 0 = as fast as possible.
    pub rate: u64,
    pub duration: Duration,
    pub max_packets: u64,
    /// Frames per `sendmmsg` call.
    pub batch: usize,
    /// A spoofed-source flood: every packet from a random address of this
    /// prefix (then `sources` is not used). `None`: the `sources`.
    pub spoof: Option<Spoof>,
}

impl Default for FloodSpec {
    /// No interface, no destination and no sources yet; otherwise the
    /// `flood` binary's defaults.
    fn default() -> FloodSpec {
        FloodSpec {
            engine: Engine::Auto,
            iface: String::new(),
            dst_mac: [0; 6],
            dst: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5060),
            sources: Vec::new(),
            source_port: 5062,
            methods: vec![FloodMethod::Invite],
            user_agent: "Grandstream GXP2170 1.0.11.23".to_string(),
            rate: 0,
            duration: Duration::from_secs(10),
            max_packets: 200_000_000,
            batch: 64,
            spoof: None,
        }
    }
}

impl FloodSpec {
    /// Where the packets go: [`FloodSpec::dst`], or an IPv6 spoof's
    /// destination.
    pub fn destination(&self) -> SocketAddr {
        match self.spoof {
            Some(Spoof::V6 { dst, .. }) => dst.into(),
            _ => self.dst.into(),
        }
    }
}

/// A spoofed-source flood: each packet comes from a random address of a
/// prefix (every bit below the prefix random).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoof {
    /// Sources in an IPv4 prefix (/8 to /32); IPv4 packets to
    /// [`FloodSpec::dst`].
    V4(Ipv4Net),
    /// Sources in an IPv6 prefix (/8 to /128); IPv6 packets to `dst`
    /// ([`FloodSpec::dst`] is not used).
    V6 { net: Ipv6Net, dst: SocketAddrV6 },
}

impl Spoof {
    pub fn net(&self) -> IpNet {
        match *self {
            Spoof::V4(n) => n.into(),
            Spoof::V6 { net, .. } => net.into(),
        }
    }

    /// The prefix lengths the flood supports.
    pub fn check(&self) -> Result<()> {
        let (len, max) = match self {
            Spoof::V4(n) => (n.prefix_len(), 32),
            Spoof::V6 { net, .. } => (net.prefix_len(), 128),
        };
        if !(8..=max).contains(&len) {
            bail!(
                "spoofed sources {}: the prefix length must be 8 to {max}",
                self.net()
            );
        }
        Ok(())
    }

    /// A random address of the prefix.
    pub fn pick(&self, rng: &mut Rng) -> IpAddr {
        match *self {
            Spoof::V4(n) => {
                let host = !u32::from(n.netmask());
                Ipv4Addr::from(u32::from(n.network()) | (rng.next_u64() as u32 & host)).into()
            }
            Spoof::V6 { net, .. } => {
                let host = !u128::from(net.netmask());
                let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
                Ipv6Addr::from(u128::from(net.network()) | (r & host)).into()
            }
        }
    }
}

/// What was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FloodReport {
    /// The engine that sent it (never `auto`).
    #[serde(default)]
    pub engine: Engine,
    pub sent: u64,
    pub seconds: f64,
    pub rate: f64,
    /// `sendmmsg` calls that failed (ENOBUFS and the like).
    pub send_errors: u64,
}

/// One (source, method) frame with the offsets of its counter fields and
/// the checksums that follow them (and the source, when spoofed).
struct Template {
    frame: Vec<u8>,
    counters: Vec<usize>,
    tracked: Vec<Tracked>,
}

/// The frame for one method from `src` (IPv4 or IPv6, as the
/// destination), its counter fields marked, its checksums tracking the
/// counters and, in a spoofed flood, the source address.
fn template(spec: &FloodSpec, src_mac: [u8; 6], method: FloodMethod, src: IpAddr) -> Template {
    let port = spec.source_port;
    let dst = spec.destination();
    let payload = sip_payload_to(method, port, dst, &spec.user_agent);
    let frame = match (src, dst) {
        (IpAddr::V4(s), SocketAddr::V4(d)) => udp_frame(
            src_mac,
            spec.dst_mac,
            SocketAddrV4::new(s, port),
            d,
            &payload,
        ),
        (IpAddr::V6(s), SocketAddr::V6(d)) => {
            let s = SocketAddrV6::new(s, port, 0, 0);
            udp6_frame(src_mac, spec.dst_mac, s, d, &payload)
        }
        _ => unreachable!("sources have the destination's IP version"),
    };
    let counters: Vec<usize> = frame
        .windows(COUNTER_DIGITS)
        .enumerate()
        .filter(|(_, w)| *w == MARK)
        .map(|(i, _)| i)
        .collect();
    let mut spans: Vec<_> = counters.iter().map(|&c| c..c + COUNTER_DIGITS).collect();
    if spec.spoof.is_some() {
        spans.extend(Layout::of(&frame).map(|l| l.src));
    }
    let tracked = csum::tracked(&frame, &spans);
    Template {
        frame,
        counters,
        tracked,
    }
}

/// One template per (method, source), methods after each round of
/// sources; in a spoofed flood one per method, from the prefix's first
/// address.
fn templates(spec: &FloodSpec, src_mac: [u8; 6]) -> Vec<Template> {
    let sources: Vec<IpAddr> = match &spec.spoof {
        Some(s) => vec![s.net().network()],
        None => spec.sources.iter().map(|&a| a.into()).collect(),
    };
    let mut out = Vec::new();
    for &method in &spec.methods {
        for &src in &sources {
            out.push(template(spec, src_mac, method, src));
        }
    }
    out
}

/// Packet `n` from template `t` into `buf`: its counter, its source (a
/// spoofed one, or the template's), its checksums.
fn fill(buf: &mut [u8], t: &Template, n: u64, src: Option<IpAddr>) {
    let buf = &mut buf[..t.frame.len()];
    buf.copy_from_slice(&t.frame);
    write_counter(buf, &t.counters, n);
    if let (Some(a), Some(l)) = (src, Layout::of(buf)) {
        match a {
            IpAddr::V4(a) => buf[l.src].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => buf[l.src].copy_from_slice(&a.octets()),
        }
    }
    for c in &t.tracked {
        c.apply(buf);
    }
}

fn write_counter(buf: &mut [u8], at: &[usize], n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; COUNTER_DIGITS];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((n >> (4 * (COUNTER_DIGITS - 1 - i))) & 0xf) as usize];
    }
    for &o in at {
        buf[o..o + COUNTER_DIGITS].copy_from_slice(&digits);
    }
}

/// Runs the flood until its duration, its packet count or `stop()` says so.
pub fn run(spec: &FloodSpec, stop: impl Fn() -> bool + Sync) -> Result<FloodReport> {
    if spec.methods.is_empty() {
        bail!("a flood needs at least one method");
    }
    match &spec.spoof {
        Some(s) => s.check()?,
        None if spec.sources.is_empty() => {
            bail!("a flood needs at least one source (or spoofed ones)")
        }
        None => {}
    }
    match spec.engine {
        Engine::Packet => run_packet(spec, stop),
        Engine::Redirect => run_redirect(spec, stop),
        Engine::Xdp => run_xdp(spec, generators(spec)?, stop),
        Engine::Auto => match choose(&super::xdpgen::XdpGen::live_frames(&spec.iface)) {
            (Engine::Xdp, _) => run_xdp(spec, generators(spec)?, stop),
            (engine, why) => {
                if let Some(why) = why {
                    eprintln!("{why}");
                }
                debug_assert_eq!(engine, Engine::Redirect);
                run_redirect(spec, stop)
            }
        },
    }
}

/// One template per method with what the generator program randomises in
/// it: a source below the spoofed prefix, or the last octet of the
/// `sources`, which must then be consecutive within one /24.
fn randomised(spec: &FloodSpec) -> Result<Vec<(Template, super::xdpgen::Randomise)>> {
    use super::xdpgen::Randomise;
    let (base, mut r) = match &spec.spoof {
        Some(s) => {
            let r = Randomise {
                prefix_len: Some(s.net().prefix_len()),
                ..Randomise::default()
            };
            (s.net().network(), r)
        }
        None => {
            let first = spec.sources[0];
            let o = first.octets();
            let consecutive = spec
                .sources
                .iter()
                .enumerate()
                .all(|(i, s)| u32::from(*s) == u32::from(first) + i as u32);
            if !consecutive || u32::from(o[3]) + spec.sources.len() as u32 > 256 {
                bail!(
                    "the {} engine needs consecutive sources within one /24",
                    spec.engine.as_str()
                );
            }
            let r = Randomise {
                first_octet: o[3],
                count: spec.sources.len() as u8,
                ..Randomise::default()
            };
            (Ipv4Addr::new(o[0], o[1], o[2], 0).into(), r)
        }
    };
    // The flood rewrites the whole counter field per call; the program
    // keeps an IPv6 frame's UDP checksum right over all of it.
    r.field_len = COUNTER_DIGITS;
    let mac = PacketSocket::open(&spec.iface)
        .context("reading the interface's MAC address")?
        .mac();
    Ok(spec
        .methods
        .iter()
        .map(|&method| {
            let t = template(spec, mac, method, base);
            r.letters_at.clone_from(&t.counters);
            (t, r.clone())
        })
        .collect())
}

/// One loaded live-frames generator per method, with its template.
fn generators(spec: &FloodSpec) -> Result<Vec<(super::xdpgen::XdpGen, Template)>> {
    randomised(spec)?
        .into_iter()
        .map(|(t, r)| {
            let g = super::xdpgen::XdpGen::new(&spec.iface, &t.frame, &r)
                .context("the XDP generator (needs Linux 5.18+)")?;
            Ok((g, t))
        })
        .collect()
}

/// The in-kernel generator: one program per method; frames go out in
/// chunks of `repeat` per system call (each chunk with a new counter, each
/// frame with a random source and random letters, see `xdpgen`; the
/// program also fixes the checksums, so the chunk's frame is handed over
/// with the template's).
///
/// A live-frames call has a fixed cost of about one RCU grace period (tens
/// of ms here: the kernel tears its page pool down at the end of each call)
/// during which the calling thread sleeps. So the flood is sent by several
/// threads taking chunks off one schedule (10 ms worth each when paced,
/// 65,536 frames at full speed): while some wait for their call to return,
/// others send.
fn run_xdp(
    spec: &FloodSpec,
    gens: Vec<(super::xdpgen::XdpGen, Template)>,
    stop: impl Fn() -> bool + Sync,
) -> Result<FloodReport> {
    use std::sync::atomic::{AtomicU64, Ordering};
    const THREADS: u64 = 4;
    let chunk = if spec.rate == 0 {
        65_536
    } else {
        (spec.rate / 100).clamp(1, 65_536)
    };
    let start = Instant::now();
    let next_chunk = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    let failed: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    let threads = THREADS;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut frames: Vec<Vec<u8>> = gens.iter().map(|(_, t)| t.frame.clone()).collect();
                loop {
                    let i = next_chunk.fetch_add(1, Ordering::Relaxed);
                    let offset = i.saturating_mul(chunk);
                    if offset >= spec.max_packets
                        || stop()
                        || failed.lock().map(|f| f.is_some()).unwrap_or(true)
                    {
                        return;
                    }
                    // The duration bounds the flood in time: a chunk still
                    // due when it is over (a loaded machine falls behind
                    // the schedule) is not sent late; `sent` says so.
                    if start.elapsed() >= spec.duration {
                        return;
                    }
                    if spec.rate > 0 {
                        let due = start + Duration::from_secs_f64(offset as f64 / spec.rate as f64);
                        if due >= start + spec.duration {
                            return;
                        }
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    let m = (i % gens.len() as u64) as usize;
                    let (g, t) = &gens[m];
                    let n = chunk.min(spec.max_packets - offset) as u32;
                    write_counter(&mut frames[m], &t.counters, i);
                    if let Err(e) = g.send(&frames[m], n) {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(
                                anyhow::Error::new(e).context("BPF_PROG_TEST_RUN (live frames)"),
                            );
                        }
                        return;
                    }
                    sent.fetch_add(u64::from(n), Ordering::Relaxed);
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    let sent = sent.into_inner();
    let seconds = start.elapsed().as_secs_f64();
    Ok(FloodReport {
        engine: Engine::Xdp,
        sent,
        seconds,
        rate: sent as f64 / seconds.max(1e-9),
        send_errors: 0,
    })
}

/// A different random sequence per run.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 40)
}

/// `AF_PACKET` + `sendmmsg` (a spoofed source per packet picked here, its
/// checksums fixed here).
fn run_packet(spec: &FloodSpec, stop: impl Fn() -> bool) -> Result<FloodReport> {
    let sock = PacketSocket::open(&spec.iface).context("opening the packet socket")?;
    let tpl = templates(spec, sock.mac());
    let max_len = tpl.iter().map(|t| t.frame.len()).max().unwrap_or(0);
    let batch = batch_size(spec);
    let mut bufs: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; max_len]).collect();
    let mut rng = Rng::new(seed());
    paced(spec, Engine::Packet, stop, |n, want| {
        let mut lens = [0usize; MAX_BATCH];
        for j in 0..want {
            let t = &tpl[((n + j as u64) % tpl.len() as u64) as usize];
            let src = spec.spoof.map(|s| s.pick(&mut rng));
            fill(&mut bufs[j], t, n + j as u64, src);
            lens[j] = t.frame.len();
        }
        let frames: Vec<&[u8]> = bufs
            .iter()
            .zip(&lens[..want])
            .map(|(b, &l)| &b[..l])
            .collect();
        sock.send_frames(&frames)
    })
}

/// `AF_PACKET` + `sendmmsg` of the template into one [`super::hop::Hop`]
/// per method, whose program makes each frame different and redirects it
/// to `spec.iface` as an XDP frame. A batch is one method's template with
/// its counter, `want` times.
fn run_redirect(spec: &FloodSpec, stop: impl Fn() -> bool) -> Result<FloodReport> {
    let mut hops = Vec::new();
    let mut frames = Vec::new();
    for (i, (t, r)) in randomised(spec)?.into_iter().enumerate() {
        let hop = super::hop::Hop::new(i, &spec.iface, &t.frame, &r)
            .context("the redirect engine's hop (a veth pair with native XDP)")?;
        hops.push(hop);
        frames.push(t);
    }
    if let Some(h) = hops.iter().find(|h| !h.threaded) {
        eprintln!(
            "flood: the hop's NAPI has no thread of its own ({}): its work is softirq time",
            h.name()
        );
    }
    let batch = batch_size(spec) as u64;
    paced(spec, Engine::Redirect, stop, |n, want| {
        let m = ((n / batch) % hops.len() as u64) as usize;
        let t = &mut frames[m];
        write_counter(&mut t.frame, &t.counters, n);
        let copies = vec![&t.frame[..]; want];
        hops[m].socket().send_frames(&copies)
    })
}

/// The most frames one `sendmmsg` takes here.
const MAX_BATCH: usize = 1024;

/// Frames per `sendmmsg`: small batches at low rates keep the pacing
/// smooth (about 1 ms apart).
fn batch_size(spec: &FloodSpec) -> usize {
    let most = spec.batch.clamp(1, MAX_BATCH);
    if spec.rate == 0 {
        most
    } else {
        (spec.rate as usize / 1000).clamp(1, most)
    }
}

/// Sends batches until the duration, the packet count or `stop()`:
/// `send(n, want)` sends `want` frames numbered from `n` and says how many
/// the kernel took. A full queue (ENOBUFS) skips the batch and counts a
/// send error; another error ends the flood.
fn paced(
    spec: &FloodSpec,
    engine: Engine,
    stop: impl Fn() -> bool,
    mut send: impl FnMut(u64, usize) -> std::io::Result<usize>,
) -> Result<FloodReport> {
    let batch = batch_size(spec);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut n = 0u64;
    let mut errors = 0u64;
    while sent < spec.max_packets && start.elapsed() < spec.duration && !stop() {
        let want = batch.min((spec.max_packets - sent) as usize);
        match send(n, want) {
            Ok(k) => {
                sent += k as u64;
                n += k as u64;
            }
            Err(e)
                if e.raw_os_error() == Some(libc::ENOBUFS)
                    || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                errors += 1;
                n += want as u64;
                // A full queue: whoever drains it (on a hop, its NAPI
                // thread on this CPU) gets the CPU rather than a retry.
                std::thread::yield_now();
            }
            Err(e) => return Err(e).context("sendmmsg"),
        }
        if spec.rate > 0 {
            let due = start + Duration::from_secs_f64(sent as f64 / spec.rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(FloodReport {
        engine,
        sent,
        seconds,
        rate: sent as f64 / seconds.max(1e-9),
        send_errors: errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_valid_sip_over_ipv4() {
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 5060);
        let src = Ipv4Addr::new(198, 51, 100, 100);
        for m in [
            FloodMethod::Invite,
            FloodMethod::Register,
            FloodMethod::Options,
        ] {
            let p = sip_payload(m, 5062, dst, "LabFlood/1.0");
            let text = String::from_utf8(p.clone()).expect("ascii");
            assert!(text.starts_with(&format!("{} ", m.as_str())), "{text}");
            let (head, body) = text.split_once("\r\n\r\n").expect("header end");
            let cl: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .expect("CL")
                .parse()
                .expect("n");
            assert_eq!(cl, body.len());
            let f = udp_frame(
                [2, 0, 0, 0, 0, 1],
                [2, 0, 0, 0, 0, 2],
                SocketAddrV4::new(src, 5062),
                dst,
                &p,
            );
            assert_eq!(csum::checksum(&f[14..34]), 0, "header checksum verifies");
            assert_eq!(usize::from(u16::from_be_bytes([f[38], f[39]])), 8 + p.len());
        }
    }

    #[test]
    fn every_packet_gets_its_own_counter() {
        let spec = FloodSpec {
            engine: Engine::Packet,
            iface: "x".into(),
            dst_mac: [0; 6],
            dst: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 5060),
            sources: vec![Ipv4Addr::new(198, 51, 100, 100)],
            source_port: 5062,
            methods: vec![FloodMethod::Invite],
            user_agent: "x".into(),
            rate: 0,
            duration: Duration::from_secs(1),
            max_packets: 1,
            batch: 1,
            spoof: None,
        };
        let t = &templates(&spec, [0; 6])[0];
        assert!(
            t.tracked.is_empty(),
            "IPv4 from a fixed source: nothing to fix"
        );
        assert_eq!(t.counters.len(), 3, "branch, tag and Call-ID");
        let mut b = t.frame.clone();
        write_counter(&mut b, &t.counters, 0xabc);
        let s = String::from_utf8_lossy(&b);
        assert!(
            s.contains("Call-ID: 0000000000000abc@attacker.invalid"),
            "{s}"
        );
        assert!(!s.contains('#'));
    }

    fn spoofed(spoof: Spoof) -> FloodSpec {
        FloodSpec {
            engine: Engine::Packet,
            dst: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 5060),
            methods: vec![FloodMethod::Invite, FloodMethod::Options],
            spoof: Some(spoof),
            ..FloodSpec::default()
        }
    }

    /// The packet engine's frames: a source in the prefix and checksums a
    /// full recomputation agrees with.
    #[test]
    fn spoofed_frames_are_valid() {
        let v4 = Spoof::V4("10.64.0.0/12".parse().expect("net"));
        let v6 = Spoof::V6 {
            net: "2001:db8:5::/48".parse().expect("net"),
            dst: "[2001:db8::1]:5060".parse().expect("dst"),
        };
        let mut rng = Rng::new(7);
        for spoof in [v4, v6] {
            let spec = spoofed(spoof);
            let tpl = templates(&spec, [2, 0, 0, 0, 0, 1]);
            assert_eq!(tpl.len(), 2, "one per method");
            for n in 0..2000u64 {
                let t = &tpl[n as usize % 2];
                let mut b = vec![0u8; t.frame.len() + 10];
                let src = spoof.pick(&mut rng);
                assert!(spoof.net().contains(&src), "{src}");
                fill(&mut b, t, n, Some(src));
                let f = &b[..t.frame.len()];
                let digits = format!("{n:016x}");
                assert!(t
                    .counters
                    .iter()
                    .all(|&c| f[c..c + 16] == *digits.as_bytes()));
                match src {
                    IpAddr::V4(a) => {
                        assert_eq!(f[26..30], a.octets());
                        assert_eq!(csum::checksum(&f[14..34]), 0, "header checksum");
                        assert_eq!(f[40..42], [0, 0], "no UDP checksum");
                    }
                    IpAddr::V6(a) => {
                        assert_eq!(f[22..38], a.octets());
                        let mut seg = f[54..].to_vec();
                        seg[6..8].copy_from_slice(&[0, 0]);
                        let full =
                            csum::udp6(&a.octets(), &f[38..54].try_into().expect("dst"), &seg);
                        assert_eq!(u16::from_be_bytes([f[60], f[61]]), full, "UDP checksum");
                    }
                }
            }
        }
    }

    #[test]
    fn spoofed_prefixes_are_checked_and_spread() {
        let too_wide = Spoof::V4("10.0.0.0/7".parse().expect("net"));
        assert!(too_wide.check().is_err());
        let v6 = Spoof::V6 {
            net: "2001:db8:5::/48".parse().expect("net"),
            dst: "[2001:db8::1]:5060".parse().expect("dst"),
        };
        v6.check().expect("a /48");
        assert_eq!(
            spoofed(v6).destination(),
            "[2001:db8::1]:5060".parse().expect("dst")
        );
        let mut rng = Rng::new(1);
        let subnets: std::collections::HashSet<u64> = (0..1000)
            .map(|_| match v6.pick(&mut rng) {
                IpAddr::V6(a) => (u128::from(a) >> 64) as u64,
                IpAddr::V4(_) => unreachable!(),
            })
            .collect();
        assert!(subnets.len() > 950, "{} /64s", subnets.len());
        let p = String::from_utf8(sip_payload_to(
            FloodMethod::Options,
            5062,
            "[2001:db8::1]:5060".parse().expect("dst"),
            "x",
        ))
        .expect("ascii");
        assert!(p.starts_with("OPTIONS sip:[2001:db8::1] SIP/2.0"), "{p}");
    }

    /// `auto` runs the in-kernel generator where a live-frames run works
    /// and falls back to the redirect engine, with one line that says
    /// why, where the kernel refuses it (EPERM on this kind of machine).
    #[test]
    fn auto_falls_back_when_live_frames_are_refused() {
        assert_eq!(choose(&Ok(())), (Engine::Xdp, None));
        for errno in [libc::EPERM, libc::EINVAL, libc::EOPNOTSUPP] {
            let err = std::io::Error::from_raw_os_error(errno);
            let (engine, why) = choose(&Err(std::io::Error::from_raw_os_error(errno)));
            assert_eq!(engine, Engine::Redirect);
            let why = why.expect("a line that says why");
            assert!(why.contains(&err.to_string()), "{why}");
            assert!(why.contains("redirect") && !why.contains('\n'), "{why}");
        }
    }

    /// The report names the engine in lowercase, as `--engine` takes it;
    /// reports written before it had one still read.
    #[test]
    fn the_report_names_its_engine() {
        let r = FloodReport {
            engine: Engine::Redirect,
            sent: 3,
            ..FloodReport::default()
        };
        let json = serde_json::to_string(&r).expect("json");
        assert!(json.contains(r#""engine":"redirect""#), "{json}");
        for e in [Engine::Auto, Engine::Xdp, Engine::Redirect, Engine::Packet] {
            assert_eq!(Engine::parse(e.as_str()).expect("parses"), e);
        }
        let old: FloodReport =
            serde_json::from_str(r#"{"sent":1,"seconds":1.0,"rate":1.0,"send_errors":0}"#)
                .expect("old");
        assert_eq!(old.sent, 1);
        assert!(Engine::parse("XDP").is_err());
    }
}

/// The `flood` binary, started in the attacker's namespace: one process,
/// or [`FloodOptions::processes`] of them sharing the rate.
pub struct Flooder {
    procs: Vec<crate::process::Proc>,
    pub planned: Duration,
}

/// How the lab floods.
#[derive(Clone, Debug)]
pub struct FloodOptions {
    pub engine: Engine,
    pub methods: Vec<FloodMethod>,
    /// Packets per second; 0 = as fast as possible.
    pub rate: u64,
    pub duration: Duration,
    /// How many of the attacker's flood addresses to use.
    pub sources: usize,
    pub cpus: Vec<usize>,
    pub user_agent: Option<String>,
    /// A spoofed-source flood: every packet from a random address of this
    /// IPv4 prefix (`flood --spoof`) instead of the attacker's `sources`
    /// (e.g. [`SPOOF_NET`]). The SBC gets a route for it via the attacker,
    /// so its replies to the forged sources leave as they would on a real
    /// network (and reverse-path filtering, where on, accepts them).
    pub spoof: Option<Ipv4Net>,
    /// Flood processes sharing `rate` (each sends `rate / processes`);
    /// 0 or 1: one. The in-kernel engine sends a chunk of 10 ms worth of
    /// frames per call, so one paced process floods in bursts 10 ms apart;
    /// several of them, started at different moments, spread the bursts
    /// (their gaps matter to a token bucket of a few hundred per second).
    pub processes: usize,
}

/// The prefix the lab's spoofed-source floods forge their sources from:
/// 1,048,576 addresses that no host of the lab has (lab/kamailio/sbc.cfg
/// counts the requests it gets from it).
pub const SPOOF_NET: &str = "10.64.0.0/12";

impl FloodOptions {
    /// Defaults for the lab: the auto engine, INVITE and REGISTER, as fast
    /// as possible, every flood address, no pinning, no spoofing.
    pub fn new(duration: Duration) -> FloodOptions {
        FloodOptions {
            engine: Engine::Auto,
            methods: vec![FloodMethod::Invite, FloodMethod::Register],
            rate: 0,
            duration,
            sources: super::topology::FLOOD_SOURCES,
            cpus: Vec::new(),
            user_agent: None,
            spoof: None,
            processes: 1,
        }
    }

    /// [`SPOOF_NET`] as a prefix.
    pub fn spoof_net() -> Ipv4Net {
        SPOOF_NET.parse().expect("a valid prefix")
    }
}

impl Flooder {
    pub fn start(
        topo: &super::Topology,
        dir: &std::path::Path,
        o: &FloodOptions,
    ) -> Result<Flooder> {
        let n = o.processes.max(1);
        if let Some(net) = o.spoof {
            // Replies to the forged sources go back towards the attacker.
            use super::topology::{ATTACKER_IP, SBC_PUBLIC_IF};
            let (net, via) = (net.to_string(), ATTACKER_IP.to_string());
            topo.sbc
                .ip(&["route", "replace", &net, "via", &via, "dev", SBC_PUBLIC_IF]);
        }
        let mut procs = Vec::with_capacity(n);
        for i in 0..n {
            let cmd = Self::command(topo, o, n)?;
            let log = if n == 1 {
                dir.join("flood.log")
            } else {
                dir.join(format!("flood-{i}.log"))
            };
            procs.push(crate::process::Proc::spawn_piped("flood", cmd, &log)?);
        }
        Ok(Flooder {
            procs,
            planned: o.duration,
        })
    }

    /// One of `n` flood processes of `o`.
    fn command(
        topo: &super::Topology,
        o: &FloodOptions,
        n: usize,
    ) -> Result<std::process::Command> {
        use super::topology::*;
        let exe = crate::paths::binary("flood")?;
        let mut cmd = crate::process::in_ns(&topo.attacker, exe.to_str().context("path")?);
        let methods: Vec<&str> = o.methods.iter().map(|m| m.as_str()).collect();
        // Bounded: at most 10 million packets per second of flood.
        let bound = (o.duration.as_secs_f64() * 10e6) as u64 / n as u64;
        cmd.args(["--engine", o.engine.as_str()])
            .args(["--max-packets", &bound.to_string()])
            .args(["--iface", HOST_IF])
            .args(["--dst-mac", &topo.sbc.mac(SBC_PUBLIC_IF)])
            .args(["--dst", &format!("{SBC_PUBLIC_IP}:5060")]);
        match o.spoof {
            Some(net) => cmd.args(["--spoof", &net.to_string()]),
            None => cmd.args([
                "--sources",
                &format!("{FLOOD_BASE}/{}", o.sources.clamp(1, FLOOD_SOURCES)),
            ]),
        };
        cmd.args(["--methods", &methods.join(",")])
            .args(["--rate", &(o.rate / n as u64).to_string()])
            .args(["--seconds", &format!("{:.3}", o.duration.as_secs_f64())]);
        if let Some(ua) = &o.user_agent {
            cmd.args(["--user-agent", ua]);
        }
        if !o.cpus.is_empty() {
            let c: Vec<String> = o.cpus.iter().map(usize::to_string).collect();
            cmd.args(["--cpus", &c.join(",")]);
        }
        Ok(cmd)
    }

    /// The first process's id.
    pub fn pid(&self) -> u32 {
        self.procs[0].pid()
    }

    /// Every process's id.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(crate::process::Proc::pid).collect()
    }

    /// Whether any of the processes still runs.
    pub fn is_running(&mut self) -> bool {
        self.procs.iter_mut().any(|p| p.is_running())
    }

    /// Waits for the flood to end; what it sent (all processes together:
    /// the packets summed, the time of the longest).
    pub fn finish(mut self) -> Result<FloodReport> {
        let mut total = FloodReport::default();
        for p in &mut self.procs {
            let (status, out) = p.wait_output(self.planned + Duration::from_secs(30))?;
            if !status.success() {
                bail!("flood failed ({status}): {}", p.log_tail(10));
            }
            let r: FloodReport = serde_json::from_str(out.trim())
                .with_context(|| format!("flood's summary {out:?}"))?;
            if total.engine != Engine::Auto && total.engine != r.engine {
                bail!(
                    "the flood processes used different engines: {} and {}",
                    total.engine.as_str(),
                    r.engine.as_str()
                );
            }
            total.engine = r.engine;
            total.sent += r.sent;
            total.send_errors += r.send_errors;
            total.seconds = total.seconds.max(r.seconds);
        }
        total.rate = total.sent as f64 / total.seconds.max(1e-9);
        Ok(total)
    }

    /// Stops it early (SIGTERM: it still prints its summary).
    pub fn interrupt(&self) {
        for p in &self.procs {
            p.signal(libc::SIGTERM);
        }
    }
}
