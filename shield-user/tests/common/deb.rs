//! The Debian package built from the binaries under test, by the same
//! script `make deb` runs (scripts/deb.sh), in a target directory of its
//! own: a test cannot run cargo on the target directory it runs from (cargo
//! holds its lock), and cargo-deb reads `target/release/` as
//! `$CARGO_TARGET_DIR/release/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{output_within, SHIELDCTL, SHIELDD};

/// A built package and the directory holding it (deleted on drop).
pub struct Deb {
    pub path: PathBuf,
    pub target: tempfile::TempDir,
}

impl Deb {
    /// The generated files the package was built from (man pages,
    /// completions, the packaged shield.toml).
    pub fn assets(&self) -> PathBuf {
        self.target.path().join("release/deb-assets")
    }
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// Runs scripts/deb.sh on copies of the binaries under test.
pub fn build() -> Deb {
    let target = tempfile::Builder::new().prefix("sipshield-deb").tempdir().expect("tempdir");
    let release = target.path().join("release");
    std::fs::create_dir_all(&release).expect("release dir");
    for bin in [SHIELDD, SHIELDCTL] {
        let name = Path::new(bin).file_name().expect("file name");
        std::fs::copy(bin, release.join(name)).unwrap_or_else(|e| panic!("copy {bin}: {e}"));
    }
    let mut c = Command::new(workspace().join("scripts/deb.sh"));
    c.env("CARGO_TARGET_DIR", target.path());
    let out = output_within(c, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/deb.sh failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(stdout.lines().last().expect("deb.sh prints the .deb").trim());
    assert!(path.is_file(), "{} is not a file", path.display());
    Deb { path, target }
}
