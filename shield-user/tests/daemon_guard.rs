//! Bans and list entries that would cut off everyone are refused: wider
//! than `[bans] min_prefix_v4/v6` without `--force`; never, whatever the
//! flags, a net covering an unspecified, loopback or link-local address or
//! one of the host's own; nothing that overlaps `ignoreip`.

mod common;

use common::*;

fn refused(d: &Shieldd, args: &[&str], needle: &str) {
    let out = d.ctl(args);
    assert_eq!(out.status.code(), Some(2), "{args:?} was accepted: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains(needle), "{args:?}: {}", text(&out.stderr));
}

#[test]
fn bans_that_cut_off_everything_are_refused() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "[bans]\nignoreip = [\"198.51.100.77\"]\n");
    d.start();

    for net in ["0.0.0.0/0", "::/0"] {
        refused(&d, &["ban", net], "never banned");
        refused(&d, &["ban", net, "--force"], "never banned");
    }
    for addr in ["0.0.0.0", "127.0.0.1", "::", "::1", "fe80::1", "169.254.0.9"] {
        refused(&d, &["ban", addr], "never banned");
    }
    // The SBC's own address in the lab.
    refused(&d, &["ban", "198.51.100.1"], "an address of this host");
    refused(&d, &["ban", "198.51.100.0/24"], "an address of this host");
    // A net around an ignoreip host.
    refused(&d, &["ban", "198.51.100.64/26"], "ignoreip");

    // Wider than the minimum: only with --force.
    refused(&d, &["ban", "10.0.0.0/7"], "min_prefix_v4");
    refused(&d, &["ban", "2001:db8::/31"], "min_prefix_v6");
    d.ctl_ok(&["ban", "10.0.0.0/7", "--force"]);
    d.ctl_ok(&["ban", "2001:db8::/31", "--force"]);
    d.ctl_ok(&["ban", "10.0.0.0/8"]);
    d.ctl_ok(&["unban", "--all"]);

    refused(&d, &["allow", "add", "0.0.0.0/0"], "min_prefix_v4");
    refused(&d, &["deny", "add", "::/0"], "min_prefix_v6");
    d.ctl_ok(&["allow", "add", "0.0.0.0/0", "--force"]);
    d.ctl_ok(&["allow", "del", "0.0.0.0/0"]);
    assert!(d.bans().is_empty());
    assert!(d.is_running());
}

#[test]
fn the_minimum_prefix_is_configurable_and_checked() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "[bans]\nmin_prefix_v4 = 16\nmin_prefix_v6 = 48\n");
    d.start();
    refused(&d, &["ban", "198.18.0.0/15"], "/16");
    refused(&d, &["ban", "2001:db8::/47"], "/48");
    d.ctl_ok(&["ban", "198.18.0.0/16"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[bans]\nmin_prefix_v4 = 33\nmin_prefix_v6 = -1\n").expect("write");
    let mut c = std::process::Command::new(SHIELDD);
    c.arg("--check").arg("--config").arg(&bad);
    let out = output_within(c, std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    let o = text(&out.stdout);
    assert!(o.contains("bad.toml:2: bans.min_prefix_v4"), "{o}");
    assert!(o.contains("bad.toml:3: bans.min_prefix_v6"), "{o}");
}
