//! What the daemon keeps in `state_dir` across restarts and reboots:
//!
//! - `bans.jsonl`: every ban with its metadata, plus the repeat-offender
//!   history `[bans] increment` needs. JSON Lines — a header line, then one
//!   record per line — so a million bans stream in and out without one giant
//!   document in memory, and a damaged line costs one record, not the file.
//! - `lists.json`: allow/deny entries added with `shieldctl` (the config
//!   file's lists are not copied here: they come from the config).
//! - `shieldd.lock`: held (`flock`) while a daemon uses the directory.
//!
//! Times are wall-clock milliseconds since the Unix epoch: the kernel's
//! monotonic clock restarts at boot, so "expires at" must be stored in a
//! clock that survives one and converted back to monotonic on load.
//!
//! Every write is atomic: a temporary file in the same directory, fsync,
//! rename over the old file, fsync of the directory. A crash leaves either
//! the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

const BANS_FILE: &str = "bans.jsonl";
const LISTS_FILE: &str = "lists.json";
const LOCK_FILE: &str = "shieldd.lock";
const FORMAT: &str = "sipshield-bans";
const VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(
        "{path} has unreadable lines, and keeping a copy of it at {copy} failed: {source}. \
         shieldd will not start and later rewrite the file without them: free space in the \
         state directory, or repair or remove those lines, then start shieldd again"
    )]
    BadCopy {
        path: PathBuf,
        copy: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state_dir {path} is in use by another shieldd{holder}")]
    Locked { path: PathBuf, holder: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
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

/// One persisted ban.
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
pub struct HistoryRecord {
    pub net: IpNet,
    pub count: u32,
    /// When its latest ban ended (or ends).
    pub until_ms: u64,
}

/// Which kernel ban maps a state file was last written in step with: the
/// kernel's ids of the pinned ban maps. A map id is never handed out twice
/// while the maps live (the kernel allocates ids cyclically over 2^31), so
/// maps that were removed and created anew (a detach, a reboot, a failed
/// start) carry other ids and are not mistaken for the ones this file
/// describes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapsMark {
    pub pin_path: PathBuf,
    /// Map name → kernel map id.
    pub ids: std::collections::BTreeMap<String, u32>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    written_ms: u64,
    /// Absent in files written before the mark existed: such a file is
    /// treated as written for unknown maps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    maps: Option<MapsMark>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Ban(BanRecord),
    History(HistoryRecord),
}

/// `lists.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliLists {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

/// What `bans.jsonl` held.
#[derive(Debug, Default)]
pub struct LoadedBans {
    pub bans: Vec<BanRecord>,
    pub history: Vec<HistoryRecord>,
    /// Lines that could not be read (reported, skipped).
    pub bad_lines: Vec<(usize, String)>,
    /// The maps the file was last written in step with.
    pub maps: Option<MapsMark>,
    /// Where the file was copied to because it had unreadable lines (the
    /// daemon's next save drops them).
    pub bad_copy: Option<PathBuf>,
}

/// The state directory, locked for this process.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates the directory if needed (mode 0700: bans and allowlists are
    /// nobody else's business) and takes its lock.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: valid fd.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let pid = fs::read_to_string(&lock_path).unwrap_or_default();
                let holder = match pid.trim() {
                    "" => String::new(),
                    p => format!(" (pid {p})"),
                };
                return Err(StateError::Locked {
                    path: dir.to_path_buf(),
                    holder,
                });
            }
            return Err(io_err(&lock_path)(e));
        }
        let mut lock = lock;
        lock.set_len(0).map_err(io_err(&lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io_err(&lock_path))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Path of `bans.jsonl`, for messages.
    pub fn bans_path(&self) -> PathBuf {
        self.dir.join(BANS_FILE)
    }

    /// Reads `bans.jsonl`; a missing file is an empty state. A file with
    /// unreadable lines is first copied to `bans.jsonl.bad-<unix ms>`: the
    /// next save writes only what could be read, and the lines skipped
    /// must stay recoverable.
    pub fn load_bans(&self) -> Result<LoadedBans, StateError> {
        let path = self.bans_path();
        let mut loaded = load_bans(&path)?;
        if !loaded.bad_lines.is_empty() {
            let copy = self.dir.join(format!("{BANS_FILE}.bad-{}", now_ms()));
            fs::copy(&path, &copy).map_err(|source| StateError::BadCopy {
                path: path.clone(),
                copy: copy.clone(),
                source,
            })?;
            loaded.bad_copy = Some(copy);
        }
        Ok(loaded)
    }

    /// Replaces `bans.jsonl` atomically, naming no kernel maps: the next
    /// start loads it into whatever maps it finds (an import).
    pub fn save_bans(
        &self,
        bans: &[BanRecord],
        history: &[HistoryRecord],
    ) -> Result<(), StateError> {
        self.save_bans_from(bans, history, None)
    }

    /// Replaces `bans.jsonl` atomically; `maps` names the kernel maps the
    /// records were taken from.
    pub fn save_bans_from(
        &self,
        bans: &[BanRecord],
        history: &[HistoryRecord],
        maps: Option<&MapsMark>,
    ) -> Result<(), StateError> {
        let path = self.bans_path();
        atomic_write(&path, |w| {
            let header = Header {
                format: FORMAT.into(),
                version: VERSION,
                written_ms: now_ms(),
                maps: maps.cloned(),
            };
            serde_json::to_writer(&mut *w, &header)?;
            w.write_all(b"\n")?;
            for b in bans {
                serde_json::to_writer(&mut *w, &Line::Ban(b.clone()))?;
                w.write_all(b"\n")?;
            }
            for h in history {
                serde_json::to_writer(&mut *w, &Line::History(h.clone()))?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })
    }

    pub fn load_lists(&self) -> Result<CliLists, StateError> {
        let path = self.dir.join(LISTS_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Format {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(CliLists::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub fn save_lists(&self, lists: &CliLists) -> Result<(), StateError> {
        atomic_write(&self.dir.join(LISTS_FILE), |w| {
            serde_json::to_writer_pretty(&mut *w, lists)?;
            w.write_all(b"\n")
        })
    }
}

fn load_bans(path: &Path) -> Result<LoadedBans, StateError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LoadedBans::default()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut out = LoadedBans::default();
    // Split on bytes, not `lines()`: a line that is not UTF-8 (a torn
    // write, a stray byte) is one bad record, not an unreadable file.
    let mut lines = BufReader::new(file).split(b'\n');
    let header = match lines.next() {
        None => return Ok(out),
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
            Ok(Line::History(h)) => out.history.push(h),
            Err(e) => out.bad_lines.push((i + 2, e.to_string())),
        }
    }
    Ok(out)
}

/// Checks line 1; a file that is not ours is refused whole, since nothing
/// in it can be trusted to be a ban record.
fn read_header(path: &Path, line: &[u8]) -> Result<Option<MapsMark>, StateError> {
    let refuse = |what: String| StateError::Format {
        path: path.to_path_buf(),
        message: format!(
            "line 1: {what}; repair the header (it must be a {FORMAT} version {VERSION} header) \
             or move the file away, then start shieldd again"
        ),
    };
    match serde_json::from_slice::<Header>(line) {
        Ok(h) if h.format == FORMAT && h.version == VERSION => Ok(h.maps),
        Ok(h) => Err(refuse(format!(
            "format {} version {} is not {FORMAT} version {VERSION}",
            h.format, h.version
        ))),
        Err(e) => Err(refuse(e.to_string())),
    }
}

/// Writes `path` through a temporary file: fsync, rename, fsync the
/// directory.
fn atomic_write(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(net: &str, expires_ms: Option<u64>) -> BanRecord {
        BanRecord {
            net: net.parse().unwrap(),
            origin: "manual".into(),
            reason: "test".into(),
            created_ms: 1,
            expires_ms,
        }
    }

    #[test]
    fn bans_round_trip_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateDir::open(dir.path()).unwrap();
        assert!(st.load_bans().unwrap().bans.is_empty());
        let bans = vec![rec("198.51.100.7/32", Some(99)), rec("2001:db8::/64", None)];
        let hist = vec![HistoryRecord {
            net: "198.51.100.7/32".parse().unwrap(),
            count: 2,
            until_ms: 5,
        }];
        st.save_bans(&bans, &hist).unwrap();
        let got = st.load_bans().unwrap();
        assert_eq!(got.bans, bans);
        assert_eq!(got.history, hist);
        assert!(got.bad_lines.is_empty());

        let path = dir.path().join(BANS_FILE);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("{\"ban\": {\"net\": \"not a net\"}}\n");
        fs::write(&path, text).unwrap();
        let got = st.load_bans().unwrap();
        assert_eq!(got.bans.len(), 2);
        assert_eq!(got.bad_lines.len(), 1);
        assert_eq!(got.bad_lines[0].0, 5);
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().contains(".tmp")),
            "{names:?}"
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_one_bad_record_and_the_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateDir::open(dir.path()).unwrap();
        let mark = MapsMark {
            pin_path: "/sys/fs/bpf/x".into(),
            ids: [("BANS_V4".to_string(), 7)].into_iter().collect(),
        };
        st.save_bans_from(&[rec("198.51.100.7/32", None)], &[], Some(&mark))
            .unwrap();
        let path = dir.path().join(BANS_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b"\xff\n");
        fs::write(&path, &bytes).unwrap();
        let got = st.load_bans().unwrap();
        assert_eq!(got.bans.len(), 1);
        assert_eq!(got.maps, Some(mark));
        assert_eq!(got.bad_lines.len(), 1);
        let copy = got.bad_copy.expect("a copy is kept");
        assert_eq!(fs::read(&copy).unwrap(), bytes);
        assert!(copy
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("bans.jsonl.bad-"));
    }

    #[test]
    fn foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateDir::open(dir.path()).unwrap();
        fs::write(
            dir.path().join(BANS_FILE),
            "{\"format\":\"other\",\"version\":1,\"written_ms\":0}\n",
        )
        .unwrap();
        assert!(matches!(st.load_bans(), Err(StateError::Format { .. })));
    }

    #[test]
    fn lists_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateDir::open(dir.path()).unwrap();
        assert_eq!(st.load_lists().unwrap(), CliLists::default());
        let lists = CliLists {
            allow: vec!["192.0.2.0/24".parse().unwrap()],
            deny: vec![],
        };
        st.save_lists(&lists).unwrap();
        assert_eq!(st.load_lists().unwrap(), lists);
    }

    #[test]
    fn second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateDir::open(dir.path()).unwrap();
        let e = StateDir::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("in use by another shieldd"), "{e}");
        assert!(
            e.to_string().contains(&std::process::id().to_string()),
            "{e}"
        );
    }
}
