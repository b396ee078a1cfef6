//! State written by shieldd before the SQLite store: `bans.jsonl` (a header
//! line, then one JSON record per line) and `lists.json`. Found in
//! state_dir at start — left by an earlier version, or put back by an
//! operator — they are merged into the store and renamed to
//! `<name>.imported-<unix ms>`, so each is imported once.
//!
//! Importing is idempotent (bans and list entries already in the store are
//! kept as they are), so a crash half-way only means the next start
//! imports the file again.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    io_err, now_ms, BanRecord, CliLists, MapsMark, OffenceRecord, Store, StoreError,
};
use crate::kernel::List;

const BANS_FILE: &str = "bans.jsonl";
const LISTS_FILE: &str = "lists.json";
const FORMAT: &str = "sipshield-bans";
const FORMAT_VERSION: u32 = 1;
/// Who the history names for imported bans.
const WHO: &str = "import";

/// What [`import`] did.
#[derive(Debug, Default)]
pub struct Imported {
    /// The files imported, each with the name it was renamed to.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// Bans read, and how many of them were new to the store.
    pub bans_read: usize,
    pub bans_added: usize,
    /// Lines of `bans.jsonl` that could not be read (reported, skipped).
    pub bad_lines: Vec<(usize, String)>,
    /// Where `bans.jsonl` was copied to as it was, because it had
    /// unreadable lines.
    pub bad_copy: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
    /// Absent in files written before the mark existed.
    #[serde(default)]
    maps: Option<MapsMark>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Ban(BanRecord),
    History(OffenceRecord),
}

/// What `bans.jsonl` held.
#[derive(Default)]
struct Bans {
    bans: Vec<BanRecord>,
    offences: Vec<OffenceRecord>,
    bad_lines: Vec<(usize, String)>,
    maps: Option<MapsMark>,
}

pub(super) fn import(store: &mut Store) -> Result<Option<Imported>, StoreError> {
    let bans_path = store.dir.join(BANS_FILE);
    let lists_path = store.dir.join(LISTS_FILE);
    let bans = read_bans(&bans_path)?;
    let lists = read_lists(&lists_path)?;
    if bans.is_none() && lists.is_none() {
        return Ok(None);
    }
    let mut out = Imported::default();
    let fresh = store.load_is_empty()?;
    if let Some(b) = bans {
        if !b.bad_lines.is_empty() {
            let copy = store.dir.join(format!("{BANS_FILE}.bad-{}", now_ms()));
            fs::copy(&bans_path, &copy).map_err(|source| StoreError::BadCopy {
                path: bans_path.clone(),
                copy: copy.clone(),
                source,
            })?;
            out.bad_copy = Some(copy);
        }
        out.bans_read = b.bans.len();
        out.bans_added = store.import(&b.bans, WHO)?;
        store.import_offences(&b.offences)?;
        // The file's mark holds for the store only if the store was empty:
        // otherwise the store now has bans those maps may lack.
        let mark = b.maps.as_ref().filter(|_| fresh);
        store.set_maps_mark(mark)?;
        out.bad_lines = b.bad_lines;
        out.files.push(retire(&bans_path)?);
    }
    if let Some(l) = lists {
        for (list, nets) in [(List::Allow, &l.allow), (List::Deny, &l.deny)] {
            for n in nets {
                store.list_change(list, true, *n, WHO)?;
            }
        }
        out.files.push(retire(&lists_path)?);
    }
    Ok(Some(out))
}

/// Renames an imported file out of the way.
fn retire(path: &Path) -> Result<(PathBuf, PathBuf), StoreError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".imported-{}", now_ms()));
    let to = path.with_file_name(name);
    fs::rename(path, &to).map_err(io_err(path))?;
    Ok((path.to_path_buf(), to))
}

fn read_lists(path: &Path) -> Result<Option<CliLists>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Format {
                path: path.to_path_buf(),
                message: format!("{e}; repair the file or move it away, then start shieldd again"),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn read_bans(path: &Path) -> Result<Option<Bans>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut out = Bans::default();
    // Split on bytes, not `lines()`: a line that is not UTF-8 (a torn
    // write, a stray byte) is one bad record, not an unreadable file.
    let mut lines = BufReader::new(file).split(b'\n');
    let header = match lines.next() {
        None => return Ok(Some(out)),
        Some(l) => l.map_err(io_err(path))?,
    };
    out.maps = read_header(path, &header)?;
    for (i, line) in lines.enumerate() {
        let line = line.map_err(io_err(path))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line>(&line) {
            Ok(Line::Ban(b)) => out.bans.push(b),
            Ok(Line::History(h)) => out.offences.push(h),
            Err(e) => out.bad_lines.push((i + 2, e.to_string())),
        }
    }
    Ok(Some(out))
}

/// Checks line 1; a file that is not ours is refused whole, since nothing
/// in it can be trusted to be a ban record.
fn read_header(path: &Path, line: &[u8]) -> Result<Option<MapsMark>, StoreError> {
    let refuse = |what: String| StoreError::Format {
        path: path.to_path_buf(),
        message: format!(
            "line 1: {what}; repair the header (it must be a {FORMAT} version {FORMAT_VERSION} \
             header) or move the file away, then start shieldd again"
        ),
    };
    match serde_json::from_slice::<Header>(line) {
        Ok(h) if h.format == FORMAT && h.version == FORMAT_VERSION => Ok(h.maps),
        Ok(h) => Err(refuse(format!(
            "format {} version {} is not {FORMAT} version {FORMAT_VERSION}",
            h.format, h.version
        ))),
        Err(e) => Err(refuse(e.to_string())),
    }
}
