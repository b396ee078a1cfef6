//! Following a log file like `tail -F`, driven by inotify.
//!
//! [`follow`] starts a thread for one path and hands complete lines to an
//! async receiver ([`Follower::recv`]). It:
//!
//! * starts at the **end** of an existing file, so a restarted daemon does not
//!   re-read (and re-ban) history; a half-written last line is skipped;
//! * reads a file that appears later (or after rotation) from its beginning;
//! * survives rotation by rename + create: the renamed file is drained, then
//!   kept open for a short grace period in case the writer has not reopened yet;
//! * survives `copytruncate`: a file that shrank is read again from offset 0
//!   (a truncation immediately refilled beyond the old offset cannot be told
//!   from appends — the usual limit of tailing);
//! * delivers only complete lines (a partial line waits for its newline),
//!   with invalid UTF-8 replaced, a trailing `\r` removed and lines longer
//!   than 64 KiB truncated.
//!
//! It is event-driven: the parent directory is watched with inotify (so
//! creation and renames are seen), and a slow re-check every few seconds
//! covers what inotify cannot (a parent directory that does not exist yet,
//! or was replaced). Reads happen on the thread that gets the event, so the
//! delay from `write()` to the line being delivered is well under a millisecond
//! plus scheduling. (If the path is a symlink into another directory, writes
//! there are only seen by the re-check: point the jail at the real file.)

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Safety re-check when no event arrives.
const RECHECK: Duration = Duration::from_secs(2);
/// How long a rotated-away file is still read after the new one appeared.
const ROTATION_GRACE: Duration = Duration::from_secs(5);
/// Longest line delivered; the rest of a longer line is dropped.
const MAX_LINE: usize = 64 * 1024;
/// Lines buffered between the reader thread and the consumer.
const CHANNEL: usize = 1024;
const READ_CHUNK: usize = 64 * 1024;

/// One line of the followed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The line without its newline (invalid UTF-8 replaced by U+FFFD).
    pub text: String,
    /// When the line was read from the file.
    pub read_at: Instant,
}

/// Stops a [`Follower`]'s thread; cloneable, usable from anywhere.
#[derive(Debug, Clone)]
pub struct StopHandle {
    stopped: Arc<AtomicBool>,
    wake: std_mpsc::SyncSender<()>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        // A full channel means a wake-up is already pending.
        let _ = self.wake.try_send(());
    }
}

/// The receiving end of [`follow`]. Dropping it stops the thread.
#[derive(Debug)]
pub struct Follower {
    lines: mpsc::Receiver<LogLine>,
    stop: StopHandle,
}

impl Follower {
    /// The next line; `None` once stopped.
    pub async fn recv(&mut self) -> Option<LogLine> {
        self.lines.recv().await
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    pub fn stop(&self) {
        self.stop.stop();
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

/// Follows `path` (see the module docs). Fails only if the thread cannot be started.
pub fn follow(path: impl Into<PathBuf>) -> io::Result<Follower> {
    let path = path.into();
    let (tx, lines) = mpsc::channel(CHANNEL);
    let (wake_tx, wake_rx) = std_mpsc::sync_channel(1);
    let stop = StopHandle {
        stopped: Arc::new(AtomicBool::new(false)),
        wake: wake_tx.clone(),
    };
    let stopped = stop.stopped.clone();
    // A fixed name: a path could hold bytes a thread name may not.
    std::thread::Builder::new()
        .name("shield-follow".into())
        .spawn(move || {
            let mut state = State::new(path, tx, wake_tx);
            state.run(&wake_rx, &stopped);
        })?;
    Ok(Follower { lines, stop })
}

/// An open file being read.
struct Open {
    file: File,
    id: (u64, u64),
    pos: u64,
    partial: Vec<u8>,
    /// Drop bytes up to the next newline (a line we started in the middle
    /// of, or the overflow of an over-long line).
    skip_to_newline: bool,
}

impl Open {
    fn new(file: File, at_end: bool) -> io::Result<Open> {
        let meta = file.metadata()?;
        let mut open = Open {
            file,
            id: (meta.dev(), meta.ino()),
            pos: 0,
            partial: Vec::new(),
            skip_to_newline: false,
        };
        if at_end && meta.len() > 0 {
            open.pos = meta.len();
            let mut last = [0u8; 1];
            open.file.seek(SeekFrom::Start(meta.len() - 1))?;
            open.file.read_exact(&mut last)?;
            open.skip_to_newline = last[0] != b'\n';
        }
        open.file.seek(SeekFrom::Start(open.pos))?;
        Ok(open)
    }
}

/// The consumer went away: reading stops for good.
struct Closed;

struct State {
    path: PathBuf,
    name: OsString,
    dir: PathBuf,
    out: mpsc::Sender<LogLine>,
    wake: std_mpsc::SyncSender<()>,
    /// Set while a rotated file is drained: then any event in the directory
    /// (including writes to the renamed file) wakes the thread.
    grace: Arc<AtomicBool>,
    watcher: Option<(RecommendedWatcher, (u64, u64))>,
    current: Option<Open>,
    previous: Option<(Open, Instant)>,
    /// Identity of the file found at start-up but not openable then: when it
    /// can be opened later, it is still read from its end.
    start_at_end: Option<(u64, u64)>,
    last_error: Option<String>,
}

impl State {
    fn new(path: PathBuf, out: mpsc::Sender<LogLine>, wake: std_mpsc::SyncSender<()>) -> State {
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        State {
            path,
            name,
            dir,
            out,
            wake,
            grace: Arc::new(AtomicBool::new(false)),
            watcher: None,
            current: None,
            previous: None,
            start_at_end: None,
            last_error: None,
        }
    }

    fn run(&mut self, wake: &std_mpsc::Receiver<()>, stopped: &AtomicBool) {
        // Watch first, then look: a file created in between is not missed.
        self.ensure_watch();
        match File::open(&self.path).and_then(|f| Open::new(f, true)) {
            Ok(open) => self.current = Some(open),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                self.start_at_end = std::fs::metadata(&self.path)
                    .ok()
                    .map(|m| (m.dev(), m.ino()));
                self.report(format!("cannot open {}: {e}", self.path.display()));
            }
        }
        while !stopped.load(Ordering::Acquire) {
            if self.poll().is_err() {
                return;
            }
            let timeout = match &self.previous {
                Some((_, until)) => until.saturating_duration_since(Instant::now()).min(RECHECK),
                None => RECHECK,
            };
            match wake.recv_timeout(timeout) {
                Ok(()) | Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Logs a problem once until it changes (the re-check would repeat it).
    fn report(&mut self, message: String) {
        if self.last_error.as_ref() != Some(&message) {
            tracing::warn!(path = %self.path.display(), "{message}");
            self.last_error = Some(message);
        }
    }

    /// Watches the parent directory, again if it was replaced since.
    fn ensure_watch(&mut self) {
        let Some(dir_id) = std::fs::metadata(&self.dir)
            .ok()
            .map(|m| (m.dev(), m.ino()))
        else {
            self.watcher = None;
            return;
        };
        if self.watcher.as_ref().is_some_and(|(_, id)| *id == dir_id) {
            return;
        }
        let (name, wake, grace) = (self.name.clone(), self.wake.clone(), self.grace.clone());
        let handler = move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(ev) => {
                    grace.load(Ordering::Relaxed)
                        || ev.need_rescan()
                        || ev
                            .paths
                            .iter()
                            .any(|p| p.file_name() == Some(name.as_os_str()))
                }
                Err(_) => true,
            };
            if relevant {
                let _ = wake.try_send(());
            }
        };
        let watcher = notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(&self.dir, RecursiveMode::NonRecursive).map(|()| w));
        match watcher {
            Ok(w) => self.watcher = Some((w, dir_id)),
            Err(e) => {
                self.watcher = None;
                self.report(format!(
                    "cannot watch {} (re-checking every {RECHECK:?}): {e}",
                    self.dir.display()
                ));
            }
        }
    }

    /// Reads whatever is new, handling rotation and truncation.
    fn poll(&mut self) -> Result<(), Closed> {
        self.ensure_watch();
        if let Some((mut old, until)) = self.previous.take() {
            self.drain(&mut old)?;
            if Instant::now() < until {
                self.previous = Some((old, until));
            } else {
                self.flush_partial(&mut old)?;
            }
        }
        if let Some(mut cur) = self.current.take() {
            let result = self.drain(&mut cur);
            self.current = Some(cur);
            result?;
        }
        match std::fs::metadata(&self.path) {
            Ok(meta) => {
                let id = (meta.dev(), meta.ino());
                let replaced = self.current.as_ref().is_some_and(|c| c.id != id);
                if self.current.is_none() || replaced {
                    self.open_new(id)?;
                }
            }
            // Renamed away or deleted: keep reading the open file until a
            // new one appears (the writer may still be using it).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.report(format!("cannot stat {}: {e}", self.path.display())),
        }
        self.grace.store(self.previous.is_some(), Ordering::Relaxed);
        Ok(())
    }

    /// Switches to the file now at the path (new, or the rotation's successor).
    fn open_new(&mut self, id: (u64, u64)) -> Result<(), Closed> {
        let at_end = self.start_at_end == Some(id);
        let open = match File::open(&self.path).and_then(|f| Open::new(f, at_end)) {
            Ok(open) => open,
            Err(e) => {
                self.report(format!("cannot open {}: {e}", self.path.display()));
                return Ok(());
            }
        };
        self.start_at_end = None;
        self.last_error = None;
        if let Some(old) = self.current.take() {
            // The rotated file stays readable for a while; a previous one
            // still in its grace period is finished now.
            if let Some((mut older, _)) = self.previous.take() {
                self.flush_partial(&mut older)?;
            }
            self.previous = Some((old, Instant::now() + ROTATION_GRACE));
            self.grace.store(true, Ordering::Relaxed);
        }
        let mut open = open;
        let result = self.drain(&mut open);
        self.current = Some(open);
        result
    }

    /// Reads from the file's position to its end and delivers complete lines.
    fn drain(&mut self, open: &mut Open) -> Result<(), Closed> {
        match open.file.metadata() {
            Ok(meta) if meta.len() < open.pos => {
                // copytruncate: start over.
                open.pos = 0;
                open.partial.clear();
                open.skip_to_newline = false;
                if let Err(e) = open.file.seek(SeekFrom::Start(0)) {
                    self.report(format!("cannot rewind {}: {e}", self.path.display()));
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.report(format!(
                    "cannot stat open file {}: {e}",
                    self.path.display()
                ));
                return Ok(());
            }
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match open.file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.report(format!("cannot read {}: {e}", self.path.display()));
                    return Ok(());
                }
            };
            open.pos += n as u64;
            let read_at = Instant::now();
            let mut rest = &buf[..n];
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                let (piece, after) = rest.split_at(nl);
                rest = &after[1..];
                if open.skip_to_newline {
                    open.skip_to_newline = false;
                    if open.partial.is_empty() {
                        continue;
                    }
                } else {
                    append_bounded(&mut open.partial, piece);
                }
                let line = std::mem::take(&mut open.partial);
                self.deliver(&line, read_at)?;
            }
            if !open.skip_to_newline && !rest.is_empty() {
                let room = MAX_LINE.saturating_sub(open.partial.len());
                if rest.len() > room {
                    // Keep the start of an over-long line, drop the rest of it.
                    open.partial.extend_from_slice(&rest[..room]);
                    open.skip_to_newline = true;
                } else {
                    open.partial.extend_from_slice(rest);
                }
            }
        }
    }

    /// The rotated file is done: its unterminated last line is complete now.
    fn flush_partial(&mut self, open: &mut Open) -> Result<(), Closed> {
        if open.partial.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut open.partial);
        self.deliver(&line, Instant::now())
    }

    fn deliver(&mut self, bytes: &[u8], read_at: Instant) -> Result<(), Closed> {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = String::from_utf8_lossy(bytes).into_owned();
        self.out
            .blocking_send(LogLine { text, read_at })
            .map_err(|_| Closed)
    }
}

fn append_bounded(partial: &mut Vec<u8>, piece: &[u8]) {
    let room = MAX_LINE.saturating_sub(partial.len());
    partial.extend_from_slice(&piece[..piece.len().min(room)]);
}

/// Whether `path`'s parent directory exists (for callers that want to warn early).
pub fn parent_exists(path: &Path) -> bool {
    path.parent()
        .is_none_or(|p| p.as_os_str().is_empty() || p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(10);

    async fn next(f: &mut Follower) -> String {
        match timeout(WAIT, f.recv()).await {
            Ok(Some(line)) => line.text,
            Ok(None) => panic!("follower ended"),
            Err(_) => panic!("no line within {WAIT:?}"),
        }
    }

    /// Asserts nothing arrives for a short while.
    async fn quiet(f: &mut Follower) {
        if let Ok(Some(line)) = timeout(Duration::from_millis(300), f.recv()).await {
            panic!("unexpected line {:?}", line.text);
        }
    }

    fn append(path: &Path, data: &[u8]) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(data).expect("write");
    }

    /// Lets the thread open the file and set up its watch.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    #[tokio::test]
    async fn starts_at_end_and_waits_for_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"old line\nhalf-writ");
        let mut f = follow(&path).expect("follow");
        settle().await;
        append(&path, b"ten\n");
        append(&path, b"new ");
        quiet(&mut f).await;
        append(&path, b"line\r\n");
        assert_eq!(next(&mut f).await, "new line");
        append(&path, b"bad \xff byte\n");
        assert_eq!(next(&mut f).await, "bad \u{fffd} byte");
    }

    #[tokio::test]
    async fn latency_is_event_driven() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"");
        let mut f = follow(&path).expect("follow");
        settle().await;
        let written = Instant::now();
        append(&path, b"ping\n");
        let line = timeout(WAIT, f.recv())
            .await
            .expect("in time")
            .expect("line");
        assert_eq!(line.text, "ping");
        // Far below the safety re-check: inotify delivered it.
        let latency = line.read_at.duration_since(written);
        assert!(latency < Duration::from_millis(500), "latency {latency:?}");
    }

    #[tokio::test]
    async fn follows_rename_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"");
        let mut f = follow(&path).expect("follow");
        settle().await;
        let mut writer = OpenOptions::new().append(true).open(&path).expect("open");
        writer.write_all(b"one\n").expect("write");
        assert_eq!(next(&mut f).await, "one");
        std::fs::rename(&path, dir.path().join("a.log.1")).expect("rename");
        // The writer has not reopened yet: its line goes to the rotated file.
        writer.write_all(b"two\n").expect("write");
        append(&path, b"three\n");
        let mut got = vec![next(&mut f).await, next(&mut f).await];
        got.sort();
        assert_eq!(got, ["three", "two"]);
        // Late writes to the rotated file within the grace period still count.
        writer.write_all(b"four\n").expect("write");
        assert_eq!(next(&mut f).await, "four");
        append(&path, b"five\n");
        assert_eq!(next(&mut f).await, "five");
    }

    #[tokio::test]
    async fn follows_copytruncate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"");
        let mut f = follow(&path).expect("follow");
        settle().await;
        append(&path, b"a fairly long line before rotation\n");
        assert_eq!(next(&mut f).await, "a fairly long line before rotation");
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(0).expect("truncate");
        append(&path, b"after\n");
        assert_eq!(next(&mut f).await, "after");
    }

    #[tokio::test]
    async fn waits_for_a_file_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("later.log");
        let mut f = follow(&path).expect("follow");
        settle().await;
        // A new file is read from its beginning.
        append(&path, b"first\nsecond\n");
        assert_eq!(next(&mut f).await, "first");
        assert_eq!(next(&mut f).await, "second");
    }

    #[tokio::test]
    async fn waits_for_the_directory_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/later.log");
        assert!(!parent_exists(&path));
        let mut f = follow(&path).expect("follow");
        settle().await;
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        append(&path, b"hello\n");
        assert_eq!(next(&mut f).await, "hello");
    }

    #[tokio::test]
    async fn stop_ends_the_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let mut f = follow(&path).expect("follow");
        f.stop_handle().stop();
        assert_eq!(timeout(WAIT, f.recv()).await.expect("ends in time"), None);
    }

    #[tokio::test]
    async fn overlong_lines_are_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        append(&path, b"");
        let mut f = follow(&path).expect("follow");
        settle().await;
        let mut long = vec![b'x'; MAX_LINE + 10_000];
        long.push(b'\n');
        append(&path, &long);
        append(&path, b"short\n");
        assert_eq!(next(&mut f).await.len(), MAX_LINE);
        assert_eq!(next(&mut f).await, "short");
    }
}
