//! UDP traffic between namespaces: a receiver and a paced sender on
//! background threads (stopped and joined on drop, also when a test
//! panics), and on them the daemon tests' SIP sink and flood for a
//! [`Lab`]. The lab's drop-timing probes ([`crate::lab::probe`]) use the
//! same two.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{Lab, PEER_IP, SBC_IP};

/// A SIP request the shield passes as valid SIP.
pub const OPTIONS: &[u8] =
    b"OPTIONS sip:probe@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.2:5060\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

/// A thread that runs until it returns or is told to stop; stopped and
/// joined on drop.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Runs `f` on a new thread; `f` should return soon after the flag it
    /// is given is set.
    pub fn spawn(f: impl FnOnce(&AtomicBool) + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || f(&s));
        Background {
            stop,
            thread: Some(thread),
        }
    }

    /// Waits for the thread to end by itself.
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Tells the thread to stop and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.join();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Receives datagrams on `sock` (bound by the caller, in whichever
/// namespace) until stopped: `on(payload, source)` for each one from an
/// IPv4 source.
pub fn receive(
    sock: UdpSocket,
    mut on: impl FnMut(&[u8], SocketAddrV4) + Send + 'static,
) -> Background {
    receive_any(sock, move |payload, from| {
        if let SocketAddr::V4(from) = from {
            on(payload, from);
        }
    })
}

/// Like [`receive`], for every source, IPv4 or IPv6.
pub fn receive_any(
    sock: UdpSocket,
    mut on: impl FnMut(&[u8], SocketAddr) + Send + 'static,
) -> Background {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    Background::spawn(move |stop| {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                on(&buf[..n], from);
            }
        }
    })
}

/// Calls `send` once every `every`, on a fixed schedule (a late call does
/// not shift the later ones), until stopped, `limit` has passed or `send`
/// returns false.
pub fn paced(
    every: Duration,
    limit: Duration,
    mut send: impl FnMut() -> bool + Send + 'static,
) -> Background {
    Background::spawn(move |stop| {
        let start = Instant::now();
        let mut next = start;
        while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
            if !send() {
                break;
            }
            next += every;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
    })
}

/// A socket on SBC:5060 and one on the peer's port 5062 of a [`Lab`],
/// with 5 s read timeouts, for tests that exchange a request and its
/// reply more than once. Bind them once per test: a fixed port bound
/// again right after its socket was closed can be refused (EADDRINUSE),
/// because a command another test forks at that moment holds a copy of
/// every descriptor until it execs.
pub struct Ends {
    pub sbc: UdpSocket,
    pub peer: UdpSocket,
}

impl Ends {
    pub fn bind(lab: &Lab) -> Ends {
        let sbc = sbc_sip_socket(lab);
        let peer = lab
            .peer
            .run(|| UdpSocket::bind(SocketAddr::from((PEER_IP, 5062))).expect("bind peer:5062"));
        for s in [&sbc, &peer] {
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
        }
        Ends { sbc, peer }
    }
}

/// A socket on the SBC's SIP port, SBC:5060.
fn sbc_sip_socket(lab: &Lab) -> UdpSocket {
    lab.sbc
        .run(|| UdpSocket::bind(SocketAddr::from((SBC_IP, 5060))).expect("bind SBC:5060"))
}

/// Arrivals at SBC:5060, per source address.
#[derive(Clone, Debug, Default)]
pub struct Arrivals {
    pub count: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

/// A UDP socket on SBC:5060 of a [`Lab`] that records what arrives.
pub struct Sink {
    seen: Arc<Mutex<HashMap<Ipv4Addr, Arrivals>>>,
    _receiver: Background,
}

impl Sink {
    pub fn start(lab: &Lab) -> Sink {
        Sink::on(sbc_sip_socket(lab))
    }

    /// A sink on a socket already bound (see [`Ends`] for why).
    pub fn on(sock: UdpSocket) -> Sink {
        let seen = Arc::new(Mutex::new(HashMap::<Ipv4Addr, Arrivals>::new()));
        let s = seen.clone();
        let receiver = receive(sock, move |_, from| {
            let now = Instant::now();
            let mut m = s.lock().expect("lock");
            let a = m.entry(*from.ip()).or_default();
            a.count += 1;
            a.first.get_or_insert(now);
            a.last = Some(now);
        });
        Sink {
            seen,
            _receiver: receiver,
        }
    }

    /// Datagrams received so far, per source.
    pub fn counts(&self) -> HashMap<Ipv4Addr, u64> {
        let m = self.seen.lock().expect("lock");
        m.iter().map(|(a, r)| (*a, r.count)).collect()
    }

    pub fn from(&self, src: Ipv4Addr) -> Arrivals {
        self.seen
            .lock()
            .expect("lock")
            .get(&src)
            .cloned()
            .unwrap_or_default()
    }
}

/// Sends SIP OPTIONS from `src` (an address of the peer) to SBC:5060 of a
/// [`Lab`], one every `every`, until stopped, `max` packets are sent or
/// `limit` passes.
pub struct Flood {
    sent: Arc<AtomicU32>,
    sender: Background,
}

impl Flood {
    pub fn start(lab: &Lab, src: Ipv4Addr, every: Duration, max: u32, limit: Duration) -> Flood {
        let sock = lab
            .peer
            .run(|| UdpSocket::bind(SocketAddr::from((src, 0))).expect("bind source"));
        let sent = Arc::new(AtomicU32::new(0));
        let n = sent.clone();
        let sender = paced(every, limit, move || {
            if n.load(Ordering::Relaxed) >= max {
                return false;
            }
            let _ = sock.send_to(OPTIONS, SocketAddr::from((SBC_IP, 5060)));
            n.fetch_add(1, Ordering::Relaxed);
            true
        });
        Flood { sent, sender }
    }

    pub fn sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops and waits for the sender; packets sent.
    pub fn stop(mut self) -> u32 {
        self.sender.stop();
        self.sent()
    }
}

/// Sends `n` packets from `src`, `every` apart, and returns.
pub fn send(lab: &Lab, src: Ipv4Addr, n: u32, every: Duration) {
    let mut f = Flood::start(lab, src, every, n, Duration::from_secs(30));
    f.sender.join();
}

/// Lets packets in flight land.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}
