//! The `403 Forbidden` a refused INVITE gets (SPEC §11, RFC 3261 §8.2.6),
//! built from the INVITE the kernel's report carries, and sent from the
//! address and port the INVITE was sent to.
//!
//! Why user space and not `XDP_TX`: a reply copies every Via, From, To,
//! Call-ID and CSeq line, of any length and number, and drops the rest and
//! the body; in the kernel that is a variable-length rewrite with an IPv6
//! checksum over it, every path of it verified. Replies are few by design
//! (`reject_per_second`, one bucket for the host): the flood itself is
//! dropped in XDP either way, and a reply costs one ring-buffer record
//! and one `sendto`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The headers a response copies from its request (full and compact
/// names, lower case).
const COPIED: [(&str, &str); 5] = [
    ("via", "v"),
    ("from", "f"),
    ("to", "t"),
    ("call-id", "i"),
    ("cseq", ""),
];

/// Builds the `403 Forbidden` for `invite` (its UDP payload), naming
/// `rule`; `tag` is the To tag it adds. `None` when the INVITE lacks a
/// header the response must copy (no valid response can be built).
pub fn forbidden(invite: &[u8], rule: &str, tag: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(invite);
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = unfold(head).into_iter();
    let first = lines.next()?;
    if !first.starts_with("INVITE ") {
        return None;
    }
    let mut out = String::from("SIP/2.0 403 Forbidden\r\n");
    let mut seen = [false; COPIED.len()];
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim().to_ascii_lowercase();
        let Some(i) = COPIED.iter().position(|(full, compact)| name == *full || (!compact.is_empty() && name == *compact)) else {
            continue;
        };
        let value = value.trim();
        // One From, To, Call-ID and CSeq; every Via.
        if seen[i] && i != 0 {
            continue;
        }
        seen[i] = true;
        let canonical = ["Via", "From", "To", "Call-ID", "CSeq"][i];
        if i == 2 && !has_tag(value) {
            out.push_str(&format!("{canonical}: {value};tag={tag}\r\n"));
        } else {
            out.push_str(&format!("{canonical}: {value}\r\n"));
        }
    }
    if !seen.iter().all(|s| *s) {
        return None;
    }
    let rule = rule.replace(['"', '\\', '\r', '\n'], "");
    out.push_str(&format!(
        "Warning: 399 sipshield \"Destination refused by rule {rule}\"\r\n"
    ));
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// Header lines with continuation lines (folding) joined.
fn unfold(head: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in head.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
                continue;
            }
        }
        out.push(line.trim_end_matches('\r').to_owned());
    }
    out
}

/// Whether a To value has a `tag` parameter outside its URI.
fn has_tag(value: &str) -> bool {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params
        .split(';')
        .skip(1)
        .any(|p| p.trim().to_ascii_lowercase().starts_with("tag="))
}

/// Sends UDP datagrams from any local address and port: raw sockets (one
/// per local address, bound to it), the UDP header written here, so the
/// reply leaves from the port the SIP server listens on without touching
/// the server's socket. Needs CAP_NET_RAW.
#[derive(Default)]
pub struct Replier {
    sockets: HashMap<IpAddr, Socket>,
}

/// Local addresses a replier keeps sockets for, at most (a host has few).
const MAX_SOCKETS: usize = 64;

impl Replier {
    pub fn send(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> io::Result<()> {
        if from.is_ipv4() != to.is_ipv4() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "mixed address families"));
        }
        if !self.sockets.contains_key(&from.ip()) {
            if self.sockets.len() >= MAX_SOCKETS {
                self.sockets.clear();
            }
            self.sockets.insert(from.ip(), raw_socket(from.ip())?);
        }
        let sock = &self.sockets[&from.ip()];
        let datagram = udp(from, to, payload)?;
        sock.send_to(&datagram, &SockAddr::from(SocketAddr::new(to.ip(), 0)))?;
        Ok(())
    }
}

fn raw_socket(local: IpAddr) -> io::Result<Socket> {
    let domain = if local.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::RAW, Some(Protocol::UDP))?;
    s.bind(&SockAddr::from(SocketAddr::new(local, 0)))?;
    // A raw UDP socket also receives a copy of every UDP datagram: a
    // filter that keeps none, so nothing queues up unread.
    let drop_all = [socket2::SockFilter::new((libc::BPF_RET | libc::BPF_K) as u16, 0, 0, 0)];
    s.attach_filter(&drop_all)?;
    Ok(s)
}

/// A UDP header (checksum included, over the pseudo-header) and `payload`.
fn udp(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(8 + payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "datagram too large"))?;
    let mut d = Vec::with_capacity(len as usize);
    d.extend_from_slice(&from.port().to_be_bytes());
    d.extend_from_slice(&to.port().to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
    };
    match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            add(&s.octets());
            add(&t.octets());
            add(&[0, 17]);
            add(&len.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => {
            add(&s.octets());
            add(&t.octets());
            add(&(len as u32).to_be_bytes());
            add(&[0, 0, 0, 17]);
        }
        _ => unreachable!("families checked by the caller"),
    }
    add(&d);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    // 0 means "no checksum"; all ones is the same sum.
    let c = if c == 0 { 0xffff } else { c };
    d[6..8].copy_from_slice(&c.to_be_bytes());
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:00899123@sbc SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1\r\n\
        v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK0\r\n\
        From: \"A\" <sip:a@x>;tag=abc\r\n\
        To: <sip:00899123@sbc>\r\n\
        Call-ID: 1@x\r\n\
        CSeq: 1\r\n INVITE\r\n\
        Contact: <sip:a@10.0.0.2>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn copies_what_rfc_3261_says_and_nothing_else() {
        let r = String::from_utf8(forbidden(INVITE.as_bytes(), "00899", "t1").unwrap()).unwrap();
        assert_eq!(
            r,
            "SIP/2.0 403 Forbidden\r\n\
             Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK0\r\n\
             From: \"A\" <sip:a@x>;tag=abc\r\n\
             To: <sip:00899123@sbc>;tag=t1\r\n\
             Call-ID: 1@x\r\n\
             CSeq: 1 INVITE\r\n\
             Warning: 399 sipshield \"Destination refused by rule 00899\"\r\n\
             Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn no_reply_without_the_headers_a_reply_needs() {
        let no_callid = INVITE.replace("Call-ID: 1@x\r\n", "");
        assert!(forbidden(no_callid.as_bytes(), "r", "t").is_none());
        assert!(forbidden(b"OPTIONS sip:x SIP/2.0\r\n\r\n", "r", "t").is_none());
        assert!(forbidden(b"\xff\xfe", "r", "t").is_none());
    }

    #[test]
    fn a_tagged_to_keeps_its_tag_and_a_hostile_rule_cannot_break_the_line() {
        let tagged = INVITE.replace("To: <sip:00899123@sbc>", "To: <sip:x@y>;tag=zz");
        let r = String::from_utf8(forbidden(tagged.as_bytes(), "a\"\r\nX: y", "t1").unwrap()).unwrap();
        assert!(r.contains("To: <sip:x@y>;tag=zz\r\n"));
        assert!(r.contains("rule aX: y\"\r\n"));
    }

    #[test]
    fn udp_checksum_verifies() {
        let from: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let to: SocketAddr = "198.51.100.2:5062".parse().unwrap();
        let d = udp(from, to, b"hello").unwrap();
        // Summing the pseudo-header and the datagram, checksum included,
        // gives all ones.
        let mut sum: u32 = 0;
        for b in [&[192u8, 0, 2, 1][..], &[198, 51, 100, 2], &[0, 17], &(d.len() as u16).to_be_bytes(), &d] {
            for c in b.chunks(2) {
                sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
            }
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
