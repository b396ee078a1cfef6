//! svcrack's exchange as the attacker's wire carried it, for section 9
//! ([`super::auth`]): an `AF_PACKET` socket on the attacker's interface
//! records every UDP datagram between the guesser's address and the SBC's
//! SIP port, each with the kernel's timestamp. A *guess* is a request
//! carrying `Authorization` or `Proxy-Authorization`; a *failure* is a
//! 400, 401, 403 or 407 answering a guess, paired by the top `Via`'s branch
//! (svcrack sends every guess with the same Call-ID and CSeq, only the
//! branch differs). A reply is timed when it reached the attacker: the
//! server sent it a few microseconds before, across one veth.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::netns::Netns;
use crate::udp::Background;

/// What one datagram was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request; `auth` when it carries credentials (a guess).
    Request { auth: bool },
    /// A reply with its status code.
    Reply { code: u16 },
}

/// One SIP datagram seen on the attacker's interface.
#[derive(Clone, Debug)]
pub struct Event {
    pub at: Instant,
    pub kind: Kind,
    /// The top Via's branch parameter ("" when absent).
    pub branch: String,
}

/// Guesses sent and failures received, each in time order.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    pub guesses: Vec<Instant>,
    pub failures: Vec<Instant>,
}

/// Pairs replies with the guesses they answer (by branch): the failures'
/// arrival times, and every guess's sending time. A reply to a request
/// without credentials (the first challenge) is not a failure.
pub fn exchange(events: &[Event]) -> Exchange {
    let mut guess_branches: HashMap<&str, Instant> = HashMap::new();
    let mut out = Exchange::default();
    for e in events {
        match e.kind {
            Kind::Request { auth: true } => {
                guess_branches.entry(&e.branch).or_insert(e.at);
                out.guesses.push(e.at);
            }
            Kind::Reply { code } if matches!(code, 400 | 401 | 403 | 407) => {
                // One failure per guess, whatever retransmissions follow.
                if guess_branches.remove(e.branch.as_str()).is_some() {
                    out.failures.push(e.at);
                }
            }
            _ => {}
        }
    }
    out.guesses.sort();
    out.failures.sort();
    out
}

/// A SIP datagram's kind and top-Via branch; `None` if it is not SIP.
pub fn classify(payload: &[u8]) -> Option<(Kind, String)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (first, rest) = text.split_once("\r\n")?;
    let kind = if let Some(status) = first.strip_prefix("SIP/2.0 ") {
        Kind::Reply { code: status.get(..3)?.parse().ok()? }
    } else if first.ends_with(" SIP/2.0") {
        let auth = header_lines(rest).any(|(name, _)| {
            name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("proxy-authorization")
        });
        Kind::Request { auth }
    } else {
        return None;
    };
    let branch = header_lines(rest)
        .find(|(name, _)| name.eq_ignore_ascii_case("via") || name.eq_ignore_ascii_case("v"))
        .and_then(|(_, value)| branch_of(value))
        .unwrap_or_default();
    Some((kind, branch))
}

/// (name, value) of each header line up to the blank line.
fn header_lines(head: &str) -> impl Iterator<Item = (&str, &str)> {
    head.split("\r\n")
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
}

/// The `branch` parameter of a Via value (its first hop).
fn branch_of(via: &str) -> Option<String> {
    let first_hop = via.split(',').next()?;
    first_hop.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("branch").then(|| v.trim().to_string())
    })
}

/// (source, source port, destination, destination port, payload) of an
/// untagged Ethernet + IPv4 + UDP frame (first fragments and whole
/// datagrams only).
pub fn udp4(frame: &[u8]) -> Option<(Ipv4Addr, u16, Ipv4Addr, u16, &[u8])> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let frag_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
    if ip.first()? >> 4 != 4 || ihl < 20 || ip.get(9)? != &17 || frag_offset != 0 {
        return None;
    }
    let a: [u8; 8] = ip.get(12..20)?.try_into().ok()?;
    let src = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
    let dst = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
    let udp = ip.get(ihl..).filter(|u| u.len() >= 8)?;
    let sport = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    let payload = udp.get(8..len.clamp(8, udp.len()))?;
    Some((src, sport, dst, dport, payload))
}

/// Records the exchange between `guesser` and `server:5060` on `dev` in
/// `ns` until stopped (or dropped), for at most `limit`.
pub struct Capture {
    events: Arc<Mutex<Vec<Event>>>,
    worker: Background,
}

impl Capture {
    pub fn start(ns: &Netns, dev: &str, guesser: Ipv4Addr, server: Ipv4Addr, limit: Duration) -> Result<Capture> {
        let ifindex = ns.ifindex(dev);
        let fd = ns.run(|| open_packet_socket(ifindex))?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let worker = Background::spawn(move |stop| {
            let started = Instant::now();
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
                let Some((n, at)) = recv_stamped(&fd, &mut buf) else {
                    continue;
                };
                let Some((src, sport, dst, dport, payload)) = udp4(&buf[..n]) else {
                    continue;
                };
                let ours = (src == guesser && dst == server && dport == 5060)
                    || (src == server && sport == 5060 && dst == guesser);
                if let (true, Some((kind, branch))) = (ours, classify(payload)) {
                    ev.lock().expect("lock").push(Event { at, kind, branch });
                }
            }
        });
        Ok(Capture { events, worker })
    }

    /// Stops recording; the events in arrival order.
    pub fn finish(mut self) -> Vec<Event> {
        self.worker.stop();
        std::mem::take(&mut *self.events.lock().expect("lock"))
    }
}

/// An `AF_PACKET` socket for every protocol on `ifindex` (of the calling
/// thread's namespace), with kernel timestamps and a 20 ms receive timeout.
fn open_packet_socket(ifindex: u32) -> Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
    if raw < 0 {
        bail!("AF_PACKET socket: {} (needs CAP_NET_RAW)", std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        bail!("bind AF_PACKET to ifindex {ifindex}: {}", std::io::Error::last_os_error());
    }
    let on: libc::c_int = 1;
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 20_000 };
    // SAFETY: valid option values of the sizes passed.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    Ok(fd)
}

/// One frame and when the kernel took it, as an `Instant`: the kernel
/// stamps CLOCK_REALTIME, so its age (now minus the stamp, both realtime)
/// is taken from `Instant::now()`. Without a stamp, the time of `recvmsg`.
fn recv_stamped(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, Instant)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; all-zero is a valid start.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the lengths given.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    let now = Instant::now();
    let real_now = realtime_ns();
    if n <= 0 {
        return None;
    }
    let stamp = scm_timestampns(&msg);
    let at = match stamp {
        Some(ns) if ns > 0 && ns <= real_now => now.checked_sub(Duration::from_nanos((real_now - ns) as u64)).unwrap_or(now),
        _ => now,
    };
    Some((n as usize, at))
}

/// The SCM_TIMESTAMPNS control message of `msg`, in ns since the epoch.
fn scm_timestampns(msg: &libc::msghdr) -> Option<i128> {
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled,
    // within msg_controllen; the data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

fn realtime_ns() -> i128 {
    // SAFETY: clock_gettime with a valid timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUESS: &str = "REGISTER sip:1000@198.51.100.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.51.100.200:5060;branch=z9hG4bK-111;rport\r\n\
        CSeq: 2 REGISTER\r\nAuthorization: Digest username=\"1000\",nonce=\"n\"\r\n\r\n";
    const FIRST: &str = "REGISTER sip:1000@198.51.100.1 SIP/2.0\r\n\
        v: SIP/2.0/UDP 198.51.100.200:5060;branch=z9hG4bK-000\r\nCSeq: 1 REGISTER\r\n\r\n";

    fn reply(code: u16, branch: &str) -> String {
        format!("SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 198.51.100.200:5060;rport=5060;branch={branch}\r\n\r\n")
    }

    #[test]
    fn tells_guesses_from_challenges_and_pairs_replies_by_branch() {
        assert_eq!(classify(GUESS.as_bytes()), Some((Kind::Request { auth: true }, "z9hG4bK-111".into())));
        assert_eq!(classify(FIRST.as_bytes()), Some((Kind::Request { auth: false }, "z9hG4bK-000".into())));
        assert_eq!(classify(reply(401, "z9hG4bK-111").as_bytes()), Some((Kind::Reply { code: 401 }, "z9hG4bK-111".into())));
        assert_eq!(classify(b"\x00\x01garbage"), None);
        assert_eq!(classify(b"SIP/2.0 4"), None);

        let t0 = Instant::now();
        let ev = |ms: u64, (kind, branch): (Kind, String)| Event { at: t0 + Duration::from_millis(ms), kind, branch };
        let events = vec![
            ev(0, classify(FIRST.as_bytes()).unwrap()),
            ev(1, classify(reply(401, "z9hG4bK-000").as_bytes()).unwrap()),
            ev(2, classify(GUESS.as_bytes()).unwrap()),
            ev(3, classify(reply(100, "z9hG4bK-111").as_bytes()).unwrap()),
            ev(4, classify(reply(401, "z9hG4bK-111").as_bytes()).unwrap()),
            ev(5, classify(reply(401, "z9hG4bK-111").as_bytes()).unwrap()),
            ev(6, classify(reply(401, "z9hG4bK-999").as_bytes()).unwrap()),
        ];
        let x = exchange(&events);
        assert_eq!(x.guesses, vec![t0 + Duration::from_millis(2)]);
        assert_eq!(x.failures, vec![t0 + Duration::from_millis(4)], "one failure per guess, none for the challenge");
    }

    #[test]
    fn reads_udp_from_ethernet_frames_and_refuses_others() {
        let payload = b"SIP/2.0 200 OK\r\n\r\n";
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        f.extend([0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend([198, 51, 100, 1, 198, 51, 100, 200]);
        let ulen = (8 + payload.len()) as u16;
        f.extend([0x13, 0xc4, 0x13, 0xc4, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        f.extend(payload);
        f.extend([0u8; 6]); // Ethernet padding is not payload
        let (src, sport, dst, dport, p) = udp4(&f).unwrap();
        assert_eq!((src, sport, dst, dport, p), (Ipv4Addr::new(198, 51, 100, 1), 5060, Ipv4Addr::new(198, 51, 100, 200), 5060, &payload[..]));
        let mut tcp = f.clone();
        tcp[14 + 9] = 6;
        assert!(udp4(&tcp).is_none());
        assert!(udp4(&f[..30]).is_none());
        let mut lying = f.clone();
        lying[14 + 20 + 4] = 0xff; // UDP length beyond the frame
        assert_eq!(udp4(&lying).unwrap().4.len(), f.len() - 14 - 28);
    }
}
