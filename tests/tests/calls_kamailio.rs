//! Calls seen on the wire (SPEC §13) end to end on the lab's real
//! Kamailio 5.6 and PBX (a sipp UAS), with the real `shieldd`:
//!
//! - the allowlisted trunk's calls and a registered subscriber's
//!   (authenticated: INVITE, 407, INVITE with credentials) are counted
//!   answered, once each, and their durations (answer to BYE's 200, from
//!   the duration histogram) are within 1 s of sipp's own call lengths;
//! - the subscriber placing 4 one-second calls at once against
//!   `max_concurrent_per_source = 2`: sipp counts exactly 2 failed calls
//!   (the shield's 403s, `lab/sipp/limited_call.xml`), the kernel counts 2
//!   `calls` drops, and the limit frees up again once the calls end.
//!
//! Needs root, Kamailio and sipp; fails, never skips, without them.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{ensure, Result};
use shield_tests::lab::kamailio::{Kamailio, Options};
use shield_tests::lab::shieldd::LabConfig;
use shield_tests::lab::sipp::Run;
use shield_tests::lab::topology::*;
use shield_tests::daemon::metric;
use shield_tests::lab::Topology;

fn sbc() -> SocketAddrV4 {
    SocketAddrV4::new(SBC_SIP_IP, 5060)
}


#[test]
fn calls_through_kamailio_are_counted_timed_and_limited() -> Result<()> {
    shield_tests::kernel::require_root();
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let topo = Topology::new();
    topo.warm_neighbours();
    let _kamailio = Kamailio::start(&topo.sbc, dir, &Options::default())?;
    let _pbx = Run::pbx().start(&topo.sbc, dir)?;
    let shield = LabConfig::new(dir)
        .set("calls", "max_concurrent_per_source", "2")
        .start(&topo.sbc)?;
    let sub = subscriber_ip(0);
    let reg = Run::register(sub, sbc(), 2.0, 1)
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(20))?;
    ensure!(reg.successful == 1, "the subscriber's registration: {reg:?}");

    // Counts and durations: the trunk (allowlisted: tracked, never
    // limited) and the subscriber, one call at a time.
    let trunk = Run::trunk_calls(TRUNK_IP, sbc(), 2.0, 4)
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(30))?;
    ensure!(trunk.successful == 4, "the trunk's calls: {trunk:?}");
    let national = Run::subscriber_calls(sub, sbc(), "2000", 2.0, 2)
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(30))?;
    ensure!(national.successful == 2, "the subscriber's calls: {national:?}");
    let text = wait_for_calls(&shield, &topo, 6.0)?;
    let answered = metric(&text, "sipshield_calls_total", &["outcome=\"answered\""]);
    ensure!(answered == 6.0, "answered calls counted: {answered}, sipp's: 6\n{text}");
    let failed = metric(&text, "sipshield_calls_total", &["outcome=\"failed\""]);
    let shown: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sipshield_calls_total") || l.starts_with("sipshield_sip_responses_total{") && !l.ends_with(" 0"))
        .collect();
    ensure!(failed == 0.0, "a challenge (407) is no failed call: {failed}\n{}", shown.join("\n"));
    let sum = metric(&text, "sipshield_call_duration_seconds_sum", &[]);
    let count = metric(&text, "sipshield_call_duration_seconds_count", &[]);
    ensure!(count == 6.0, "durations observed: {count}");
    // sipp's call length runs from the first INVITE to the BYE's 200; the
    // shield's from the answer: both within 1 s of each other.
    let sipp_mean = (trunk.mean_call_ms * 4.0 + national.mean_call_ms * 2.0) / 6.0 / 1000.0;
    let ours = sum / count;
    println!("calls: 6 answered; mean duration {ours:.3} s (shield) vs {sipp_mean:.3} s (sipp)");
    ensure!((ours - sipp_mean).abs() <= 1.0, "durations: shield {ours:.3} s, sipp {sipp_mean:.3} s");

    // The limit: 4 calls at once from one source, 2 allowed.
    let drops_before = metric(&text, "sipshield_packets_total", &["reason=\"calls\"", "verdict=\"drop\""]);
    let burst = Run::limited_calls(sub, sbc(), "2000", 50.0, 4)
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(30))?;
    let text = shield.metrics(&topo.sbc)?;
    let drops = metric(&text, "sipshield_packets_total", &["reason=\"calls\"", "verdict=\"drop\""]) - drops_before;
    println!("limit 2, 4 calls at once: sipp {burst:?}; {drops} INVITEs dropped `calls` (403)");
    ensure!(
        burst.successful == 2 && burst.failed == 2,
        "4 calls at once, limit 2: {burst:?}\nshieldd's log:\n{}",
        shield.log_text()
    );
    ensure!(drops == 2.0, "`calls` drops: {drops}");
    // All ended: the slots are free again.
    let again = Run::limited_calls(sub, sbc(), "2000", 50.0, 2)
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(30))?;
    ensure!(again.successful == 2, "after the burst, 2 calls at once: {again:?}");
    Ok(())
}

/// `/metrics` once the answered calls counted reach `n` (the ring buffer
/// is read within a second), or after 10 s.
fn wait_for_calls(shield: &shield_tests::daemon::Shieldd, topo: &Topology, n: f64) -> Result<String> {
    let answered = |t: &str| metric(t, "sipshield_calls_total", &["outcome=\"answered\""]);
    shield.metrics_when(&topo.sbc, Duration::from_secs(10), |t| answered(t) >= n)
}
