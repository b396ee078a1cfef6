//! Nested CIDRs through a real `shieldd` and `shieldctl`, with real packets:
//! the sequences an adversarial test found to let banned or denied sources
//! through, panic the daemon, or drop an allowlisted trunk. (The kernel
//! layer's property test is `tests/tests/lists.rs`.)

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;

const INNER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
const TRUNK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// Beside the trunk in its /29 (the SBC's own 198.51.100.1 is never banned,
/// so the nets here stay clear of it).
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);

/// Packets from `src` that reach SBC:5060 out of `n` sent now, counted
/// until all have arrived or a second has passed (a loaded machine may be
/// slow to deliver; a dropped packet never arrives).
fn arriving(lab: &Lab, sink: &Sink, src: Ipv4Addr, n: u32) -> u64 {
    let before = sink.from(src).count;
    send(lab, src, n, Duration::from_millis(2));
    let t = std::time::Instant::now();
    loop {
        let got = sink.from(src).count - before;
        if got >= u64::from(n) || t.elapsed() > Duration::from_secs(1) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nested_bans_stay_enforced_and_unban_never_panics() {
    let lab = Lab::new();
    lab.add_peer_addr(INNER);
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    let sink = Sink::start(&lab);
    assert_eq!(arriving(&lab, &sink, INNER, 3), 3, "before any ban");

    d.ctl_ok(&["ban", "198.51.100.128/25"]);
    d.ctl_ok(&["ban", "198.51.100.192/26"]);
    d.ctl_ok(&["unban", "198.51.100.128/25"]);
    assert_eq!(
        arriving(&lab, &sink, INNER, 3),
        0,
        "the /26 is listed, so {INNER} must be dropped"
    );
    d.ctl_ok(&["unban", "198.51.100.192/26"]);
    assert!(d.is_running(), "unban of the inner net killed shieldd");
    assert_eq!(arriving(&lab, &sink, INNER, 3), 3, "after both unbans");

    // unban --all after nested bans leaves nothing in the kernel.
    for net in ["198.51.100.128/25", "198.51.100.192/26", "198.51.100.224/27", "198.51.100.200"] {
        d.ctl_ok(&["ban", net]);
    }
    d.ctl_ok(&["unban", "--all"]);
    assert!(d.is_running(), "unban --all killed shieldd");
    assert!(d.bans().is_empty());
    assert_eq!(arriving(&lab, &sink, INNER, 3), 3, "after unban --all");
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
}

#[test]
fn nested_bans_expire_one_by_one_and_the_sweeper_lives_on() {
    let lab = Lab::new();
    lab.add_peer_addr(INNER);
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    let sink = Sink::start(&lab);
    // The sweeper runs every 5 s: these expire in different sweeps.
    d.ctl_ok(&["ban", "198.51.100.128/25", "--duration", "3s"]);
    d.ctl_ok(&["ban", "198.51.100.192/26", "--duration", "8s"]);
    assert_eq!(arriving(&lab, &sink, INNER, 3), 0);
    // The /25 expires and is swept; the /26 still holds.
    wait_for("the /25 to be swept", Duration::from_secs(15), || {
        d.ban_of("198.51.100.128/25").is_none().then_some(())
    });
    assert_eq!(arriving(&lab, &sink, INNER, 3), 0, "the /26 still bans");
    wait_for("the /26 to be swept", Duration::from_secs(15), || {
        d.ban_of("198.51.100.192/26").is_none().then_some(())
    });
    assert_eq!(arriving(&lab, &sink, INNER, 3), 3);
    // The sweeper still runs: a new short ban ends on time.
    d.ctl_ok(&["ban", "198.51.100.128/25", "--duration", "1s"]);
    wait_for("the next ban to be swept", Duration::from_secs(15), || {
        d.bans().is_empty().then_some(())
    });
    assert!(d.is_running());
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
}

#[test]
fn nested_deny_entries_stay_enforced() {
    let lab = Lab::new();
    lab.add_peer_addr(INNER);
    let mut d = Shieldd::new(bins(), &lab.sbc, NO_LIMITS);
    d.start();
    let sink = Sink::start(&lab);
    d.ctl_ok(&["deny", "add", "198.51.100.128/25"]);
    d.ctl_ok(&["deny", "add", "198.51.100.200"]);
    d.ctl_ok(&["deny", "del", "198.51.100.128/25"]);
    assert_eq!(arriving(&lab, &sink, INNER, 3), 0, "{INNER} is still denied");
    d.ctl_ok(&["deny", "del", "198.51.100.200"]);
    assert_eq!(arriving(&lab, &sink, INNER, 3), 3);
}

#[test]
fn an_allowlist_shrunk_by_reload_still_beats_a_ban() {
    let lab = Lab::new();
    lab.add_peer_addr(TRUNK);
    lab.add_peer_addr(NEIGHBOUR);
    let mut d = Shieldd::new(
        bins(),
        &lab.sbc,
        &format!("{NO_LIMITS}\n[allow]\ncidrs = [\"198.51.100.8/29\", \"{TRUNK}/32\"]\n"),
    );
    d.start();
    let sink = Sink::start(&lab);
    let cfg = std::fs::read_to_string(&d.config).expect("config");
    d.write_config(&cfg.replace("\"198.51.100.8/29\", ", ""));
    d.ctl_ok(&["reload"]);
    d.ctl_ok(&["ban", "198.51.100.8/29"]);
    assert_eq!(
        arriving(&lab, &sink, TRUNK, 3),
        3,
        "the allowlisted trunk was dropped by a ban of its /29"
    );
    assert_eq!(arriving(&lab, &sink, NEIGHBOUR, 3), 0, "the rest of the /29 is banned");
}
