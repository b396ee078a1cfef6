//! The daemon's state and the operations on it, one file per concern:
//!
//! - here: start-up (load or adopt), detaching;
//! - [`apply`]: applying a configuration, all or nothing, and attaching;
//! - [`restore`]: bringing the ban book, the store and adopted maps together
//!   at start;
//! - [`banning`]: bans, unbans, expiry, jail and kernel reports;
//! - [`lists`]: shieldctl's allow/deny changes;
//! - [`readouts`]: `banned`, `stats`, `status` and the metrics snapshot;
//! - [`verify`]: verified sources and the unverified budget (SPEC §8);
//! - [`crowdsec`]: CrowdSec decisions beside local bans (SPEC §9).
//!
//! Synchronous: each operation is a handful of `bpf(2)` calls and at most
//! one small store transaction, run on the core's own thread, its only
//! writer ([`super::handle`]), never on an async worker.

mod apply;
mod auth;
mod banning;
mod calls;
pub mod crowdsec;
mod lists;
mod readouts;
mod refusals;
mod restore;
mod verify;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::IpNet;

pub use self::banning::offender_net;
use super::bans::BanBook;
use super::decisions::DecisionBook;
use super::guard::OwnAddresses;
use super::DaemonError;
use crate::config::Config;
use crate::report::{DetachReply, Escalation};
use crate::kernel::{self, Attachment, EventRing, KernelError, List, Shield};
use crate::store::{CliLists, MapsMark, Store, StoreError};

/// Where a start's time went, logged once (`start timings`, in ms; the
/// bench's start-up figures read it). The store read, and then the
/// restore, run while the verifier checks the program: `waited` is how
/// long the verifier still took after the restore.
#[derive(Debug, Default)]
struct StartTimes {
    store_read: Duration,
    load: kernel::LoadTimes,
    restore: restore::RestoreTimes,
    waited: Duration,
    /// The configuration written and the interfaces attached.
    apply: Duration,
    total: Duration,
}

impl StartTimes {
    fn log(&self, adopting: bool) {
        let ms = |d: Duration| d.as_millis() as u64;
        tracing::info!(
            adopted_maps = adopting,
            maps_ms = ms(self.load.maps),
            store_read_ms = ms(self.store_read),
            verifier_ms = ms(self.load.verifier),
            program_reused = self.load.reused,
            book_ms = ms(self.restore.book),
            kernel_ms = ms(self.restore.kernel),
            restore_ms = ms(self.restore.total),
            waited_ms = ms(self.waited),
            attach_ms = ms(self.apply),
            ms = ms(self.total),
            cpu_ms = ms(process_cpu()),
            "start timings"
        );
    }
}

/// CPU time (user and system) this process has used so far, all threads:
/// a start's cost apart from what other processes take of the CPUs.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// A control request's failure.
#[derive(Debug)]
pub enum CtlError {
    /// The request named something bad (exit 2).
    BadInput(String),
    /// The kernel or the daemon failed (exit 1).
    Failed(String),
}

impl CtlError {
    fn map(what: impl std::fmt::Display) -> impl FnOnce(KernelError) -> CtlError {
        move |e| CtlError::Failed(format!("{what}: {}", super::chain(&e)))
    }
}

/// The warning of a change that is in force in the kernel but did not
/// reach the store. Such a change is still acknowledged as done: failing
/// it would invite a retry of something already enforced.
/// Removes the pins of maps an earlier shieldd made that this one has
/// replaced (their bans were restored into the new map), once the new
/// program is in place. A failure only leaves the pins (and their memory)
/// behind: logged, the start goes on.
fn unpin_obsolete(pin: &std::path::Path) {
    match kernel::unpin_obsolete(pin) {
        Ok(removed) if !removed.is_empty() => tracing::info!(
            pin_path = %pin.display(),
            maps = ?removed,
            now_in = shield_common::names::BANS,
            "removed the ban maps an earlier shieldd pinned (their bans are restored into the new map)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(pin_path = %pin.display(), "could not remove an earlier shieldd's ban maps: {}; remove them by hand", crate::text::chain(&e)),
    }
}

pub fn not_persisted(why: &str) -> String {
    format!(
        "the change is in force but NOT saved to state_dir ({why}); it is lost if the shield is detached \
         or the host reboots before a later save succeeds: make state_dir writable (free space, \
         read-write mount): shieldd retries every {} s",
        super::SWEEP_EVERY.as_secs()
    )
}

/// Paths fixed for the daemon's lifetime (a reload cannot move them).
#[derive(Clone, Debug)]
pub struct Runtime {
    pub pin_path: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub group: String,
    pub capacity: kernel::Capacity,
}

pub struct Core {
    pub config: Config,
    pub runtime: Runtime,
    shield: Shield,
    attachments: Vec<Attachment>,
    program_id: u32,
    /// The tc ingress program's id once an interface uses mode `tc` (0:
    /// none loaded).
    tc_program_id: u32,
    book: BanBook,
    cli: CliLists,
    store: Store,
    /// Why the store is behind the kernel, while it is (a write failed):
    /// the sweeper rewrites it until that succeeds.
    unsaved: Option<String>,
    bans_total: BTreeMap<String, u64>,
    jail_failures: BTreeMap<String, u64>,
    escalations: VecDeque<Escalation>,
    started: Instant,
    counts: Option<(Instant, Vec<(String, u64)>)>,
    /// `sipshield_verified_sources`, as last counted.
    verified_cache: Option<(Instant, u64)>,
    /// When expired entries were last deleted from `VERIFIED`.
    verified_swept: Option<Instant>,
    /// This host's addresses, which are never banned.
    own: OwnAddresses,
    /// The ban maps in use, recorded in the store.
    maps_mark: MapsMark,
    /// CrowdSec's decisions (not local bans: never in the store).
    decisions: DecisionBook,
    fleet: crowdsec::FleetState,
    /// A configuration has been applied: a failed apply has an old
    /// policy to go back to (not so at start-up).
    applied: bool,
    /// Refusal records on their way to the store, and the refusal
    /// counters' base across reloads.
    refusals: refusals::RefusalBook,
    /// Calls seen on the wire (SPEC §13): counters, gauges, the last hour.
    calls: super::calls::CallBook,
    /// Failed digest authentications (SPEC §12).
    auth: crate::daemon::auth::AuthBook,
}

impl Core {
    /// Loads (or adopts) the shield, restores bans, applies `config` and
    /// attaches. Returns the ring buffer of offender reports, for the
    /// caller to read.
    ///
    /// All or nothing: the store is opened and earlier versions' files
    /// imported before the kernel is touched, and if anything fails later
    /// (reading the store included), what this attempt pinned is unpinned
    /// again (and its links closed). A half-started shield left pinned
    /// would be adopted by the next start as though it were the enforcing
    /// one.
    pub fn start(
        config: Config,
        mut store: Store,
    ) -> Result<(Core, Option<EventRing>), DaemonError> {
        kernel::raise_memlock();
        if let Some(imported) = store.import_legacy()? {
            restore::report_import(&store, &imported);
        }
        let pin = config.shield.pin_path.clone();
        let before = kernel::PinSnapshot::take(&pin)?;
        // `load` drops everything it made (maps, program, links) before
        // returning an error, so the unpinning below frees them.
        Self::load(config, store).inspect_err(|_| {
            let removed = before.roll_back();
            if !removed.is_empty() {
                tracing::warn!(pin_path = %pin.display(), removed = ?removed, "start-up failed: unpinned what this attempt had pinned");
            }
        })
    }

    fn load(config: Config, store: Store) -> Result<(Core, Option<EventRing>), DaemonError> {
        let runtime = Runtime {
            pin_path: config.shield.pin_path.clone(),
            state_dir: config.shield.state_dir.clone(),
            socket: config.control.socket.clone(),
            group: config.control.group.clone(),
            capacity: config.capacity,
        };
        let pin = runtime.pin_path.clone();
        kernel::prepare_dir(&pin)?;
        // Maps already pinned: a previous daemon's, still enforcing.
        let adopting = kernel::has_maps(&pin);
        // A million bans take about as long to read, and again to write
        // into the maps, as the verifier takes to check the program: the
        // verifier runs on its own thread (`Shield::open`) until `ready`
        // below, after the restore.
        let began = Instant::now();
        let (store, loaded, shield, store_read) = std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let t = Instant::now();
                let loaded = store.load();
                (store, loaded, t.elapsed())
            });
            let shield = Shield::open(config.capacity, Some(&pin));
            let (store, loaded, took) = reader.join().expect("the store reader does not panic");
            if let Ok(l) = &loaded {
                tracing::info!(bans = l.bans.len(), from = ?l.read_from, db = %store.path().display(), ms = took.as_millis() as u64, "store read");
            }
            (store, loaded, shield, took)
        });
        let mut shield = shield?;
        let loaded = loaded?;
        let events = shield.maps.events.take();
        // Drop sampling is on only while a `shieldctl watch` runs, and a
        // running one sets it again every interval: one killed (SIGKILL)
        // leaves it on at most until this start.
        if let Err(e) = shield.maps.set_sampling(shield_common::SampleConfig::default()) {
            tracing::warn!("turning drop sampling off: {e}");
        }
        let maps_mark = MapsMark {
            pin_path: pin.clone(),
            ids: shield.maps.ban_map_ids(),
        };
        let mut core = Core {
            config: config.clone(),
            runtime,
            shield,
            attachments: Vec::new(),
            // Known once the verifier has answered (below).
            program_id: 0,
            tc_program_id: 0,
            book: BanBook::default(),
            cli: loaded.lists.clone(),
            store,
            unsaved: None,
            bans_total: BTreeMap::new(),
            jail_failures: config.jails.iter().map(|j| (j.name.clone(), 0)).collect(),
            escalations: VecDeque::new(),
            started: Instant::now(),
            counts: None,
            verified_cache: None,
            verified_swept: None,
            own: OwnAddresses::default(),
            maps_mark,
            decisions: DecisionBook::default(),
            fleet: crowdsec::FleetState::default(),
            applied: false,
            refusals: refusals::RefusalBook::default(),
            calls: super::calls::CallBook::default(),
            auth: crate::daemon::auth::AuthBook::default(),
        };
        let mut times = StartTimes {
            store_read,
            restore: core.restore_bans(loaded, adopting)?,
            ..StartTimes::default()
        };
        let t = Instant::now();
        core.shield.ready()?;
        times.waited = t.elapsed();
        core.program_id = core.shield.program().info().map(|i| i.id()).unwrap_or(0);
        let t = Instant::now();
        core.apply(&config)?;
        kernel::pin_program(&mut core.shield, &pin)?;
        unpin_obsolete(&pin);
        times.apply = t.elapsed();
        times.load = core.shield.times;
        times.total = began.elapsed();
        times.log(adopting);
        Ok((core, events))
    }

    /// The outcome of a store write: `None` if saved, else the warning for
    /// the reply. A failure leaves the change in force in the kernel and
    /// marks the store as behind, for [`Core::retry_save`].
    fn saved(&mut self, r: Result<(), StoreError>) -> Option<String> {
        let e = r.err()?;
        let why = e.to_string();
        tracing::error!("saving to the store failed (retrying every {} s): {why}", super::SWEEP_EVERY.as_secs());
        self.set_unsaved(why.clone());
        Some(not_persisted(&why))
    }

    /// Marks the store as behind the kernel, also in the lock file, which
    /// outlives a `kill -9`: the next start then keeps bans found only in
    /// the pinned maps as local ones, never as CrowdSec decisions (SPEC §10).
    fn set_unsaved(&mut self, why: String) {
        self.unsaved = Some(why);
        self.store.mark_behind(true);
    }

    /// Brings a store that fell behind (failed writes) up to date by
    /// rewriting its active tables. `Err`: why it is still behind.
    pub fn retry_save(&mut self) -> Result<(), String> {
        if self.unsaved.is_none() {
            return Ok(());
        }
        let (bans, offences) = self.book.records();
        let mark = self.maps_mark.clone();
        let r = self
            .store
            .resync(&bans, &offences, &self.cli)
            .and_then(|()| self.store.set_maps_mark(Some(&mark)));
        match r {
            Ok(()) => {
                tracing::info!(bans = bans.len(), "the store is up to date again");
                self.unsaved = None;
                self.store.mark_behind(false);
                Ok(())
            }
            Err(e) => {
                let why = e.to_string();
                self.set_unsaved(why.clone());
                Err(why)
            }
        }
    }

    fn effective(&self, list: List) -> Vec<IpNet> {
        match list {
            List::Allow => union(&self.config.allow.nets, &self.cli.allow),
            List::Deny => union(&self.config.deny.nets, &self.cli.deny),
        }
    }

    /// Points an interface at its counter slot; a slot that changes hands
    /// starts from zero.
    fn assign_slot(&mut self, ifindex: u32, slot: u32) -> Result<(), DaemonError> {
        let maps = &mut self.shield.maps;
        let current = maps.iface_slot(ifindex).unwrap_or(0);
        if current != slot {
            maps.reset_iface_counters(slot)
                .map_err(|e| DaemonError::Map {
                    what: "resetting counters",
                    source: e,
                })?;
            maps.set_iface_slot(ifindex, slot)
                .map_err(|e| DaemonError::Map {
                    what: "writing IFACE_SLOT",
                    source: e,
                })?;
        }
        Ok(())
    }

    /// Removes the shield from the kernel: links (detaching every
    /// interface), program and map pins. Bans stay in the state file and
    /// come back with the next start.
    pub fn detach(&mut self) -> Result<DetachReply, DaemonError> {
        let mut ifaces = Vec::new();
        for a in std::mem::take(&mut self.attachments) {
            ifaces.push(a.iface.clone());
            a.detach()?;
        }
        let removed = kernel::remove_all(&self.runtime.pin_path)?;
        for l in removed.links {
            if !ifaces.contains(&l) {
                ifaces.push(l);
            }
        }
        for i in &ifaces {
            tracing::info!(iface = %i, "detached");
        }
        tracing::info!(pin_path = %self.runtime.pin_path.display(), "pins removed");
        Ok(DetachReply {
            interfaces: ifaces,
            pin_path: self.runtime.pin_path.display().to_string(),
        })
    }

    /// Interfaces currently attached.
    pub fn attached(&self) -> Vec<String> {
        self.attachments.iter().map(|a| a.iface.clone()).collect()
    }
}

fn union(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let set: BTreeSet<IpNet> = a.iter().chain(b).map(IpNet::trunc).collect();
    set.into_iter().collect()
}

/// What a reload changes, one line per setting.
fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut c = Vec::new();
    let mut note = |what: &str, changed: bool| {
        if changed {
            c.push(format!("{what} changed"));
        }
    };
    note("shield.enforce", old.shield.enforce != new.shield.enforce);
    note("ports", old.ports != new.ports);
    note("allow", old.allow != new.allow);
    note("deny", old.deny != new.deny);
    note("limits", old.limits != new.limits);
    note("sip", old.sip != new.sip);
    note("bans", old.bans != new.bans);
    note("jails", old.jails != new.jails);
    note("metrics", old.metrics != new.metrics);
    note("crowdsec", old.crowdsec != new.crowdsec);
    c
}

/// Settings a reload cannot apply.
pub fn restart_only_changes(rt: &Runtime, new: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if new.shield.pin_path != rt.pin_path {
        w.push(
            "shield.pin_path changed: takes effect after `shieldctl detach` and a restart".into(),
        );
    }
    if new.shield.state_dir != rt.state_dir {
        w.push("shield.state_dir changed: takes effect after a restart".into());
    }
    if new.control.socket != rt.socket || new.control.group != rt.group {
        w.push("[control] changed: takes effect after a restart".into());
    }
    if new.capacity != rt.capacity {
        w.push(
            "[capacity] changed: maps cannot be resized in place; takes effect after `shieldctl detach` and a restart \
             (bans are kept in state_dir and restored)"
                .into(),
        );
    }
    w
}

