//! `cargo xtask docs` and `cargo xtask deb` (`make deb`): the man pages and
//! shell completions generated from the binaries' clap definitions, and the
//! Debian package built by cargo-deb from `[package.metadata.deb]` in
//! shield-user/Cargo.toml.
//!
//! Everything generated lands in `target/release/deb-assets/`: cargo-deb
//! maps asset paths beginning with `target/release/` to the real target
//! directory (also under `CARGO_TARGET_DIR`), so the manifest names them
//! there. The assembly itself is scripts/deb.sh, which the package test
//! runs too (a test cannot call cargo on the target directory it runs from).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The release target directory (honours CARGO_TARGET_DIR).
pub fn release_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| super::workspace().join("target"), Into::into);
    target.join("release")
}

/// `target/release/deb-assets`: the generated files the package installs.
pub fn assets_dir() -> PathBuf {
    release_dir().join("deb-assets")
}

/// Builds the release binaries and writes their man pages and completions
/// under `out` (default: the package's assets directory).
pub fn docs(out: Option<&Path>) -> Result<PathBuf> {
    super::cargo(&["build", "--release", "-p", "shield-user", "--bins"])?;
    let out = out.map_or_else(assets_dir, Path::to_path_buf);
    for bin in ["shieldd", "shieldctl"] {
        let exe = release_dir().join(bin);
        let output = Command::new(&exe)
            .arg("--generate-docs")
            .arg(&out)
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !output.status.success() {
            bail!(
                "{bin} --generate-docs {} failed ({}): {}",
                out.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    println!("man pages and completions in {}", out.display());
    Ok(out)
}

/// `make deb`: the release binaries, then scripts/deb.sh (docs, the
/// packaged configuration, cargo-deb without building again). Returns the
/// .deb's path.
pub fn deb() -> Result<PathBuf> {
    super::cargo(&["build", "--release", "-p", "shield-user", "--bins"])?;
    let script = super::workspace().join("scripts/deb.sh");
    let output = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| script.display().to_string())?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let deb = PathBuf::from(stdout.lines().last().context("scripts/deb.sh printed no path")?.trim());
    println!("{}", deb.display());
    Ok(deb)
}
