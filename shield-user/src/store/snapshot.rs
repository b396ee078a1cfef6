//! `state_dir/bans.snap`: the ban and offence rows packed into one file, so
//! that a start with a million bans reads fixed-size records instead of
//! stepping through a million SQLite rows and parsing each network's text.
//!
//! SQLite stays the truth. The snapshot is a copy of the rows as of one
//! point of the store's change log (`snapshot_changes`, filled by triggers
//! on `bans` and `offences`, so every write path is caught, an operator's
//! `sqlite3` included). A load takes the snapshot, drops the networks
//! changed after it and reads those from the rows. The snapshot counts only
//! if the token in the store's `meta` names it: a file from another store,
//! one half written, or one whose change log was not kept, is never used.
//! A file that fails its checks is reported and the rows are read instead.
//!
//! Layout (little-endian): a 48-byte header (magic, token, seq, counts,
//! CRC-32 of the body, body length), the distinct origin and reason texts
//! (u32 length + UTF-8), then 48-byte ban and 32-byte offence records.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{
    read_bans, read_offences, sql_err, BanRecord, Loaded, OffenceRecord, ReadFrom, Store, StoreError,
    BAN_SELECT, OFFENCE_SELECT,
};

pub(super) const SNAP_FILE: &str = "bans.snap";
const MAGIC: &[u8; 8] = b"SIPSNAP\x01";
const HEADER: usize = 48;
const BAN_BYTES: usize = 48;
const OFFENCE_BYTES: usize = 32;
/// `expires_ms` of a ban that does not end.
const NEVER: u64 = u64::MAX;

/// A decoded snapshot.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    pub token: u64,
    /// The last change-log entry it includes.
    pub seq: i64,
    pub bans: Vec<BanRecord>,
    pub offences: Vec<OffenceRecord>,
}

/// The 16 address bytes, family and prefix of a network.
fn put_net(out: &mut Vec<u8>, net: &IpNet) {
    let (addr, family) = match net.addr() {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, 4u8)
        }
        IpAddr::V6(a) => (a.octets(), 6u8),
    };
    out.extend_from_slice(&addr);
    out.extend_from_slice(&[family, net.prefix_len(), 0, 0]);
}

/// The network of a record's first 20 bytes; hostile bytes are an error.
fn get_net(b: &[u8]) -> Result<IpNet, String> {
    let addr: [u8; 16] = b[..16].try_into().expect("16 bytes");
    let (family, prefix) = (b[16], b[17]);
    let net = match family {
        4 => {
            let a: [u8; 4] = addr[..4].try_into().expect("4 bytes");
            IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), prefix)
        }
        6 => IpNet::new(IpAddr::V6(Ipv6Addr::from(addr)), prefix),
        f => return Err(format!("address family {f}")),
    };
    net.map_err(|_| format!("prefix length {prefix}"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The distinct texts, each given a number in order of first use.
#[derive(Default)]
struct Texts<'a> {
    index: HashMap<&'a str, u32>,
    list: Vec<&'a str>,
}

impl<'a> Texts<'a> {
    fn id(&mut self, s: &'a str) -> u32 {
        *self.index.entry(s).or_insert_with(|| {
            self.list.push(s);
            (self.list.len() - 1) as u32
        })
    }
}

/// The snapshot's bytes.
pub(super) fn encode(token: u64, seq: i64, bans: &[BanRecord], offences: &[OffenceRecord]) -> Vec<u8> {
    let mut texts = Texts::default();
    let mut records = Vec::with_capacity(bans.len() * BAN_BYTES + offences.len() * OFFENCE_BYTES);
    for b in bans {
        put_net(&mut records, &b.net);
        records.extend_from_slice(&texts.id(&b.origin).to_le_bytes());
        records.extend_from_slice(&texts.id(&b.reason).to_le_bytes());
        records.extend_from_slice(&[0; 4]);
        records.extend_from_slice(&b.created_ms.to_le_bytes());
        records.extend_from_slice(&b.expires_ms.unwrap_or(NEVER).to_le_bytes());
    }
    for o in offences {
        put_net(&mut records, &o.net);
        records.extend_from_slice(&o.count.to_le_bytes());
        records.extend_from_slice(&o.until_ms.to_le_bytes());
    }
    let mut body = Vec::with_capacity(records.len() + texts.list.iter().map(|s| s.len() + 4).sum::<usize>());
    for s in &texts.list {
        body.extend_from_slice(&(s.len() as u32).to_le_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(&records);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(texts.list.len() as u32).to_le_bytes());
    out.extend_from_slice(&(bans.len() as u32).to_le_bytes());
    out.extend_from_slice(&(offences.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The texts at the start of `body`, and where the records begin.
fn decode_texts(body: &[u8], count: usize) -> Result<(Vec<String>, usize), String> {
    let mut texts = Vec::with_capacity(count.min(body.len() / 4));
    let mut at = 0;
    for i in 0..count {
        let len = body
            .get(at..at + 4)
            .map(|b| u32_at(b, 0) as usize)
            .ok_or_else(|| format!("text {i} is cut off"))?;
        let s = body
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| format!("text {i} is cut off"))?;
        let s = std::str::from_utf8(s).map_err(|_| format!("text {i} is not UTF-8"))?;
        texts.push(s.to_string());
        at += 4 + len;
    }
    Ok((texts, at))
}

/// Reads a snapshot back. Every check a hostile or truncated file could
/// fail is an error naming what is wrong, never a panic.
pub(super) fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("not a SIP Shield ban snapshot (bad magic)".into());
    }
    let (n_texts, n_bans, n_off) = (
        u32_at(bytes, 24) as usize,
        u32_at(bytes, 28) as usize,
        u32_at(bytes, 32) as usize,
    );
    let body = &bytes[HEADER..];
    if u64_at(bytes, 40) != body.len() as u64 {
        return Err(format!("{} body bytes, the header says {}", body.len(), u64_at(bytes, 40)));
    }
    if crc32fast::hash(body) != u32_at(bytes, 36) {
        return Err("checksum mismatch".into());
    }
    let (texts, at) = decode_texts(body, n_texts)?;
    let records = &body[at..];
    if records.len() != n_bans * BAN_BYTES + n_off * OFFENCE_BYTES {
        return Err(format!("{} record bytes for {n_bans} bans and {n_off} offences", records.len()));
    }
    let (ban_bytes, off_bytes) = records.split_at(n_bans * BAN_BYTES);
    let text = |i: u32| {
        texts
            .get(i as usize)
            .cloned()
            .ok_or_else(|| format!("text index {i} out of range"))
    };
    let mut bans = Vec::with_capacity(n_bans);
    for r in ban_bytes.as_chunks::<BAN_BYTES>().0 {
        let expires = u64_at(r, 40);
        bans.push(BanRecord {
            net: get_net(r)?,
            origin: text(u32_at(r, 20))?,
            reason: text(u32_at(r, 24))?,
            created_ms: u64_at(r, 32),
            expires_ms: (expires != NEVER).then_some(expires),
        });
    }
    let mut offences = Vec::with_capacity(n_off);
    for r in off_bytes.as_chunks::<OFFENCE_BYTES>().0 {
        offences.push(OffenceRecord {
            net: get_net(r)?,
            count: u32_at(r, 20),
            until_ms: u64_at(r, 24),
        });
    }
    Ok(Snapshot {
        token: u64_at(bytes, 8),
        seq: u64_at(bytes, 16) as i64,
        bans,
        offences,
    })
}

/// Drops the records of networks changed after the snapshot (their rows
/// are read instead).
pub(super) fn without(snap: &mut Snapshot, changed: &HashSet<IpNet>) {
    if changed.is_empty() {
        return;
    }
    snap.bans.retain(|b| !changed.contains(&b.net));
    snap.offences.retain(|o| !changed.contains(&o.net));
}

/// The snapshot's path in `dir`.
pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(SNAP_FILE)
}

/// The file's bytes; `None` if there is none. A symbolic link is not
/// followed (`O_NOFOLLOW` fails on it: an error, so the rows are read).
pub(super) fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::with_capacity(f.metadata().map(|m| m.len() as usize).unwrap_or(0));
    f.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Writes the file whole: a new file beside it, then renamed over it, so
/// a reader never sees half of one (and a crash leaves the old one, or a
/// leftover that the next write replaces).
pub(super) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let r = f.write_all(bytes).and_then(|()| f.sync_data());
    drop(f);
    match r.and_then(|()| fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Below this many bans the rows are read in a few milliseconds: no
/// snapshot is kept up by itself.
pub(super) const MIN_BANS: usize = 10_000;
/// Changes logged since the snapshot before a new one is taken: at least
/// this many, and at least an eighth of the bans.
const MIN_CHANGES: usize = 10_000;
/// Nothing is taken this soon after the store was opened: a start has the
/// CPUs busy with the verifier and the map writes.
const QUIET_AFTER_OPEN: Duration = Duration::from_secs(30);
/// After a failed attempt.
const RETRY_AFTER: Duration = Duration::from_secs(600);

/// When to take a new snapshot, and the thread taking one.
pub(super) struct Upkeep {
    /// Bans at the last load or snapshot.
    bans: Cell<usize>,
    /// The last load used a snapshot, or one was taken since.
    current: Cell<bool>,
    /// No new snapshot before this.
    not_before: Instant,
    job: Option<JoinHandle<Result<usize, StoreError>>>,
}

impl Upkeep {
    pub(super) fn new() -> Upkeep {
        Upkeep {
            bans: Cell::new(0),
            current: Cell::new(false),
            not_before: Instant::now() + QUIET_AFTER_OPEN,
            job: None,
        }
    }

    pub(super) fn note_load(&self, l: &Loaded) {
        self.bans.set(l.bans.len());
        self.current.set(matches!(l.read_from, ReadFrom::Snapshot { .. }));
    }

    /// The running job's outcome, once it has one.
    fn finish(&mut self, wait: bool) -> Option<Result<usize, StoreError>> {
        if !wait && !self.job.as_ref()?.is_finished() {
            return None;
        }
        let r = self.job.take()?.join().expect("a snapshot job does not panic");
        self.settle(&r);
        Some(r)
    }

    fn settle(&mut self, r: &Result<usize, StoreError>) {
        match r {
            Ok(n) => {
                self.bans.set(*n);
                self.current.set(true);
            }
            Err(_) => self.not_before = Instant::now() + RETRY_AFTER,
        }
    }
}

impl Drop for Upkeep {
    /// A snapshot being written is finished (at most one, about a second
    /// with a million bans) rather than left to a process on its way out.
    fn drop(&mut self) {
        let _ = self.finish(true);
    }
}

/// A token no earlier snapshot of this store had (not a secret: it only
/// tells snapshots apart).
fn new_token() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 40)) | 1
}

/// Takes a snapshot of the store at `db` on a connection of its own (so a
/// daemon's writes go on meanwhile): turns the change log on, reads the
/// rows and the log's position in one read transaction, writes the file,
/// then names it in `meta` and prunes the log up to that position.
/// Returns the bans written.
pub(super) fn take(dir: &Path, db: &Path) -> Result<usize, StoreError> {
    let fail = |what| sql_err(db, what);
    let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(db, flags).map_err(fail("opening"))?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(fail("configuring"))?;
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('snapshot', 'pending')",
        [],
    )
    .map_err(fail("writing meta"))?;
    let tx = conn.unchecked_transaction().map_err(fail("reading bans"))?;
    let seq: i64 = tx
        .query_row("SELECT coalesce(max(seq), 0) FROM snapshot_changes", [], |r| r.get(0))
        .map_err(fail("reading the change log"))?;
    let mut bans = read_bans(&tx, db, BAN_SELECT, [])?;
    let offences = read_offences(&tx, db, OFFENCE_SELECT, [])?;
    drop(tx);
    // In network order, the ban book's: a start then builds it, and
    // compares it with the kernel's maps, without sorting a million.
    bans.sort_unstable_by_key(|b| b.net);
    let token = new_token();
    let file = path(dir);
    write(&file, &encode(token, seq, &bans, &offences)).map_err(|source| StoreError::Io {
        path: file.clone(),
        source,
    })?;
    let tx = conn.unchecked_transaction().map_err(fail("naming the snapshot"))?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('snapshot', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [format!("{token:016x}")],
    )
    .map_err(fail("naming the snapshot"))?;
    tx.execute("DELETE FROM snapshot_changes WHERE seq <= ?1", [seq])
        .map_err(fail("pruning the change log"))?;
    tx.commit().map_err(fail("naming the snapshot"))?;
    Ok(bans.len())
}

/// What [`Store::load`] takes from a snapshot: bans, offences, and how
/// many networks were read from the rows because they changed after it.
type FromSnapshot = (Vec<BanRecord>, Vec<OffenceRecord>, usize);

impl Store {
    /// The bans and offences from the snapshot and the rows changed since;
    /// `None` if the store names no snapshot, or so many changes came after
    /// it that reading the rows is quicker; `Err` (why) if the one it names
    /// cannot be used. Run inside [`Store::load`]'s transaction.
    pub(super) fn load_snapshot(&self, conn: &Connection) -> Result<Option<FromSnapshot>, String> {
        let named: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'snapshot'", [], |r| r.get(0))
            .optional()
            .map_err(|e| format!("reading meta: {e}"))?;
        // 'pending': a first snapshot was being taken.
        let Some(token) = named.and_then(|t| u64::from_str_radix(&t, 16).ok()) else {
            return Ok(None);
        };
        let file = path(&self.dir);
        let bytes = read(&file)
            .map_err(|e| e.to_string())?
            .ok_or("the file is missing")?;
        let mut snap = decode(&bytes)?;
        if snap.token != token {
            return Err("it is not the snapshot the store names (an interrupted write, or another store's)".into());
        }
        let mut q = conn
            .prepare_cached("SELECT DISTINCT net FROM snapshot_changes WHERE seq > ?1")
            .map_err(|e| format!("reading the change log: {e}"))?;
        let texts: Vec<String> = q
            .query_map([snap.seq], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| format!("reading the change log: {e}"))?;
        // Point lookups beat one pass over the rows only while they are
        // few (a resync after failed writes logs every ban).
        if texts.len() > MIN_CHANGES.max(snap.bans.len() / 4) {
            return Ok(None);
        }
        let changed: HashSet<IpNet> = texts
            .iter()
            .map(|t| t.parse().map_err(|_| format!("the change log names {t:?}, not a network")))
            .collect::<Result<_, _>>()?;
        without(&mut snap, &changed);
        for t in &texts {
            let again = |e: StoreError| e.to_string();
            let where_net = format!("{BAN_SELECT} WHERE net = ?1");
            snap.bans.extend(read_bans(conn, &self.db, &where_net, [t]).map_err(again)?);
            let where_net = format!("{OFFENCE_SELECT} WHERE net = ?1");
            snap.offences.extend(read_offences(conn, &self.db, &where_net, [t]).map_err(again)?);
        }
        Ok(Some((snap.bans, snap.offences, changed.len())))
    }

    /// Takes a new snapshot now (after a bulk import; tests). Waits for one
    /// already being taken first.
    pub fn refresh_snapshot(&mut self) -> Result<usize, StoreError> {
        let _ = self.snap.finish(true);
        let r = take(&self.dir, &self.db);
        self.snap.settle(&r);
        r
    }

    /// Run with the periodic [`Store::check`]: collects a finished snapshot
    /// job, and starts one (on its own thread and connection) when the
    /// store has many bans and no snapshot, or many changes since it.
    pub(super) fn snapshot_upkeep(&mut self) {
        match self.snap.finish(false) {
            Some(Ok(n)) => tracing::info!(file = %path(&self.dir).display(), bans = n, "ban snapshot written"),
            Some(Err(e)) => tracing::warn!("writing the ban snapshot failed (the store is not affected; retried in {} s): {e}", RETRY_AFTER.as_secs()),
            None => {}
        }
        if self.snap.job.is_some() || Instant::now() < self.snap.not_before {
            return;
        }
        let bans = self.snap.bans.get();
        let due = if self.snap.current.get() {
            let logged: i64 = self
                .conn
                .query_row("SELECT count(*) FROM snapshot_changes", [], |r| r.get(0))
                .unwrap_or(0);
            logged as usize >= MIN_CHANGES.max(bans / 8)
        } else {
            bans >= MIN_BANS
        };
        if !due {
            return;
        }
        let (dir, db) = (self.dir.clone(), self.db.clone());
        self.snap.job = std::thread::Builder::new()
            .name("store-snapshot".into())
            .spawn(move || take(&dir, &db))
            .ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs() -> (Vec<BanRecord>, Vec<OffenceRecord>) {
        let bans = vec![
            BanRecord {
                net: "198.51.100.7/32".parse().unwrap(),
                origin: "jail:kamailio".into(),
                reason: "5 failures".into(),
                created_ms: 11,
                expires_ms: Some(99),
            },
            BanRecord {
                net: "2001:db8::/64".parse().unwrap(),
                origin: "manual".into(),
                reason: "5 failures".into(),
                created_ms: 12,
                expires_ms: None,
            },
        ];
        let offences = vec![OffenceRecord {
            net: "198.51.100.7/32".parse().unwrap(),
            count: 3,
            until_ms: 77,
        }];
        (bans, offences)
    }

    #[test]
    fn round_trip() {
        let (bans, offences) = recs();
        let bytes = encode(42, 7, &bans, &offences);
        let got = decode(&bytes).unwrap();
        assert_eq!(got, Snapshot { token: 42, seq: 7, bans, offences });
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let (bans, offences) = recs();
        let good = encode(1, 1, &bans, &offences);
        // Every truncation, and every single-byte change, is refused or
        // (for bytes the checksum does not cover and that mean nothing)
        // read without a panic.
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "truncated at {n}");
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x5a;
            let _ = decode(&bad);
            if i >= HEADER {
                assert!(decode(&bad).is_err(), "body byte {i} changed");
            }
        }
        // A body that passes the checksum but lies about its counts.
        let mut lie = good.clone();
        lie[28..32].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decode(&lie).unwrap_err().contains("record bytes"));
        lie[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&lie).is_err());
    }
}
