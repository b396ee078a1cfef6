//! The egress classifier (SPEC §8) on crafted frames with
//! `BPF_PROG_TEST_RUN`: what it counts, whom it verifies, and that it
//! never changes a packet's fate. A 2xx verifies only when it answers a
//! request the XDP program saw from its destination (same Call-ID and
//! CSeq, request-line method in `[verify] methods`): the requests are run
//! through the XDP program first, kernel and model side by side.

use shield_common::{Method, Policy, Reason, F_ENFORCE};
use shield_tests::{
    frames::{Ext, Frame, L3, L4, TPID_8021AD, TPID_8021Q},
    kernel::Kernel,
    model::{Model, Reply, Tables},
};

const TC_ACT_UNSPEC: i32 = -1;
const CLIENT: [u8; 4] = [203, 0, 113, 9];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
const SBC: [u8; 4] = [198, 51, 100, 1];
const SBC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn tables() -> Tables {
    let mut t = Tables::default();
    t.udp_ports.insert(5060);
    t.tcp_ports.extend([5060, 5061]);
    t.policy = Policy {
        flags: F_ENFORCE,
        verify_ttl_ns: 3_600_000_000_000,
        verify_methods: 1 << Method::Register as u32 | 1 << Method::Invite as u32,
        ..Policy::default()
    };
    t
}

/// A reply from the SBC's port 5060 to the client.
fn reply4(payload: &str) -> Frame {
    Frame {
        vlans: vec![],
        l3: L3::V4 {
            src: SBC,
            dst: CLIENT,
            options: vec![],
            frag_offset: 0,
            more_frags: false,
        },
        l4: L4::Udp {
            sport: 5060,
            dport: 5062,
        },
        payload: payload.as_bytes().to_vec(),
    }
}

fn reply6(payload: &str, ext: Vec<Ext>) -> Frame {
    Frame {
        vlans: vec![],
        l3: L3::V6 {
            src: SBC6,
            dst: CLIENT6,
            ext,
        },
        l4: L4::Udp {
            sport: 5060,
            dport: 5062,
        },
        payload: payload.as_bytes().to_vec(),
    }
}

/// A request from `src` (IPv4 or IPv6, as `dst`) to the SBC's 5060.
fn request_frame(payload: &str, src: std::net::IpAddr) -> Frame {
    let l3 = match src {
        std::net::IpAddr::V4(a) => L3::V4 {
            src: a.octets(),
            dst: SBC,
            options: vec![],
            frag_offset: 0,
            more_frags: false,
        },
        std::net::IpAddr::V6(a) => L3::V6 {
            src: a.octets(),
            dst: SBC6,
            ext: vec![],
        },
    };
    Frame {
        vlans: vec![],
        l3,
        l4: L4::Udp {
            sport: 5062,
            dport: 5060,
        },
        payload: payload.as_bytes().to_vec(),
    }
}

/// The client's request whose replies [`response`] builds: request line
/// `method`, the same Call-ID, and `cseq`.
fn request(method: &str, cseq: &str) -> String {
    format!(
        "{method} sip:198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9:5062;branch=z9hG4bK1\r\n\
         From: <sip:100@example>;tag=1\r\nTo: <sip:100@example>\r\n\
         Call-ID: 1@203.0.113.9\r\n{cseq}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn response(status: &str, cseq: &str) -> String {
    format!(
        "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 203.0.113.9:5062;branch=z9hG4bK1\r\n\
         From: <sip:100@example>;tag=1\r\nTo: <sip:100@example>;tag=2\r\n\
         Call-ID: 1@203.0.113.9\r\n{cseq}\r\nContent-Length: 0\r\n\r\n"
    )
}

struct Bench {
    k: Kernel,
    model: Model,
}

impl Bench {
    fn new() -> Bench {
        Bench::with(tables())
    }

    fn with(t: Tables) -> Bench {
        let mut k = Kernel::load();
        k.apply(&t);
        Bench {
            k,
            model: Model::new(t),
        }
    }

    /// Runs `f` through kernel and model; they must agree; returns the reply.
    fn run(&mut self, f: &Frame) -> Option<Reply> {
        let bytes = f.build();
        let want = self.model.egress(&bytes, shield::kernel::monotonic_ns());
        let (rc, got) = self.k.run_egress(&bytes).expect("a whole frame is run");
        assert_eq!(rc, TC_ACT_UNSPEC, "the classifier never decides a packet's fate");
        assert_eq!(got, want, "kernel and model disagree on {f:?}");
        got
    }

    /// Sends `payload` as a request from `src` through the XDP program and
    /// the model (which must agree, and pass it).
    fn ask_from(&mut self, payload: &str, src: std::net::IpAddr) {
        let bytes = request_frame(payload, src).build();
        let want = self.model.decide(&bytes, shield::kernel::monotonic_ns());
        let got = self.k.run(&bytes);
        assert_eq!(got.reason, want.reason, "kernel and model disagree on {payload:?}");
        assert_eq!(got.reason, Reason::Ok, "{payload:?}");
    }

    /// [`Bench::ask_from`] the client.
    fn ask(&mut self, payload: &str) {
        self.ask_from(payload, CLIENT.into());
    }

    /// Learned from a reply (the classifier's own entries).
    fn verified(&self, a: std::net::IpAddr) -> bool {
        self.k
            .shield
            .maps
            .learned_entry(a)
            .expect("VERIFIED")
            .is_some()
    }
}

#[test]
fn every_status_class_is_counted_and_only_a_2xx_to_an_authenticated_method_verifies() {
    let mut b = Bench::new();
    for (status, class) in [
        ("100 Trying", 1),
        ("180 Ringing", 1),
        ("302 Moved", 3),
        ("401 Unauthorized", 4),
        ("503 Busy", 5),
        ("603 Decline", 6),
    ] {
        let r = b.run(&reply4(&response(status, "CSeq: 1 REGISTER")));
        assert_eq!(r, Some(Reply { method: Method::Register, class }));
        assert!(!b.verified(CLIENT.into()), "{status} verified the client");
    }
    // 2xx to a method not in [verify] methods: counted, not verified.
    b.ask(&request("OPTIONS", "CSeq: 5 OPTIONS"));
    let r = b.run(&reply4(&response("200 OK", "CSeq: 5 OPTIONS")));
    assert_eq!(r, Some(Reply { method: Method::Options, class: 2 }));
    assert!(!b.verified(CLIENT.into()));
    // A 2xx to a REGISTER the client never sent: counted, not verified.
    let r = b.run(&reply4(&response("200 OK", "CSeq: 2 REGISTER")));
    assert_eq!(r, Some(Reply { method: Method::Register, class: 2 }));
    assert!(!b.verified(CLIENT.into()), "no request, no verification");
    b.ask(&request("REGISTER", "CSeq: 2 REGISTER"));
    let r = b.run(&reply4(&response("200 OK", "CSeq: 2 REGISTER")));
    assert_eq!(r, Some(Reply { method: Method::Register, class: 2 }));
    assert!(b.verified(CLIENT.into()));
}


#[test]
fn cseq_in_any_spelling_and_place_and_header_names_in_any_case() {
    let mut b = Bench::new();
    for (cseq, method) in [
        ("CSeq: 1 INVITE", Method::Invite),
        ("cseq:1 INVITE", Method::Invite),
        ("CSEQ \t:\t 4294967295\t\tREGISTER", Method::Register),
        ("CSeq :  7   BYE", Method::Bye),
        ("CSeq: 9 register", Method::Other), // methods are case-sensitive
        ("CSeq: 9 FOO", Method::Other),
        ("CSeq: INVITE", Method::Other),            // garbled: no number
        ("CSeq: 12345678901 INVITE", Method::Other), // number too long
        ("X-CSeq: 1 INVITE", Method::Other),         // not the header
    ] {
        let r = b.run(&reply4(&response("486 Busy Here", cseq)));
        assert_eq!(r, Some(Reply { method, class: 4 }), "{cseq:?}");
    }
    // CSeq after Call-ID, Contact and Content-Type lines (all `c`), and
    // Call-ID spelt otherwise in the reply.
    b.ask("INVITE sip:a SIP/2.0\r\nCSeq: 3 INVITE\r\nCall-ID: x\r\n\r\n");
    let payload = "SIP/2.0 200 OK\r\ncall-id :\tx\r\nContact: <sip:a@b>\r\nContent-Type: a/b\r\n\
                   c: x\r\nCSeq: 3 INVITE\r\n\r\n";
    let r = b.run(&reply4(payload));
    assert_eq!(r, Some(Reply { method: Method::Invite, class: 2 }));
    assert!(b.verified(CLIENT.into()));
}

#[test]
fn replies_over_vlans_ipv6_extension_headers_and_tcp() {
    let mut b = Bench::new();
    let ok = response("200 OK", "CSeq: 2 REGISTER");
    b.ask(&request("REGISTER", "CSeq: 2 REGISTER"));
    b.ask_from(&request("REGISTER", "CSeq: 2 REGISTER"), CLIENT6.into());
    b.ask_from(&request("INVITE", "CSeq: 1 INVITE"), [203, 0, 113, 10].into());
    let r = b.run(&reply4(&ok).with_vlans(&[TPID_8021AD, TPID_8021Q]));
    assert_eq!(r, Some(Reply { method: Method::Register, class: 2 }));
    assert!(b.verified(CLIENT.into()));
    // IPv6 behind hop-by-hop and destination options: the whole /64 of the
    // destination is verified (the key the XDP program looks up).
    let f = reply6(&ok, vec![Ext::HopByHop(0), Ext::DestOpts(1)]).with_vlans(&[TPID_8021Q]);
    assert_eq!(b.run(&f), Some(Reply { method: Method::Register, class: 2 }));
    let mut same64 = CLIENT6;
    same64[15] = 0x77;
    assert!(b.verified(same64.into()));
    let mut other64 = CLIENT6;
    other64[7] = 1;
    assert!(!b.verified(other64.into()));
    // A TCP segment that begins with a status line, from port 5061.
    let mut tcp = reply4(&response("200 OK", "CSeq: 1 INVITE"));
    tcp.l3 = L3::V4 {
        src: SBC,
        dst: [203, 0, 113, 10],
        options: vec![],
        frag_offset: 0,
        more_frags: false,
    };
    tcp.l4 = L4::Tcp { sport: 5061, dport: 40000, syn: false, ack: true };
    assert_eq!(b.run(&tcp), Some(Reply { method: Method::Invite, class: 2 }));
    assert!(b.verified([203, 0, 113, 10].into()));
}

#[test]
fn requests_leaving_the_host_other_ports_fragments_and_garbage_verify_no_one() {
    let mut b = Bench::new();
    // The SBC's own request out of 5060 (e.g. an OPTIONS ping, a REGISTER
    // to a trunk) carries a CSeq but no status line.
    let req = "REGISTER sip:trunk.example SIP/2.0\r\nCSeq: 1 REGISTER\r\n\r\n";
    assert_eq!(b.run(&reply4(req)), None);
    // A 200 whose status line is garbled, or from an unprotected port.
    for status in ["2OO OK", "200OK", "700 Huh", "099 Low"] {
        assert_eq!(b.run(&reply4(&response(status, "CSeq: 1 REGISTER"))), None);
    }
    let mut other = reply4(&response("200 OK", "CSeq: 1 REGISTER"));
    other.l4 = L4::Udp { sport: 5080, dport: 5062 };
    assert_eq!(b.run(&other), None);
    // A later fragment has no UDP header.
    let frag = reply4(&response("200 OK", "CSeq: 1 REGISTER")).with_v4_fragment(10, false);
    assert_eq!(b.run(&frag), None);
    // Truncated in the middle of the CSeq line: the method is cut short.
    let full = reply4(&response("200 OK", "CSeq: 1 REGISTER")).build();
    let cut = full.len() - "ER\r\nContent-Length: 0\r\n\r\n".len();
    let want = b.model.egress(&full[..cut], 1);
    let (rc, got) = b.k.run_egress(&full[..cut]).expect("whole IP header");
    assert_eq!((rc, got), (TC_ACT_UNSPEC, want));
    assert_eq!(got, Some(Reply { method: Method::Other, class: 2 }));
    // A UDP length that ends the payload before CSeq.
    let mut short = reply4(&response("200 OK", "CSeq: 1 REGISTER")).build();
    let udp_len_at = 14 + 20 + 4;
    short[udp_len_at..udp_len_at + 2].copy_from_slice(&(8u16 + 20).to_be_bytes());
    let (_, got) = b.k.run_egress(&short).expect("whole IP header");
    assert_eq!(got, Some(Reply { method: Method::Other, class: 2 }));
    assert!(!b.verified(CLIENT.into()), "no reply above may verify the client");
}

#[test]
fn a_reply_refreshes_but_never_shortens_a_verification() {
    use shield::kernel::VerifiedBy;
    let mut b = Bench::new();
    let learned = |b: &Bench| b.k.shield.maps.learned_entry(CLIENT.into()).unwrap();
    b.ask(&request("REGISTER", "CSeq: 2 REGISTER"));
    b.ask(&request("INVITE", "CSeq: 3 INVITE"));
    b.ask(&request("INVITE", "CSeq: 4 INVITE"));
    b.run(&reply4(&response("200 OK", "CSeq: 2 REGISTER")));
    let first = learned(&b).expect("learned");
    assert_eq!(first.by, VerifiedBy::Reply);
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.run(&reply4(&response("200 OK", "CSeq: 3 INVITE")));
    let later = learned(&b).unwrap();
    assert!(later.expires_ns > first.expires_ns, "refreshed");
    // A shorter [verify] ttl from now on: the next reply keeps the later
    // expiry it already has.
    let mut t = tables();
    t.policy.verify_ttl_ns = 1_000_000_000;
    b.k.shield.maps.set_policy(&t.policy).unwrap();
    b.model.tables.policy = t.policy;
    b.run(&reply4(&response("200 OK", "CSeq: 4 INVITE")));
    assert_eq!(learned(&b).unwrap().expires_ns, later.expires_ns, "shortened");
    // The operator's entries live in the tries, beside what was learned.
    let net = ipnet::IpNet::from(std::net::IpAddr::from(CLIENT));
    b.k.shield.maps.verify(net, 0, VerifiedBy::Operator).expect("verify");
    let all = b.k.shield.maps.verified(0).unwrap();
    let hows: Vec<_> = all.iter().filter(|e| e.net == net).map(|e| e.by).collect();
    assert_eq!(hows.len(), 2, "{all:?}");
    assert!(hows.contains(&VerifiedBy::Operator) && hows.contains(&VerifiedBy::Reply));
}

/// The two forgeries of issue 18 (SPEC §8): a keepalive OPTIONS whose
/// CSeq names REGISTER, answered `200 Keepalive` with that CSeq copied; a
/// 2xx relayed to an address that never sent the request. Neither
/// verifies; nor does a 2xx whose Call-ID or CSeq differs from the request.
#[test]
fn a_forged_cseq_or_a_relayed_reply_verifies_no_one() {
    let mut b = Bench::new();
    b.ask(&request("OPTIONS", "CSeq: 1 REGISTER"));
    let r = b.run(&reply4(&response("200 Keepalive", "CSeq: 1 REGISTER")));
    assert_eq!(r, Some(Reply { method: Method::Register, class: 2 }));
    assert!(!b.verified(CLIENT.into()), "an OPTIONS request line never verifies");
    // A REGISTER from another address with the same Call-ID and CSeq: a
    // reply relayed to the client pairs with nothing the client sent.
    b.ask_from(&request("REGISTER", "CSeq: 7 REGISTER"), [203, 0, 113, 77].into());
    b.run(&reply4(&response("200 OK", "CSeq: 7 REGISTER")));
    assert!(!b.verified(CLIENT.into()), "relayed to an address that never asked");
    // The client's own REGISTER, answered with another CSeq number,
    // another CSeq method, or another Call-ID.
    b.ask(&request("REGISTER", "CSeq: 8 REGISTER"));
    b.run(&reply4(&response("200 OK", "CSeq: 9 REGISTER")));
    b.run(&reply4(&response("200 OK", "CSeq: 8 INVITE")));
    let other_call = response("200 OK", "CSeq: 8 REGISTER").replace("Call-ID: 1@", "Call-ID: 2@");
    b.run(&reply4(&other_call));
    let no_call_id = response("200 OK", "CSeq: 8 REGISTER").replace("Call-ID: 1@203.0.113.9\r\n", "");
    b.run(&reply4(&no_call_id));
    assert!(!b.verified(CLIENT.into()), "nothing answered the REGISTER");
    // Its real answer verifies.
    b.run(&reply4(&response("200 OK", "CSeq: 8 REGISTER")));
    assert!(b.verified(CLIENT.into()));
}

/// The window: the model (whose clock the test sets) verifies a reply 32 s
/// after its request, and not a nanosecond later.
#[test]
fn a_reply_later_than_32_s_answers_nothing() {
    use shield_common::TXN_WINDOW_NS;
    let mut m = Model::new(tables());
    let ask = request_frame(&request("REGISTER", "CSeq: 1 REGISTER"), CLIENT.into()).build();
    let ok = reply4(&response("200 OK", "CSeq: 1 REGISTER")).build();
    let t0 = 1_000_000_000;
    assert_eq!(m.decide(&ask, t0).reason, Reason::Ok);
    m.egress(&ok, t0 + TXN_WINDOW_NS + 1);
    assert!(m.verified.is_empty(), "too late");
    // (That late reply used the request up: ask again.)
    assert_eq!(m.decide(&ask, t0).reason, Reason::Ok);
    m.egress(&ok, t0 + TXN_WINDOW_NS);
    assert_eq!(m.verified.len(), 1, "in time");
}

/// The primed forgery: a spoofer sends a REGISTER with a victim's source
/// (it picks the Call-ID), the server challenges it (401, which the victim
/// gets and the spoofer never sees), then the spoofer has a forged 200 OK
/// with the same Call-ID and CSeq relayed to the victim. The 401 used the
/// request up: only the first final reply counts. A provisional reply does
/// not use it up.
#[test]
fn only_the_first_final_reply_counts() {
    let mut b = Bench::new();
    b.ask(&request("REGISTER", "CSeq: 11 REGISTER"));
    b.run(&reply4(&response("401 Unauthorized", "CSeq: 11 REGISTER")));
    b.run(&reply4(&response("200 OK", "CSeq: 11 REGISTER")));
    assert!(!b.verified(CLIENT.into()), "a 2xx after the 401 verified the victim");
    b.ask(&request("INVITE", "CSeq: 12 INVITE"));
    b.run(&reply4(&response("100 Trying", "CSeq: 12 INVITE")));
    b.run(&reply4(&response("180 Ringing", "CSeq: 12 INVITE")));
    b.run(&reply4(&response("200 OK", "CSeq: 12 INVITE")));
    assert!(b.verified(CLIENT.into()), "provisional replies used the INVITE up");
}

/// The primed forgery racing the server: the forged 200 OK comes *in*
/// from the forger (a source neither allowlisted nor verified) and the
/// server relays it to the victim before its own 401 leaves (an overloaded
/// server loses that race). The inbound reply contests the transaction:
/// no 2xx to it verifies anyone. A reply from an allowlisted upstream (a
/// registrar the SBC forwards to) contests nothing.
#[test]
fn a_reply_that_came_in_from_an_unverified_source_verifies_no_one() {
    const FORGER: [u8; 4] = [203, 0, 113, 66];
    const UPSTREAM: [u8; 4] = [203, 0, 113, 200];
    let mut t = tables();
    t.allow = vec![ipnet::IpNet::from(std::net::IpAddr::from(UPSTREAM))];
    let mut b = Bench::with(t);
    b.ask(&request("REGISTER", "CSeq: 21 REGISTER"));
    let forged = response("200 OK", "CSeq: 21 REGISTER");
    let bytes = request_frame(&forged, FORGER.into()).build();
    let want = b.model.decide(&bytes, shield::kernel::monotonic_ns());
    assert_eq!(b.k.run(&bytes).reason, want.reason);
    b.run(&reply4(&forged));
    assert!(!b.verified(CLIENT.into()), "a relayed 2xx verified the victim");
    // The same through an allowlisted upstream: it verifies.
    b.ask(&request("REGISTER", "CSeq: 22 REGISTER"));
    let upstream = response("200 OK", "CSeq: 22 REGISTER");
    let bytes = request_frame(&upstream, UPSTREAM.into()).build();
    let want = b.model.decide(&bytes, shield::kernel::monotonic_ns());
    assert_eq!(b.k.run(&bytes).reason, want.reason);
    assert_eq!(want.reason, Reason::Allowlisted);
    b.run(&reply4(&upstream));
    assert!(b.verified(CLIENT.into()), "an upstream's 2xx no longer verifies");
}

/// A reply from the SBC's port 5060 to `client`.
fn reply_to(client: [u8; 4], payload: &str) -> Frame {
    let mut f = reply4(payload);
    if let L3::V4 { dst, .. } = &mut f.l3 {
        *dst = client;
    }
    f
}

/// `VERIFIED` is allocated on use, not an LRU: when it is full it learns no
/// one new until shieldd deletes what expired (`sweep_verified`), and the
/// sweep keeps what is still live. (Kernel only: the model has no capacity.)
#[test]
fn a_full_verified_map_learns_again_once_expired_entries_are_swept() {
    let mut t = tables();
    t.policy.verify_ttl_ns = 1_000_000_000;
    let capacity = shield::Capacity {
        verified: 2,
        ..shield::Capacity::small()
    };
    let mut k = Kernel::load_with(capacity);
    k.apply(&t);
    let register = |k: &mut Kernel, client: [u8; 4], cseq: &str| {
        let ask = request_frame(&request("REGISTER", cseq), client.into()).build();
        assert_eq!(k.run(&ask).reason, Reason::Ok);
        let ok = reply_to(client, &response("200 OK", cseq)).build();
        k.run_egress(&ok).expect("a whole frame is run");
        k.shield.maps.learned_entry(client.into()).expect("VERIFIED").is_some()
    };
    let (a, b, c) = ([203, 0, 113, 21], [203, 0, 113, 22], [203, 0, 113, 23]);
    assert!(register(&mut k, a, "CSeq: 1 REGISTER"));
    assert!(register(&mut k, b, "CSeq: 1 REGISTER"));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(!register(&mut k, c, "CSeq: 1 REGISTER"), "learned into a full map");
    let now = shield::kernel::monotonic_ns();
    assert_eq!(k.shield.maps.sweep_verified(now).expect("sweep"), 2);
    assert!(register(&mut k, c, "CSeq: 2 REGISTER"), "the sweep made no room");
    assert_eq!(k.shield.maps.sweep_verified(now).expect("sweep"), 0, "a live entry went");
    assert!(k.shield.maps.learned_entry(c.into()).expect("VERIFIED").is_some());
    assert!(k.shield.maps.learned_entry(a.into()).expect("VERIFIED").is_none());
}
