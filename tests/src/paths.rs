//! Where the lab finds its files: the repository (configs, scenarios) and
//! the built binaries (`shieldd`, `shieldctl`, `flood`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The repository root (the workspace this crate was built in).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `lab/` in the repository: Kamailio configs, sipp scenarios, nftables
/// rules, fail2ban files.
pub fn lab_dir() -> PathBuf {
    repo().join("lab")
}

pub fn lab_file(rel: &str) -> PathBuf {
    lab_dir().join(rel)
}

/// The example configuration the lab adapts.
pub fn example_config() -> PathBuf {
    repo().join("config/shield.toml")
}

/// A binary of this workspace built with the same profile as the running
/// one: next to the current executable (`target/<profile>/`), or one level
/// up for test binaries (`target/<profile>/deps/`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    bail!(
        "{name} is not built next to {} (run `cargo build --release -p shield-user --bins -p shield-tests --bins`, \
         which `cargo xtask test|demo|bench` do)",
        exe.display()
    )
}

/// A program from the system's PATH, or an error naming the package.
pub fn system_tool(name: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found: install {package} (scripts/setup.sh does)")
}

/// `p` as text, for configuration files and command lines (the tests' and
/// the lab's paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
