//! Progress display for the demo and the bench: numbered steps with their
//! elapsed time, and a status line that is redrawn in place on a terminal
//! (and printed every few seconds otherwise, so logs stay readable).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    total: usize,
    step: usize,
    step_started: Instant,
    started: Instant,
    tty: bool,
    status_shown: bool,
    last_plain: Option<Instant>,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            step: 0,
            step_started: Instant::now(),
            started: Instant::now(),
            tty: std::io::stdout().is_terminal(),
            status_shown: false,
            last_plain: None,
        }
    }

    /// Starts the next step.
    pub fn step(&mut self, what: &str) {
        self.clear_status();
        self.step += 1;
        self.step_started = Instant::now();
        println!("[{}/{}] {what}", self.step, self.total);
    }

    /// Ends the current step with a result line.
    pub fn done(&mut self, result: &str) {
        self.clear_status();
        println!(
            "      {result}  ({:.1} s)",
            self.step_started.elapsed().as_secs_f64()
        );
    }

    /// An extra line under the current step.
    pub fn note(&mut self, line: &str) {
        self.clear_status();
        println!("      {line}");
    }

    /// The live status line (redrawn on a terminal; every 5 s otherwise).
    pub fn status(&mut self, line: &str) {
        if self.tty {
            let mut out = std::io::stdout();
            let _ = write!(
                out,
                "\r\x1b[2K      {} {line}",
                spinner(self.started.elapsed())
            );
            let _ = out.flush();
            self.status_shown = true;
        } else if self
            .last_plain
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            println!("      .. {line}");
            self.last_plain = Some(Instant::now());
        }
    }

    fn clear_status(&mut self) {
        if self.status_shown {
            let mut out = std::io::stdout();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
            self.status_shown = false;
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear_status();
    }
}

fn spinner(t: Duration) -> char {
    ['|', '/', '-', '\\'][(t.as_millis() / 250 % 4) as usize]
}

/// 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(1234567), "1,234,567");
    }
}
