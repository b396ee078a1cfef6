//! Toll fraud in the lab (SPEC §11): the premium-rate prefixes the demo and
//! the benchmark deny, the demo's stage (a subscriber's account calling
//! them while legitimate traffic goes on), and a caller that times the
//! shield's 403s.

use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::kamailio::Kamailio;
use super::legit::Legit;
use super::sipp::{Run, Tally};
use super::topology::{subscriber_ip, Topology, SBC_SIP_IP};
use crate::daemon::Shieldd;
use crate::netns::Netns;

/// `[destinations] deny`: the premium prefixes integrators deny (an
/// AudioCodes `DestinationPrefix` example), as a TOML array.
pub const PREMIUM: &str = "[\"00899\", \"00900\", \"001900\", \"00976\"]";
/// One number under each.
pub const PREMIUM_NUMBERS: [&str; 4] = ["00899123456", "00900555123", "0019005550100", "009761234567"];

/// What the demo's toll-fraud stage saw.
#[derive(Clone, Debug, Default)]
pub struct TollStage {
    pub calls: u64,
    /// sipp's count: calls answered by the shield's 403.
    pub refused: Tally,
    /// Premium INVITEs that reached Kamailio (`core:rcv_requests_invite`
    /// grows by the legitimate calls' INVITEs too: those are subtracted).
    pub at_kamailio: u64,
    /// The trunk's calls that ended meanwhile.
    pub legit_calls: Tally,
    /// `shieldctl refused`, as printed.
    pub listing: String,
}

/// Subscriber 1000's account (from subscriber 1's address) calls each
/// premium number `per_number` times while the legitimate load runs.
pub fn stage(topo: &Topology, dir: &Path, shield: &Shieldd, kam: &Kamailio, legit: &Legit, per_number: u64) -> Result<TollStage> {
    let sbc = SocketAddrV4::new(SBC_SIP_IP, 5060);
    let legit_before = legit.tally().calls;
    let invites = |k: &Kamailio| -> Result<u64> {
        Ok(k.stats()?.get("core:rcv_requests_invite").copied().unwrap_or(0))
    };
    let kam_before = invites(kam)?;
    // One sipp per number, side by side: each on a port of its own.
    let runs: Vec<_> = PREMIUM_NUMBERS
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut run = Run::premium_calls(subscriber_ip(1), sbc, n, 2.0, per_number);
            run.local.set_port(run.local.port() + 2 * i as u16);
            run.start(&topo.carrier, dir)
        })
        .collect::<Result<_>>()?;
    let mut refused = Tally::default();
    for r in runs {
        refused = refused.add(&r.finish(Duration::from_secs(30))?);
    }
    let legit_after = legit.tally().calls;
    let legit_calls = Tally {
        created: legit_after.created - legit_before.created,
        successful: legit_after.successful - legit_before.successful,
        failed: legit_after.failed - legit_before.failed,
        ..Tally::default()
    };
    // The trunk's INVITEs in the same time reached Kamailio: each
    // finished call sent one (retransmissions aside).
    let at_kamailio = (invites(kam)? - kam_before).saturating_sub(legit_calls.finished());
    let listing = shield
        .try_ctl_ok(&["refused"])
        .unwrap_or_else(|e| format!("shieldctl refused: {e:#}"));
    Ok(TollStage {
        calls: per_number * PREMIUM_NUMBERS.len() as u64,
        refused,
        at_kamailio,
        legit_calls,
        listing,
    })
}

/// Times `n` premium INVITEs from `from` (in `ns`), one every `gap`, from
/// sending each to its 403 arriving; the INVITEs that got none are left
/// out (and counted: the second value).
pub fn latencies(ns: &Netns, from: SocketAddrV4, n: usize, gap: Duration) -> Result<(Vec<Duration>, usize)> {
    ns.run(|| {
        let sock = UdpSocket::bind(from).with_context(|| format!("bind {from}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        let sbc = SocketAddrV4::new(SBC_SIP_IP, 5060);
        let (mut out, mut lost) = (Vec::with_capacity(n), 0);
        let mut buf = [0u8; 4096];
        for i in 0..n {
            let call_id = format!("lat-{i}@{from}");
            let msg = format!(
                "INVITE sip:{}@sbc.lab SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-lat-{i}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:1000@sbc.lab>;tag=l{i}\r\nTo: <sip:{}@sbc.lab>\r\n\
                 Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@{from}>\r\n\
                 Content-Length: 0\r\n\r\n",
                PREMIUM_NUMBERS[i % 4], PREMIUM_NUMBERS[i % 4]
            );
            let t = Instant::now();
            sock.send_to(msg.as_bytes(), sbc)?;
            let got = loop {
                match sock.recv(&mut buf) {
                    Ok(k) => {
                        let text = String::from_utf8_lossy(&buf[..k]);
                        if text.starts_with("SIP/2.0 403") && text.contains(&call_id) {
                            break Some(t.elapsed());
                        }
                    }
                    Err(_) => break None,
                }
            };
            match got {
                Some(d) => out.push(d),
                None => lost += 1,
            }
            std::thread::sleep(gap);
        }
        Ok((out, lost))
    })
}
