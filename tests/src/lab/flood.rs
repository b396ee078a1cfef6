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

use std::ffi::CString;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The SIP request the flood sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FloodMethod {
    Invite,
    Register,
    Options,
}

impl FloodMethod {
    pub fn parse(s: &str) -> Result<FloodMethod> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "INVITE" => FloodMethod::Invite,
            "REGISTER" => FloodMethod::Register,
            "OPTIONS" => FloodMethod::Options,
            _ => bail!("unknown method {s:?} (INVITE, REGISTER or OPTIONS)"),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FloodMethod::Invite => "INVITE",
            FloodMethod::Register => "REGISTER",
            FloodMethod::Options => "OPTIONS",
        }
    }
}

/// How frames are put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Engine {
    Xdp,
    Packet,
}

impl Engine {
    pub fn parse(s: &str) -> Result<Engine> {
        match s {
            "xdp" => Ok(Engine::Xdp),
            "packet" => Ok(Engine::Packet),
            _ => bail!("unknown engine {s:?} (xdp or packet)"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Xdp => "xdp",
            Engine::Packet => "packet",
        }
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
}

/// What was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FloodReport {
    pub sent: u64,
    pub seconds: f64,
    pub rate: f64,
    /// `sendmmsg` calls that failed (ENOBUFS and the like).
    pub send_errors: u64,
}

/// Width of the per-packet counter in the payload (hex digits).
const COUNTER_DIGITS: usize = 16;
const MARK: &[u8; COUNTER_DIGITS] = b"################";

/// One (source, method) frame with the offsets of its counter fields.
struct Template {
    frame: Vec<u8>,
    counters: Vec<usize>,
}

/// The host name flood requests carry in Via, From, Contact and Call-ID
/// (the SBC answers to the packet's source address and port, `rport`).
const ATTACKER_HOST: &str = "attacker.invalid";

/// The SIP payload of one flood request; `#` x16 marks the counter fields.
pub fn sip_payload(method: FloodMethod, sport: u16, dst: SocketAddrV4, ua: &str) -> Vec<u8> {
    let m = std::str::from_utf8(MARK).expect("ascii");
    let dip = dst.ip();
    let h = ATTACKER_HOST;
    let (ruri, to, extra, body) = match method {
        FloodMethod::Invite => (
            format!("sip:2000@{dip}"),
            format!("<sip:2000@{dip}>"),
            "Content-Type: application/sdp\r\n".to_string(),
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                .to_string(),
        ),
        FloodMethod::Register => (
            "sip:sbc.lab".to_string(),
            "<sip:1000@sbc.lab>".to_string(),
            format!("Contact: <sip:1000@{h}:{sport}>\r\nExpires: 300\r\n"),
            String::new(),
        ),
        FloodMethod::Options => (format!("sip:{dip}"), format!("<sip:{dip}>"), String::new(), String::new()),
    };
    let name = method.as_str();
    let from_user = if method == FloodMethod::Register {
        "1000"
    } else {
        "caller"
    };
    let contact = if method == FloodMethod::Invite {
        format!("Contact: <sip:caller@{h}:{sport}>\r\n")
    } else {
        String::new()
    };
    format!(
        "{name} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {h}:{sport};branch=z9hG4bK{m};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from_user}@{h}>;tag={m}\r\n\
         To: {to}\r\n\
         Call-ID: {m}@{h}\r\n\
         CSeq: 1 {name}\r\n\
         {contact}\
         User-Agent: {ua}\r\n\
         {extra}\
         Content-Length: {len}\r\n\r\n{body}",
        len = body.len(),
    )
    .into_bytes()
}

/// A complete Ethernet/IPv4/UDP frame (IP checksum set; UDP checksum 0,
/// which IPv4 allows).
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let sum = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn template(spec: &FloodSpec, src_mac: [u8; 6], method: FloodMethod, src: Ipv4Addr) -> Template {
    let payload = sip_payload(method, spec.source_port, spec.dst, &spec.user_agent);
    let frame = udp_frame(
        src_mac,
        spec.dst_mac,
        SocketAddrV4::new(src, spec.source_port),
        spec.dst,
        &payload,
    );
    let counters = frame
        .windows(COUNTER_DIGITS)
        .enumerate()
        .filter(|(_, w)| *w == MARK)
        .map(|(i, _)| i)
        .collect();
    Template { frame, counters }
}

/// One template per (method, source), methods after each round of sources.
fn templates(spec: &FloodSpec, src_mac: [u8; 6]) -> Vec<Template> {
    let mut out = Vec::new();
    for &method in &spec.methods {
        for &src in &spec.sources {
            out.push(template(spec, src_mac, method, src));
        }
    }
    out
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

/// An `AF_PACKET` socket bound to one interface.
struct PacketSocket {
    fd: libc::c_int,
    mac: [u8; 6],
}

impl PacketSocket {
    fn open(iface: &str) -> Result<PacketSocket> {
        let name = CString::new(iface)?;
        // SAFETY: plain socket calls on an fd this struct owns; the structs
        // passed are fully initialised.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            if ifindex == 0 {
                bail!("no interface {iface} here");
            }
            // Protocol 0: a send-only socket (it receives nothing).
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                bail!(
                    "AF_PACKET socket: {} (needs CAP_NET_RAW)",
                    std::io::Error::last_os_error()
                );
            }
            let mut s = PacketSocket { fd, mac: [0; 6] };
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex;
            if libc::bind(
                fd,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                bail!(
                    "bind AF_PACKET to {iface}: {}",
                    std::io::Error::last_os_error()
                );
            }
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                4,
            );
            let sndbuf: libc::c_int = 8 << 20;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&raw const sndbuf).cast(),
                4,
            );
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
                *d = *s as libc::c_char;
            }
            if libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr) != 0 {
                bail!("SIOCGIFHWADDR {iface}: {}", std::io::Error::last_os_error());
            }
            for (d, b) in s
                .mac
                .iter_mut()
                .zip(ifr.ifr_ifru.ifru_hwaddr.sa_data.iter())
            {
                *d = *b as u8;
            }
            Ok(s)
        }
    }

    /// Sends `frames` (each `lens[i]` long) with one `sendmmsg`; how many
    /// the kernel took.
    fn send_batch(&self, bufs: &mut [Vec<u8>], lens: &[usize]) -> std::io::Result<usize> {
        let n = lens.len();
        let mut iov: Vec<libc::iovec> = bufs[..n]
            .iter_mut()
            .zip(lens)
            .map(|(b, &l)| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: l,
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; each points at one live iovec.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs/iov/bufs outlive the call.
        let r = unsafe { libc::sendmmsg(self.fd, msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.fd) };
    }
}

/// Runs the flood until its duration, its packet count or `stop()` says so.
pub fn run(spec: &FloodSpec, stop: impl Fn() -> bool + Sync) -> Result<FloodReport> {
    if spec.sources.is_empty() || spec.methods.is_empty() {
        bail!("a flood needs at least one source and one method");
    }
    match spec.engine {
        Engine::Packet => run_packet(spec, stop),
        Engine::Xdp => run_xdp(spec, stop),
    }
}

/// The in-kernel generator: one program per method; frames go out in
/// chunks of `repeat` per system call (each chunk with a new counter, each
/// frame with a random source and random letters, see `xdpgen`).
///
/// A live-frames call has a fixed cost of about one RCU grace period (tens
/// of ms here: the kernel tears its page pool down at the end of each call)
/// during which the calling thread sleeps. So the flood is sent by several
/// threads taking chunks off one schedule (10 ms worth each when paced,
/// 65,536 frames at full speed): while some wait for their call to return,
/// others send.
fn run_xdp(spec: &FloodSpec, stop: impl Fn() -> bool + Sync) -> Result<FloodReport> {
    use super::xdpgen::{Randomise, XdpGen};
    use std::sync::atomic::{AtomicU64, Ordering};
    const THREADS: u64 = 4;
    let first = spec.sources[0];
    let o = first.octets();
    let consecutive = spec
        .sources
        .iter()
        .enumerate()
        .all(|(i, s)| u32::from(*s) == u32::from(first) + i as u32);
    if !consecutive || u32::from(o[3]) + spec.sources.len() as u32 > 256 {
        bail!("the xdp engine needs consecutive sources within one /24");
    }
    let mac = PacketSocket::open(&spec.iface)
        .context("reading the interface's MAC address")?
        .mac;
    let base = Ipv4Addr::new(o[0], o[1], o[2], 0);
    let mut gens = Vec::new();
    for &method in &spec.methods {
        let t = template(spec, mac, method, base);
        let r = Randomise {
            first_octet: o[3],
            count: spec.sources.len() as u8,
            letters_at: t.counters.clone(),
        };
        let g = XdpGen::new(&spec.iface, &t.frame, &r)
            .context("the XDP generator (needs Linux 5.18+)")?;
        gens.push((g, t));
    }
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
                    if spec.rate > 0 {
                        let due = start + Duration::from_secs_f64(offset as f64 / spec.rate as f64);
                        if due >= start + spec.duration {
                            return;
                        }
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    } else if start.elapsed() >= spec.duration {
                        return;
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
        sent,
        seconds,
        rate: sent as f64 / seconds.max(1e-9),
        send_errors: 0,
    })
}

/// `AF_PACKET` + `sendmmsg`.
fn run_packet(spec: &FloodSpec, stop: impl Fn() -> bool) -> Result<FloodReport> {
    let sock = PacketSocket::open(&spec.iface).context("opening the packet socket")?;
    let tpl = templates(spec, sock.mac);
    let max_len = tpl.iter().map(|t| t.frame.len()).max().unwrap_or(0);
    // Small batches at low rates keep the pacing smooth (about 1 ms apart).
    let batch = if spec.rate == 0 {
        spec.batch
    } else {
        (spec.rate as usize / 1000).clamp(1, spec.batch)
    };
    let mut bufs: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; max_len]).collect();
    let mut lens = vec![0usize; batch];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut n = 0u64;
    let mut errors = 0u64;
    while sent < spec.max_packets && start.elapsed() < spec.duration && !stop() {
        let want = batch.min((spec.max_packets - sent) as usize);
        for j in 0..want {
            let t = &tpl[((n + j as u64) % tpl.len() as u64) as usize];
            bufs[j][..t.frame.len()].copy_from_slice(&t.frame);
            write_counter(&mut bufs[j], &t.counters, n + j as u64);
            lens[j] = t.frame.len();
        }
        match sock.send_batch(&mut bufs, &lens[..want]) {
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
        sent,
        seconds,
        rate: sent as f64 / seconds.max(1e-9),
        send_errors: errors,
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {s:?}"))?;
    parts
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC {s:?}: six bytes expected"))
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
            assert_eq!(ip_checksum(&f[14..34]), 0, "header checksum verifies");
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
        };
        let t = &templates(&spec, [0; 6])[0];
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

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01").expect("mac"),
            [2, 0, 10, 255, 0, 1]
        );
        assert!(parse_mac("02:00").is_err());
    }
}

/// The `flood` binary, started in the attacker's namespace.
pub struct Flooder {
    proc: super::process::Proc,
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
}

impl Flooder {
    pub fn start(
        topo: &super::Topology,
        dir: &std::path::Path,
        o: &FloodOptions,
    ) -> Result<Flooder> {
        use super::topology::*;
        let exe = super::paths::binary("flood")?;
        let mut cmd = super::process::in_ns(&topo.attacker, exe.to_str().context("path")?);
        let methods: Vec<&str> = o.methods.iter().map(|m| m.as_str()).collect();
        // Bounded: at most 10 million packets per second of flood.
        let bound = (o.duration.as_secs_f64() * 10e6) as u64;
        cmd.args(["--engine", o.engine.as_str()])
            .args(["--max-packets", &bound.to_string()])
            .args(["--iface", HOST_IF])
            .args(["--dst-mac", &topo.sbc.mac(SBC_PUBLIC_IF)])
            .args(["--dst", &format!("{SBC_PUBLIC_IP}:5060")])
            .args([
                "--sources",
                &format!("{FLOOD_BASE}/{}", o.sources.clamp(1, FLOOD_SOURCES)),
            ])
            .args(["--methods", &methods.join(",")])
            .args(["--rate", &o.rate.to_string()])
            .args(["--seconds", &format!("{:.3}", o.duration.as_secs_f64())]);
        if let Some(ua) = &o.user_agent {
            cmd.args(["--user-agent", ua]);
        }
        if !o.cpus.is_empty() {
            let c: Vec<String> = o.cpus.iter().map(usize::to_string).collect();
            cmd.args(["--cpus", &c.join(",")]);
        }
        let proc = super::process::Proc::spawn_piped("flood", cmd, &dir.join("flood.log"))?;
        Ok(Flooder {
            proc,
            planned: o.duration,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Waits for the flood to end; what it sent.
    pub fn finish(mut self) -> Result<FloodReport> {
        let (status, out) = self
            .proc
            .wait_output(self.planned + Duration::from_secs(30))?;
        if !status.success() {
            bail!("flood failed ({status}): {}", self.proc.log_tail(10));
        }
        serde_json::from_str(out.trim()).with_context(|| format!("flood's summary {out:?}"))
    }

    /// Stops it early (SIGTERM: it still prints its summary).
    pub fn interrupt(&self) {
        self.proc.signal(libc::SIGTERM);
    }
}
