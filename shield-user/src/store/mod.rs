//! The ban store (SPEC §10): `state_dir/shield.db`, SQLite in WAL mode.
//!
//! It holds the bans in force with who made them and why, the
//! repeat-offender counts behind `[bans] increment`, the allow/deny entries
//! added with shieldctl, a history of every ban, unban and list change
//! (kept for `[bans] history`), and the INVITEs the destination policy
//! refused (SPEC §11, [`refusals`]). Every change is one small transaction
//! written before shieldd acknowledges it, so a change survives `kill -9`
//! (`synchronous = NORMAL`: the WAL is written, not fsynced, per commit; a
//! power cut may lose the last commits, never the file's consistency).
//!
//! Times are wall-clock milliseconds since the Unix epoch: the kernel's
//! monotonic clock restarts at boot, so "expires at" is kept in a clock that
//! survives one and converted back to monotonic on load.
//!
//! State written by earlier versions (`bans.jsonl`, `lists.json`) is
//! imported by [`Store::import_legacy`] and the files renamed; see
//! [`legacy`].

mod legacy;
mod refusals;
mod snapshot;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::kernel::List;
pub use legacy::Imported;
pub use refusals::{RefusalQuery, RefusalRecord};

const DB_FILE: &str = "shield.db";
const LOCK_FILE: &str = "shieldd.lock";
/// The line the lock file carries, beside the pid, while the store is
/// behind the kernel (a write failed): it survives `kill -9`, so the next
/// start knows that bans found only in the pinned maps may be local ones
/// the store never got.
const BEHIND_LINE: &str = "store-behind";
const SCHEMA: &str = include_str!("schema.sql");
/// `PRAGMA user_version` of the schema above.
const VERSION: i64 = 1;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {what}: {source}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path} is not a SIP Shield ban store ({why}); shieldd does not touch it: move it away \
         (shieldd then starts with an empty store) or restore it from a backup, then start shieldd again"
    )]
    NotOurs { path: PathBuf, why: String },
    #[error(
        "{path} was written by a newer shieldd (store version {found}, this one knows {VERSION}): \
         run that version, or move the file away to start with an empty store"
    )]
    Newer { path: PathBuf, found: i64 },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(
        "{path} has unreadable lines, and keeping a copy of it at {copy} failed: {source}. \
         shieldd will not import it without them: free space in the state directory, or \
         repair or remove those lines, then start shieldd again"
    )]
    BadCopy {
        path: PathBuf,
        copy: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state_dir {path} is in use by another shieldd{holder}")]
    Locked { path: PathBuf, holder: String },
    #[error(
        "{path} is a symbolic link (to {target}); shieldd does not follow links in its state_dir: \
         put the file itself there, or move the link away (shieldd then starts with an empty store)"
    )]
    Symlink { path: PathBuf, target: String },
    #[error(
        "{path} is not a regular file ({kind}); shieldd does not open it: move it away \
         (shieldd then starts with an empty store)"
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "{path} was {how} under the running shieldd and its content could not be copied ({why}): \
         a new, empty store is in its place; shieldd writes the bans and lists in force into it"
    )]
    Rewritten {
        path: PathBuf,
        how: &'static str,
        why: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Wall-clock now, in ms since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One ban in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    pub net: IpNet,
    /// `manual`, `escalation`, `kernel` (found in the map without a record)
    /// or `jail:<name>`.
    pub origin: String,
    pub reason: String,
    pub created_ms: u64,
    /// `None`: until unbanned.
    pub expires_ms: Option<u64>,
}

/// How often a source has been auto-banned, for `[bans] increment`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffenceRecord {
    pub net: IpNet,
    pub count: u32,
    /// When its latest ban ended (or ends).
    pub until_ms: u64,
}

/// Which kernel ban maps the store is in step with: the kernel's ids of the
/// pinned ban maps. A map id is not handed out again while the map lives,
/// so maps removed and created anew (a detach, a reboot, a failed start)
/// carry other ids and are not mistaken for the ones the store describes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapsMark {
    pub pin_path: PathBuf,
    /// Map name → kernel map id.
    pub ids: BTreeMap<String, u32>,
}

/// Allow/deny entries added with shieldctl.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliLists {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

/// What the store holds, as read at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub bans: Vec<BanRecord>,
    pub offences: Vec<OffenceRecord>,
    pub lists: CliLists,
    /// The maps the store is in step with.
    pub maps: Option<MapsMark>,
    /// Where the bans and offences came from.
    pub read_from: ReadFrom,
}

/// How [`Store::load`] read the bans and offences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// Row by row from the database.
    #[default]
    Rows,
    /// From `bans.snap`, with the rows of `changed` networks changed since.
    Snapshot { changed: usize },
}

/// A ban or unban, as the history records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Ban,
    /// An active ban banned again: extended to the later expiry, counted.
    Reban,
    Unban,
    /// Lifted by the sweeper when its time was up.
    Expire,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Ban => "ban",
            Action::Reban => "reban",
            Action::Unban => "unban",
            Action::Expire => "expire",
        }
    }

    fn parse(s: &str) -> Action {
        match s {
            "ban" => Action::Ban,
            "reban" => Action::Reban,
            "expire" => Action::Expire,
            _ => Action::Unban,
        }
    }
}

/// One ban being recorded: the ban now in force, and what the history
/// keeps of the request (which may have been outlasted by the ban in force).
#[derive(Clone, Copy, Debug)]
pub struct BanEvent<'a> {
    pub record: &'a BanRecord,
    /// The request's origin (in the store's form) and reason.
    pub origin: &'a str,
    pub reason: &'a str,
    /// The jail's log line, the offender report, ... (may be empty).
    pub detail: &'a str,
    /// Who asked: `uid 0`, `jail kamailio-auth`, `kernel`.
    pub who: &'a str,
    pub action: Action,
}

/// One row of a source's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at_ms: u64,
    pub net: String,
    pub action: Action,
    pub origin: String,
    pub reason: String,
    pub detail: String,
    pub who: String,
    pub expires_ms: Option<u64>,
}

/// What the store says about one source: its bans' detail and counts, and
/// its history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceRecord {
    /// Active bans covering the source: (net, detail, times banned).
    pub bans: Vec<(String, String, u32)>,
    /// How often the source itself (the first net asked about) was banned
    /// within the history kept.
    pub times: u32,
    pub history: Vec<HistoryEntry>,
}

/// The state directory's ban store, locked for this process.
pub struct Store {
    dir: PathBuf,
    db: PathBuf,
    conn: Connection,
    /// (device, inode) of the database file open; `None` after a rewrite
    /// that failed half-way (the next write opens the path again).
    file_id: Option<(u64, u64)>,
    /// The last time the file was found deleted or replaced, and how
    /// often that happened.
    notice: Option<String>,
    rewrites: u64,
    _checkpointer: Option<Checkpointer>,
    lock: File,
    /// The lock file says the store is behind (see [`BEHIND_LINE`]).
    behind: bool,
    /// It said so when this process took it over.
    was_behind: bool,
    /// Keeping `bans.snap` up (see [`snapshot`]).
    snap: snapshot::Upkeep,
}

/// How the file at the store's path differs from the one open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gone {
    Deleted,
    Replaced,
}

impl Gone {
    fn as_str(self) -> &'static str {
        match self {
            Gone::Deleted => "deleted",
            Gone::Replaced => "replaced",
        }
    }
}

/// How often the write-ahead log is copied into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// With the checkpointer running, a commit checkpoints by itself only once
/// the log is this many pages long (a stalled checkpointer; 64 MiB).
const WAL_BACKSTOP_PAGES: u32 = 16_384;

/// Copies the write-ahead log into the database on its own connection and
/// thread: left to the committing connection, every thousandth page a ban
/// would wait for that copy and its fsync (tens of ms). A passive
/// checkpoint never blocks the writer.
struct Checkpointer {
    stop: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(db: &Path) -> Option<Checkpointer> {
        let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(db, flags).ok()?;
        conn.busy_timeout(Duration::from_secs(1)).ok()?;
        let stop = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                let (lock, cv) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*stopped {
                    stopped = cv
                        .wait_timeout(stopped, CHECKPOINT_EVERY)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!("store checkpoint: {e}");
                    }
                }
            })
            .ok()?;
        Some(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("db", &self.db).finish()
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Creates the directory if needed (mode 0700: bans and allowlists are
    /// nobody else's business), takes its lock and opens (or creates) the
    /// database. A file that is not our database is refused, never
    /// overwritten.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let (lock, was_behind) = take_lock(dir)?;
        let db = dir.join(DB_FILE);
        let mut store = Store {
            dir: dir.to_path_buf(),
            conn: Connection::open_in_memory().map_err(sql_err(&db, "opening"))?,
            db,
            file_id: None,
            notice: None,
            rewrites: 0,
            _checkpointer: None,
            lock,
            behind: was_behind,
            was_behind,
            snap: snapshot::Upkeep::new(),
        };
        store.reopen()?;
        Ok(store)
    }

    /// Opens the database at the path (creating it if missing), with its
    /// checkpointer, and notes which file it is.
    fn reopen(&mut self) -> Result<(), StoreError> {
        let conn = open_db(&self.db)?;
        let id = regular_file(&self.db)?.ok_or_else(|| StoreError::Io {
            path: self.db.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "missing right after it was opened"),
        })?;
        let checkpointer = Checkpointer::start(&self.db);
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)
                .map_err(self.sql("configuring"))?;
        }
        self.conn = conn;
        self._checkpointer = checkpointer;
        self.file_id = Some(id);
        Ok(())
    }

    /// Before every write: the file at the path must be the one open. One
    /// deleted or replaced under the daemon is noticed here (else writes
    /// would go on into a file nobody will ever read) and rewritten.
    fn ensure_file(&mut self) -> Result<(), StoreError> {
        let Some(id) = self.file_id else {
            // A rewrite failed half-way: the caller's resync fills it in.
            return self.reopen();
        };
        let gone = match fs::symlink_metadata(&self.db) {
            Ok(m) if (m.dev(), m.ino()) == id => return Ok(()),
            Ok(_) => Gone::Replaced,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Gone::Deleted,
            Err(e) => return Err(io_err(&self.db)(e)),
        };
        self.rewrite(gone)
    }

    /// Checks that the store's file is still the one open (see
    /// [`Store::ensure_file`]); run periodically, so a deletion is noticed
    /// even while nothing is written.
    pub fn check(&mut self) -> Result<(), StoreError> {
        self.ensure_file()?;
        self.snapshot_upkeep();
        Ok(())
    }

    /// Puts what the open database holds (history included: a deleted
    /// file stays readable while open) into a new file at the path and
    /// goes on with that. A file put in its place is moved aside, never
    /// written into.
    fn rewrite(&mut self, gone: Gone) -> Result<(), StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        self.relock_if_gone()?;
        let stamp = now_ms();
        let copy = self.dir.join(format!("{DB_FILE}.rewrite-{stamp}"));
        let copied = self.copy_into(&copy);
        let aside = match gone {
            Gone::Replaced => {
                let aside = self.dir.join(format!("{DB_FILE}.replaced-{stamp}"));
                fs::rename(&self.db, &aside).map_err(io_err(&self.db))?;
                Some(aside)
            }
            Gone::Deleted => None,
        };
        self.close()?;
        // The old file's log and index must never be read as the new
        // file's: a stale log would be replayed into it.
        for companion in companions(&self.db) {
            match fs::remove_file(&companion) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&companion)(e)),
                _ => {}
            }
        }
        if copied.is_ok() {
            fs::rename(&copy, &self.db).map_err(io_err(&self.db))?;
        }
        self.reopen()?;
        self.rewrites += 1;
        let moved = aside.map_or(String::new(), |a| format!(" (that file is kept as {})", a.display()));
        let kept = match &copied {
            Ok(()) => "rewritten from the open copy, history included".to_string(),
            Err(e) => format!("started anew, its content could not be copied: {e}"),
        };
        let notice = format!(
            "{} was {} under the running shieldd{moved}: {kept}",
            self.db.display(),
            gone.as_str()
        );
        tracing::warn!(db = %self.db.display(), rewrites = self.rewrites, "{notice}");
        self.notice = Some(notice);
        copied.map_err(|e| StoreError::Rewritten {
            path: self.db.clone(),
            how: gone.as_str(),
            why: e.to_string(),
        })
    }

    /// The whole state_dir was removed, its lock file with it: taken again,
    /// else a second shieldd could start on the directory.
    fn relock_if_gone(&mut self) -> Result<(), StoreError> {
        if fs::symlink_metadata(self.dir.join(LOCK_FILE)).is_ok() {
            return Ok(());
        }
        let (lock, _) = take_lock(&self.dir)?;
        self.lock = lock;
        let behind = std::mem::replace(&mut self.behind, false);
        self.mark_behind(behind);
        Ok(())
    }

    /// A complete copy of the open database at `to` (`VACUUM INTO`).
    fn copy_into(&self, to: &Path) -> Result<(), StoreError> {
        match fs::remove_file(to) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(to)(e)),
            _ => {}
        }
        let r = self
            .conn
            .execute("VACUUM INTO ?1", [to.to_string_lossy().into_owned()])
            .map(drop)
            .map_err(sql_err(to, "copying the store"));
        if r.is_err() {
            let _ = fs::remove_file(to);
        }
        r
    }

    /// Closes the database (the checkpointer's connection first, so that
    /// this one is the last and cleans up after itself).
    fn close(&mut self) -> Result<(), StoreError> {
        self._checkpointer = None;
        let none = Connection::open_in_memory().map_err(self.sql("closing"))?;
        let old = std::mem::replace(&mut self.conn, none);
        self.file_id = None;
        if let Err((_, e)) = old.close() {
            tracing::debug!(db = %self.db.display(), "closing the old store: {e}");
        }
        Ok(())
    }

    /// Why the store was last rewritten (deleted or replaced under the
    /// daemon), if it was, with how many times that happened.
    pub fn notice(&self) -> Option<String> {
        let n = self.notice.as_ref()?;
        Some(format!("{n} ({} time(s) since start)", self.rewrites))
    }

    /// How often the store was rewritten since start.
    pub fn rewrites(&self) -> u64 {
        self.rewrites
    }

    /// Whether the previous shieldd left the store behind the kernel.
    pub fn was_behind(&self) -> bool {
        self.was_behind
    }

    /// Records in the lock file whether the store is behind the kernel.
    /// Best effort: the lock file's one block is rewritten in place, which
    /// works on a full disk and while the database is locked.
    pub fn mark_behind(&mut self, behind: bool) {
        if self.behind == behind {
            return;
        }
        let text = lock_text(behind);
        let r = self
            .lock
            .write_all_at(text.as_bytes(), 0)
            .and_then(|()| self.lock.set_len(text.len() as u64));
        match r {
            Ok(()) => self.behind = behind,
            Err(e) => tracing::warn!(
                file = %self.dir.join(LOCK_FILE).display(),
                "cannot record that the store is behind the kernel: {e}"
            ),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `state_dir/shield.db`, for messages.
    pub fn path(&self) -> &Path {
        &self.db
    }

    fn sql(&self, what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        sql_err(&self.db, what)
    }

    /// Everything needed at start. The bans and offences come from the
    /// snapshot where it is good (see [`snapshot`]), else from the rows;
    /// all in one read transaction, so they are one view of the store.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.sql("reading bans"))?;
        let mut out = Loaded::default();
        match self.load_snapshot(&tx) {
            Ok(Some((bans, offences, changed))) => {
                out.bans = bans;
                out.offences = offences;
                out.read_from = ReadFrom::Snapshot { changed };
            }
            Ok(None) => {}
            Err(why) => tracing::warn!(
                file = %snapshot::path(&self.dir).display(),
                db = %self.db.display(),
                "ban snapshot not used ({why}): reading the ban rows instead"
            ),
        }
        if out.read_from == ReadFrom::Rows {
            out.bans = read_bans(&tx, &self.db, BAN_SELECT, [])?;
            out.offences = read_offences(&tx, &self.db, OFFENCE_SELECT, [])?;
        }
        self.snap.note_load(&out);
        out.lists = self.lists()?;
        out.maps = self.maps_mark()?;
        drop(tx);
        Ok(out)
    }

    fn lists(&self) -> Result<CliLists, StoreError> {
        let mut out = CliLists::default();
        let mut q = self
            .conn
            .prepare("SELECT list, net FROM list_entries ORDER BY list, net")
            .map_err(self.sql("reading list entries"))?;
        let mut rows = q.query([]).map_err(self.sql("reading list entries"))?;
        while let Some(r) = rows.next().map_err(self.sql("reading list entries"))? {
            let list: String = r.get(0).map_err(self.sql("reading list entries"))?;
            let net: String = r.get(1).map_err(self.sql("reading list entries"))?;
            let net: IpNet = net.parse().map_err(|_| StoreError::Format {
                path: self.db.clone(),
                message: format!("list_entries.net {net:?} is not a network: repair or delete that row"),
            })?;
            match list.as_str() {
                "allow" => out.allow.push(net),
                _ => out.deny.push(net),
            }
        }
        Ok(out)
    }

    fn maps_mark(&self) -> Result<Option<MapsMark>, StoreError> {
        let v: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'maps'", [], |r| r.get(0))
            .optional()
            .map_err(self.sql("reading meta"))?;
        // A mark that cannot be read names no maps: the store then wins.
        Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Records which kernel maps the store is now in step with (`None`: no
    /// maps, e.g. after an import that the maps do not hold yet).
    pub fn set_maps_mark(&mut self, mark: Option<&MapsMark>) -> Result<(), StoreError> {
        self.ensure_file()?;
        match mark {
            Some(m) => self.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('maps', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [serde_json::to_string(m).expect("a map mark serializes")],
            ),
            None => self.conn.execute("DELETE FROM meta WHERE key = 'maps'", []),
        }
        .map(drop)
        .map_err(self.sql("writing meta"))
    }

    /// Records a ban (a new one, or an active one banned again) and its
    /// history row. Returns how often the network has now been banned.
    pub fn ban(&mut self, ev: &BanEvent<'_>) -> Result<u32, StoreError> {
        self.ensure_file()?;
        let now = ms(now_ms());
        let fail = sql_err(&self.db, "recording a ban");
        let tx = self.conn.transaction().map_err(&fail)?;
        let times = upsert_ban(&tx, ev, now).map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        Ok(times)
    }

    /// Records that `nets` were lifted (by `who`, or by expiry).
    pub fn unban(&mut self, nets: &[IpNet], action: Action, who: &str) -> Result<(), StoreError> {
        self.ensure_file()?;
        let now = ms(now_ms());
        let fail = sql_err(&self.db, "recording an unban");
        let tx = self.conn.transaction().map_err(&fail)?;
        {
            let mut del = tx
                .prepare_cached("DELETE FROM bans WHERE net = ?1 RETURNING origin, reason, detail")
                .map_err(&fail)?;
            let mut hist = tx.prepare_cached(HISTORY_INSERT).map_err(&fail)?;
            for net in nets {
                let net = net.to_string();
                let old: Option<(String, String, String)> = del
                    .query_row([&net], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
                    .map_err(&fail)?;
                let (origin, reason, detail) = old.unwrap_or_default();
                hist.execute(params![
                    now,
                    net,
                    action.as_str(),
                    origin,
                    reason,
                    detail,
                    who,
                    Option::<i64>::None
                ])
                .map_err(&fail)?;
            }
        }
        tx.commit().map_err(&fail)
    }

    /// Records a source's automatic-ban count.
    pub fn offence(&mut self, rec: &OffenceRecord) -> Result<(), StoreError> {
        self.ensure_file()?;
        self.conn
            .prepare_cached(OFFENCE_UPSERT)
            .and_then(|mut q| q.execute(params![rec.net.to_string(), rec.count, ms(rec.until_ms)]))
            .map(drop)
            .map_err(self.sql("recording an offence"))
    }

    /// Records a shieldctl list change.
    pub fn list_change(
        &mut self,
        list: List,
        add: bool,
        net: IpNet,
        who: &str,
    ) -> Result<(), StoreError> {
        self.ensure_file()?;
        let now = ms(now_ms());
        let (name, net) = (list_name(list), net.to_string());
        let fail = sql_err(&self.db, "recording a list change");
        let tx = self.conn.transaction().map_err(&fail)?;
        if add {
            tx.execute(
                "INSERT OR IGNORE INTO list_entries (list, net, added_ms, who) VALUES (?1, ?2, ?3, ?4)",
                params![name, net, now, who],
            )
        } else {
            tx.execute(
                "DELETE FROM list_entries WHERE list = ?1 AND net = ?2",
                params![name, net],
            )
        }
        .map_err(&fail)?;
        tx.execute(
            "INSERT INTO list_changes (at_ms, list, action, net, who) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now, name, if add { "add" } else { "del" }, net, who],
        )
        .map_err(&fail)?;
        tx.commit().map_err(&fail)
    }

    /// Detail, counts and history of one source: the rows of `nets` (the
    /// source itself and the banned networks that cover it), newest
    /// history first, at most `limit` history rows.
    pub fn source(&self, nets: &[IpNet], limit: usize) -> Result<SourceRecord, StoreError> {
        let mut out = SourceRecord::default();
        let mut ban = self
            .conn
            .prepare_cached("SELECT detail, times FROM bans WHERE net = ?1")
            .map_err(self.sql("reading a ban"))?;
        let mut hist = self
            .conn
            .prepare_cached(
                "SELECT at_ms, net, action, origin, reason, detail, who, expires_ms
                 FROM history WHERE net = ?1 ORDER BY at_ms DESC, id DESC LIMIT ?2",
            )
            .map_err(self.sql("reading history"))?;
        if let Some(first) = nets.first() {
            out.times = self
                .conn
                .prepare_cached(TIMES_BANNED)
                .and_then(|mut q| q.query_row([first.to_string()], |r| r.get(0)))
                .map_err(self.sql("reading history"))?;
        }
        for net in nets {
            let key = net.to_string();
            if let Some((detail, times)) = ban
                .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(self.sql("reading a ban"))?
            {
                out.bans.push((key.clone(), detail, times));
            }
            let rows = hist
                .query_map(params![key, limit as i64], |r| {
                    Ok(HistoryEntry {
                        at_ms: unms(r.get(0)?),
                        net: r.get(1)?,
                        action: Action::parse(&r.get::<_, String>(2)?),
                        origin: r.get(3)?,
                        reason: r.get(4)?,
                        detail: r.get(5)?,
                        who: r.get(6)?,
                        expires_ms: r.get::<_, Option<i64>>(7)?.map(unms),
                    })
                })
                .map_err(self.sql("reading history"))?;
            for row in rows {
                out.history.push(row.map_err(self.sql("reading history"))?);
            }
        }
        out.history
            .sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(a.net.cmp(&b.net)));
        out.history.truncate(limit);
        Ok(out)
    }

    /// Drops history older than `keep` and offences forgotten before
    /// `offences_before_ms`. Returns the history rows removed.
    pub fn prune(&mut self, keep: Duration, offences_before_ms: u64) -> Result<usize, StoreError> {
        self.ensure_file()?;
        let cutoff = ms(now_ms().saturating_sub(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX)));
        let n = self
            .conn
            .execute("DELETE FROM history WHERE at_ms < ?1", [cutoff])
            .map_err(self.sql("pruning history"))?;
        self.conn
            .execute("DELETE FROM list_changes WHERE at_ms < ?1", [cutoff])
            .map_err(self.sql("pruning history"))?;
        self.conn
            .execute(
                "DELETE FROM offences WHERE until_ms < ?1",
                [ms(offences_before_ms)],
            )
            .map_err(self.sql("pruning offences"))?;
        Ok(n)
    }

    /// Makes the active tables equal to the daemon's view, after writes
    /// that failed (a full disk): rows kept keep their detail and count.
    pub fn resync(
        &mut self,
        bans: &[BanRecord],
        offences: &[OffenceRecord],
        lists: &CliLists,
    ) -> Result<(), StoreError> {
        self.ensure_file()?;
        let fail = sql_err(&self.db, "rewriting the store");
        let now = ms(now_ms());
        let tx = self.conn.transaction().map_err(&fail)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS keep (net TEXT PRIMARY KEY) WITHOUT ROWID; DELETE FROM keep;",
        )
        .map_err(&fail)?;
        {
            let mut keep = tx
                .prepare("INSERT OR IGNORE INTO keep (net) VALUES (?1)")
                .map_err(&fail)?;
            let mut put = tx.prepare(BAN_RESYNC).map_err(&fail)?;
            for b in bans {
                let net = b.net.to_string();
                keep.execute([&net]).map_err(&fail)?;
                put.execute(params![
                    net,
                    b.origin,
                    b.reason,
                    ms(b.created_ms),
                    b.expires_ms.map(ms)
                ])
                .map_err(&fail)?;
            }
        }
        tx.execute("DELETE FROM bans WHERE net NOT IN (SELECT net FROM keep)", [])
            .map_err(&fail)?;
        tx.execute("DELETE FROM offences", []).map_err(&fail)?;
        tx.execute("DELETE FROM list_entries", []).map_err(&fail)?;
        {
            let mut off = tx
                .prepare("INSERT INTO offences (net, count, until_ms) VALUES (?1, ?2, ?3)")
                .map_err(&fail)?;
            for o in offences {
                off.execute(params![o.net.to_string(), o.count, ms(o.until_ms)])
                    .map_err(&fail)?;
            }
            let mut ent = tx
                .prepare(
                    "INSERT OR IGNORE INTO list_entries (list, net, added_ms, who) VALUES (?1, ?2, ?3, 'resync')",
                )
                .map_err(&fail)?;
            for (list, nets) in [(List::Allow, &lists.allow), (List::Deny, &lists.deny)] {
                for n in nets {
                    ent.execute(params![list_name(list), n.to_string(), now])
                        .map_err(&fail)?;
                }
            }
        }
        tx.commit().map_err(&fail)
    }

    /// Adds many bans in one transaction (a migration, a bulk load): each
    /// with a history row naming `who`. Existing bans of the same network
    /// are kept as they are.
    pub fn import(&mut self, bans: &[BanRecord], who: &str) -> Result<usize, StoreError> {
        self.ensure_file()?;
        let fail = sql_err(&self.db, "importing bans");
        let now = ms(now_ms());
        let tx = self.conn.transaction().map_err(&fail)?;
        let mut added = 0;
        {
            let mut put = tx
                .prepare(
                    "INSERT OR IGNORE INTO bans (net, origin, reason, who, created_ms, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(&fail)?;
            let mut hist = tx.prepare(HISTORY_INSERT).map_err(&fail)?;
            for b in bans {
                let net = b.net.to_string();
                let exp = b.expires_ms.map(ms);
                if put
                    .execute(params![net, b.origin, b.reason, who, ms(b.created_ms), exp])
                    .map_err(&fail)?
                    == 1
                {
                    added += 1;
                    hist.execute(params![now, net, "ban", b.origin, b.reason, "", who, exp])
                        .map_err(&fail)?;
                }
            }
        }
        tx.commit().map_err(&fail)?;
        drop(fail);
        // A bulk load is followed by a start: the snapshot makes it read
        // fixed-size records instead of the rows (see [`snapshot`]).
        if added >= snapshot::MIN_BANS {
            if let Err(e) = self.refresh_snapshot() {
                tracing::warn!("writing the ban snapshot after the import failed (the rows are read instead): {e}");
            }
        }
        Ok(added)
    }

    /// Imports `bans.jsonl` and `lists.json` left by an earlier shieldd (or
    /// put back by an operator), then renames them so they are imported
    /// once. `None`: there was nothing to import.
    pub fn import_legacy(&mut self) -> Result<Option<Imported>, StoreError> {
        legacy::import(self)
    }

    /// Whether the store holds no bans and names no maps (a new store).
    fn load_is_empty(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM bans) AND NOT EXISTS (SELECT 1 FROM meta WHERE key = 'maps')",
                [],
                |r| r.get(0),
            )
            .map_err(self.sql("reading bans"))
    }

    /// Many offence records in one transaction (a migration).
    fn import_offences(&mut self, offences: &[OffenceRecord]) -> Result<(), StoreError> {
        self.ensure_file()?;
        let fail = sql_err(&self.db, "importing offences");
        let tx = self.conn.transaction().map_err(&fail)?;
        {
            let mut put = tx.prepare(OFFENCE_UPSERT).map_err(&fail)?;
            for o in offences {
                put.execute(params![o.net.to_string(), o.count, ms(o.until_ms)])
                    .map_err(&fail)?;
            }
        }
        tx.commit().map_err(&fail)
    }
}

const TIMES_BANNED: &str =
    "SELECT count(*) FROM history WHERE net = ?1 AND action IN ('ban', 'reban')";

const OFFENCE_UPSERT: &str = "INSERT INTO offences (net, count, until_ms) VALUES (?1, ?2, ?3)
     ON CONFLICT (net) DO UPDATE SET count = excluded.count, until_ms = excluded.until_ms";

const HISTORY_INSERT: &str = "INSERT INTO history (at_ms, net, action, origin, reason, detail, who, expires_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const BAN_SELECT: &str = "SELECT net, origin, reason, created_ms, expires_ms FROM bans";
const OFFENCE_SELECT: &str = "SELECT net, count, until_ms FROM offences";

/// A network as the store writes it; anything else is an error naming the
/// column, for the operator to repair.
fn parse_net(db: &Path, column: &str, text: &str) -> Result<IpNet, StoreError> {
    text.parse().map_err(|_| StoreError::Format {
        path: db.to_path_buf(),
        message: format!("{column} {text:?} is not a network: repair or delete that row"),
    })
}

/// The ban rows `sql` selects (the columns of [`BAN_SELECT`]).
fn read_bans(conn: &Connection, db: &Path, sql: &str, p: impl rusqlite::Params) -> Result<Vec<BanRecord>, StoreError> {
    let fail = sql_err(db, "reading bans");
    let mut q = conn.prepare_cached(sql).map_err(&fail)?;
    let mut rows = q.query(p).map_err(&fail)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(&fail)? {
        let net: String = r.get(0).map_err(&fail)?;
        out.push(BanRecord {
            net: parse_net(db, "bans.net", &net)?,
            origin: r.get(1).map_err(&fail)?,
            reason: r.get(2).map_err(&fail)?,
            created_ms: unms(r.get(3).map_err(&fail)?),
            expires_ms: r.get::<_, Option<i64>>(4).map_err(&fail)?.map(unms),
        });
    }
    Ok(out)
}

/// The offence rows `sql` selects (the columns of [`OFFENCE_SELECT`]).
fn read_offences(
    conn: &Connection,
    db: &Path,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<OffenceRecord>, StoreError> {
    let fail = sql_err(db, "reading offences");
    let mut q = conn.prepare_cached(sql).map_err(&fail)?;
    let mut rows = q.query(p).map_err(&fail)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(&fail)? {
        let net: String = r.get(0).map_err(&fail)?;
        out.push(OffenceRecord {
            net: parse_net(db, "offences.net", &net)?,
            count: r.get(1).map_err(&fail)?,
            until_ms: unms(r.get(2).map_err(&fail)?),
        });
    }
    Ok(out)
}

const BAN_RESYNC: &str = "INSERT INTO bans (net, origin, reason, created_ms, expires_ms)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (net) DO UPDATE SET origin = excluded.origin, reason = excluded.reason,
         created_ms = excluded.created_ms, expires_ms = excluded.expires_ms";

fn sql_err<'a>(path: &'a Path, what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn list_name(list: List) -> &'static str {
    match list {
        List::Allow => "allow",
        List::Deny => "deny",
    }
}

/// Inserts or extends a ban and writes its history row; returns the count.
fn upsert_ban(tx: &rusqlite::Transaction<'_>, ev: &BanEvent<'_>, now: i64) -> rusqlite::Result<u32> {
    let r = ev.record;
    let net = r.net.to_string();
    let exp = r.expires_ms.map(ms);
    // The count: earlier bans in the history (as long as it is kept), and
    // this one.
    let earlier: u32 = tx
        .prepare_cached(TIMES_BANNED)?
        .query_row([&net], |row| row.get(0))?;
    let times = earlier.saturating_add(1);
    tx.prepare_cached(
        "INSERT INTO bans (net, origin, reason, detail, who, created_ms, expires_ms, times)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (net) DO UPDATE SET origin = excluded.origin, reason = excluded.reason,
             detail = excluded.detail, who = excluded.who, created_ms = excluded.created_ms,
             expires_ms = excluded.expires_ms, times = excluded.times",
    )?
    .execute(params![
        net,
        r.origin,
        r.reason,
        ev.detail,
        ev.who,
        ms(r.created_ms),
        exp,
        times
    ])?;
    tx.prepare_cached(HISTORY_INSERT)?.execute(params![
        now,
        net,
        ev.action.as_str(),
        ev.origin,
        ev.reason,
        ev.detail,
        ev.who,
        exp
    ])?;
    Ok(times)
}

/// The lock file's content: our pid, and the [`BEHIND_LINE`] if `behind`.
fn lock_text(behind: bool) -> String {
    let pid = std::process::id();
    if behind {
        format!("{pid}\n{BEHIND_LINE}\n")
    } else {
        format!("{pid}\n")
    }
}

/// Takes `state_dir/shieldd.lock` (`flock`, by `File::try_lock`) and
/// writes our pid into it.
/// Also returns whether the previous holder left the store behind (its
/// mark is kept until a save succeeds).
fn take_lock(dir: &Path) -> Result<(File, bool), StoreError> {
    let lock_path = dir.join(LOCK_FILE);
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let text = fs::read_to_string(&lock_path).unwrap_or_default();
            let holder = match text.lines().next().unwrap_or("").trim() {
                "" => String::new(),
                p => format!(" (pid {p})"),
            };
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
                holder,
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
    }
    let mut before = String::new();
    // Unreadable: no mark (the store is then trusted as before).
    let _ = io::Read::read_to_string(&mut lock, &mut before);
    let behind = before.lines().any(|l| l.trim() == BEHIND_LINE);
    lock.set_len(0).map_err(io_err(&lock_path))?;
    lock.write_all_at(lock_text(behind).as_bytes(), 0)
        .map_err(io_err(&lock_path))?;
    Ok((lock, behind))
}

/// The database's log and shared-memory index beside it.
fn companions(db: &Path) -> [PathBuf; 2] {
    let name = |sfx: &str| {
        let mut s = db.as_os_str().to_owned();
        s.push(sfx);
        PathBuf::from(s)
    };
    [name("-wal"), name("-shm")]
}

/// What a file that is not a regular one is, for messages.
fn file_kind(t: fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// The (device, inode) of the regular file at `path`, `None` if there is
/// none; a symbolic link (dangling or not) or anything else is refused,
/// as the config's files are: SQLite would follow a link and create or
/// write the database wherever it points.
fn regular_file(path: &Path) -> Result<Option<(u64, u64)>, StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let t = meta.file_type();
    if t.is_symlink() {
        let target = fs::read_link(path).map_or_else(|e| format!("unreadable: {e}"), |t| t.display().to_string());
        return Err(StoreError::Symlink {
            path: path.to_path_buf(),
            target,
        });
    }
    if !t.is_file() {
        return Err(StoreError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(t),
        });
    }
    Ok(Some((meta.dev(), meta.ino())))
}

/// Opens the database, creating the schema in a new one; refuses files
/// that are not ours or are newer than this code.
fn open_db(path: &Path) -> Result<Connection, StoreError> {
    let sql = |what| sql_err(path, what);
    let not_ours = |e: rusqlite::Error| StoreError::NotOurs {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    regular_file(path)?;
    for companion in companions(path) {
        regular_file(&companion)?;
    }
    // NOFOLLOW too: a link made between the check and the open is refused.
    let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags).map_err(sql("opening"))?;
    // The first statement reads the header: a file that is not a database
    // fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(not_ours)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotOurs {
            path: path.to_path_buf(),
            why: format!("journal mode {mode} instead of wal"),
        });
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 2000;")
        .map_err(sql("configuring"))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql("reading the version"))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(sql("reading the schema"))?;
    match version {
        v if v > VERSION => {
            return Err(StoreError::Newer {
                path: path.to_path_buf(),
                found: v,
            })
        }
        0 if tables > 0 => {
            return Err(StoreError::NotOurs {
                path: path.to_path_buf(),
                why: "an SQLite database with other tables".into(),
            })
        }
        _ => {}
    }
    conn.execute_batch(&format!(
        "BEGIN; {SCHEMA} PRAGMA user_version = {VERSION}; COMMIT;"
    ))
    .map_err(sql("creating the schema"))?;
    Ok(conn)
}

#[cfg(test)]
mod tests;
