//! SPEC §8 through the daemon: the egress classifier attached (tcx) with
//! the XDP program learns a source from a real 2xx leaving the SBC's
//! socket; `shieldctl verified`, `verify`, `unverify`; the metrics; a
//! reload that changes the budget keeps what was learned, and so does a
//! restart (the maps and the egress link are pinned).

mod common;

use std::time::Duration;

use common::*;
use shield::control::protocol::{Lasts, VerifiedReply};

const VERIFY: &str = "[limits]\npackets_per_second = 0\n\n\
    [verify]\nunverified_per_second = 50\nunverified_burst = 20\n\
    cidrs = [\"192.0.2.0/28\"]\n";

/// The SBC answers each request from the peer with `reply` (a SIP
/// response from port 5060), as a registrar would.
fn answer_once(ends: &Ends, reply: &'static str) {
    ends.peer
        .send_to(
            b"REGISTER sip:sbc SIP/2.0\r\nCall-ID: 1@peer\r\nCSeq: 2 REGISTER\r\n\r\n",
            (SBC_IP, 5060),
        )
        .expect("send");
    let mut buf = [0u8; 2048];
    let (_, from) = ends.sbc.recv_from(&mut buf).expect("the REGISTER reaches the SBC");
    ends.sbc.send_to(reply.as_bytes(), from).expect("reply");
    ends.peer.recv_from(&mut buf).expect("the reply reaches the peer");
}

const OK_REGISTER: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.2:5062\r\n\
    Call-ID: 1@peer\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n";
const CHALLENGE: &str = "SIP/2.0 401 Unauthorized\r\nCall-ID: 1@peer\r\nCSeq: 1 REGISTER\r\n\
    WWW-Authenticate: Digest realm=\"sbc\", nonce=\"x\"\r\nContent-Length: 0\r\n\r\n";

fn how(d: &Shieldd, net: &str) -> Option<String> {
    d.verified_how(net).expect("verified")
}

fn verified(d: &Shieldd) -> VerifiedReply {
    d.verified().expect("verified")
}

#[test]
fn a_real_2xx_verifies_its_destination_and_the_budget_spares_it() {
    let lab = Lab::new();
    let ends = Ends::bind(&lab);
    let mut d = Shieldd::new(bins(), &lab.sbc, VERIFY);
    d.start();
    let peer = format!("{PEER_IP}/32");
    let status = d.ctl_ok(&["status"]);
    assert!(status.contains("EGRESS") && status.contains("tcx"), "{status}");
    assert_eq!(how(&d, "192.0.2.0/28").as_deref(), Some("config"), "{:?}", verified(&d));
    assert_eq!(how(&d, &peer), None);

    // A challenge verifies no one; the 200 that follows does.
    answer_once(&ends, CHALLENGE);
    assert_eq!(how(&d, &peer), None, "a 401 verified the peer");
    answer_once(&ends, OK_REGISTER);
    let h = wait_for("the peer verified", Duration::from_secs(5), || how(&d, &peer));
    assert_eq!(h, "reply");
    let text = d.ctl_ok(&["verified"]);
    assert!(text.contains("unverified budget: 50/s"), "{text}");
    assert!(text.contains(&peer) && text.contains("reply"), "{text}");

    // The verified peer is not limited by the budget of 50/s + 20.
    let sink = Sink::on(ends.sbc);
    send(&lab, PEER_IP, 400, Duration::from_micros(200));
    settle();
    assert_eq!(sink.from(PEER_IP).count, 400, "the budget dropped a verified source");
    assert_eq!(d.packets("drop", "unverified"), 0);

    let m = d.metrics(&lab.sbc).expect("metrics");
    for needle in [
        r#"sipshield_sip_responses_total{interface="veth-s",method="REGISTER",class="2xx"} 1"#,
        r#"sipshield_sip_responses_total{interface="veth-s",method="REGISTER",class="4xx"} 1"#,
        "sipshield_verified_sources 2",
        "sipshield_under_pressure 0",
    ] {
        assert!(m.contains(needle), "missing {needle:?} in\n{m}");
    }
}

#[test]
fn unverified_sources_share_the_budget_and_pressure_shows() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, VERIFY);
    d.start();
    let sink = Sink::start(&lab);
    // 400 requests in ~0.1 s: the burst of 20 and a few refills pass.
    send(&lab, PEER_IP, 400, Duration::from_micros(250));
    settle();
    let passed = sink.from(PEER_IP).count;
    let dropped = d.packets("drop", "unverified");
    assert_eq!(passed + dropped, 400, "passed {passed}, dropped {dropped}");
    assert!((20..=40).contains(&passed), "passed {passed} of 400 (burst 20, 50/s)");
    // Pressure shows while the budget is dropping, and only then.
    let flood = Flood::start(
        &lab,
        PEER_IP,
        Duration::from_micros(500),
        20_000,
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(300));
    let text = d.ctl_ok(&["verified"]);
    let m = d.metrics(&lab.sbc).expect("metrics");
    flood.stop();
    assert!(text.contains("UNDER PRESSURE"), "{text}");
    assert!(m.contains("sipshield_under_pressure 1"), "{m}");
    assert!(
        m.contains(r#"sipshield_packets_total{interface="veth-s",verdict="drop",reason="unverified"}"#),
        "{m}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let m = d.metrics(&lab.sbc).expect("metrics");
    assert!(m.contains("sipshield_under_pressure 0"), "pressure after the flood:\n{m}");
}

#[test]
fn verify_unverify_survive_reload_and_restart_and_bad_input_is_refused() {
    let lab = Lab::new();
    let ends = Ends::bind(&lab);
    let mut d = Shieldd::new(bins(), &lab.sbc, VERIFY);
    d.start();
    let out = d.ctl_ok(&["verify", "203.0.113.7", "--ttl", "2h"]);
    assert!(out.contains("verified 203.0.113.7/32 for"), "{out}");
    d.ctl_ok(&["verify", "2001:db8:7::1"]);
    // A shorter --ttl never shortens.
    d.ctl_ok(&["verify", "203.0.113.7", "--ttl", "10m"]);
    let left = |d: &Shieldd, net: &str| d.verified_left(net).expect("verified");
    let Some(Lasts::Secs(secs)) = left(&d, "203.0.113.7/32") else {
        panic!("203.0.113.7/32 not listed with a time left: {:?}", verified(&d))
    };
    assert!(secs > 3600, "{secs}");
    // An IPv6 address verifies its /64.
    assert!(left(&d, "2001:db8:7::/64").is_some(), "{:?}", verified(&d));

    for (args, why) in [
        (&["verify", "not-an-ip"][..], "address"),
        (&["verify", "203.0.113.8", "--ttl", "0s"], "ttl"),
        (&["verify", "0.0.0.0/0"], "wider"),
        (&["unverify", "192.0.2.0/28"], "[verify] cidrs"),
    ] {
        let o = d.ctl(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(why), "{args:?}: {}", text(&o.stderr));
    }

    // Reload with another budget: the verified entries stay.
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    d.write_config(&cfg.replace("unverified_per_second = 50", "unverified_per_second = 70"));
    d.ctl_ok(&["reload"]);
    assert!(d.ctl_ok(&["verified"]).contains("70/s"));
    assert!(left(&d, "203.0.113.7/32").is_some());

    // Restart (the pins keep the maps and the egress link).
    d.restart().expect("restart");
    assert!(left(&d, "203.0.113.7/32").is_some(), "{:?}", verified(&d));
    assert!(left(&d, "2001:db8:7::/64").is_some());
    answer_once(&ends, OK_REGISTER);
    wait_for("the adopted classifier verifies", Duration::from_secs(5), || {
        left(&d, &format!("{PEER_IP}/32"))
    });

    let out = d.ctl_ok(&["unverify", "203.0.113.7"]);
    assert!(out.contains("unverified 203.0.113.7/32"), "{out}");
    let out = d.ctl_ok(&["unverify", "203.0.113.7"]);
    assert!(out.contains("was not verified"), "{out}");
}
