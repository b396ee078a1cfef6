//! `make deb`: the package scripts/deb.sh builds with cargo-deb holds what
//! an operator needs (both binaries, the hardened unit, the conffile, the
//! filters, the alert rules, every man page and completion generated), its
//! control data declares the conffile and the dependencies, and its
//! maintainer scripts create the `shield` group, never enable or start the
//! service on a first install, restart a running one on upgrade and remove
//! the state only on purge. What is expected is read from the source tree
//! and the generated files, not listed here. (Installing it under a real
//! systemd is tests/systemd_nspawn.rs.)

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn run(mut c: Command) -> String {
    let what = format!("{c:?}");
    let out = output_within(std::mem::replace(&mut c, Command::new("true")), Duration::from_secs(60));
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cmd(prog: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut c = Command::new(prog);
    for a in args {
        c.arg(a);
    }
    c
}

/// Paths in the package (`dpkg-deb -c`), as absolute paths, files only.
fn contents(deb: &Path) -> BTreeSet<String> {
    run(cmd("dpkg-deb", &[&"-c", &deb]))
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn package_holds_binaries_unit_conffile_docs_and_completions() {
    let deb = deb::build();
    let files = contents(&deb.path);
    println!("{} ({} files):", deb.path.display(), files.len());
    for f in &files {
        println!("  {f}");
    }
    let mut expected: Vec<String> = vec![
        "/usr/sbin/shieldd".into(),
        "/usr/sbin/shieldctl".into(),
        "/etc/shield/shield.toml".into(),
        "/usr/share/sip-shield/prometheus/sipshield-alerts.yml".into(),
        "/usr/share/doc/sip-shield/operating.md".into(),
    ];
    let ws = deb::workspace();
    expected.extend(names_in(&ws.join("config/filters")).iter().map(|f| format!("/usr/share/sip-shield/filters/{f}")));
    // Compressed, as Debian policy asks (scripts/deb.sh gzips them).
    expected.extend(names_in(&deb.assets().join("man")).iter().map(|m| format!("/usr/share/man/man8/{m}")));
    assert!(files.iter().filter(|f| f.contains("/man8/")).all(|f| f.ends_with(".8.gz")), "uncompressed man pages");
    for name in ["shieldd", "shieldctl"] {
        expected.push(format!("/usr/share/bash-completion/completions/{name}"));
        expected.push(format!("/usr/share/zsh/vendor-completions/_{name}"));
        expected.push(format!("/usr/share/fish/vendor_completions.d/{name}.fish"));
    }
    let unit = files
        .iter()
        .find(|f| f.ends_with("/systemd/system/shieldd.service"))
        .unwrap_or_else(|| panic!("no shieldd.service in the package"));
    for e in &expected {
        assert!(files.contains(e), "{e} is not in the package");
    }
    assert!(expected.iter().filter(|e| e.contains("/man8/")).count() > 2, "man pages for the subcommands");

    // The files are the ones of the tree and the generated ones, unchanged.
    let x = tempfile::tempdir().expect("tempdir");
    run(cmd("dpkg-deb", &[&"-x", &deb.path, &x.path()]));
    let read = |p: &str| std::fs::read(x.path().join(p.trim_start_matches('/'))).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read(unit), std::fs::read(ws.join("dist/shieldd.service")).unwrap(), "the unit is dist/shieldd.service");
    // The binaries are stripped copies of the ones built: same version line.
    for (path, built) in [("/usr/sbin/shieldd", SHIELDD), ("/usr/sbin/shieldctl", SHIELDCTL)] {
        let packaged = x.path().join(path.trim_start_matches('/'));
        let v = |exe: &dyn AsRef<std::ffi::OsStr>| run(cmd(exe.as_ref().to_str().unwrap(), &[&"--version"]));
        assert_eq!(v(&packaged), v(&built), "{path}");
    }
    assert_eq!(read("/etc/shield/shield.toml"), std::fs::read(deb.assets().join("shield.toml")).unwrap());
}

#[test]
fn packaged_config_names_no_interface_and_passes_the_parser() {
    let deb = deb::build();
    let x = tempfile::tempdir().expect("tempdir");
    run(cmd("dpkg-deb", &[&"-x", &deb.path, &x.path()]));
    let conf = x.path().join("etc/shield/shield.toml");
    let text = std::fs::read_to_string(&conf).expect("shield.toml");
    let example = std::fs::read_to_string(deb::workspace().join("config/shield.toml")).unwrap();
    // Only the interfaces and the group differ from the documented example.
    let differing: Vec<(&str, &str)> = example.lines().zip(text.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(differing.len(), 2, "{differing:#?}");
    assert_eq!(example.lines().count(), text.lines().count());
    let config = shield::config::Config::load(&conf).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
    assert!(config.shield.interfaces.is_empty(), "the package attaches nowhere until told");
    assert_eq!(config.control.group, "shield");
}

#[test]
fn control_data_and_maintainer_scripts() {
    let deb = deb::build();
    let info = run(cmd("dpkg-deb", &[&"-f", &deb.path]));
    println!("{info}");
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in the control file"))
            .to_string()
    };
    assert_eq!(field("Package"), "sip-shield");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION").to_string() + "-1");
    let depends = field("Depends");
    assert!(depends.contains("libc6"), "Depends: {depends}");
    assert!(depends.contains("adduser"), "Depends: {depends}");

    let ctl = tempfile::tempdir().expect("tempdir");
    run(cmd("dpkg-deb", &[&"-e", &deb.path, &ctl.path()]));
    let conffiles = std::fs::read_to_string(ctl.path().join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), vec!["/etc/shield/shield.toml"]);
    let script = |name: &str| {
        let p = ctl.path().join(name);
        run(cmd("sh", &[&"-n", &p]));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let postinst = script("postinst");
    assert!(postinst.contains("addgroup --system --quiet shield"), "postinst:\n{postinst}");
    // Never enabled or started by the package: only a running one is
    // restarted, on upgrade ($2 = the version upgraded from).
    for line in postinst.lines().filter(|l| l.contains("systemctl") || l.contains("deb-systemd-invoke")) {
        let l = line.trim();
        let allowed = l.starts_with("systemctl try-restart shieldd")
            || l.contains("is-enabled")
            || l.contains("daemon-reload")
            || l.starts_with('#')
            || l.starts_with("echo");
        assert!(allowed, "postinst may not enable or start shieldd: {l}\n{postinst}");
    }
    // cargo-deb's fragment re-enables only what the operator had enabled
    // (`was-enabled`: an upgrade keeps their choice), never on its own.
    let lines: Vec<&str> = postinst.lines().map(str::trim).collect();
    for (i, l) in lines.iter().enumerate().filter(|(_, l)| l.contains("deb-systemd-helper enable")) {
        assert!(
            lines[..i].iter().rev().take(3).any(|p| p.contains("was-enabled")),
            "postinst enables shieldd without the operator: {l}\n{postinst}"
        );
    }
    let prerm = script("prerm");
    assert!(prerm.contains("detach"), "prerm takes the shield off on removal:\n{prerm}");
    let postrm = script("postrm");
    let purge = postrm.split("\"$1\" = purge").nth(1).expect("postrm has a purge branch");
    assert!(purge.contains("/var/lib/shield"), "purge removes the state:\n{postrm}");
    assert_eq!(postrm.matches("/var/lib/shield").count(), 1, "only purge touches the state:\n{postrm}");
}
