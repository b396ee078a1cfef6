//! The lab binaries parse their arguments like the rest of the tools:
//! `--help` prints help and starts nothing, an unknown option is exit 2.
//! (Before clap, `demo --help` ran the whole demo, flood included.)

use std::process::Command;
use std::time::{Duration, Instant};

const LAB_BINARIES: [&str; 3] = [
    env!("CARGO_BIN_EXE_demo"),
    env!("CARGO_BIN_EXE_flood"),
    env!("CARGO_BIN_EXE_labbench"),
];

fn run(bin: &str, arg: &str) -> std::process::Output {
    let t = Instant::now();
    let out = Command::new(bin).arg(arg).output().expect("spawn");
    // Help is printed before anything starts: no lab, no flood.
    assert!(t.elapsed() < Duration::from_secs(20), "{bin} {arg} ran for {:?}", t.elapsed());
    out
}

#[test]
fn help_prints_usage_and_exits_0() {
    for bin in LAB_BINARIES {
        let out = run(bin, "--help");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{bin} --help: {stdout}");
        assert!(stdout.contains("Usage:"), "{bin} --help printed: {stdout}");
    }
}

#[test]
fn unknown_options_are_exit_2_naming_the_option() {
    for bin in LAB_BINARIES {
        let out = run(bin, "--frobnicate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin}: {stderr}");
        assert!(stderr.contains("--frobnicate"), "{bin}: {stderr}");
    }
}
