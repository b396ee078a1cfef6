//! The scanners real attackers run: SIPVicious (Debian's `sipvicious`,
//! 0.3.3: `svmap` finds SIP servers, `svwar` enumerates extensions), from the attacker's namespace and one source address,
//! bounded in time. SIPVicious keeps session files under `$HOME`: it gets a
//! temporary one.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::paths::system_tool;
use crate::process::{in_ns, run_within, Proc};
use crate::netns::Netns;

/// What a scanner printed, and whether it reported a SIP device or an
/// extension.
#[derive(Clone, Debug)]
pub struct ScanResult {
    pub tool: &'static str,
    pub output: String,
    pub found: bool,
}

fn sipvicious(
    tool: &'static str,
    ns: &Netns,
    home: &Path,
    args: &[String],
    target: Ipv4Addr,
) -> Result<ScanResult> {
    let exe = system_tool(
        tool,
        "the Debian package sipvicious (scripts/setup.sh installs it)",
    )?;
    std::fs::create_dir_all(home)?;
    let mut cmd = in_ns(ns, exe.to_str().context("path")?);
    cmd.env("HOME", home).args(args).arg(target.to_string());
    let out = run_within(cmd, Duration::from_secs(60))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Results are printed as a table: a data row (not the header) is a find.
    let found = output.lines().any(|l| {
        l.trim_start().starts_with('|') && !l.contains("Extension") && !l.contains("SIP Device")
    });
    Ok(ScanResult {
        tool,
        output,
        found,
    })
}

/// `svmap`: an OPTIONS sweep of `target:5060` from `src`.
pub fn svmap(ns: &Netns, home: &Path, src: Ipv4Addr, target: Ipv4Addr) -> Result<ScanResult> {
    let s = src.to_string();
    sipvicious(
        "svmap",
        ns,
        home,
        &[
            "-b".into(),
            s.clone(),
            "-x".into(),
            s,
            "-p".into(),
            "5060".into(),
        ],
        target,
    )
}

/// `svwar`: REGISTER-based extension enumeration over `extensions`
/// (e.g. "1000-1099").
pub fn svwar(
    ns: &Netns,
    home: &Path,
    src: Ipv4Addr,
    target: Ipv4Addr,
    extensions: &str,
) -> Result<ScanResult> {
    let s = src.to_string();
    sipvicious(
        "svwar",
        ns,
        home,
        &[
            "-b".into(),
            s.clone(),
            "-x".into(),
            s,
            "-e".into(),
            extensions.into(),
            "-m".into(),
            "REGISTER".into(),
        ],
        target,
    )
}

/// `svcrack`: guesses `user`'s digest password at `target:5060` from
/// `src` with the words in `words`, started in the background (its output
/// in `home/svcrack.log`). Once the shield bans it, it waits for replies
/// that never come: the returned process is killed when dropped.
/// svcrack 0.3.3 ignores `-b` (its main never passes the address on): it
/// sends from whatever source the route to `target` gives, the attacker's
/// own address unless a route says otherwise (see `bench::auth`).
pub fn svcrack(
    ns: &Netns,
    home: &Path,
    src: Ipv4Addr,
    target: Ipv4Addr,
    user: &str,
    words: &[&str],
) -> Result<Proc> {
    let exe = system_tool(
        "svcrack",
        "the Debian package sipvicious (scripts/setup.sh installs it)",
    )?;
    std::fs::create_dir_all(home)?;
    let dict = home.join("svcrack-words.txt");
    std::fs::write(&dict, words.join("\n") + "\n")?;
    let s = src.to_string();
    let mut cmd = in_ns(ns, exe.to_str().context("path")?);
    cmd.env("HOME", home)
        .args(["-b", &s, "-x", &s, "-p", "5060", "-u", user])
        .arg("-d")
        .arg(&dict)
        .arg(target.to_string());
    Proc::spawn("svcrack", cmd, Some(&home.join("svcrack.log")))
}
