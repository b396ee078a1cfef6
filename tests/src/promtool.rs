//! `promtool check metrics` (Debian package prometheus): parses metrics
//! text as Prometheus does, where one bad label value rejects a whole
//! scrape.

use std::io::Write;
use std::process::{Command, Stdio};

/// `Err`: what promtool said about `text`. Panics when promtool is not
/// installed (the tests that use it need it).
pub fn check_metrics(text: &str) -> Result<(), String> {
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    lint.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = lint.wait_with_output().expect("promtool");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
