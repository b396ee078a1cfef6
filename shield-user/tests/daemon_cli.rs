//! `shieldctl` and `shieldd` as an operator meets them: exit codes, error
//! messages, socket permissions, a control socket fed garbage, `--check`,
//! and a daemon started without the capabilities it needs.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::*;

/// nobody / nogroup on Debian; `daemon` (gid 1) is a group nobody is not in.
const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
const OTHER_GROUP: u32 = 1;

fn ctl(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(SHIELDCTL);
    c.args(args);
    output_within(c, Duration::from_secs(30))
}

#[test]
fn bad_input_is_exit_2_and_a_missing_daemon_is_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("none.sock");
    let s = path_str(&sock);

    for (args, needle) in [
        (vec!["--socket", s, "ban", "300.1.2.3"], "300.1.2.3"),
        (
            vec!["--socket", s, "ban", "198.51.100.7/8"],
            "198.51.100.7/8",
        ),
        (
            vec!["--socket", s, "allow", "add", "not-an-address"],
            "not-an-address",
        ),
        (
            vec![
                "--socket",
                s,
                "ban",
                "198.51.100.7",
                "--duration",
                "5 fortnights",
            ],
            "--duration",
        ),
        (
            vec!["--socket", s, "deny", "list", "192.0.2.1"],
            "takes no CIDR",
        ),
    ] {
        let out = ctl(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // Usage errors (clap) are 2 as well.
    assert_eq!(ctl(&["--socket", s, "frobnicate"]).status.code(), Some(2));
    assert_eq!(ctl(&["--socket", s, "unban"]).status.code(), Some(2));

    let out = ctl(&["--socket", s, "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("shieldd is not running"),
        "{}",
        text(&out.stderr)
    );
    let out = ctl(&["--json", "--socket", s, "banned"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON error");
    assert_eq!(v["error"]["kind"], "failed");
}

#[test]
fn socket_permissions_admit_the_group_and_refuse_everyone_else() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "");
    let cfg = std::fs::read_to_string(&d.config).expect("config");
    d.write_config(&cfg.replace("[control]\n", "[control]\ngroup = \"nogroup\"\n"));
    // Let other users reach the socket's directory; the socket decides.
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d.start();
    let meta = std::fs::metadata(&d.socket).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), NOGROUP);

    let shieldctl = reachable(SHIELDCTL);
    let as_user = |uid, gid| {
        let mut c = Command::new(&shieldctl.path);
        c.arg("--socket").arg(&d.socket).arg("status");
        output_within(common::as_user(c, uid, gid), Duration::from_secs(30))
    };
    let member = as_user(NOBODY, NOGROUP);
    assert!(
        member.status.success(),
        "group member refused: {}",
        text(&member.stderr)
    );
    assert!(text(&member.stdout).contains("veth-s"));
    let outsider = as_user(NOBODY, OTHER_GROUP);
    assert_eq!(outsider.status.code(), Some(1));
    assert!(
        text(&outsider.stderr).contains("permission denied"),
        "{}",
        text(&outsider.stderr)
    );
}

#[test]
fn garbage_on_the_control_socket_gets_errors_and_the_daemon_lives_on() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "");
    d.start();
    let exchange = |bytes: &[u8]| -> String {
        let mut s = UnixStream::connect(&d.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let r = exchange(b"this is not json\n");
    assert!(
        r.contains("\"kind\":\"bad_request\"") && r.contains("malformed request"),
        "{r}"
    );
    let r = exchange(b"{\"cmd\":\"ban\",\"net\":\"198.51.100.0/8\"}\n");
    assert!(
        r.contains("\"kind\":\"bad_input\"") && r.contains("net:"),
        "{r}"
    );
    let r = exchange(b"{\"cmd\":\"unban\",\"net\":\"192.0.2.1\",\"all\":true}\n");
    assert!(r.contains("\"kind\":\"bad_input\""), "{r}");
    let r = exchange(&vec![b'{'; 1 << 20]);
    assert!(r.contains("longer than"), "{r}");
    let r = exchange(&[0u8, 159, 146, 150, b'\n']);
    assert!(r.contains("bad_request"), "{r}");
    // A client that connects and says nothing does not block the others.
    let _silent = UnixStream::connect(&d.socket).expect("connect");
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["interfaces"][0]["name"], "veth-s");
    assert!(d.is_running());
}

#[test]
fn check_lists_every_problem_and_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[shield]\ninterfaces = [\"lo\"]\n").expect("write");
    let out = output_within(
        {
            let mut c = Command::new(SHIELDD);
            c.arg("--check").arg("--config").arg(&good);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("OK"), "{}", text(&out.stdout));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[shield]\nmode = \"turbo\"\n\n[deny]\ncidrs = [\"10.0.0.1/8\"]\n\n[bans]\nbantime = \"forever\"\nwhat = 1\n")
        .expect("write");
    let out = output_within(
        {
            let mut c = Command::new(SHIELDD);
            c.arg("--check").arg("--config").arg(&bad);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let o = text(&out.stdout);
    for needle in [
        "bad.toml:2: shield.mode",
        "bad.toml:5: deny.cidrs[0]",
        "bad.toml:8: bans.bantime",
        "bad.toml:9: bans.what",
    ] {
        assert!(o.contains(needle), "missing {needle:?} in:\n{o}");
    }
}

/// `--check` looks at the host too, without side effects: a file that is
/// valid TOML but cannot start is not "OK".
#[test]
fn check_refuses_what_cannot_start_and_names_the_line_of_bad_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |toml: &[u8]| {
        let f = dir.path().join("shield.toml");
        std::fs::write(&f, toml).expect("write");
        let mut c = Command::new(SHIELDD);
        c.arg("--check").arg("--config").arg(&f);
        let out = output_within(c, Duration::from_secs(30));
        (out.status.code(), text(&out.stdout))
    };
    let (code, o) = check(
        b"[shield]\ninterfaces = [\"lo\", \"nosuch0\"]\npin_path = \"/tmp/shield-pins\"\n\n\
          [control]\ngroup = \"no-such-group\"\n",
    );
    assert_eq!(code, Some(1), "{o}");
    for needle in [
        "shield.interfaces[1]: no interface \"nosuch0\"",
        "control.group: [control] group \"no-such-group\" does not exist",
        "shield.pin_path: pin_path /tmp/shield-pins is not on a bpf filesystem",
        "/sys/fs/bpf/shield",
    ] {
        assert!(o.contains(needle), "missing {needle:?} in:\n{o}");
    }
    assert!(!o.contains("mount -t bpf bpf /tmp"), "{o}");

    let (code, o) = check(b"[shield]\nenforce = true\n# caf\xe9\n");
    assert_eq!(code, Some(1), "{o}");
    assert!(o.contains("shield.toml:3:") && o.contains("UTF-8"), "{o}");
}

#[test]
fn without_capabilities_shieldd_says_so_in_one_line() {
    shield_tests::kernel::require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = dir.path().join("shield.toml");
    std::fs::write(&cfg, "").expect("write");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let shieldd = reachable(SHIELDD);
    let mut c = Command::new(&shieldd.path);
    c.arg("--config").arg(&cfg);
    let out = output_within(as_user(c, NOBODY, NOGROUP), Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("needs root or CAP_BPF") && err.contains("CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

/// `shieldctl … | head`: the reader goes away before shieldctl is done
/// writing. shieldctl ends quietly, as coreutils do (killed by SIGPIPE),
/// never with a panic's message and exit code 101.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "");
    d.start();
    for i in 1..=20 {
        d.ctl_ok(&["ban", &format!("203.0.113.{i}"), "--reason", "pipe test"]);
    }
    let socket = path_str(&d.socket);
    for args in [
        vec!["--socket", socket, "status"],
        vec!["--socket", socket, "banned"],
        vec!["--socket", socket, "--json", "banned"],
        // The error path writes its JSON to stdout too.
        vec!["--socket", "/nonexistent/shield.sock", "--json", "status"],
    ] {
        // A pipe whose reader is gone before shieldctl starts: its first
        // write gets EPIPE, whatever the timing.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut c = Command::new(SHIELDCTL);
        c.args(&args).stdout(writer).stderr(Stdio::piped());
        let mut child = Guard(c.spawn().expect("spawn shieldctl"));
        drop(c);
        let mut err = String::new();
        child
            .0
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read stderr");
        let status = child.0.wait().expect("wait");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(status.code(), Some(101), "{args:?}: {err}");
        assert_eq!(
            status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {status} {err}"
        );
    }
}

/// A ban in its last second has no whole second left (and may expire
/// before the listing is rendered): making it, listing it and looking it
/// up still succeed, and it shows as under a second.
#[test]
fn a_ban_in_its_last_second_lists_fine() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "");
    d.start();
    let made = d.ctl_ok(&["ban", "203.0.113.7", "--duration", "1s"]);
    assert!(made.contains("203.0.113.7"), "{made}");
    // Listed over and over until well after it ended: every listing
    // succeeds, and those in its last second show it as such.
    let mut under_a_second = false;
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        let listed = d.ctl_ok(&["banned"]);
        under_a_second |= listed.contains("<1s");
        d.ctl_ok(&["banned", "203.0.113.7"]);
        d.ctl_ok(&["--json", "banned"]);
    }
    assert!(under_a_second, "no listing showed the ban with <1s left");
}
