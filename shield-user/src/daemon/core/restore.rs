//! Start-up: the ban book, the store and the kernel maps brought together.

use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::Core;
use crate::daemon::bans::{record_expiry, Ban, Clock, Expiry, Origin, Restored};
use crate::daemon::DaemonError;
use crate::kernel;
use crate::store::{Action, Imported, Loaded, Store};

/// What adopted maps held beyond the store.
#[derive(Default)]
struct KernelBans {
    /// Expired; removed from the maps.
    stale: Vec<IpNet>,
    /// Bans the store did not know.
    only_kernel: usize,
    /// Bans the store had that the maps no longer hold.
    lifted: usize,
}

/// Where a restore's time went: the book built from the store's records,
/// and beside it the ban maps written (fresh) or read (adopted).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RestoreTimes {
    pub book: Duration,
    pub kernel: Duration,
    /// The whole restore, reconciling and store upkeep included.
    pub total: Duration,
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

/// Logs what an import of an earlier version's state files did. Unreadable
/// lines were skipped; the file as it was is kept aside.
pub(super) fn report_import(store: &Store, imp: &Imported) {
    for (from, to) in &imp.files {
        tracing::info!(file = %from.display(), renamed_to = %to.display(), db = %store.path().display(), "imported state written by an earlier shieldd");
    }
    let file = store.dir().join("bans.jsonl");
    for (line, why) in &imp.bad_lines {
        tracing::warn!(file = %file.display(), line, "skipping unreadable ban record: {why}");
    }
    if let Some(copy) = &imp.bad_copy {
        tracing::warn!(
            file = %file.display(),
            copy = %copy.display(),
            skipped = imp.bad_lines.len(),
            "the state file had unreadable lines: the file as it was is kept in the copy. To recover those bans, repair the lines in the copy and put it back as bans.jsonl (it is imported at the next start), or `shieldctl ban` them again"
        );
    }
    tracing::info!(read = imp.bans_read, new = imp.bans_added, "bans imported");
}

impl Core {
    /// Brings the book and the kernel maps together.
    ///
    /// Adopted maps that the store is in step with (same kernel map ids,
    /// see [`crate::store::MapsMark`]) know best which bans exist and until
    /// when: they saw every change, including any the store failed to
    /// write; the store adds who and why. Any other maps — fresh ones
    /// (first start, reboot, after detach) or pinned ones the store does
    /// not describe (made by a failed start, or by another state_dir) —
    /// are rebuilt from the store, which wins.
    pub(super) fn restore_bans(&mut self, loaded: Loaded, adopting: bool) -> Result<RestoreTimes, DaemonError> {
        let t = Instant::now();
        let in_step = loaded.maps.as_ref() == Some(&self.maps_mark);
        let now = Clock::now();
        // An earlier version's per-family ban maps are read too (their
        // bans join the new map); the store cannot name maps it never saw.
        let obsolete = (adopting && !in_step).then(|| self.runtime.pin_path.clone());
        let (from_store, kernel, mut times) = self.book_beside_kernel(loaded, adopting, obsolete, &now)?;
        for (net, why) in &from_store.unreadable {
            tracing::error!(net = %net, db = %self.store.path().display(), "ban record not restored: {why}");
        }
        let adopted = if adopting && in_step {
            self.trust_kernel(kernel, &now)
        } else {
            if adopting {
                tracing::warn!(
                    pin_path = %self.runtime.pin_path.display(),
                    db = %self.store.path().display(),
                    "the pinned ban maps are not the ones the store was last in step with (created by a failed start, another state_dir, or an older shieldd): the store wins and the maps are rebuilt from it"
                );
            }
            let adopted = self.keep_kernel_only(kernel, &now);
            if adopting {
                self.write_book()?;
            }
            adopted
        };
        for net in &adopted.stale {
            self.shield.maps.unban(*net).map_err(|e| DaemonError::Map {
                what: "removing expired bans",
                source: e,
            })?;
        }
        if !from_store.expired.is_empty() {
            let r = self.store.unban(&from_store.expired, Action::Expire, "expiry");
            let _ = self.saved(r);
        }
        self.sync_store(in_step, &adopted);
        tracing::info!(
            bans = self.book.len(),
            from_store = from_store.restored,
            expired_in_store = from_store.expired.len(),
            kernel_only = adopted.only_kernel,
            lifted_in_kernel = adopted.lifted,
            expired_in_kernel = adopted.stale.len(),
            adopted_maps = adopting,
            maps_trusted = adopting && in_step,
            ms = t.elapsed().as_millis() as u64,
            "bans restored"
        );
        times.total = t.elapsed();
        Ok(times)
    }

    /// After the restore, the store names these maps and holds what the
    /// book holds. Rewritten only when they differ; a failure leaves it to
    /// the sweeper's retries (the kernel is right meanwhile).
    fn sync_store(&mut self, in_step: bool, adopted: &KernelBans) {
        // Behind at the last exit: rewritten now, which also clears the mark.
        let differs = adopted.only_kernel > 0 || adopted.lifted > 0 || self.store.was_behind();
        if differs {
            let why = if self.store.was_behind() {
                "the previous shieldd stopped before it had saved every change"
            } else {
                "bans changed in the kernel while no shieldd ran"
            };
            self.set_unsaved(why.into());
            if let Err(why) = self.retry_save() {
                tracing::error!("updating the store failed (retrying): {why}");
            }
        }
        if !in_step {
            let mark = self.maps_mark.clone();
            let r = self.store.set_maps_mark(Some(&mark));
            let _ = self.saved(r);
        }
    }

    /// Builds the book from the store's records while, on another thread,
    /// the kernel's ban maps are read (adopted maps) or written (fresh
    /// ones, which hold nothing yet): with a million bans each side takes
    /// about a second. Returns what the book restored, and the adopted
    /// maps' bans.
    fn book_beside_kernel(
        &mut self,
        loaded: Loaded,
        adopting: bool,
        obsolete: Option<std::path::PathBuf>,
        now: &Clock,
    ) -> Result<(Restored, Vec<(IpNet, u64)>, RestoreTimes), DaemonError> {
        let full = self.map_full_error(loaded.bans.len());
        let (book, maps) = (&mut self.book, &mut self.shield.maps);
        std::thread::scope(|s| {
            let kernel = if adopting {
                s.spawn(move || {
                    let t = Instant::now();
                    let mut dump = maps.bans_dump().map_err(|e| DaemonError::Map {
                        what: "reading the ban maps",
                        source: e,
                    })?;
                    if let Some(dir) = obsolete {
                        dump.extend(kernel::obsolete_bans(&dir).map_err(|e| DaemonError::Map {
                            what: "reading an earlier shieldd's ban maps",
                            source: e,
                        })?);
                    }
                    // In the book's order, for `trust_kernel`'s merge; one
                    // entry per ban (an address in both an old and the new map).
                    dump.sort_unstable_by_key(|&(net, _)| net);
                    dump.dedup_by_key(|&mut (net, _)| net);
                    Ok((dump, t.elapsed()))
                })
            } else {
                let t = Instant::now();
                let want: Vec<(IpNet, u64)> = loaded
                    .bans
                    .iter()
                    .filter_map(|r| Some((r.net.trunc(), record_expiry(r, now)?.kernel())))
                    .collect();
                s.spawn(move || match maps.ban_batch(&want) {
                    Ok(_) => Ok((Vec::new(), t.elapsed())),
                    Err(e) if e.is_map_full() => Err(DaemonError::Runtime(full)),
                    Err(e) => Err(DaemonError::Map { what: "restoring bans", source: e }),
                })
            };
            let t = Instant::now();
            let restored = book.restore(loaded.bans, loaded.offences, now);
            let book_took = t.elapsed();
            let (kernel, kernel_took) = kernel.join().expect("the kernel side does not panic")?;
            let times = RestoreTimes {
                book: book_took,
                kernel: kernel_took,
                total: Duration::ZERO,
            };
            Ok((restored, kernel, times))
        })
    }

    /// The error of a restore that does not fit the ban maps.
    fn map_full_error(&self, bans: usize) -> String {
        format!(
            "{} has {bans} bans, more than the ban maps hold (capacity.bans = {}, capacity.ban_nets = {}): raise [capacity]",
            self.store.path().display(),
            self.runtime.capacity.bans,
            self.runtime.capacity.ban_nets
        )
    }

    /// Adopted maps in step with the store: the kernel's set of bans and
    /// expiries wins; the store's records supply origin and reason. Run on
    /// every restart: `kernel` comes sorted, so it is walked beside the
    /// book (both in network order) in one sequential pass.
    fn trust_kernel(&mut self, kernel: Vec<(IpNet, u64)>, now: &Clock) -> KernelBans {
        let mut out = KernelBans::default();
        let mut unknown = Vec::new();
        // In the store but not live in the kernel: lifted by a write the
        // store missed, or expired there.
        let mut gone = Vec::new();
        let mut book = self.book.iter_mut().peekable();
        for &(net, expires_ns) in &kernel {
            while let Some((n, _)) = book.next_if(|(n, _)| **n < net) {
                gone.push(*n);
            }
            let in_book = book.next_if(|(n, _)| **n == net);
            match (kernel_expiry(expires_ns, now), in_book) {
                (None, b) => {
                    out.stale.push(net);
                    gone.extend(b.map(|(n, _)| *n));
                }
                (Some(expiry), Some((_, ban))) => ban.expiry = expiry,
                (Some(expiry), None) => unknown.push((net, expiry)),
            }
        }
        gone.extend(book.map(|(n, _)| *n));
        for n in &gone {
            self.book.remove(n);
        }
        out.lifted = gone.len();
        for (net, expiry) in unknown {
            self.adopt_unknown(net, expiry, now, &mut out);
        }
        if out.only_kernel > 0 {
            tracing::warn!(
                bans = out.only_kernel,
                "the previous shieldd stopped with changes it had not saved: kept bans found only in the pinned maps as local bans (origin kernel); `shieldctl unban` lifts them"
            );
        }
        out
    }

    /// Maps the store does not describe: its bans are written over them
    /// (by [`Core::write_book`]). A ban only the kernel holds is kept, as
    /// origin `kernel`: only a shieldd on this pin path puts bans there,
    /// so it is most likely one whose store write failed, and lifting it
    /// would let an attacker back in; it stays visible in `shieldctl
    /// banned`, keeps its kernel expiry and can be unbanned.
    fn keep_kernel_only(&mut self, kernel: Vec<(IpNet, u64)>, now: &Clock) -> KernelBans {
        let mut out = KernelBans::default();
        for (net, expires_ns) in kernel {
            if self.book.get(&net).is_some() {
                continue;
            }
            match kernel_expiry(expires_ns, now) {
                None => out.stale.push(net),
                Some(expiry) => self.adopt_unknown(net, expiry, now, &mut out),
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

    /// A ban only the pinned maps hold. With `[crowdsec]`, and a store
    /// the previous shieldd kept up to date, it is a decision that shieldd
    /// enforced (decisions are not stored): held as such until LAPI's first
    /// full answer says whether it still stands. Otherwise it may be a
    /// local ban whose store write failed, which must never become someone
    /// else's (SPEC §10): kept as a local ban of origin `kernel`, which no
    /// CrowdSec list lifts.
    fn adopt_unknown(&mut self, net: IpNet, expiry: Expiry, now: &Clock, out: &mut KernelBans) {
        if self.config.crowdsec.is_some() && !self.store.was_behind() {
            self.decisions.hold(net, expiry);
        } else {
            out.only_kernel += 1;
            self.book.insert(net, kernel_ban(expiry, now));
        }
    }

    /// Writes every ban of the book into the maps, in batches.
    fn write_book(&mut self) -> Result<(), DaemonError> {
        let want: Vec<(IpNet, u64)> = self
            .book
            .iter()
            .map(|(n, b)| (*n, b.expiry.kernel()))
            .collect();
        let full = self.map_full_error(want.len());
        self.shield.maps.ban_batch(&want).map_err(|e| {
            if e.is_map_full() {
                DaemonError::Runtime(full)
            } else {
                DaemonError::Map { what: "restoring bans", source: e }
            }
        })?;
        Ok(())
    }
}
