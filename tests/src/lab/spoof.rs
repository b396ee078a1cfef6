//! Spoofed-source floods in the lab: the `flood` binary with `--spoof`
//! run from the attacker's namespace at the SBC's public address, and the
//! route that lets the SBC take them.
//!
//! The SBC has no route to a spoofed prefix: where reverse-path filtering
//! is on (`rp_filter`, strict or loose), its stack would drop the flood
//! after XDP and Kamailio would never see it, and Kamailio's answers
//! would fail to send. [`route_back`] routes the prefix back over the
//! public link via the attacker's own address: the SBC's stack accepts the
//! packets in either rp_filter mode, and Kamailio's answers to the forged
//! sources go to the attacker's MAC
//! (one known neighbour, no ARP for a million addresses), whose namespace
//! drops them (it does not forward). That is where such backscatter ends
//! up on the internet too: never at the spoofer.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::flood::FloodReport;
use crate::paths::{binary, path_str};
use crate::process::{in_ns, Proc};
use super::topology::{Topology, ATTACKER_IP, HOST_IF, SBC_PUBLIC_IF, SBC_SIP_IP};

/// The spoofed prefix the lab uses: 10.64.0.0/12, 1,048,576 addresses.
pub const SPOOF_V4: &str = "10.64.0.0/12";

/// Routes `prefix` in the SBC back over its public link via the attacker
/// (see the module docs).
pub fn route_back(topo: &Topology, prefix: &str) {
    topo.sbc.ip(&[
        "route",
        "add",
        prefix,
        "via",
        &ATTACKER_IP.to_string(),
        "dev",
        SBC_PUBLIC_IF,
    ]);
}

/// What to send.
#[derive(Clone, Debug)]
pub struct SpoofOptions {
    /// `packet` (AF_PACKET + sendmmsg: stops at its duration by the wall
    /// clock) or `xdp` (the in-kernel generator: sends every paced chunk,
    /// so on a loaded machine, where each of its calls waits out a longer
    /// RCU grace period, it can run well past its duration).
    pub engine: &'static str,
    /// The source prefix (`--spoof`).
    pub prefix: String,
    /// `INVITE,REGISTER`, ... (`--methods`).
    pub methods: String,
    /// Packets per second; 0 = as fast as the machine goes.
    pub rate: u64,
    pub duration: Duration,
    /// Upper bound on packets.
    pub max_packets: u64,
}

/// A running spoofed flood from the attacker's namespace to 198.51.100.1:5060; stopped on drop.
pub struct SpoofFlood {
    proc: Proc,
    started: Instant,
}

impl SpoofFlood {
    /// Starts `flood --spoof` with `opts`; its stderr goes to
    /// `dir/flood-spoof.log`.
    pub fn start(topo: &Topology, dir: &Path, opts: &SpoofOptions) -> Result<SpoofFlood> {
        let exe = binary("flood")?;
        let mut cmd = in_ns(&topo.attacker, path_str(&exe));
        cmd.args(["--engine", opts.engine, "--iface", HOST_IF])
            .args(["--dst-mac", &topo.sbc.mac(SBC_PUBLIC_IF)])
            .args(["--dst", &format!("{SBC_SIP_IP}:5060")])
            .args(["--spoof", &opts.prefix, "--methods", &opts.methods])
            .args(["--rate", &opts.rate.to_string()])
            .args(["--seconds", &opts.duration.as_secs_f64().to_string()])
            .args(["--max-packets", &opts.max_packets.to_string()]);
        let log = dir.join("flood-spoof.log");
        let proc = Proc::spawn_piped("flood --spoof", cmd, &log)?;
        Ok(SpoofFlood {
            proc,
            started: Instant::now(),
        })
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Waits for the flood to end (killed after `within`): its report and
    /// the wall time from start to exit (an upper bound on how long it
    /// sent).
    pub fn finish(mut self, within: Duration) -> Result<(FloodReport, Duration)> {
        let (status, out) = self.proc.wait_output(within)?;
        let wall = self.started.elapsed();
        if !status.success() {
            bail!(
                "flood --spoof failed ({status}): {}",
                self.proc.log_tail(20)
            );
        }
        let report =
            serde_json::from_str(&out).with_context(|| format!("flood's JSON summary: {out:?}"))?;
        Ok((report, wall))
    }
}
