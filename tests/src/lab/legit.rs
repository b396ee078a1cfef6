//! The legitimate traffic of the lab, all real sipp from the carrier's
//! namespace: subscribers registering with digest authentication (one sipp
//! per subscriber address, none of them allowlisted) and calls from the
//! carrier's trunk to the PBX behind the SBC (a sipp UAS on the SBC's
//! loopback). Its success rates are what a defence must not hurt.

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::sipp::{Run, Sipp, Tally};
use super::topology::{subscriber_ip, Topology, SBC_SIP_IP, SUBSCRIBERS, TRUNK_IP};

/// How much legitimate traffic, for how long.
#[derive(Clone, Copy, Debug)]
pub struct LegitLoad {
    /// Subscriber addresses registering (at most [`SUBSCRIBERS`]).
    pub subscribers: usize,
    /// Registrations per second per subscriber (each is two REGISTERs).
    pub registrations_per_subscriber: f64,
    /// Calls per second from the trunk.
    pub calls_per_second: f64,
    /// How long the clients keep starting new registrations and calls.
    pub duration: Duration,
}

impl LegitLoad {
    /// Registrations the subscribers will attempt.
    pub fn planned_registrations(&self) -> u64 {
        (self.registrations_per_subscriber * self.duration.as_secs_f64()).round() as u64
            * self.subscribers as u64
    }

    pub fn planned_calls(&self) -> u64 {
        (self.calls_per_second * self.duration.as_secs_f64()).round() as u64
    }
}

/// Running legitimate clients (and the PBX they call).
pub struct Legit {
    registrations: Vec<Sipp>,
    calls: Option<Sipp>,
    pbx: Option<Sipp>,
}

/// What the legitimate clients saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct LegitResult {
    pub registrations: Tally,
    pub calls: Tally,
}

impl LegitResult {
    /// Successful / finished over registrations and calls together.
    pub fn success_rate(&self) -> Option<f64> {
        self.registrations.add(&self.calls).success_rate()
    }
}

impl Legit {
    /// Starts the PBX, then the clients. Files go to `dir`.
    pub fn start(topo: &Topology, dir: &Path, load: &LegitLoad) -> Result<Legit> {
        let pbx = Run::pbx().start(&topo.sbc, dir)?;
        std::thread::sleep(Duration::from_millis(200));
        let sbc = SocketAddrV4::new(SBC_SIP_IP, 5060);
        let secs = load.duration.as_secs_f64();
        let mut registrations = Vec::new();
        for i in 0..load.subscribers.min(SUBSCRIBERS) {
            let calls = (load.registrations_per_subscriber * secs).round().max(1.0) as u64;
            registrations.push(
                Run::register(
                    subscriber_ip(i),
                    sbc,
                    load.registrations_per_subscriber,
                    calls,
                )
                .start(&topo.carrier, dir)?,
            );
        }
        let calls = if load.calls_per_second > 0.0 {
            let n = (load.calls_per_second * secs).round().max(1.0) as u64;
            Some(
                Run::trunk_calls(TRUNK_IP, sbc, load.calls_per_second, n)
                    .start(&topo.carrier, dir)?,
            )
        } else {
            None
        };
        Ok(Legit {
            registrations,
            calls,
            pbx: Some(pbx),
        })
    }

    /// The counts so far (sipp writes them every second).
    pub fn tally(&self) -> LegitResult {
        LegitResult {
            registrations: self
                .registrations
                .iter()
                .fold(Tally::default(), |a, s| a.add(&s.tally())),
            calls: self.calls.as_ref().map(Sipp::tally).unwrap_or_default(),
        }
    }

    /// Waits for the clients to finish their planned calls (up to `within`),
    /// then stops the PBX. A call still open at the end counts as failed.
    pub fn finish(mut self, within: Duration) -> Result<LegitResult> {
        let mut r = LegitResult::default();
        for s in self.registrations.drain(..) {
            r.registrations = r.registrations.add(&s.finish(within)?);
        }
        if let Some(c) = self.calls.take() {
            r.calls = c.finish(within)?;
        }
        if let Some(p) = self.pbx.take() {
            p.stop();
        }
        Ok(r)
    }

    /// Stops new registrations and calls now, lets the open ones end (up to
    /// `within`), then stops the PBX.
    pub fn wind_down(self, within: Duration) -> Result<LegitResult> {
        for s in self.registrations.iter().chain(self.calls.iter()) {
            s.request_wind_down();
        }
        self.finish(within)
    }
}
