//! Timestamps the lines appended to a log file, as they appear: the start
//! of every "log line to ban" measurement. The file is polled every 250 µs
//! (its size, then the new bytes), so a line is seen at most a fraction of
//! a millisecond after the writer's `write(2)` returned, independently of
//! how the daemon under test watches the same file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_micros(250);

/// One line and when it was seen.
#[derive(Clone, Debug)]
pub struct SeenLine {
    pub at: Instant,
    pub text: String,
}

pub struct LogWatch {
    lines: Arc<Mutex<Vec<SeenLine>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub path: PathBuf,
}

impl LogWatch {
    /// Starts watching `path` from its current end (it may not exist yet:
    /// then from its beginning once it does).
    pub fn start(path: &Path) -> LogWatch {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s, p) = (lines.clone(), stop.clone(), path.to_path_buf());
        let start_at_end = path.exists();
        let thread = std::thread::spawn(move || watch(&p, start_at_end, &l, &s));
        LogWatch {
            lines,
            stop,
            thread: Some(thread),
            path: path.to_path_buf(),
        }
    }

    /// Every line seen so far.
    pub fn lines(&self) -> Vec<SeenLine> {
        self.lines.lock().expect("lock").clone()
    }

    /// Lines seen so far that contain `needle`.
    pub fn matching(&self, needle: &str) -> Vec<SeenLine> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l.text.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until `n` lines containing `needle` were seen; the n-th.
    pub fn wait_for(&self, needle: &str, n: usize, within: Duration) -> Option<SeenLine> {
        let t = Instant::now();
        loop {
            let m = self.matching(needle);
            if m.len() >= n {
                return Some(m[n - 1].clone());
            }
            if t.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for LogWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(path: &Path, start_at_end: bool, lines: &Mutex<Vec<SeenLine>>, stop: &AtomicBool) {
    let mut file: Option<File> = None;
    let mut pos = 0u64;
    let mut partial = Vec::<u8>::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if file.is_none() {
            if let Ok(f) = File::open(path) {
                pos = if start_at_end {
                    f.metadata().map(|m| m.len()).unwrap_or(0)
                } else {
                    0
                };
                file = Some(f);
            }
        }
        if let Some(f) = file.as_mut() {
            let len = f.metadata().map(|m| m.len()).unwrap_or(pos);
            if len < pos {
                // truncated: start over
                pos = 0;
                partial.clear();
            }
            if len > pos && f.seek(SeekFrom::Start(pos)).is_ok() {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let at = Instant::now();
                    pos += n as u64;
                    partial.extend_from_slice(&buf[..n]);
                    let mut guard = lines.lock().expect("lock");
                    while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                        let text = String::from_utf8_lossy(&partial[..i]).into_owned();
                        partial.drain(..=i);
                        guard.push(SeenLine { at, text });
                    }
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sees_appended_lines_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.log");
        std::fs::write(&p, "old line\n").expect("write");
        let w = LogWatch::start(&p);
        std::thread::sleep(Duration::from_millis(20));
        let mut f = File::options().append(true).open(&p).expect("open");
        let before = Instant::now();
        write!(f, "one\ntw").expect("write");
        f.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(5));
        writeln!(f, "o").expect("write");
        let l = w.wait_for("two", 1, Duration::from_secs(2)).expect("seen");
        assert!(l.at >= before);
        let all: Vec<String> = w.lines().into_iter().map(|l| l.text).collect();
        assert_eq!(all, ["one", "two"]);
    }
}
