//! SPEC §11 through the daemon, with real sockets on both ends of a veth:
//! a premium-rate INVITE never reaches the SBC's socket and its caller gets
//! a 403 built as RFC 3261 §8.2.6 says, from the address and port it
//! called; national calls go through; an allowlisted trunk is checked too;
//! `action = "drop"` and the dry run stay silent; and a flood of premium
//! INVITEs from many sources gets no more 403s than `reject_per_second`
//! allows.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

const POLICY: &str = "[limits]\npackets_per_second = 0\n\n\
    [destinations]\ndeny = [\"00899\", \"+1 900\"]\nescalate = 0\n";

fn invite(uri: &str, call_id: &str) -> String {
    format!(
        "INVITE {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {PEER_IP}:5062;branch=z9hG4bK-{call_id};rport\r\n\
         Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK-inner\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:alice@peer>;tag=f-{call_id}\r\n\
         To: <{uri}>\r\n\
         Call-ID: {call_id}@peer\r\n\
         CSeq: 7 INVITE\r\n\
         Contact: <sip:alice@{PEER_IP}:5062>\r\n\
         User-Agent: Fraudster/1.0\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: 4\r\n\r\nv=0\n"
    )
}

/// The reply to `msg` sent from `peer`, if one comes within `within`.
fn reply(peer: &UdpSocket, msg: &str, within: Duration) -> Option<(String, SocketAddr)> {
    peer.send_to(msg.as_bytes(), (SBC_IP, 5060)).expect("send");
    peer.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = peer.recv_from(&mut buf).ok()?;
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

/// Whether anything reaches the SBC's socket within `within`.
fn reaches_sbc(sbc: &UdpSocket, within: Duration) -> bool {
    sbc.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    sbc.recv_from(&mut buf).is_ok()
}

#[test]
fn a_premium_invite_gets_an_rfc3261_403_and_never_reaches_the_sbc() {
    let lab = Lab::new();
    let ends = Ends::bind(&lab);
    let mut d = Shieldd::new(bins(), &lab.sbc, POLICY);
    d.start();

    let (text, from) = reply(&ends.peer, &invite("sip:00899123456@sbc", "c1"), Duration::from_secs(2))
        .expect("a 403 for the premium INVITE");
    assert_eq!(from, SocketAddr::from((SBC_IP, 5060)), "the 403 leaves from the port called");
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "SIP/2.0 403 Forbidden", "{text}");
    let want = [
        format!("Via: SIP/2.0/UDP {PEER_IP}:5062;branch=z9hG4bK-c1;rport"),
        "Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK-inner".to_string(),
        "From: \"Alice\" <sip:alice@peer>;tag=f-c1".to_string(),
        "Call-ID: c1@peer".to_string(),
        "CSeq: 7 INVITE".to_string(),
        "Warning: 399 sipshield \"Destination refused by rule 00899\"".to_string(),
        "Content-Length: 0".to_string(),
    ];
    for w in &want {
        assert!(lines.contains(&w.as_str()), "missing {w:?} in\n{text}");
    }
    let to = lines.iter().find(|l| l.starts_with("To: ")).expect("a To line");
    assert!(to.starts_with("To: <sip:00899123456@sbc>;tag="), "{to}");
    assert!(text.ends_with("\r\n\r\n"), "no body: {text:?}");
    // Nothing the reply must not copy.
    for absent in ["Contact", "Content-Type", "User-Agent", "Max-Forwards", "v=0"] {
        assert!(!text.contains(absent), "{absent} copied into\n{text}");
    }
    assert!(!reaches_sbc(&ends.sbc, Duration::from_millis(300)), "the INVITE reached the SBC");

    // +1 900 in another spelling; a national call goes through.
    let (text, _) = reply(&ends.peer, &invite("tel:+1-900-555-0100", "c2"), Duration::from_secs(2))
        .expect("a 403 for +1 900");
    assert!(text.contains("rule +1 900"), "{text}");
    ends.peer.send_to(invite("sip:0800123@sbc", "c3").as_bytes(), (SBC_IP, 5060)).unwrap();
    assert!(reaches_sbc(&ends.sbc, Duration::from_secs(2)), "a national call was stopped");
    // An in-dialog INVITE (To tag) is not checked.
    let reinvite = invite("sip:00899123456@sbc", "c4").replace("To: <sip:00899123456@sbc>", "To: <sip:b@x>;tag=9");
    ends.peer.send_to(reinvite.as_bytes(), (SBC_IP, 5060)).unwrap();
    assert!(reaches_sbc(&ends.sbc, Duration::from_secs(2)), "a re-INVITE was refused");
    assert!(d.packets("drop", "destination") >= 2);
}

#[test]
fn an_allowlisted_trunk_is_checked_and_drop_and_dry_run_stay_silent() {
    let lab = Lab::new();
    let ends = Ends::bind(&lab);
    let allow = format!("[allow]\ncidrs = [\"{PEER_IP}/32\"]\n\n");
    let mut d = Shieldd::new(bins(), &lab.sbc, &format!("{allow}{POLICY}"));
    let base = std::fs::read_to_string(&d.config).expect("config");
    let with = |tail: &str| base.replace(&format!("{allow}{POLICY}"), tail);
    d.start();
    assert!(
        reply(&ends.peer, &invite("sip:+899555@sbc", "a1"), Duration::from_secs(2)).is_some(),
        "an allowlisted trunk's premium call got no 403"
    );
    assert!(!reaches_sbc(&ends.sbc, Duration::from_millis(300)));

    // check_allowlisted = false: the trunk is trusted.
    d.write_config(&with(&format!("{allow}{POLICY}check_allowlisted = false\n")));
    d.ctl_ok(&["reload"]);
    ends.peer.send_to(invite("sip:+899555@sbc", "a2").as_bytes(), (SBC_IP, 5060)).unwrap();
    assert!(reaches_sbc(&ends.sbc, Duration::from_secs(2)), "check_allowlisted = false ignored");

    // action = "drop": refused, no reply.
    d.write_config(&with(&format!("{POLICY}action = \"drop\"\n")));
    d.ctl_ok(&["reload"]);
    assert!(reply(&ends.peer, &invite("sip:+899555@sbc", "a3"), Duration::from_millis(700)).is_none());
    assert!(!reaches_sbc(&ends.sbc, Duration::from_millis(300)));

    // Dry run: passes, counted would_drop, no reply.
    d.write_config(&with(POLICY).replace("[shield]\n", "[shield]\nenforce = false\n"));
    d.ctl_ok(&["reload"]);
    assert!(reply(&ends.peer, &invite("sip:+899555@sbc", "a4"), Duration::from_millis(700)).is_none());
    assert!(reaches_sbc(&ends.sbc, Duration::from_secs(2)), "the dry run dropped");
    assert!(d.packets("would_drop", "destination") >= 1);
}

#[test]
fn a_flood_from_many_sources_gets_no_more_403s_than_the_reply_bucket_allows() {
    const SOURCES: u8 = 40;
    const EACH: usize = 25;
    let lab = Lab::new();
    let ends = Ends::bind(&lab);
    let policy = format!("{POLICY}reject_per_second = 20\n");
    let mut d = Shieldd::new(bins(), &lab.sbc, &policy);
    d.start();
    let socks: Vec<UdpSocket> = (0..SOURCES)
        .map(|i| {
            let a = Ipv4Addr::new(198, 51, 100, 100 + i);
            lab.add_peer_addr(a);
            lab.peer.run(|| UdpSocket::bind((a, 5062)).expect("bind a source"))
        })
        .collect();
    let start = Instant::now();
    for round in 0..EACH {
        for (i, s) in socks.iter().enumerate() {
            let m = invite("sip:00899000111@sbc", &format!("f{i}-{round}"));
            s.send_to(m.as_bytes(), (SBC_IP, 5060)).expect("send");
        }
        // Paced a little: the veth's queue, not the shield, would drop a
        // burst of 1,000 at once.
        std::thread::sleep(Duration::from_millis(4));
    }
    let sent_for = start.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let mut replies = 0;
    let mut buf = [0u8; 4096];
    for s in &socks {
        s.set_nonblocking(true).unwrap();
        while s.recv_from(&mut buf).is_ok() {
            replies += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // The bucket: 20 deep, 20 a second.
    let most = 20 + (20.0 * elapsed).ceil() as usize;
    println!(
        "{} premium INVITEs from {SOURCES} sources in {sent_for:?}: {replies} 403s (at most {most})",
        SOURCES as usize * EACH
    );
    assert!(replies >= 1 && replies <= most, "{replies} 403s, bucket allows {most}");
    assert!(!reaches_sbc(&ends.sbc, Duration::from_millis(200)), "an INVITE reached the SBC");
    // Every premium INVITE dropped: refused, or (past the default INVITE
    // bucket of [limits.methods]) rate-limited first.
    assert_eq!(
        d.packets("drop", "destination") + d.packets("drop", "rate"),
        (SOURCES as usize * EACH) as u64,
        "every premium INVITE dropped"
    );
}
