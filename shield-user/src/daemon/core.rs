//! The daemon's state and every operation on it: loading and adopting the
//! pinned shield, applying a configuration, bans, lists, sweeps, and the
//! read-outs (status, stats, metrics). Synchronous: each operation is a
//! handful of `bpf(2)` calls, run under the daemon's lock, never across an
//! `.await`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{MapData, MapError, RingBuf};
use ipnet::IpNet;
use shield_common::{sip::ua_key, Method, OffenderEvent, Reason, Verdict, FAMILY_V4, FAMILY_V6};

use super::bans::{covers, overlaps, Ban, BanBook, Clock, Expiry, Increment, Origin};
use super::guard::{self, OwnAddresses};
use super::DaemonError;
use crate::config::{format_duration, Config};
use crate::control::protocol::{
    BanInfo, BannedReply, CounterRow, DetachReply, Escalation, IfaceStats, IfaceStatus, ListEntry,
    ListOp, ListReply, StatsReply, StatusReply, TopSource, UnbanReply,
};
use crate::jails::JailEvent;
use crate::kernel::{self, Attachment, List, MapId, Shield};
use crate::metrics::{verdict_reason_pairs, Snapshot};
use crate::state::{BanRecord, CliLists, HistoryRecord, LoadedBans, MapsMark, StateDir};

/// The maps `sipshield_map_entries` / `_capacity` report.
fn reported_maps() -> impl Iterator<Item = MapId> {
    MapId::ALL.into_iter().filter(|m| m.holds_entries())
}

/// Counting a million-entry hash map takes a while; scrapes reuse a count
/// this young.
const COUNT_CACHE: Duration = Duration::from_secs(10);
const RECENT_ESCALATIONS: usize = 20;
const TOP_SOURCES: usize = 10;
/// Longest reason text kept with a ban.
const MAX_REASON: usize = 200;

/// A control request's failure.
#[derive(Debug)]
pub enum CtlError {
    /// The request named something bad (exit 2).
    BadInput(String),
    /// The kernel or the daemon failed (exit 1).
    Failed(String),
}

impl CtlError {
    fn map(what: impl std::fmt::Display) -> impl FnOnce(MapError) -> CtlError {
        move |e| CtlError::Failed(format!("{what}: {}", super::chain(&e)))
    }
}

/// The warning of a change that is in force in the kernel but did not
/// reach state_dir. Such a change is still acknowledged as done: failing
/// it would invite a retry of something already enforced.
pub fn not_persisted(why: &str) -> String {
    format!(
        "the change is in force but NOT saved to state_dir ({why}); it is lost if the shield is detached \
         or the host reboots before a later save succeeds: make state_dir writable (free space, \
         read-write mount): shieldd retries every {} s and on every change",
        super::PERSIST_RETRY.as_secs()
    )
}

/// Whether a map write failed because the map is full.
fn map_full(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG))
}

/// A snapshot of what the state file holds.
pub struct Records {
    pub generation: u64,
    pub bans: Vec<BanRecord>,
    pub history: Vec<HistoryRecord>,
    pub maps: MapsMark,
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
    book: BanBook,
    cli: CliLists,
    state: Arc<StateDir>,
    bans_total: BTreeMap<String, u64>,
    jail_failures: BTreeMap<String, u64>,
    escalations: VecDeque<Escalation>,
    /// Bumped on every change the state file must see.
    generation: u64,
    started: Instant,
    counts: Option<(Instant, Vec<(String, u64)>)>,
    /// This host's addresses, which are never banned.
    own: OwnAddresses,
    /// The ban maps in use, recorded with every save of the state file.
    maps_mark: MapsMark,
    /// The state file must be rewritten although nothing changed yet (it
    /// names other maps, or had unreadable lines).
    needs_save: bool,
}

/// What adopted maps held beyond the state file.
#[derive(Default)]
struct KernelBans {
    /// Expired; removed from the maps.
    stale: Vec<IpNet>,
    /// Bans the file did not know.
    only_kernel: usize,
}

/// A kernel expiry (monotonic ns, 0 = forever) as an [`Expiry`]; `None`
/// once past.
fn kernel_expiry(expires_ns: u64, now: &Clock) -> Option<Expiry> {
    match expires_ns {
        0 => Some(Expiry::Never),
        ns if ns <= now.mono_ns => None,
        ns => Some(Expiry::At {
            mono_ns: ns,
            wall_ms: now.mono_to_wall(ns),
        }),
    }
}

/// A ban found in the kernel without a record.
fn kernel_ban(expiry: Expiry, now: &Clock) -> Ban {
    Ban {
        origin: Origin::Kernel,
        reason: "found in the kernel map at start".into(),
        created_ms: now.wall_ms,
        expiry,
    }
}

impl Core {
    /// Loads (or adopts) the shield, restores bans, applies `config` and
    /// attaches. Returns the ring buffer of offender reports, for the
    /// caller to read.
    ///
    /// All or nothing: state_dir is read before the kernel is touched, and
    /// if anything fails later, what this attempt pinned is unpinned again
    /// (and its links closed). A half-started shield left pinned would be
    /// adopted by the next start as though it were the enforcing one.
    pub fn start(
        config: Config,
        state: Arc<StateDir>,
    ) -> Result<(Core, Option<RingBuf<MapData>>), DaemonError> {
        raise_memlock();
        let loaded = state.load_bans()?;
        let cli = state.load_lists()?;
        let pin = config.shield.pin_path.clone();
        let before = kernel::PinSnapshot::take(&pin)?;
        // `load` drops everything it made (maps, program, links) before
        // returning an error, so the unpinning below frees them.
        Self::load(config, state, loaded, cli).inspect_err(|_| {
            let removed = before.roll_back();
            if !removed.is_empty() {
                tracing::warn!(pin_path = %pin.display(), removed = ?removed, "start-up failed: unpinned what this attempt had pinned");
            }
        })
    }

    fn load(
        config: Config,
        state: Arc<StateDir>,
        loaded: LoadedBans,
        cli: CliLists,
    ) -> Result<(Core, Option<RingBuf<MapData>>), DaemonError> {
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
        let mut shield = Shield::load(config.capacity, Some(&pin))?;
        let events = shield.maps.events.take();
        let program_id = shield.program().info().map(|i| i.id()).unwrap_or(0);
        let maps_mark = MapsMark {
            pin_path: pin.clone(),
            ids: shield.maps.ban_map_ids(),
        };
        let mut core = Core {
            config: config.clone(),
            runtime,
            shield,
            attachments: Vec::new(),
            program_id,
            book: BanBook::default(),
            cli,
            state,
            bans_total: BTreeMap::new(),
            jail_failures: config.jails.iter().map(|j| (j.name.clone(), 0)).collect(),
            escalations: VecDeque::new(),
            generation: 1,
            started: Instant::now(),
            counts: None,
            own: OwnAddresses::default(),
            maps_mark,
            needs_save: false,
        };
        core.restore_bans(loaded, adopting)?;
        core.apply(&config)?;
        kernel::pin_program(&mut core.shield, &pin)?;
        Ok((core, events))
    }

    /// Brings the book and the kernel maps together.
    ///
    /// Adopted maps that the state file was last written in step with
    /// (same kernel map ids, see [`MapsMark`]) know best which bans exist
    /// and until when: they saw every change, the file may lag by a
    /// second; the file adds who and why. Any other maps — fresh ones
    /// (first start, reboot, after detach) or pinned ones this file does
    /// not describe (made by a failed start, or by another state_dir) —
    /// are rebuilt from the file, which wins.
    fn restore_bans(&mut self, loaded: LoadedBans, adopting: bool) -> Result<(), DaemonError> {
        let t = Instant::now();
        self.report_bad_lines(&loaded);
        let in_step = loaded.maps.as_ref() == Some(&self.maps_mark);
        let now = Clock::now();
        let from_file = self.book.restore(loaded.bans, loaded.history, &now);
        let kernel = self.shield.maps.bans_dump().map_err(|e| DaemonError::Map {
            what: "reading the ban maps",
            source: e,
        })?;
        let adopted = if adopting && in_step {
            self.trust_kernel(kernel, &now)
        } else {
            if adopting {
                tracing::warn!(
                    pin_path = %self.runtime.pin_path.display(),
                    file = %self.state.bans_path().display(),
                    "the pinned ban maps are not the ones the state file was last saved from (created by a failed start, another state_dir, or an older shieldd): the file wins and the maps are rebuilt from it"
                );
            }
            let adopted = self.keep_kernel_only(kernel, &now);
            self.write_book()?;
            // The file does not name these maps yet.
            self.needs_save = true;
            adopted
        };
        for net in &adopted.stale {
            self.shield.maps.unban(*net).map_err(|e| DaemonError::Map {
                what: "removing expired bans",
                source: e,
            })?;
        }
        tracing::info!(
            bans = self.book.len(),
            from_file = from_file.restored,
            expired_in_file = from_file.expired,
            kernel_only = adopted.only_kernel,
            expired_in_kernel = adopted.stale.len(),
            adopted_maps = adopting,
            maps_trusted = adopting && in_step,
            ms = t.elapsed().as_millis() as u64,
            "bans restored"
        );
        Ok(())
    }

    /// Unreadable lines were skipped; the file as it was is kept aside
    /// (see [`StateDir::load_bans`]) before the next save drops them.
    fn report_bad_lines(&mut self, loaded: &LoadedBans) {
        let file = self.state.bans_path();
        for (line, why) in &loaded.bad_lines {
            tracing::warn!(file = %file.display(), line, "skipping unreadable ban record: {why}");
        }
        if let Some(copy) = &loaded.bad_copy {
            tracing::warn!(
                file = %file.display(),
                copy = %copy.display(),
                skipped = loaded.bad_lines.len(),
                "the state file had unreadable lines: the file as it was is kept in the copy, and the state file is rewritten without them. To recover those bans, repair the lines in the copy and `shieldctl ban` them again (or stop shieldd and put the repaired copy back)"
            );
            self.needs_save = true;
        }
    }

    /// Adopted maps in step with the file: the kernel's set of bans and
    /// expiries wins; the file's records supply origin and reason.
    fn trust_kernel(&mut self, kernel: Vec<(IpNet, u64)>, now: &Clock) -> KernelBans {
        let mut out = KernelBans::default();
        let mut in_kernel = std::collections::HashSet::with_capacity(kernel.len());
        for (net, expires_ns) in kernel {
            let Some(expiry) = kernel_expiry(expires_ns, now) else {
                out.stale.push(net);
                continue;
            };
            in_kernel.insert(net);
            match self.book.get(&net).cloned() {
                Some(mut b) => {
                    b.expiry = expiry;
                    self.book.insert(net, b);
                }
                None => {
                    out.only_kernel += 1;
                    self.book.insert(net, kernel_ban(expiry, now));
                }
            }
        }
        // In the file but no longer in the kernel: lifted after the last save.
        let gone: Vec<IpNet> = self
            .book
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !in_kernel.contains(n))
            .collect();
        for n in gone {
            self.book.remove(&n);
        }
        out
    }

    /// Maps the file does not describe: its bans are written over them
    /// (by [`Core::write_book`]). A ban only the kernel holds is kept, as
    /// origin `kernel`: only a shieldd on this pin path puts bans there,
    /// so it is most likely one made in the last moments before a crash,
    /// and lifting it would let an attacker back in; it stays visible in
    /// `shieldctl banned`, keeps its kernel expiry and can be unbanned.
    fn keep_kernel_only(&mut self, kernel: Vec<(IpNet, u64)>, now: &Clock) -> KernelBans {
        let mut out = KernelBans::default();
        for (net, expires_ns) in kernel {
            if self.book.get(&net).is_some() {
                continue;
            }
            match kernel_expiry(expires_ns, now) {
                None => out.stale.push(net),
                Some(expiry) => {
                    out.only_kernel += 1;
                    self.book.insert(net, kernel_ban(expiry, now));
                }
            }
        }
        if out.only_kernel > 0 {
            tracing::warn!(
                bans = out.only_kernel,
                "kept bans found only in the pinned maps (origin kernel); `shieldctl unban` lifts them"
            );
        }
        out
    }

    /// Writes every ban of the book into the maps, in batches.
    fn write_book(&mut self) -> Result<(), DaemonError> {
        let want: Vec<(IpNet, u64)> = self
            .book
            .iter()
            .map(|(n, b)| (*n, b.expiry.kernel()))
            .collect();
        self.shield.maps.ban_batch(&want).map_err(|e| {
            if map_full(&e) {
                DaemonError::Runtime(format!(
                    "{} has {} bans, more than the ban maps hold (capacity.bans = {}, capacity.ban_nets = {}): raise [capacity]",
                    self.state.bans_path().display(),
                    want.len(),
                    self.runtime.capacity.bans,
                    self.runtime.capacity.ban_nets
                ))
            } else {
                DaemonError::Map { what: "restoring bans", source: e }
            }
        })?;
        Ok(())
    }

    /// Makes the kernel match `cfg`: policy, ports, allow/deny (config ∪
    /// shieldctl additions), scanner tokens, interfaces. Returns what
    /// changed, for the reload reply.
    pub fn apply(&mut self, cfg: &Config) -> Result<Vec<String>, DaemonError> {
        let old = std::mem::replace(&mut self.config, cfg.clone());
        let mut changes = describe_changes(&old, cfg);
        let maps = &mut self.shield.maps;
        let map = |what: &'static str| move |e| DaemonError::Map { what, source: e };
        maps.set_ports(&cfg.ports.udp, &cfg.ports.tcp)
            .map_err(map("writing PORTS"))?;
        maps.set_list(List::Allow, &union(&cfg.allow.nets, &self.cli.allow))
            .map_err(map("writing the allowlist"))?;
        maps.set_list(List::Deny, &union(&cfg.deny.nets, &self.cli.deny))
            .map_err(map("writing the denylist"))?;
        let keys: Vec<_> = cfg
            .sip
            .scanner_user_agents
            .iter()
            .filter_map(|s| ua_key(s))
            .collect();
        maps.set_scanners(&keys).map_err(map("writing SCANNERS"))?;
        maps.set_policy(&cfg.policy())
            .map_err(map("writing POLICY"))?;
        for j in &cfg.jails {
            self.jail_failures.entry(j.name.clone()).or_insert(0);
        }
        changes.extend(self.attach_all(cfg)?);
        Ok(changes)
    }

    /// Attaches to every configured interface (adopting pinned links),
    /// detaches from interfaces no longer configured, numbers the counter
    /// slots.
    fn attach_all(&mut self, cfg: &Config) -> Result<Vec<String>, DaemonError> {
        let mut changes = Vec::new();
        let pin = self.runtime.pin_path.clone();
        // Interfaces dropped from the config (held now, or pinned by an
        // earlier daemon).
        let mut kept = Vec::new();
        for a in std::mem::take(&mut self.attachments) {
            if cfg.shield.interfaces.contains(&a.iface) {
                kept.push(a);
            } else {
                let (iface, ifindex) = (a.iface.clone(), a.ifindex);
                a.detach()?;
                let _ = self.shield.maps.set_iface_slot(ifindex, 0);
                tracing::info!(iface = %iface, "detached (no longer in [shield] interfaces)");
                changes.push(format!("detached from {iface}"));
            }
        }
        for entry in kernel::pinned_links(&pin)? {
            if !cfg.shield.interfaces.contains(&entry.iface)
                && !kept.iter().any(|a| a.iface == entry.iface)
            {
                entry.detach()?;
                tracing::info!(iface = %entry.iface, "detached (pinned by an earlier daemon, no longer configured)");
                changes.push(format!("detached from {}", entry.iface));
            }
        }
        for (i, iface) in cfg.shield.interfaces.iter().enumerate() {
            let slot = i as u32 + 1;
            let att = match kept.iter().position(|a| &a.iface == iface) {
                Some(p) => kept.swap_remove(p),
                None => {
                    let ifindex = kernel::ifindex(iface)
                        .ok_or_else(|| kernel::KernelError::NoInterface(iface.clone()))?;
                    self.assign_slot(ifindex, slot)?;
                    let a = kernel::attach(&mut self.shield, &pin, iface, cfg.shield.mode)?;
                    tracing::info!(
                        iface = %a.iface,
                        ifindex = a.ifindex,
                        mode = a.mode.as_str(),
                        link_id = a.link_id,
                        program_id = self.program_id,
                        adopted = a.adopted,
                        "attached"
                    );
                    changes.push(format!("attached to {iface} ({})", a.mode.as_str()));
                    a
                }
            };
            self.assign_slot(att.ifindex, slot)?;
            if !att.mode.satisfies(cfg.shield.mode) {
                tracing::warn!(
                    iface = %att.iface,
                    attached = att.mode.as_str(),
                    configured = ?cfg.shield.mode,
                    "attach mode differs from the configuration; a mode change cannot be made without a gap: run `shieldctl detach` and restart shieldd to apply it"
                );
            }
            self.attachments.push(att);
        }
        Ok(changes)
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

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The state file's contents as of now.
    pub fn records(&self) -> Records {
        let (bans, history) = self.book.records();
        Records {
            generation: self.generation,
            bans,
            history,
            maps: self.maps_mark.clone(),
        }
    }

    /// Whether the state file must be written although nothing changed
    /// since the start (asked once, by the daemon after start-up).
    pub fn take_needs_save(&mut self) -> bool {
        std::mem::take(&mut self.needs_save)
    }

    pub fn state(&self) -> Arc<StateDir> {
        self.state.clone()
    }

    fn effective(&self, list: List) -> Vec<IpNet> {
        match list {
            List::Allow => union(&self.config.allow.nets, &self.cli.allow),
            List::Deny => union(&self.config.deny.nets, &self.cli.deny),
        }
    }

    /// Why `net` must not be banned, if it must not (see [`guard`]).
    /// `force` (shieldctl's `--force`) admits prefixes wider than the
    /// configured minimum, nothing else.
    fn protected(&mut self, net: &IpNet, force: bool) -> Option<String> {
        if let Some(why) = guard::never_ban(net, self.own.get()) {
            return Some(why);
        }
        if !force {
            let b = &self.config.bans;
            if let Some(why) = guard::too_wide(net, b.min_prefix_v4, b.min_prefix_v6) {
                return Some(why);
            }
        }
        if let Some(a) = self.effective(List::Allow).iter().find(|a| covers(a, net)) {
            return Some(format!("{net} is allowlisted ({a})"));
        }
        // A ban of a prefix must not sweep up an ignored host.
        self.config
            .bans
            .ignoreip
            .iter()
            .find(|i| overlaps(i, net))
            .map(|i| format!("{net} overlaps [bans] ignoreip ({i})"))
    }

    /// `shieldctl ban`: replaces any ban of the same network.
    pub fn ban_manual(
        &mut self,
        net: IpNet,
        duration: Option<Duration>,
        reason: Option<String>,
        who: &str,
        force: bool,
    ) -> Result<BanInfo, CtlError> {
        let net = net.trunc();
        if let Some(why) = self.protected(&net, force) {
            return Err(CtlError::BadInput(format!("not banned: {why}")));
        }
        let now = Clock::now();
        let expiry = match duration {
            Some(d) if d.is_zero() => Expiry::Never,
            Some(d) => now.after(d),
            None => now.after(self.config.bans.bantime),
        };
        let reason = clip(reason.unwrap_or_else(|| format!("banned by {who}")));
        let ban = Ban {
            origin: Origin::Manual,
            reason: reason.into(),
            created_ms: now.wall_ms,
            expiry,
        };
        let capacity = self.runtime.capacity;
        self.put_ban(net, ban, &now, None).map_err(|e| {
            if map_full(&e) {
                CtlError::Failed(format!(
                    "banning {net}: the ban map is full (capacity.bans = {}, capacity.ban_nets = {})",
                    capacity.bans, capacity.ban_nets
                ))
            } else {
                CtlError::map(format!("banning {net}"))(e)
            }
        })?;
        Ok(self.ban_info(&net, self.book.get(&net).expect("just inserted"), &now))
    }

    /// A jail's or the kernel's ban: skipped for protected sources and
    /// sources already banned at least as long; `increment` applies.
    fn ban_auto(
        &mut self,
        net: IpNet,
        origin: Origin,
        base: Duration,
        reason: String,
        latency: Option<Duration>,
    ) {
        let net = net.trunc();
        if let Some(why) = self.protected(&net, false) {
            tracing::info!(net = %net, origin = origin.label(), "not banning: {why}");
            return;
        }
        let now = Clock::now();
        let inc = Increment {
            enabled: self.config.bans.increment,
            maxtime: self.config.bans.maxtime,
        };
        let duration = self.book.auto_duration(&net, base, inc, &now);
        let expiry = now.after(duration);
        if let Some(b) = self.book.get(&net) {
            if !b.expiry.is_past(&now) && b.expiry.outlasts(&expiry) {
                tracing::debug!(net = %net, origin = origin.label(), "already banned");
                return;
            }
        }
        let ban = Ban {
            origin,
            reason: clip(reason).into(),
            created_ms: now.wall_ms,
            expiry,
        };
        match self.put_ban(net, ban, &now, latency) {
            Ok(()) => {
                self.book
                    .record_offence(net, expiry.wall_ms().unwrap_or(u64::MAX), inc, &now)
            }
            Err(e) if map_full(&e) => {
                tracing::error!(net = %net, capacity = self.runtime.capacity.bans, "ban failed: the ban map is full")
            }
            Err(e) => tracing::error!(net = %net, "ban failed: {}", super::chain(&e)),
        }
    }

    fn put_ban(
        &mut self,
        net: IpNet,
        ban: Ban,
        now: &Clock,
        latency: Option<Duration>,
    ) -> Result<(), MapError> {
        self.shield.maps.ban(net, ban.expiry.kernel())?;
        let left = ban
            .expiry
            .left(now)
            .map(format_duration)
            .unwrap_or_else(|| "forever".into());
        tracing::info!(
            net = %net,
            // A jail's reason quotes a log line an attacker may have
            // written: escaped, so reading this log cannot drive a terminal.
            origin = %crate::text::Escaped(ban.origin.label()),
            duration = %left,
            reason = %crate::text::Escaped(&ban.reason),
            latency_ms = latency.map(|l| l.as_secs_f64() * 1000.0),
            "ban"
        );
        *self
            .bans_total
            .entry(ban.origin.label().to_string())
            .or_insert(0) += 1;
        self.book.insert(net, ban);
        self.generation += 1;
        Ok(())
    }

    pub fn unban(&mut self, net: IpNet, who: &str) -> Result<UnbanReply, CtlError> {
        let net = net.trunc();
        let in_book = self.book.remove(&net).is_some();
        let in_kernel = self
            .shield
            .maps
            .unban(net)
            .map_err(CtlError::map(format!("unbanning {net}")))?;
        if !in_book && !in_kernel {
            let hint = match self.book.covering(&net) {
                Some(c) => format!(" (it is inside the banned network {c}: unban that)"),
                None => String::new(),
            };
            return Err(CtlError::BadInput(format!("{net} is not banned{hint}")));
        }
        self.generation += 1;
        tracing::info!(net = %net, by = who, "unban");
        Ok(UnbanReply {
            removed: vec![net.to_string()],
        })
    }

    pub fn unban_all(&mut self, who: &str) -> Result<UnbanReply, CtlError> {
        let mut nets = self.book.clear();
        // And anything in the kernel the book never knew.
        let kernel = self
            .shield
            .maps
            .bans_dump()
            .map_err(CtlError::map("reading the ban maps"))?;
        nets.extend(kernel.into_iter().map(|(n, _)| n));
        nets.sort();
        nets.dedup();
        for n in &nets {
            self.shield
                .maps
                .unban(*n)
                .map_err(CtlError::map(format!("unbanning {n}")))?;
        }
        self.generation += 1;
        tracing::info!(count = nets.len(), by = who, "unban all");
        Ok(UnbanReply {
            removed: nets.iter().map(|n| n.to_string()).collect(),
        })
    }

    /// Removes bans whose time is up from the maps (the kernel already
    /// ignores them; this keeps the maps from filling up).
    pub fn sweep(&mut self) -> usize {
        let now = Clock::now();
        let expired = self.book.expired(&now);
        for net in &expired {
            if let Err(e) = self.shield.maps.unban(*net) {
                tracing::error!(net = %net, "removing an expired ban failed: {}", super::chain(&e));
                continue;
            }
            if let Some(b) = self.book.remove(net) {
                tracing::info!(net = %net, origin = b.origin.label(), "unban (expired)");
            }
        }
        self.book.prune_history(self.config.bans.maxtime, &now);
        if !expired.is_empty() {
            self.generation += 1;
        }
        expired.len()
    }

    pub fn on_jail_event(&mut self, ev: JailEvent) {
        match ev {
            JailEvent::Failure { jail, .. } => *self.jail_failures.entry(jail).or_insert(0) += 1,
            JailEvent::Ban {
                jail,
                host,
                bantime,
                failures,
                line,
                seen_at,
            } => {
                let reason = format!("{failures} failures: {}", line.trim());
                self.ban_auto(
                    IpNet::from(host),
                    Origin::Jail(jail.into()),
                    bantime,
                    reason,
                    Some(seen_at.elapsed()),
                );
            }
        }
    }

    /// A repeat offender reported by the kernel.
    pub fn on_offender(&mut self, ev: &OffenderEvent) {
        let Some(net) = offender_net(ev) else {
            tracing::warn!(
                family = ev.family,
                prefix = ev.prefix_len,
                "ignoring a malformed offender report"
            );
            return;
        };
        let reason = Reason::from_u8(ev.reason).map_or("?", |r| r.as_str());
        let esc = self.config.bans.escalate;
        // Reports queued while no daemon ran may be old: a ban that would
        // already have ended is not made now.
        let age = Duration::from_nanos(kernel::monotonic_ns().saturating_sub(ev.ts_ns));
        if age >= esc.bantime {
            tracing::debug!(net = %net, age_s = age.as_secs(), "ignoring a stale offender report");
            return;
        }
        self.escalations.push_front(Escalation {
            source: net.to_string(),
            reason: reason.to_string(),
            drops: ev.drops,
            at: crate::state::now_ms() / 1000,
        });
        self.escalations.truncate(RECENT_ESCALATIONS);
        let text = format!(
            "{} {reason} drops within {}",
            ev.drops,
            format_duration(esc.window)
        );
        self.ban_auto(net, Origin::Escalation, esc.bantime, text, None);
    }

    pub fn list_op(
        &mut self,
        list: List,
        op: ListOp,
        net: Option<IpNet>,
        who: &str,
        force: bool,
    ) -> Result<(ListReply, Option<String>), CtlError> {
        let name = match list {
            List::Allow => "allow",
            List::Deny => "deny",
        };
        let config_nets: BTreeSet<IpNet> = match list {
            List::Allow => self.config.allow.nets.iter().map(IpNet::trunc).collect(),
            List::Deny => self.config.deny.nets.iter().map(IpNet::trunc).collect(),
        };
        let mut changed = None;
        let mut warning = None;
        if op != ListOp::List {
            let net = net
                .ok_or_else(|| {
                    CtlError::BadInput(format!("{name} {op:?}: a CIDR is required").to_lowercase())
                })?
                .trunc();
            let cli = match list {
                List::Allow => &mut self.cli.allow,
                List::Deny => &mut self.cli.deny,
            };
            match op {
                ListOp::Add => {
                    let b = &self.config.bans;
                    if let Some(why) =
                        guard::too_wide(&net, b.min_prefix_v4, b.min_prefix_v6).filter(|_| !force)
                    {
                        return Err(CtlError::BadInput(format!("not added: {why}")));
                    }
                    if config_nets.contains(&net) || cli.contains(&net) {
                        changed = Some(format!("{net} was already in the {name}list"));
                    } else {
                        let capacity = match list {
                            List::Allow => self.runtime.capacity.allow,
                            List::Deny => self.runtime.capacity.deny,
                        };
                        self.shield.maps.list_add(list, net).map_err(|e| {
                            CtlError::Failed(format!(
                                "adding {net} to the {name}list: {} (capacity.{name} = {capacity})",
                                super::chain(&e)
                            ))
                        })?;
                        cli.push(net);
                        cli.sort();
                        changed = Some(format!("added {net}"));
                        tracing::info!(net = %net, list = name, by = who, "list add");
                    }
                }
                ListOp::Del => {
                    if let Some(p) = cli.iter().position(|n| *n == net) {
                        cli.remove(p);
                        if !config_nets.contains(&net) {
                            self.shield
                                .maps
                                .list_del(list, net)
                                .map_err(CtlError::map(format!("removing {net}")))?;
                        }
                        changed = Some(format!("removed {net}"));
                        tracing::info!(net = %net, list = name, by = who, "list del");
                    } else if config_nets.contains(&net) {
                        return Err(CtlError::BadInput(format!(
                            "{net} comes from the config file ({name}.cidrs or {name}.files): remove it there and reload"
                        )));
                    } else {
                        return Err(CtlError::BadInput(format!(
                            "{net} is not in the {name}list"
                        )));
                    }
                }
                ListOp::List => unreachable!(),
            }
            // The change is in force: a failed save is a warning, not a
            // failure (see `not_persisted`).
            if let Err(e) = self.state.save_lists(&self.cli) {
                tracing::error!("saving the {name}list failed: {e}");
                warning = Some(not_persisted(&e.to_string()));
            }
        }
        let cli: BTreeSet<IpNet> = match list {
            List::Allow => self.cli.allow.iter().copied().collect(),
            List::Deny => self.cli.deny.iter().copied().collect(),
        };
        let mut entries: Vec<ListEntry> = config_nets
            .iter()
            .map(|n| ListEntry {
                net: n.to_string(),
                source: "config".into(),
            })
            .chain(
                cli.iter()
                    .filter(|n| !config_nets.contains(n))
                    .map(|n| ListEntry {
                        net: n.to_string(),
                        source: "cli".into(),
                    }),
            )
            .collect();
        entries.sort_by(|a, b| a.net.cmp(&b.net));
        let reply = ListReply {
            list: name.into(),
            entries,
            changed,
        };
        Ok((reply, warning))
    }

    fn ban_info(&self, net: &IpNet, b: &Ban, now: &Clock) -> BanInfo {
        BanInfo {
            net: net.to_string(),
            origin: b.origin.label().to_string(),
            origin_kind: b.origin.kind().to_string(),
            reason: b.reason.to_string(),
            created: b.created_ms / 1000,
            expires_in_secs: b.expiry.left(now).map(|d| d.as_secs()),
        }
    }

    pub fn banned(&self) -> BannedReply {
        let now = Clock::now();
        let mut bans: Vec<(IpNet, BanInfo)> = self
            .book
            .iter()
            .filter(|(_, b)| !b.expiry.is_past(&now))
            .map(|(n, b)| (*n, self.ban_info(n, b, &now)))
            .collect();
        bans.sort_by_key(|b| b.0);
        BannedReply {
            bans: bans.into_iter().map(|(_, i)| i).collect(),
        }
    }

    fn bans_active(&self) -> u64 {
        let now = Clock::now();
        self.book
            .iter()
            .filter(|(_, b)| !b.expiry.is_past(&now))
            .count() as u64
    }

    /// (name, counter slot) of each interface, slot 0 ("unregistered")
    /// included.
    fn slots(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .attachments
            .iter()
            .enumerate()
            .map(|(i, a)| (a.iface.clone(), i as u32 + 1))
            .collect();
        v.push(("unregistered".into(), 0));
        v
    }

    pub fn stats(&self) -> Result<StatsReply, CtlError> {
        let maps = &self.shield.maps;
        let mut totals: BTreeMap<(Verdict, Reason), (u64, u64)> = BTreeMap::new();
        let mut interfaces = Vec::new();
        for (name, slot) in self.slots() {
            let mut rows = Vec::new();
            for (v, r) in verdict_reason_pairs() {
                let c = maps
                    .counter(slot, v, r)
                    .map_err(CtlError::map("reading STATS"))?;
                if c.packets == 0 {
                    continue;
                }
                let t = totals.entry((v, r)).or_default();
                t.0 += c.packets;
                t.1 += c.bytes;
                rows.push(row(v, r, c.packets, c.bytes));
            }
            if slot != 0 || !rows.is_empty() {
                interfaces.push(IfaceStats {
                    interface: name,
                    counters: rows,
                });
            }
        }
        let top = maps
            .top_offenders(TOP_SOURCES, kernel::monotonic_ns())
            .map_err(CtlError::map("reading SOURCES"))?;
        Ok(StatsReply {
            totals: totals
                .into_iter()
                .map(|((v, r), (p, b))| row(v, r, p, b))
                .collect(),
            interfaces,
            top_sources: top
                .into_iter()
                .map(|(n, d)| TopSource {
                    source: n.to_string(),
                    drops: d,
                })
                .collect(),
            recent_escalations: self.escalations.iter().cloned().collect(),
            bans_active: self.bans_active(),
            bans_total: self.bans_total.clone(),
        })
    }

    pub fn status(&self) -> StatusReply {
        StatusReply {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            config: self.config.source_path.display().to_string(),
            enforce: self.config.shield.enforce,
            program_id: self.program_id,
            pin_path: self.runtime.pin_path.display().to_string(),
            state_dir: self.runtime.state_dir.display().to_string(),
            interfaces: self
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| IfaceStatus {
                    name: a.iface.clone(),
                    ifindex: a.ifindex,
                    mode: a.mode.as_str().into(),
                    link_id: a.link_id,
                    slot: i as u32 + 1,
                })
                .collect(),
            bans_active: self.bans_active(),
            jails: self.config.jails.iter().map(|j| j.name.clone()).collect(),
            metrics: self.config.metrics.listen.map(|a| a.to_string()),
            uptime_secs: self.started.elapsed().as_secs(),
        }
    }

    /// Everything a scrape reports.
    pub fn snapshot(&mut self) -> Snapshot {
        let mut s = Snapshot {
            version: env!("CARGO_PKG_VERSION").into(),
            ..Snapshot::default()
        };
        let maps = &self.shield.maps;
        for (name, slot) in self.slots() {
            let mut rows = Vec::new();
            for (v, r) in verdict_reason_pairs() {
                rows.push((
                    name.clone(),
                    v,
                    r,
                    maps.counter(slot, v, r).unwrap_or_default(),
                ));
            }
            // Slot 0 only matters when something landed there.
            if slot == 0 && rows.iter().all(|r| r.3.packets == 0) {
                continue;
            }
            s.packets.extend(rows);
            for m in Method::ALL {
                for v in Verdict::ALL {
                    s.sip.push((
                        name.clone(),
                        m,
                        v,
                        maps.sip_counter(slot, m, v).unwrap_or(0),
                    ));
                }
            }
        }
        s.bans_active = self.bans_active();
        s.bans_total = self.bans_total.clone();
        s.jail_failures = self.jail_failures.clone();
        s.map_entries = self.map_counts();
        s.map_capacity = reported_maps()
            .filter_map(|m| {
                Some((
                    m.name().to_ascii_lowercase(),
                    u64::from(self.shield.maps.capacity(m)?),
                ))
            })
            .collect();
        s.attached = self
            .attachments
            .iter()
            .map(|a| (a.iface.clone(), a.mode.as_str().to_string()))
            .collect();
        s
    }

    fn map_counts(&mut self) -> Vec<(String, u64)> {
        if let Some((at, counts)) = &self.counts {
            if at.elapsed() < COUNT_CACHE {
                return counts.clone();
            }
        }
        let counts: Vec<(String, u64)> = reported_maps()
            .filter_map(|m| match self.shield.maps.entry_count(m) {
                Ok(Some(n)) => Some((m.name().to_ascii_lowercase(), n as u64)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(
                        map = m.name(),
                        "counting entries failed: {}",
                        super::chain(&e)
                    );
                    None
                }
            })
            .collect();
        self.counts = Some((Instant::now(), counts.clone()));
        counts
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

fn row(v: Verdict, r: Reason, packets: u64, bytes: u64) -> CounterRow {
    CounterRow {
        verdict: v.as_str().into(),
        reason: r.as_str().into(),
        packets,
        bytes,
    }
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn union(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let set: BTreeSet<IpNet> = a.iter().chain(b).map(IpNet::trunc).collect();
    set.into_iter().collect()
}

/// The network a kernel offender report names.
pub fn offender_net(ev: &OffenderEvent) -> Option<IpNet> {
    match ev.family {
        FAMILY_V4 => {
            let a = Ipv4Addr::new(ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]);
            IpNet::new(IpAddr::V4(a), 32).ok()
        }
        FAMILY_V6 => IpNet::new(IpAddr::V6(Ipv6Addr::from(ev.addr)), ev.prefix_len)
            .ok()
            .map(|n| n.trunc()),
        _ => None,
    }
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

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use
/// the memory cgroup and ignore it. Raising it is harmless either way.
fn raise_memlock() {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offender_reports_become_networks() {
        let mut ev = OffenderEvent {
            family: FAMILY_V4,
            prefix_len: 32,
            ..Default::default()
        };
        ev.addr[..4].copy_from_slice(&[198, 51, 100, 2]);
        assert_eq!(offender_net(&ev), Some("198.51.100.2/32".parse().unwrap()));
        let mut ev6 = OffenderEvent {
            family: FAMILY_V6,
            prefix_len: 64,
            ..Default::default()
        };
        ev6.addr = "2001:db8:1:2:3:4:5:6".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            offender_net(&ev6),
            Some("2001:db8:1:2::/64".parse().unwrap())
        );
        ev6.prefix_len = 200;
        assert_eq!(offender_net(&ev6), None);
        ev6.family = 9;
        assert_eq!(offender_net(&ev6), None);
    }

    #[test]
    fn reasons_are_clipped_on_a_char_boundary() {
        let s = clip("é".repeat(300));
        assert!(s.len() <= MAX_REASON + '…'.len_utf8());
        assert!(s.ends_with('…'));
        assert_eq!(clip("short".into()), "short");
    }
}
