//! Toll fraud end to end on a real Kamailio (SPEC §11): Kamailio 5.6 with
//! digest authentication, the PBX behind it (a sipp UAS), the real
//! `shieldd` with the example configuration and a destination policy
//! denying the premium-rate prefixes integrators deny (00899, 00900,
//! 001900, 00976).
//!
//! A registered subscriber's sipp calls 00899…: every call gets the
//! shield's 403 (sipp's scenario succeeds only on a 403) and Kamailio
//! receives none of those INVITEs (`core:rcv_requests_invite` unchanged),
//! so it never challenges, routes or bills them. The same subscriber's
//! national calls (authenticated, to the PBX) and the allowlisted trunk's
//! calls go on; the trunk's own premium call is refused too (a hacked PBX
//! on a trusted address). sipp's 403 response times are printed.
//!
//! Needs root, Kamailio and sipp; fails, never skips, without them.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use shield_tests::lab::kamailio::{Kamailio, Options};
use shield_tests::lab::shieldd::LabConfig;
use shield_tests::lab::sipp::Run;
use shield_tests::lab::topology::*;
use shield_tests::lab::Topology;

const PREMIUM: &str = "[\"00899\", \"00900\", \"001900\", \"00976\"]";
const FRAUD_CALLS: u64 = 10;

fn sbc() -> SocketAddrV4 {
    SocketAddrV4::new(SBC_SIP_IP, 5060)
}

fn invites(k: &Kamailio) -> Result<u64> {
    Ok(k.stats()?.get("core:rcv_requests_invite").copied().unwrap_or(0))
}

#[test]
fn premium_calls_get_the_shields_403_while_national_and_trunk_calls_go_on() -> Result<()> {
    shield_tests::kernel::require_root();
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let topo = Topology::new();
    topo.warm_neighbours();
    let kamailio = Kamailio::start(&topo.sbc, dir, &Options::default())?;
    let pbx = Run::pbx().start(&topo.sbc, dir)?;
    let shield = LabConfig::new(dir)
        .set("destinations", "deny", PREMIUM)
        .start(&topo.sbc)?;
    let sub = subscriber_ip(0);

    let reg = Run::register(sub, sbc(), 2.0, 1)
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(20))?;
    ensure!(reg.successful == 1, "the subscriber's registration: {reg:?}");

    let before = invites(&kamailio)?;
    let fraud = Run::premium_calls(sub, sbc(), "00899123456", 5.0, FRAUD_CALLS)
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(30))?;
    let reached = invites(&kamailio)? - before;
    println!(
        "toll fraud: {} of {FRAUD_CALLS} calls to 00899… answered 403 by the shield (mean {:.2} ms \
         from INVITE to 403, sipp's own timing), {reached} INVITEs reached Kamailio",
        fraud.successful, fraud.mean_call_ms
    );
    ensure!(fraud.successful == FRAUD_CALLS, "premium calls: {fraud:?}");
    ensure!(reached == 0, "{reached} premium INVITEs reached Kamailio");

    let national = Run::subscriber_calls(sub, sbc(), "2000", 2.0, 4)
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(30))?;
    ensure!(national.successful == 4, "the subscriber's national calls: {national:?}");
    let trunk = Run::trunk_calls(TRUNK_IP, sbc(), 2.0, 4)
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(30))?;
    ensure!(trunk.successful == 4, "the trunk's calls: {trunk:?}");
    let before = invites(&kamailio)?;
    let trunk_fraud = Run::premium_calls(TRUNK_IP, sbc(), "0097612345", 2.0, 2)
        .start(&topo.carrier, dir)?
        .finish(Duration::from_secs(20))?;
    ensure!(trunk_fraud.successful == 2, "the allowlisted trunk's premium calls: {trunk_fraud:?}");
    ensure!(invites(&kamailio)? == before, "the trunk's premium INVITE reached Kamailio");

    let stats = shield.stats().context("shieldctl stats")?;
    let refused = shield_tests::daemon::packets(&stats, "drop", "destination");
    println!(
        "national calls {}/4 and trunk calls {}/4 through Kamailio to the PBX; the shield refused \
         {refused} INVITEs (reason destination)",
        national.successful, trunk.successful
    );
    ensure!(refused == FRAUD_CALLS + 2, "drop/destination = {refused}");
    pbx.stop();
    Ok(())
}
