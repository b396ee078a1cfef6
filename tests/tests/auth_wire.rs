//! Authentication seen on the wire (SPEC §12) with `BPF_PROG_TEST_RUN`:
//! the egress classifier learns challenges, the XDP program proves
//! credentials against them, the egress classifier settles the attempt.
//! Kernel and model side by side on every frame: counters and reports must
//! agree, and each case says what they must be. The parser cases cover
//! both directions: quoted and unquoted params, `Digest` in any case,
//! params in any order, commas inside quotes, folding, compact forms,
//! truncation, 100 params, a nonce of 1 KB. Plain TCP too: a request
//! starting its segment, the replies over TCP.

use std::net::IpAddr;

use shield::kernel::{monotonic_ns, AuthOutcome};
use shield_common::auth::{RESULT_FAILURE, RESULT_STALE, RESULT_SUCCESS, RESULT_UNPROVEN};
use shield_common::{Method, Policy, Reason, F_ENFORCE};
use shield_tests::{
    frames::{Frame, L3, L4},
    kernel::Kernel,
    model::{Model, Tables},
};

const TC_ACT_UNSPEC: i32 = -1;
const CLIENT: [u8; 4] = [203, 0, 113, 9];
const OTHER: [u8; 4] = [203, 0, 113, 77];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
const SBC: [u8; 4] = [198, 51, 100, 1];
const SBC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const NONCE: &str = "5f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";

fn tables(verify_methods: u32) -> Tables {
    let mut t = Tables::default();
    t.udp_ports.insert(5060);
    t.policy = Policy {
        flags: F_ENFORCE,
        verify_ttl_ns: 3_600_000_000_000,
        verify_methods,
        ..Policy::default()
    };
    t.auth_on = true;
    t
}

fn l3(src: IpAddr, dst_is_sbc: bool) -> L3 {
    match src {
        IpAddr::V4(a) => {
            let (s, d) = if dst_is_sbc { (a.octets(), SBC) } else { (SBC, a.octets()) };
            L3::V4 { src: s, dst: d, options: vec![], frag_offset: 0, more_frags: false }
        }
        IpAddr::V6(a) => {
            let (s, d) = if dst_is_sbc { (a.octets(), SBC6) } else { (SBC6, a.octets()) };
            L3::V6 { src: s, dst: d, ext: vec![] }
        }
    }
}

/// UDP, or a plain-TCP segment (SPEC §12 names both) whose payload the
/// message starts.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
}

fn request_frame(payload: &[u8], src: IpAddr, t: Transport) -> Vec<u8> {
    let l4 = match t {
        Transport::Udp => L4::Udp { sport: 5062, dport: 5060 },
        Transport::Tcp => L4::Tcp { sport: 40000, dport: 5060, syn: false, ack: true },
    };
    Frame { vlans: vec![], l3: l3(src, true), l4, payload: payload.to_vec() }.build()
}

fn reply_frame(payload: &[u8], dst: IpAddr, t: Transport) -> Vec<u8> {
    let l4 = match t {
        Transport::Udp => L4::Udp { sport: 5060, dport: 5062 },
        Transport::Tcp => L4::Tcp { sport: 5060, dport: 40000, syn: false, ack: true },
    };
    Frame { vlans: vec![], l3: l3(dst, false), l4, payload: payload.to_vec() }.build()
}

/// A REGISTER with CSeq `cseq` and extra header lines `extra`.
fn register(method: &str, cseq: u32, extra: &str) -> Vec<u8> {
    format!(
        "{method} sip:198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9:5062;branch=z9hG4bK{cseq}\r\n\
         From: <sip:alice@example>;tag=1\r\nTo: <sip:alice@example>\r\n\
         Call-ID: 1@203.0.113.9\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn reply(status: &str, method: &str, cseq: u32, extra: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 203.0.113.9:5062;branch=z9hG4bK{cseq}\r\n\
         From: <sip:alice@example>;tag=1\r\nTo: <sip:alice@example>;tag=2\r\n\
         Call-ID: 1@203.0.113.9\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn challenge(nonce: &str) -> String {
    format!("WWW-Authenticate: Digest realm=\"example\", nonce=\"{nonce}\", qop=\"auth\"\r\n")
}

fn creds(user: &str, nonce: &str) -> String {
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"example\", nonce=\"{nonce}\", \
         uri=\"sip:198.51.100.1\", response=\"0123456789abcdef0123456789abcdef\"\r\n"
    )
}

struct Bench {
    k: Kernel,
    model: Model,
    /// How the requests and replies travel.
    transport: Transport,
}

impl Bench {
    fn new(t: Tables) -> Bench {
        let mut k = Kernel::load();
        k.apply(&t);
        Bench { k, model: Model::new(t), transport: Transport::Udp }
    }

    /// The same over plain TCP (port 5060 protected for TCP too).
    fn tcp(mut t: Tables) -> Bench {
        t.tcp_ports.insert(5060);
        Bench { transport: Transport::Tcp, ..Bench::new(t) }
    }

    fn ask(&mut self, payload: &[u8], src: IpAddr) {
        let bytes = request_frame(payload, src, self.transport);
        let want = self.model.decide(&bytes, monotonic_ns());
        let got = self.k.run(&bytes);
        assert_eq!(got.reason, want.reason, "kernel and model disagree");
        assert_eq!(got.reason, Reason::Ok);
        self.agree();
    }

    fn answer(&mut self, payload: &[u8], dst: IpAddr) {
        let bytes = reply_frame(payload, dst, self.transport);
        let want = self.model.egress(&bytes, monotonic_ns());
        let (rc, got) = self.k.run_egress(&bytes).expect("a whole frame");
        assert_eq!(rc, TC_ACT_UNSPEC);
        assert_eq!(got, want, "kernel and model disagree on the reply");
        self.agree();
    }

    /// Kernel counters equal the model's.
    fn agree(&self) {
        let got = self.k.shield.maps.auth.counts(0).expect("AUTH_STATS");
        for m in 0..2u32 {
            for r in [RESULT_SUCCESS, RESULT_FAILURE, RESULT_UNPROVEN, RESULT_STALE] {
                let want = self.model.auth.stats.get(&(m, r)).copied().unwrap_or(0);
                assert_eq!(got[m as usize][r as usize], want, "AUTH_STATS method {m} result {r}");
            }
        }
    }

    fn count(&self, method: usize, result: u32) -> u64 {
        self.k.shield.maps.auth.counts(0).expect("AUTH_STATS")[method][result as usize]
    }

    /// The reports in the ring since the last call; must equal the model's.
    fn reports(&mut self) -> Vec<AuthOutcome> {
        let ring = self.k.shield.maps.auth.events.as_mut().expect("AUTH_EVENTS");
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            out.push(AuthOutcome::decode(&item).expect("a record"));
        }
        let want: Vec<_> = self.model.auth.events.drain(..).collect();
        let got: Vec<_> = out.iter().map(|o| (o.addr, o.success, o.username.clone())).collect();
        assert_eq!(got, want, "kernel and model reports");
        out
    }

    fn verified(&self, a: IpAddr) -> bool {
        self.k.shield.maps.learned_entry(a).expect("VERIFIED").is_some()
    }
}

/// Challenge, a wrong password, a new challenge, the right one.
fn exchange(b: &mut Bench, who: IpAddr) {
    b.ask(&register("REGISTER", 1, ""), who);
    b.answer(&reply("401 Unauthorized", "REGISTER", 1, &challenge(NONCE)), who);
    b.ask(&register("REGISTER", 2, &creds("alice", NONCE)), who);
    b.answer(&reply("401 Unauthorized", "REGISTER", 2, &challenge("n2")), who);
    let r = b.reports();
    assert_eq!(r.len(), 1, "one report per attempt");
    assert!(!r[0].success);
    assert_eq!((r[0].addr, r[0].method, r[0].status), (who, "REGISTER", 401));
    assert_eq!(r[0].username, b"alice");
    b.ask(&register("REGISTER", 3, &creds("alice", "n2")), who);
    b.answer(&reply("200 OK", "REGISTER", 3, ""), who);
    let r = b.reports();
    assert_eq!(r.len(), 1);
    assert!(r[0].success);
    assert_eq!(b.count(0, RESULT_FAILURE), 1);
    assert_eq!(b.count(0, RESULT_SUCCESS), 1);
    assert_eq!(b.count(0, RESULT_UNPROVEN), 0);
}

#[test]
fn a_failure_then_a_success_each_reported_once_and_the_success_verifies() {
    // [verify] methods empty: a proven success verifies all the same.
    let mut b = Bench::new(tables(0));
    let who = IpAddr::from(CLIENT);
    exchange(&mut b, who);
    assert!(b.verified(who), "a proven success verifies its source");
    // The same 200 again settles nothing.
    b.answer(&reply("200 OK", "REGISTER", 3, ""), who);
    assert!(b.reports().is_empty());
}

#[test]
fn ipv6_sources_too() {
    let mut b = Bench::new(tables(1 << Method::Register as u32));
    exchange(&mut b, IpAddr::from(CLIENT6));
}

#[test]
fn nonces_another_address_was_sent_are_unproven_and_never_reported() {
    let mut b = Bench::new(tables(0));
    let (client, forger) = (IpAddr::from(CLIENT), IpAddr::from(OTHER));
    b.answer(&reply("401 Unauthorized", "REGISTER", 1, &challenge(NONCE)), client);
    // A forged source with a nonce it guessed, or the client's nonce.
    for (i, n) in ["guessed", NONCE].iter().enumerate() {
        let cseq = 10 + i as u32;
        b.ask(&register("REGISTER", cseq, &creds("bob", n)), forger);
        b.answer(&reply("403 Forbidden", "REGISTER", cseq, ""), forger);
    }
    // The INVITE bucket too.
    b.ask(&register("INVITE", 20, &creds("bob", "x")), forger);
    assert_eq!(b.count(0, RESULT_UNPROVEN), 2);
    assert_eq!(b.count(1, RESULT_UNPROVEN), 1);
    assert_eq!(b.count(0, RESULT_FAILURE), 0);
    assert!(b.reports().is_empty(), "an unproven attempt is never a failure");
    // Other methods are not attempts.
    b.ask(&register("OPTIONS", 30, &creds("bob", "x")), forger);
    assert_eq!(b.count(0, RESULT_UNPROVEN) + b.count(1, RESULT_UNPROVEN), 3);
}

#[test]
fn a_stale_challenge_is_not_a_failure_and_a_403_is() {
    let mut b = Bench::new(tables(0));
    let who = IpAddr::from(CLIENT);
    b.answer(&reply("407 Proxy Authentication Required", "INVITE", 1,
        &format!("Proxy-Authenticate: Digest realm=\"x\", nonce=\"{NONCE}\"\r\n")), who);
    b.ask(&register("INVITE", 2, &format!("Proxy-Authorization: Digest username=\"carol\", nonce=\"{NONCE}\"\r\n")), who);
    b.answer(&reply("407 Proxy Authentication Required", "INVITE", 2,
        "Proxy-Authenticate: Digest realm=\"x\", nonce=\"fresh\", STALE=TRUE\r\n"), who);
    assert!(b.reports().is_empty(), "stale: the client answers again");
    assert_eq!(b.count(1, RESULT_STALE), 1);
    b.ask(&register("INVITE", 3, &format!("Proxy-Authorization: Digest username=\"carol\", nonce=\"fresh\"\r\n")), who);
    b.answer(&reply("403 Forbidden", "INVITE", 3, ""), who);
    let r = b.reports();
    assert_eq!(r.len(), 1);
    assert!(!r[0].success);
    assert_eq!((r[0].method, r[0].status), ("INVITE", 403));
    // Another final status says nothing about the password.
    b.ask(&register("INVITE", 4, &format!("Proxy-Authorization: Digest username=\"carol\", nonce=\"fresh\"\r\n")), who);
    b.answer(&reply("486 Busy Here", "INVITE", 4, ""), who);
    assert!(b.reports().is_empty());
    assert_eq!(b.count(1, RESULT_FAILURE), 1);
}

#[test]
fn off_until_configured() {
    let mut t = tables(0);
    t.auth_on = false;
    let mut b = Bench::new(t);
    let who = IpAddr::from(CLIENT);
    b.answer(&reply("401 Unauthorized", "REGISTER", 1, &challenge(NONCE)), who);
    b.ask(&register("REGISTER", 2, &creds("alice", NONCE)), who);
    b.answer(&reply("401 Unauthorized", "REGISTER", 2, &challenge(NONCE)), who);
    assert!(b.reports().is_empty());
    assert_eq!(b.k.shield.maps.auth.nonces_held(), 0);
}

/// One challenge line and one credentials line, both parsed by both
/// programs: `Some(user)` if the attempt must be proven and reported with
/// that username.
fn case(b: &mut Bench, chal: &str, cred: &str, want: Option<&[u8]>, cseq: u32) {
    let who = IpAddr::from(CLIENT);
    b.answer(&reply("401 Unauthorized", "REGISTER", cseq, chal), who);
    b.ask(&register("REGISTER", cseq + 1, cred), who);
    b.answer(&reply("401 Unauthorized", "REGISTER", cseq + 1, ""), who);
    let r = b.reports();
    match want {
        Some(u) => {
            assert_eq!(r.len(), 1, "{chal:?} / {cred:?}: not proven");
            assert_eq!(r[0].username, u, "{cred:?}");
        }
        None => assert!(r.is_empty(), "{chal:?} / {cred:?}: proven"),
    }
}

#[test]
fn parser_cases_in_both_programs() {
    let mut b = Bench::new(tables(0));
    let n = NONCE;
    let cases: Vec<(String, String, Option<&[u8]>)> = vec![
        // Quoted / unquoted, Digest in any case, params in any order.
        (challenge(n), creds("alice", n), Some(b"alice")),
        (format!("www-authenticate: DIGEST nonce={n},realm=x\r\n"),
         format!("authorization: digest response=1,username=bob,nonce={n}\r\n"), Some(b"bob")),
        (format!("WWW-Authenticate :  DiGeSt  Realm = \"x\" , NONCE = \"{n}\"\r\n"),
         format!("Authorization:Digest NONCE=\"{n}\",USERNAME=\"Bob2\"\r\n"), Some(b"Bob2")),
        // Commas, blanks and a forged `nonce=` inside quotes.
        (format!("WWW-Authenticate: Digest realm=\"a, nonce=\\\"fake\\\"\", nonce=\"{n}\"\r\n"),
         format!("Authorization: Digest realm=\"a, nonce=fake\", username=\"d, e\", nonce=\"{n}\"\r\n"), Some(b"d, e")),
        // Folding.
        (format!("WWW-Authenticate: Digest realm=\"x\",\r\n nonce=\"{n}\"\r\n"),
         format!("Authorization: Digest username=\"f\",\r\n\tnonce=\"{n}\"\r\n"), Some(b"f")),
        // Compact forms around it (`v:`/`f:`; `i:`: see
        // `the_compact_call_id_keys_the_attempt`).
        (challenge(n), format!("v: SIP/2.0/UDP x\r\nf: <sip:a@b>\r\n{}", creds("g", n)), Some(b"g")),
        // Not digest; another header; a nonce never sent.
        (challenge(n), "Authorization: Basic Zm9vOmJhcg==\r\n".into(), None),
        (challenge(n), format!("Authorizations: Digest username=\"h\", nonce=\"{n}\"\r\n"), None),
        (challenge(n), creds("i", "5f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3d"), None),
        // Truncation: an unterminated quoted nonce is no nonce.
        (challenge(n), format!("Authorization: Digest username=\"j\", nonce=\"{}", &n[..20]), None),
    ];
    let mut cseq = 100;
    for (chal, cred, want) in &cases {
        case(&mut b, chal, cred, *want, cseq);
        cseq += 10;
    }
    // 100 params before the nonce (the line stays under 2 KB).
    let mut many = String::from("Authorization: Digest username=\"k\"");
    for i in 0..100 {
        many.push_str(&format!(", p{i}={i}"));
    }
    many.push_str(&format!(", nonce=\"{n}\"\r\n"));
    case(&mut b, &challenge(n), &many, Some(b"k"), cseq);
    cseq += 10;
    // A 1 KB nonce in both directions: its first 128 bytes decide.
    let long: String = (0..1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    case(&mut b, &challenge(&long), &creds("l", &long), Some(b"l"), cseq);
    cseq += 10;
    // A username longer than kept: its first 32 bytes.
    let user = "u".repeat(40);
    case(&mut b, &challenge(n), &creds(&user, n), Some("u".repeat(32).as_bytes()), cseq);
}

/// Every challenge line of a 401 is learned (a server may offer SHA-256
/// and MD5), up to `AUTH_MAX_CHALLENGES`; a stale mark on any of them
/// makes the reply stale. Kernel and model agree on each step.
#[test]
fn every_challenge_line_is_learned_up_to_the_bound() {
    use shield_common::auth::AUTH_MAX_CHALLENGES;
    let mut b = Bench::new(tables(0));
    let who = IpAddr::from(CLIENT);
    let line = |i: usize| {
        format!("WWW-Authenticate: Digest realm=\"x\", nonce=\"n{i}-{NONCE}\", algorithm=MD5\r\n")
    };
    let all: String = (0..=AUTH_MAX_CHALLENGES).map(line).collect();
    b.answer(&reply("401 Unauthorized", "REGISTER", 1, &all), who);
    let mut cseq = 2;
    for i in (0..AUTH_MAX_CHALLENGES).rev() {
        let cred = creds("alice", &format!("n{i}-{NONCE}"));
        b.ask(&register("REGISTER", cseq, &cred), who);
        b.answer(&reply("403 Forbidden", "REGISTER", cseq, ""), who);
        assert_eq!(b.reports().len(), 1, "challenge line {i} proves");
        cseq += 1;
    }
    // The line past the bound was not learned.
    let cred = creds("alice", &format!("n{AUTH_MAX_CHALLENGES}-{NONCE}"));
    b.ask(&register("REGISTER", cseq, &cred), who);
    b.answer(&reply("403 Forbidden", "REGISTER", cseq, ""), who);
    assert!(b.reports().is_empty());
    assert_eq!(b.count(0, RESULT_UNPROVEN), 1);
    // Stale on the second line only: the reply is stale.
    cseq += 1;
    b.ask(&register("REGISTER", cseq, &creds("alice", &format!("n0-{NONCE}"))), who);
    let stale = format!(
        "{}WWW-Authenticate: Digest realm=\"x\", nonce=\"s\", stale=true\r\n",
        line(7)
    );
    b.answer(&reply("401 Unauthorized", "REGISTER", cseq, &stale), who);
    assert!(b.reports().is_empty(), "stale: not a failure");
    assert_eq!(b.count(0, RESULT_STALE), 1);
}

/// A request and its replies using the compact `i:` Call-ID (RFC 3261
/// §7.3.3) make an attempt like the long form, in both programs; `i:` and
/// `Call-ID:` with the same value are the same transaction.
#[test]
fn the_compact_call_id_keys_the_attempt() {
    let compact = |m: Vec<u8>| {
        String::from_utf8(m).unwrap().replace("Call-ID: ", "i:").into_bytes()
    };
    let mut b = Bench::new(tables(0));
    let who = IpAddr::from(CLIENT);
    b.answer(&compact(reply("401 Unauthorized", "REGISTER", 1, &challenge(NONCE))), who);
    b.ask(&compact(register("REGISTER", 2, &creds("alice", NONCE))), who);
    b.answer(&compact(reply("401 Unauthorized", "REGISTER", 2, "")), who);
    let r = b.reports();
    assert_eq!(r.len(), 1, "the compact Call-ID keyed the attempt");
    assert_eq!(r[0].username, b"alice");
    // The long form in the reply answers the compact request.
    b.ask(&compact(register("REGISTER", 3, &creds("alice", NONCE))), who);
    b.answer(&reply("200 OK", "REGISTER", 3, ""), who);
    let r = b.reports();
    assert!(r.len() == 1 && r[0].success);
}

/// Plain TCP (SPEC §12): a REGISTER starting a segment has its
/// credentials read as over UDP, and the challenges and final replies
/// the server sends over TCP are learned and matched: a failure, then a
/// success that verifies, each reported once (kernel and model agree at
/// every step). Proven on any segment, without a connection check: a
/// forged segment's author never sees the nonce. So a segment from another
/// address with the client's nonce, or one it guessed, is `unproven`; an
/// INVITE's `Proxy-Authorization` over TCP counts in the INVITE bucket;
/// a REGISTER that does not start its segment is not read.
#[test]
fn plain_tcp_registers_are_proven_unproven_and_settled() {
    let mut b = Bench::tcp(tables(0));
    let who = IpAddr::from(CLIENT);
    exchange(&mut b, who);
    assert!(b.verified(who), "a proven success over TCP verifies its source");

    let forger = IpAddr::from(OTHER);
    b.answer(&reply("401 Unauthorized", "REGISTER", 9, &challenge(NONCE)), who);
    for (i, n) in ["guessed", NONCE].iter().enumerate() {
        let cseq = 10 + i as u32;
        b.ask(&register("REGISTER", cseq, &creds("bob", n)), forger);
        b.answer(&reply("403 Forbidden", "REGISTER", cseq, ""), forger);
    }
    assert_eq!(b.count(0, RESULT_UNPROVEN), 2);
    assert!(b.reports().is_empty(), "an unproven attempt over TCP is never a failure");

    let proxy = format!("Proxy-Authorization: Digest username=\"carol\", nonce=\"{NONCE}\"\r\n");
    b.ask(&register("INVITE", 20, &proxy), who);
    b.answer(&reply("403 Forbidden", "INVITE", 20, ""), who);
    let r = b.reports();
    assert_eq!(r.len(), 1, "the INVITE's credentials over TCP proven");
    assert_eq!((r[0].method, r[0].status, r[0].success), ("INVITE", 403, false));

    // A keepalive first, the REGISTER after it in the same segment: not
    // read (a keepalive has no Content-Length: where the next message
    // starts is unknown, and never guessed; see `segments.rs`).
    let mut late = b"\r\n\r\n".to_vec();
    late.extend(register("REGISTER", 30, &creds("dave", NONCE)));
    b.ask(&late, who);
    b.answer(&reply("401 Unauthorized", "REGISTER", 30, ""), who);
    assert!(b.reports().is_empty(), "a REGISTER after another message in its segment");
    assert_eq!(b.count(0, RESULT_FAILURE), 1);
    assert_eq!(b.count(0, RESULT_UNPROVEN), 2);
    assert_eq!(b.count(1, RESULT_FAILURE), 1);
    // IPv6 over TCP too.
    exchange(&mut Bench::tcp(tables(0)), IpAddr::from(CLIENT6));
}
