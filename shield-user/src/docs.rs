//! Man pages and shell completions, generated from the binaries' own clap
//! definitions so they can never disagree with `--help`.
//!
//! Each binary answers a hidden first argument, `--generate-docs DIR`
//! (checked before clap parses, so it needs no place in the CLI the
//! operator sees): `cargo xtask docs` and `make deb` run it on the release
//! binaries. Layout under DIR, the same paths the Debian package installs
//! them from:
//!
//! ```text
//! man/NAME.8, man/NAME-SUB.8      (section 8: both are administration tools)
//! completions/NAME.bash           -> /usr/share/bash-completion/completions/NAME
//! completions/_NAME               -> /usr/share/zsh/vendor-completions/_NAME
//! completions/NAME.fish           -> /usr/share/fish/vendor_completions.d/NAME.fish
//! ```

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;

/// The hidden argument that asks a binary for its documentation.
pub const GENERATE_FLAG: &str = "--generate-docs";

/// Man page section: shieldd and shieldctl are system administration
/// commands (installed in /usr/sbin).
pub const MAN_SECTION: &str = "8";

/// Failure to write the documentation.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("{GENERATE_FLAG} needs exactly one argument, the output directory")]
    Usage,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The output directory when the process was started as
/// `NAME --generate-docs DIR`; `Ok(None)` for any ordinary command line.
pub fn requested(mut args: impl Iterator<Item = OsString>) -> Result<Option<PathBuf>, DocsError> {
    let _argv0 = args.next();
    if args.next().as_deref() != Some(GENERATE_FLAG.as_ref()) {
        return Ok(None);
    }
    match (args.next(), args.next()) {
        (Some(dir), None) => Ok(Some(PathBuf::from(dir))),
        _ => Err(DocsError::Usage),
    }
}

/// Writes the man pages (the command and each visible subcommand) and the
/// bash, zsh and fish completions of `cmd` under `dir`. Returns the files
/// written.
pub fn generate(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let mut cmd = cmd;
    // Fills in the global options of subcommands and the help/version flags.
    cmd.build();
    let mut written = write_man(&cmd, &dir.join("man"))?;
    let comp = dir.join("completions");
    mkdir(&comp)?;
    let name = cmd.get_name().to_string();
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut text);
        written.push(write(&comp.join(file), &text)?);
    }
    Ok(written)
}

/// One page for the command, one per visible subcommand (`shieldctl-ban.8`),
/// as git and systemd do; the main page lists the subcommands.
fn write_man(cmd: &Command, dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    mkdir(dir)?;
    let name = cmd.get_name().to_string();
    let mut written = vec![render_man(cmd.clone(), &name, dir)?];
    // Not the generated `help` subcommand: `shieldctl help X` is `X --help`.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let page = format!("{name}-{}", sub.get_name());
        // The page's title is the full command ("shieldctl-ban"), and its
        // usage line reads "shieldctl ban ...".
        let sub = sub.clone().name(page.clone()).bin_name(format!("{name} {}", sub.get_name()));
        written.push(render_man(sub, &page, dir)?);
    }
    Ok(written)
}

fn render_man(cmd: Command, page: &str, dir: &Path) -> Result<PathBuf, DocsError> {
    let version = cmd.get_version().map(str::to_string);
    // clap_mangen leaves an empty date out of the title line, which moves
    // the source and manual into the wrong fields: always give one.
    let mut man = clap_mangen::Man::new(cmd).section(MAN_SECTION).date(build_date()).manual("SIP Shield");
    if let Some(v) = version {
        man = man.source(format!("SIP Shield {v}"));
    }
    let mut text = Vec::new();
    let path = dir.join(format!("{page}.{MAN_SECTION}"));
    man.render(&mut text).map_err(|source| DocsError::Io { path: path.clone(), source })?;
    write(&path, &text)
}

/// YYYY-MM-DD of `SOURCE_DATE_EPOCH` (reproducible builds) or of now, UTC.
fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    });
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn mkdir(dir: &Path) -> Result<(), DocsError> {
    fs::create_dir_all(dir).map_err(|source| DocsError::Io { path: dir.to_path_buf(), source })
}

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, DocsError> {
    fs::write(path, bytes).map_err(|source| DocsError::Io { path: path.to_path_buf(), source })?;
    Ok(path.to_path_buf())
}

/// For a binary's `main`: when asked with `--generate-docs DIR`, writes the
/// documentation of `cmd` and returns the exit code (0, or 2 for bad usage,
/// 1 when a file cannot be written); `None` for an ordinary command line.
pub fn main_hook(cmd: impl FnOnce() -> Command) -> Option<std::process::ExitCode> {
    let dir = match requested(std::env::args_os()) {
        Ok(None) => return None,
        Ok(Some(dir)) => dir,
        Err(e) => {
            eprintln!("{e}");
            return Some(std::process::ExitCode::from(2));
        }
    };
    let cmd = cmd();
    let name = cmd.get_name().to_string();
    match generate(cmd, &dir) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            Some(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{name}: writing the documentation: {e}");
            Some(std::process::ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = OsString> {
        a.iter().map(OsString::from).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
    }

    #[test]
    fn only_the_exact_first_argument_asks() {
        assert!(requested(args(&["shieldctl", "ban", "--generate-docs", "x"])).unwrap().is_none());
        assert!(requested(args(&["shieldctl"])).unwrap().is_none());
        assert_eq!(requested(args(&["shieldctl", "--generate-docs", "out"])).unwrap(), Some("out".into()));
        assert!(matches!(requested(args(&["shieldctl", "--generate-docs"])), Err(DocsError::Usage)));
        assert!(matches!(requested(args(&["shieldctl", "--generate-docs", "a", "b"])), Err(DocsError::Usage)));
    }
}
