//! The egress classifier (SPEC §8) on crafted frames with
//! `BPF_PROG_TEST_RUN`: what it counts, whom it verifies, and that it
//! never changes a packet's fate.

use shield_common::{Method, Policy, F_ENFORCE};
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
        let t = tables();
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

    fn verified(&self, a: std::net::IpAddr) -> bool {
        self.k
            .shield
            .maps
            .verified_entry(a)
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
    let r = b.run(&reply4(&response("200 OK", "CSeq: 5 OPTIONS")));
    assert_eq!(r, Some(Reply { method: Method::Options, class: 2 }));
    assert!(!b.verified(CLIENT.into()));
    let r = b.run(&reply4(&response("200 OK", "CSeq: 2 REGISTER")));
    assert_eq!(r, Some(Reply { method: Method::Register, class: 2 }));
    assert!(b.verified(CLIENT.into()));
}

