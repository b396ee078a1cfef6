//! Running the real XDP program (or the same decision as a tc ingress
//! program, [`Kernel::load_tc`]) on crafted frames with `BPF_PROG_TEST_RUN`.

use aya::programs::{TestRun, TestRunOptions};
use shield::{
    kernel::{List, VerifiedBy},
    Capacity, Shield,
};
use shield_common::{sip::UaKey, Counter, Method, Reason, Verdict, RESPONSE_CLASSES};

use crate::model::Reply;

use crate::model::Tables;

/// Ethernet, two VLAN tags and an IPv6 header: a frame this long or
/// longer has its whole IP header (the skb test run's precondition).
const SHORTEST_WHOLE_IP_FRAME: usize = 14 + 8 + 40;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// The tc ingress program's drop (`TC_ACT_SHOT`) and pass (`TC_ACT_UNSPEC`,
/// `TCX_NEXT`), as `BPF_PROG_TEST_RUN` returns them.
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_UNSPEC: u32 = -1i32 as u32;

/// The hook the decision under test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    /// tc ingress, on a socket buffer the test run builds of the frame.
    Tc,
}

/// Fails the test (never skips) when the process cannot use BPF.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads XDP programs and must run as root (CAP_BPF + CAP_NET_ADMIN); \
         run the README's test command as root"
    );
}

/// One kernel verdict: the XDP action and the counter slot that moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub action: u32,
    pub verdict: Verdict,
    pub reason: Reason,
}

pub struct Kernel {
    pub shield: Shield,
    last: Vec<Counter>,
    hook: Hook,
}

impl Kernel {
    /// Loads a fresh program instance (its own maps) with small capacities.
    pub fn load() -> Kernel {
        Kernel::load_with(Capacity::small())
    }

    /// Loads a fresh program instance with the given map sizes.
    pub fn load_with(capacity: Capacity) -> Kernel {
        require_root();
        let shield = Shield::load(capacity, None).expect("load XDP program");
        let mut k = Kernel {
            shield,
            last: Vec::new(),
            hook: Hook::Xdp,
        };
        k.last = k.slot0();
        k
    }

    /// Loads a fresh instance whose [`Kernel::run`] runs the tc ingress
    /// program (the second object, on the same maps) instead of the XDP one.
    pub fn load_tc() -> Kernel {
        let mut k = Kernel::load();
        shield::kernel::load_tc(&mut k.shield, None).expect("load the tc ingress program");
        k.hook = Hook::Tc;
        k
    }

    /// Writes `t` into the maps.
    pub fn apply(&mut self, t: &Tables) {
        let m = &mut self.shield.maps;
        let udp: Vec<u16> = t.udp_ports.iter().copied().collect();
        let tcp: Vec<u16> = t.tcp_ports.iter().copied().collect();
        m.set_ports(&udp, &tcp).expect("ports");
        m.set_list(List::Allow, &t.allow).expect("allow");
        m.set_list(List::Deny, &t.deny).expect("deny");
        for (net, _) in m.bans_dump().expect("bans") {
            m.unban(net).expect("unban");
        }
        for (net, exp) in &t.bans {
            m.ban(*net, *exp).expect("ban");
        }
        let keys: Vec<UaKey> = t.scanners.iter().copied().collect();
        m.set_scanners(&keys).expect("scanners");
        m.set_policy(&t.policy).expect("policy");
        m.dest.apply(&t.dest, &t.dest_rules).expect("destinations");
        m.calls.set_config(&t.calls).expect("calls");
        m.auth.set_enabled(t.auth_on).expect("AUTH_CONFIG");
        self.reset_verified(t);
    }

    /// Makes `VERIFIED` and the verified networks exactly `t.verified`,
    /// refills the unverified budget and forgets the remembered requests.
    pub fn reset_verified(&mut self, t: &Tables) {
        let m = &mut self.shield.maps;
        for e in m.verified(0).expect("verified") {
            m.unverify(e.net).expect("unverify");
        }
        for (net, exp) in &t.verified {
            m.verify(*net, *exp, VerifiedBy::Operator).expect("verify");
        }
        m.reset_budget().expect("budget");
        m.clear_txns().expect("clear TXNS");
        m.auth.clear().expect("clear AUTH_NONCES, AUTH_ATTEMPTS");
    }

    fn slot0(&self) -> Vec<Counter> {
        let mut v = Vec::with_capacity(Verdict::COUNT * Reason::COUNT);
        for verdict in Verdict::ALL {
            for r in Reason::ALL {
                v.push(self.shield.maps.counter(0, verdict, r).expect("read STATS"));
            }
        }
        v
    }

    /// Runs one frame and reports which counter it moved.
    pub fn run(&mut self, frame: &[u8]) -> Observed {
        self.try_run(frame)
            .unwrap_or_else(|| panic!("the kernel refused a {}-byte frame as an skb", frame.len()))
    }

    /// [`Kernel::run`]; `None` only on the tc hook for a frame the kernel
    /// would not build a socket buffer of (`EINVAL` for one cut inside its
    /// IP header), which no driver hands over either. The tc program's
    /// action is given as the XDP action it stands for.
    pub fn try_run(&mut self, frame: &[u8]) -> Option<Observed> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        };
        let action = match self.hook {
            Hook::Xdp => {
                self.shield
                    .program()
                    .test_run(opts)
                    .expect("BPF_PROG_TEST_RUN")
                    .return_value
            }
            Hook::Tc => {
                let prog = self.shield.tc_program().expect("tc program loaded");
                match prog.test_run(opts) {
                    Ok(r) => tc_as_xdp(r.return_value),
                    Err(_) if frame.len() < SHORTEST_WHOLE_IP_FRAME => return None,
                    Err(e) => panic!("BPF_PROG_TEST_RUN (tc), {} bytes: {e}", frame.len()),
                }
            }
        };
        let now = self.slot0();
        let mut moved = None;
        for (i, (a, b)) in now.iter().zip(&self.last).enumerate() {
            if a.packets != b.packets {
                assert!(moved.is_none(), "one frame moved two counters");
                assert_eq!(a.packets, b.packets + 1);
                assert_eq!(a.bytes, b.bytes + frame.len() as u64, "byte counter");
                moved = Some(i);
            }
        }
        self.last = now;
        let i = moved.expect("every frame is counted");
        Some(Observed {
            action,
            verdict: Verdict::ALL[i / Reason::COUNT],
            reason: Reason::ALL[i % Reason::COUNT],
        })
    }

    /// Runs a frame `repeat` times in the kernel; mean ns per run.
    pub fn time(&mut self, frame: &[u8], repeat: u32) -> f64 {
        let ns = match self.hook {
            Hook::Xdp => timed(self.shield.program(), frame, repeat),
            Hook::Tc => timed(self.shield.tc_program().expect("tc program loaded"), frame, repeat),
        };
        self.last = self.slot0();
        ns
    }

    /// Mean ns per run of the tc ingress program over `repeat` runs, on an
    /// instance of either hook ([`shield::kernel::load_tc`] first).
    pub fn time_tc(&mut self, frame: &[u8], repeat: u32) -> f64 {
        let prog = self.shield.tc_program().expect("tc program loaded");
        let ns = timed(prog, frame, repeat);
        self.last = self.slot0();
        ns
    }

    /// Every `RESPONSES` slot of slot 0, in (method, class) order.
    fn responses0(&self) -> Vec<u64> {
        let mut v = Vec::with_capacity(Method::COUNT * RESPONSE_CLASSES);
        for m in Method::ALL {
            for class in 1..=RESPONSE_CLASSES as u8 {
                v.push(self.shield.maps.response_count(0, m, class).expect("RESPONSES"));
            }
        }
        v
    }

    /// Runs one frame through the egress classifier: its return code and
    /// the response counter it moved, if any. `None`: the kernel would not
    /// build a socket buffer of it (`EINVAL` for an IPv4 or IPv6 frame
    /// cut inside its IP header; the stack never sends one), allowed only
    /// for frames that short. A TCP segment with several replies: see
    /// [`Kernel::run_egress_all`].
    pub fn run_egress(&mut self, frame: &[u8]) -> Option<(i32, Option<Reply>)> {
        let (rc, moved) = self.run_egress_all(frame)?;
        assert!(moved.len() <= 1, "one frame moved {} response counts", moved.len());
        Some((rc, moved.first().copied()))
    }

    /// [`Kernel::run_egress`] for a frame that may hold several replies
    /// (a TCP segment): every count it added, in (method, class) order.
    pub fn run_egress_all(&mut self, frame: &[u8]) -> Option<(i32, Vec<Reply>)> {
        let before = self.responses0();
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        };
        let res = match self.shield.egress().test_run(opts) {
            Ok(r) => r,
            Err(e) if frame.len() < SHORTEST_WHOLE_IP_FRAME => {
                let _ = e;
                return None;
            }
            Err(e) => panic!("BPF_PROG_TEST_RUN (egress), {} bytes: {e}", frame.len()),
        };
        let after = self.responses0();
        let mut moved = Vec::new();
        for (i, (a, b)) in after.iter().zip(&before).enumerate() {
            for _ in *b..*a {
                moved.push(Reply {
                    method: Method::ALL[i / RESPONSE_CLASSES],
                    class: (i % RESPONSE_CLASSES) as u8 + 1,
                });
            }
        }
        Some((res.return_value as i32, moved))
    }

    /// Mean ns per run of the egress classifier over `repeat` runs.
    pub fn time_egress(&mut self, frame: &[u8], repeat: u32) -> f64 {
        timed(self.shield.egress(), frame, repeat)
    }

    pub fn sip_count(&self, m: Method, v: Verdict) -> u64 {
        self.shield
            .maps
            .sip_counter(0, m, v)
            .expect("read SIP_STATS")
    }
}

/// The XDP action a tc ingress return code stands for; anything else is
/// passed on unchanged (above both XDP codes), so a comparison fails.
fn tc_as_xdp(code: u32) -> u32 {
    match code {
        TC_ACT_SHOT => XDP_DROP,
        TC_ACT_UNSPEC => XDP_PASS,
        other => other | 0x100,
    }
}

/// Mean ns per run of `prog` on `frame` over `repeat` runs.
fn timed<P>(prog: &P, frame: &[u8], repeat: u32) -> f64
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    };
    let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    res.duration.as_nanos() as f64
}
