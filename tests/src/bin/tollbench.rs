//! `tollbench`: section 8 of BENCHMARKS.md, toll fraud (SPEC §11): the
//! shield's 403 latency at the caller and the CPU per million refused
//! premium INVITEs against Kamailio's secfilter
//! (`tests/src/lab/bench/toll.rs`). Rewrites section 8 of BENCHMARKS.md
//! and writes lab/results/toll.json. Run by the full `cargo xtask bench`.
//!
//! As root. Namespaces and daemons are removed on every exit.

use std::process::ExitCode;

use anyhow::{Context, Result};
use shield_tests::lab::bench::{splice_section, toll};
use shield_tests::paths::repo;
use shield_tests::lab::signals;

fn main() -> ExitCode {
    signals::install();
    let result = run().map(|()| ExitCode::SUCCESS);
    signals::exit_code(result, "tollbench", "lab", "lab-out/toll/")
}

fn run() -> Result<()> {
    shield_tests::kernel::require_root();
    let out = repo().join("lab-out/toll");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let opts = toll::TollOptions::default();
    let r = toll::run(&opts, &out)?;
    let results = repo().join("lab/results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join("toll.json"), serde_json::to_string_pretty(&r)?)?;
    let section = toll::markdown(&r, &opts);
    print!("{section}");
    let path = repo().join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, splice_section(&doc, toll::HEADING, &section))
        .with_context(|| path.display().to_string())?;
    Ok(())
}
