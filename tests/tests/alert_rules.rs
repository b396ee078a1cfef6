//! The Prometheus alerting rules in `dist/`: `promtool check rules` accepts
//! them and their unit tests (`promtool test rules`) pass: every alert fires
//! when it should and stays quiet in the near misses. Needs `promtool`
//! (Debian's `prometheus`, installed by scripts/setup.sh); without it the
//! test fails rather than skips.

use std::path::{Path, PathBuf};
use std::process::Command;

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist")
}

/// Runs `promtool ARGS FILE`, panics with its output unless it succeeds.
fn promtool(args: &[&str], file: &Path) {
    assert!(file.is_file(), "{} is missing", file.display());
    let out = match Command::new("promtool").args(args).arg(file).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool is not installed (Debian package `prometheus`): run scripts/setup.sh")
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    assert!(
        out.status.success(),
        "promtool {} {} failed ({}):\n{}{}",
        args.join(" "),
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rule_file_is_valid() {
    promtool(&["check", "rules"], &dist().join("sipshield-alerts.yml"));
}

/// The week-long rules of SPEC §13 (their own evaluation interval).
#[test]
fn the_call_rule_unit_tests_pass() {
    promtool(
        &["test", "rules"],
        &dist().join("sipshield-alerts-calls.test.yml"),
    );
}

#[test]
fn the_rule_unit_tests_pass() {
    // rule_files in the test file are relative to the test file.
    promtool(
        &["test", "rules"],
        &dist().join("sipshield-alerts.test.yml"),
    );
}
