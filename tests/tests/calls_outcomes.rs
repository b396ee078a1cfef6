//! Calls seen on the wire (SPEC §13) that are not answered and hung up:
//! real sipp calls from the carrier's trunk through the lab's real
//! Kamailio 5.6 to a real sipp PBX, with the real `shieldd`:
//!
//! - the PBX busy (486): each call ends `failed`;
//! - the PBX ringing until the trunk CANCELs (its 200 OK, then the 487):
//!   each call ends `cancelled`; the trunk is allowlisted, so this is also
//!   the allowlisted source's CANCEL read end to end;
//! - an answered call whose BYE is lost: forgotten after `max_duration`,
//!   `expired`.
//!
//! Each count is sipp's own (its successful scenarios) against the
//! shield's `sipshield_calls_total{outcome}`. Needs root, Kamailio and
//! sipp; fails, never skips, without them.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{ensure, Result};
use shield_tests::daemon::Shieldd;
use shield_tests::lab::kamailio::{Kamailio, Options};
use shield_tests::lab::shieldd::LabConfig;
use shield_tests::lab::sipp::{Run, Tally};
use shield_tests::lab::topology::*;
use shield_tests::daemon::metric;
use shield_tests::lab::Topology;

fn sbc() -> SocketAddrV4 {
    SocketAddrV4::new(SBC_SIP_IP, 5060)
}


/// Ended calls with `outcome`, once they reach `n` or after `within`.
fn ended(shield: &Shieldd, topo: &Topology, outcome: &str, n: f64, within: Duration) -> Result<f64> {
    let want = format!("outcome=\"{outcome}\"");
    let count = |text: &str| metric(text, "sipshield_calls_total", &[&want]);
    Ok(count(&shield.metrics_when(&topo.sbc, within, |t| count(t) >= n)?))
}

/// `calls` trunk calls of `scenario` while the PBX plays `pbx`: sipp's
/// count once they are all done.
fn calls(topo: &Topology, dir: &std::path::Path, pbx: &'static str, scenario: &'static str, calls: u64) -> Result<Tally> {
    let _pbx = Run { name: pbx.trim_end_matches(".xml").into(), scenario: pbx, ..Run::pbx() }.start(&topo.sbc, dir)?;
    let run = Run { name: scenario.trim_end_matches(".xml").into(), scenario, ..Run::trunk_calls(TRUNK_IP, sbc(), 2.0, calls) };
    run.start(&topo.carrier, dir)?.finish(Duration::from_secs(30))
}

#[test]
fn busy_cancelled_and_bye_lost_calls_end_as_sipp_saw_them() -> Result<()> {
    shield_tests::kernel::require_root();
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let topo = Topology::new();
    topo.warm_neighbours();
    let _kamailio = Kamailio::start(&topo.sbc, dir, &Options::default())?;
    let shield = LabConfig::new(dir)
        .set("calls", "long_call", "\"1s\"")
        .set("calls", "max_duration", "\"2s\"")
        .start(&topo.sbc)?;

    let busy = calls(&topo, dir, "pbx_busy.xml", "call_busy.xml", 2)?;
    ensure!(busy.successful == 2, "busy calls, sipp: {busy:?}");
    let failed = ended(&shield, &topo, "failed", 2.0, Duration::from_secs(5))?;
    ensure!(failed == 2.0, "busy calls ended failed: {failed}, sipp's: 2");

    let cancelled = calls(&topo, dir, "pbx_ringing.xml", "call_cancelled.xml", 2)?;
    ensure!(cancelled.successful == 2, "cancelled calls, sipp: {cancelled:?}");
    let n = ended(&shield, &topo, "cancelled", 2.0, Duration::from_secs(5))?;
    ensure!(n == 2.0, "cancelled calls ended cancelled: {n}, sipp's: 2\nshieldd's log:\n{}", shield.log_text());

    let lost = calls(&topo, dir, "pbx_uas.xml", "call_bye_lost.xml", 1)?;
    ensure!(lost.successful == 1, "the call whose BYE is lost, sipp: {lost:?}");
    // max_duration 2 s, and shieldd sweeps every 5 s.
    let expired = ended(&shield, &topo, "expired", 1.0, Duration::from_secs(15))?;
    ensure!(expired == 1.0, "the call with no BYE expired: {expired}");
    let text = shield.metrics(&topo.sbc)?;
    let answered = metric(&text, "sipshield_calls_total", &["outcome=\"answered\""]);
    let active = metric(&text, "sipshield_calls_active", &[]);
    ensure!(answered == 0.0 && active == 0.0, "answered {answered}, active {active}: none of these calls hung up");
    let failed = metric(&text, "sipshield_calls_total", &["outcome=\"failed\""]);
    ensure!(failed == 2.0, "no cancelled call counted failed: {failed}");
    Ok(())
}
