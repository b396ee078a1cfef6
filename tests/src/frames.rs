//! A small frame builder for crafted test packets: Ethernet with VLAN tags,
//! IPv4 with options and fragment fields, IPv6 with extension headers, UDP,
//! TCP and raw protocols. Checksums are left zero: XDP does not check them.

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

#[derive(Clone, Debug)]
pub enum Ext {
    HopByHop(u8),
    Routing(u8),
    DestOpts(u8),
    /// Offset in 8-octet units, more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
    /// Any other next-header value (AH, mobility, HIP, experimental...),
    /// laid out like an options header: next header, length in 8-octet
    /// units past the first eight, zeros. The shield does not walk these.
    Other {
        proto: u8,
        len: u8,
    },
}

#[derive(Clone, Debug)]
pub enum L3 {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        /// Must be a multiple of 4 bytes (up to 40).
        options: Vec<u8>,
        /// In 8-octet units.
        frag_offset: u16,
        more_frags: bool,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        ext: Vec<Ext>,
    },
}

#[derive(Clone, Debug)]
pub enum L4 {
    Udp {
        sport: u16,
        dport: u16,
    },
    Tcp {
        sport: u16,
        dport: u16,
        syn: bool,
        ack: bool,
    },
    /// Any other protocol number; the payload follows the IP header directly.
    Raw(u8),
}

#[derive(Clone, Debug)]
pub struct Frame {
    pub vlans: Vec<u16>,
    pub l3: L3,
    pub l4: L4,
    pub payload: Vec<u8>,
}

pub const SBC_V4: [u8; 4] = [198, 51, 100, 1];
pub const SBC_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

impl Frame {
    pub fn udp4(src: [u8; 4], dport: u16, payload: &[u8]) -> Frame {
        Frame {
            vlans: vec![],
            l3: L3::V4 {
                src,
                dst: SBC_V4,
                options: vec![],
                frag_offset: 0,
                more_frags: false,
            },
            l4: L4::Udp { sport: 5062, dport },
            payload: payload.to_vec(),
        }
    }

    pub fn udp6(src: [u8; 16], dport: u16, payload: &[u8]) -> Frame {
        Frame {
            vlans: vec![],
            l3: L3::V6 {
                src,
                dst: SBC_V6,
                ext: vec![],
            },
            l4: L4::Udp { sport: 5062, dport },
            payload: payload.to_vec(),
        }
    }

    pub fn tcp4(src: [u8; 4], dport: u16, syn: bool, ack: bool) -> Frame {
        Frame {
            vlans: vec![],
            l3: L3::V4 {
                src,
                dst: SBC_V4,
                options: vec![],
                frag_offset: 0,
                more_frags: false,
            },
            l4: L4::Tcp {
                sport: 40000,
                dport,
                syn,
                ack,
            },
            payload: vec![],
        }
    }

    pub fn with_vlans(mut self, tpids: &[u16]) -> Frame {
        self.vlans = tpids.to_vec();
        self
    }

    pub fn with_v4_options(mut self, opts: &[u8]) -> Frame {
        if let L3::V4 { options, .. } = &mut self.l3 {
            *options = opts.to_vec();
        }
        self
    }

    pub fn with_v4_fragment(mut self, offset: u16, more: bool) -> Frame {
        if let L3::V4 {
            frag_offset,
            more_frags,
            ..
        } = &mut self.l3
        {
            *frag_offset = offset;
            *more_frags = more;
        }
        self
    }

    pub fn with_v6_ext(mut self, e: Vec<Ext>) -> Frame {
        if let L3::V6 { ext, .. } = &mut self.l3 {
            *ext = e;
        }
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128 + self.payload.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
        for tpid in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x64]); // TCI: VLAN 100
        }
        let l4 = self.l4_bytes();
        match &self.l3 {
            L3::V4 {
                src,
                dst,
                options,
                frag_offset,
                more_frags,
            } => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let hlen = 20 + options.len();
                let total = hlen + l4.len();
                f.push(0x40 | (hlen / 4) as u8);
                f.push(0);
                f.extend_from_slice(&(total as u16).to_be_bytes());
                f.extend_from_slice(&[0x12, 0x34]);
                let frag = (frag_offset & 0x1fff) | if *more_frags { 0x2000 } else { 0 };
                f.extend_from_slice(&frag.to_be_bytes());
                f.push(64);
                f.push(self.proto());
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(src);
                f.extend_from_slice(dst);
                f.extend_from_slice(options);
            }
            L3::V6 { src, dst, ext } => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let ext_bytes = ext_chain(ext, self.proto());
                let plen = ext_bytes.len() + l4.len();
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(plen as u16).to_be_bytes());
                f.push(ext.first().map_or(self.proto(), ext_proto));
                f.push(64);
                f.extend_from_slice(src);
                f.extend_from_slice(dst);
                f.extend_from_slice(&ext_bytes);
            }
        }
        f.extend_from_slice(&l4);
        f
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Udp { .. } => 17,
            L4::Tcp { .. } => 6,
            L4::Raw(p) => p,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self.l4 {
            L4::Udp { sport, dport } => {
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
            }
            L4::Tcp {
                sport,
                dport,
                syn,
                ack,
            } => {
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&1u32.to_be_bytes());
                b.extend_from_slice(&(if ack { 1u32 } else { 0 }).to_be_bytes());
                b.push(5 << 4);
                b.push(if syn { 0x02 } else { 0 } | if ack { 0x10 } else { 0 });
                b.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
            }
            L4::Raw(_) => {}
        }
        b.extend_from_slice(&self.payload);
        b
    }
}

fn ext_proto(e: &Ext) -> u8 {
    match e {
        Ext::HopByHop(_) => 0,
        Ext::Routing(_) => 43,
        Ext::DestOpts(_) => 60,
        Ext::Fragment { .. } => 44,
        Ext::Other { proto, .. } => *proto,
    }
}

fn ext_chain(ext: &[Ext], last: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for (i, e) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(last, ext_proto);
        match e {
            Ext::HopByHop(len)
            | Ext::Routing(len)
            | Ext::DestOpts(len)
            | Ext::Other { len, .. } => {
                b.push(next);
                b.push(*len);
                b.extend(std::iter::repeat_n(0u8, (*len as usize + 1) * 8 - 2));
            }
            Ext::Fragment { offset, more } => {
                b.push(next);
                b.push(0);
                let v = (offset << 3) | u16::from(*more);
                b.extend_from_slice(&v.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 7]);
            }
        }
    }
    b
}

/// A SIP request with a few realistic headers; `ua` adds a User-Agent line
/// after them (where scanners put it).
pub fn sip_request(method: &str, ua: Option<&str>) -> Vec<u8> {
    let mut s = format!(
        "{method} sip:100@198.51.100.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK-{method}-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"100\" <sip:100@198.51.100.1>;tag=7b2f1c\r\n\
         To: \"100\" <sip:100@198.51.100.1>\r\n\
         Call-ID: 8d2b61e7a1c94f3c@203.0.113.7\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:100@203.0.113.7:5062>\r\n\
         Accept: application/sdp\r\n"
    );
    if let Some(ua) = ua {
        s.push_str(&format!("User-Agent: {ua}\r\n"));
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s.into_bytes()
}

/// An INVITE with an SDP body, the shape of real call set-up traffic.
pub fn sip_invite_with_sdp(ua: &str) -> Vec<u8> {
    let sdp = "v=0\r\no=- 3839 3839 IN IP4 203.0.113.7\r\ns=call\r\nc=IN IP4 203.0.113.7\r\n\
               t=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n\
               a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
    let s = format!(
        "INVITE sip:200@198.51.100.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK-4f1a;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:100@carrier.example>;tag=a81f\r\n\
         To: <sip:200@198.51.100.1>\r\n\
         Call-ID: 4c1e9b77@203.0.113.7\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:100@203.0.113.7:5062>\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n\
         Supported: replaces, timer\r\n\
         User-Agent: {ua}\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    s.into_bytes()
}

/// An RFC 5389 STUN binding request (a SIP outbound keepalive).
pub fn stun_binding() -> Vec<u8> {
    let mut b = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    b.extend_from_slice(&[7u8; 12]);
    b
}
