//! A defence's CPU over one guessing run of section 9 ([`super::auth`]).
//! A run lasts a second or two and the work is small (a few log lines, one
//! ban), so `/proc/PID/stat`'s 10 ms ticks are too coarse for the daemon
//! itself: its threads' `/proc/PID/task/TID/schedstat` (time on the CPU, in
//! ns) are sampled every 10 ms while the run lasts, so a thread that ends
//! during it loses at most one interval. The children the daemon ran and
//! waited for (fail2ban's `nft` and shell) come from `/proc/PID/stat`'s
//! cutime + cstime, in ticks.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::lab::cpu::ticks_per_second;
use crate::udp::Background;

const EVERY: Duration = Duration::from_millis(10);

/// ns on the CPU of each thread of `pid` now.
fn threads_ns(pid: u32) -> HashMap<u32, u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
            Some((tid, text.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// cutime + cstime of `pid` (fields 16 and 17 of `/proc/PID/stat`), ticks.
fn children_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&text, 13, 2)
}

/// `count` numeric fields of a `/proc/PID/stat` line summed, from the
/// `skip`-th after the command name (which may hold spaces and
/// parentheses: fields are counted after the last ')'; 0 is the state).
fn stat_fields(text: &str, skip: usize, count: usize) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<u64> = rest.split_whitespace().skip(skip).take(count).filter_map(|x| x.parse().ok()).collect();
    (f.len() == count).then(|| f.iter().sum())
}

/// Samples a process's CPU from `start` to `finish`.
pub struct CpuMeter {
    pid: u32,
    base: HashMap<u32, u64>,
    children0: u64,
    latest: Arc<Mutex<HashMap<u32, u64>>>,
    sampler: Background,
}

impl CpuMeter {
    /// `None` if `pid` is gone.
    pub fn start(pid: u32) -> Option<CpuMeter> {
        let base = threads_ns(pid);
        let children0 = children_ticks(pid)?;
        let latest = Arc::new(Mutex::new(base.clone()));
        let l = latest.clone();
        let sampler = Background::spawn(move |stop| {
            while !stop.load(Ordering::Relaxed) {
                let now = threads_ns(pid);
                let mut m = l.lock().expect("lock");
                for (tid, ns) in now {
                    let e = m.entry(tid).or_insert(0);
                    *e = (*e).max(ns);
                }
                drop(m);
                std::thread::sleep(EVERY);
            }
        });
        Some(CpuMeter { pid, base, children0, latest, sampler })
    }

    /// CPU seconds since `start`: the threads' time plus the waited-for
    /// children's.
    pub fn finish(mut self) -> f64 {
        self.sampler.stop();
        let mut latest = std::mem::take(&mut *self.latest.lock().expect("lock"));
        for (tid, ns) in threads_ns(self.pid) {
            let e = latest.entry(tid).or_insert(0);
            *e = (*e).max(ns);
        }
        let threads: u64 = latest.iter().map(|(tid, ns)| ns.saturating_sub(*self.base.get(tid).unwrap_or(&0))).sum();
        let children = children_ticks(self.pid).unwrap_or(self.children0).saturating_sub(self.children0);
        threads as f64 / 1e9 + children as f64 / ticks_per_second()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_waited_children_ticks_after_the_command_name() {
        let line = "4242 (fail2ban) server) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 30 8 20 0 3 0 99 1 2 3\n";
        assert_eq!(stat_fields(line, 13, 2), Some(30 + 8));
        assert_eq!(stat_fields(line, 11, 2), Some(17 + 5));
        assert_eq!(stat_fields("4242 (x) S 1 2", 13, 2), None);
    }

    #[test]
    fn counts_a_thread_that_burns_cpu_in_this_process() {
        let meter = CpuMeter::start(std::process::id()).expect("own process");
        // Spin until this thread's own clock says 50 ms of CPU were used.
        // SAFETY: clock_gettime with a valid timespec.
        let thread_cpu = || unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        };
        let t0 = thread_cpu();
        while thread_cpu() - t0 < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        let used = meter.finish();
        assert!(used >= 0.045, "50 ms spun, {used} s counted");
        assert!(CpuMeter::start(u32::MAX).is_none());
    }
}
