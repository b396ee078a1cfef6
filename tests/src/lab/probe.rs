//! When does a ban start dropping? A prober sends a numbered UDP datagram
//! from one source every millisecond; a sink on the SBC records the highest
//! number that arrived from each source. The first datagram that did not
//! arrive (and after which none did) was sent at most one interval after the
//! ban took effect, whatever enforces it (XDP or nftables), so the same
//! measurement serves SIP Shield and fail2ban.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::udp::{paced, receive, Background};

/// A port that is not SIP: bans with scope "all" (SIP Shield's default) and
/// fail2ban's all-ports nftables action drop it.
pub const PROBE_PORT: u16 = 5999;

/// Receives probes on `0.0.0.0:PROBE_PORT` in the SBC's namespace.
pub struct ProbeSink {
    seen: Arc<Mutex<HashMap<Ipv4Addr, u64>>>,
    _receiver: Background,
}

impl ProbeSink {
    pub fn start(sbc: &Netns) -> ProbeSink {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let sock = sbc
            .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PROBE_PORT)).expect("bind probe sink"));
        let s = seen.clone();
        let receiver = receive(sock, move |payload, from| {
            if let Some(seq) = payload.get(..8) {
                let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
                let mut m = s.lock().expect("lock");
                let e = m.entry(*from.ip()).or_insert(0);
                *e = (*e).max(seq + 1);
            }
        });
        ProbeSink {
            seen,
            _receiver: receiver,
        }
    }

    /// How many probes from `src` arrived, counting up to the highest
    /// number received (the probes are numbered from 0).
    pub fn received_up_to(&self, src: Ipv4Addr) -> u64 {
        self.seen
            .lock()
            .expect("lock")
            .get(&src)
            .copied()
            .unwrap_or(0)
    }
}

/// Sends numbered probes from `src` (an address of the attacker host).
pub struct Prober {
    sent_at: Arc<Mutex<Vec<Instant>>>,
    sender: Background,
    pub src: Ipv4Addr,
}

impl Prober {
    /// One probe every `every` to `dst:PROBE_PORT`, for at most `limit`.
    pub fn start(
        attacker: &Netns,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        every: Duration,
        limit: Duration,
    ) -> Prober {
        let sent_at = Arc::new(Mutex::new(Vec::new()));
        let sock = attacker.run(|| UdpSocket::bind((src, 0)).expect("bind prober"));
        let s = sent_at.clone();
        let mut seq = 0u64;
        let sender = paced(every, limit, move || {
            let at = Instant::now();
            if sock.send_to(&seq.to_be_bytes(), (dst, PROBE_PORT)).is_ok() {
                s.lock().expect("lock").push(at);
                seq += 1;
            }
            true
        });
        Prober {
            sent_at,
            sender,
            src,
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent_at.lock().expect("lock").len() as u64
    }

    /// When probe `seq` was sent.
    pub fn sent_time(&self, seq: u64) -> Option<Instant> {
        self.sent_at
            .lock()
            .expect("lock")
            .get(seq as usize)
            .copied()
    }

    pub fn stop(&mut self) {
        self.sender.stop();
    }
}

/// Waits until `src`'s probes have stopped arriving for `quiet` (while the
/// prober keeps sending), up to `within`. Returns when the first probe that
/// never arrived was sent: the moment the drop began, to one interval.
pub fn wait_for_drop(
    sink: &ProbeSink,
    prober: &Prober,
    quiet: Duration,
    within: Duration,
) -> Option<Instant> {
    let t = Instant::now();
    loop {
        let got = sink.received_up_to(prober.src);
        let sent = prober.sent();
        if let (Some(first_lost), Some(last_sent)) = (
            prober.sent_time(got),
            sent.checked_sub(1).and_then(|s| prober.sent_time(s)),
        ) {
            if sent > got && last_sent.duration_since(first_lost) >= quiet {
                return Some(first_lost);
            }
        }
        if t.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
