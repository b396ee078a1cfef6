//! Whole-file tests: defaults, the shipped examples, every kind of error with
//! its line and key, and properties over arbitrary input.
//! (Durations and CIDRs have their own tests next to their parsers.)

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use proptest::prelude::*;
use shield_common::{policy as pol, Bucket, Method, Policy};

use super::*;

const ORIGIN: &str = "/etc/shield/shield.toml";

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new(ORIGIN))
}

fn defaults() -> Config {
    Config {
        source_path: PathBuf::from(ORIGIN),
        ..Config::default()
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test literal")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[track_caller]
fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.into_iter().collect(),
    }
}

fn render(errs: &[ConfigError]) -> String {
    errs.iter().map(|e| format!("  {e}\n")).collect()
}

/// Some error is at `line`, names `key`, and its message contains `needle`.
#[track_caller]
fn expect_error(errs: &[ConfigError], line: usize, key: &str, needle: &str) {
    assert!(
        errs.iter()
            .any(|e| e.line == Some(line) && e.key == key && e.message.contains(needle)),
        "no error at line {line}, key {key:?}, containing {needle:?}; got:\n{}",
        render(errs)
    );
}

/// `text` has exactly one problem, as described.
#[track_caller]
fn only_error(text: &str, line: usize, key: &str, needle: &str) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got:\n{}", render(&errs));
    expect_error(&errs, line, key, needle);
}

fn workspace_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A temporary directory holding `shield.toml` and any other files given.
fn scratch(config: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        fs::write(dir.path().join(name), text).expect("write test file");
    }
    let path = dir.path().join("shield.toml");
    fs::write(&path, config).expect("write config");
    (dir, path)
}

// ---- defaults and examples ------------------------------------------------

#[test]
fn empty_file_is_all_defaults() {
    assert_eq!(parse(""), Ok(defaults()));
    assert_eq!(parse("# nothing here\n\n"), Ok(defaults()));
    // Empty sections are defaults too.
    assert_eq!(
        parse("[shield]\n[ports]\n[limits]\n[limits.tcp]\n[bans.escalate]\n"),
        Ok(defaults())
    );
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.source_path, Path::new(DEFAULT_CONFIG_PATH));
    assert!(c.shield.interfaces.is_empty());
    assert_eq!(c.shield.mode, AttachMode::Auto);
    assert!(c.shield.enforce && !c.shield.detach_on_exit);
    assert_eq!(c.shield.pin_path, Path::new("/sys/fs/bpf/shield"));
    assert_eq!(c.shield.state_dir, Path::new("/var/lib/shield"));
    assert_eq!((c.ports.udp, c.ports.tcp), (vec![5060], vec![5060, 5061]));
    assert!(c.allow.nets.is_empty() && !c.allow.trunk_only && c.deny.nets.is_empty());
    assert_eq!(
        (
            c.limits.packets_per_second,
            c.limits.burst,
            c.limits.ipv6_prefix
        ),
        (50, 100, 64)
    );
    assert_eq!(
        c.limits.methods,
        vec![
            (
                Method::Register,
                RateLimit {
                    per_second: 5,
                    burst: 10
                }
            ),
            (
                Method::Invite,
                RateLimit {
                    per_second: 10,
                    burst: 20
                }
            ),
        ]
    );
    assert_eq!(
        c.limits.tcp,
        TcpLimits {
            syn_per_second: 10,
            syn_burst: 20
        }
    );
    assert!(c.sip.drop_malformed);
    assert_eq!(
        c.sip.scanner_user_agents,
        shield_common::sip::DEFAULT_SCANNERS
    );
    assert_eq!(
        (c.bans.bantime, c.bans.maxtime),
        (secs(3_600), secs(604_800))
    );
    assert_eq!(c.bans.scope, BanScope::All);
    assert!(c.bans.increment && c.bans.ignoreip.is_empty());
    assert_eq!(
        c.bans.escalate,
        Escalate {
            drops: 1_000,
            window: secs(10),
            bantime: secs(600)
        }
    );
    assert_eq!(
        c.capacity,
        Capacity {
            bans: 1_000_000,
            ban_nets: 65_536,
            sources: 1_000_000,
            allow: 100_000,
            deny: 100_000,
            verified: 1_000_000,
            dest_rules: 200_000,
            calls: 100_000
        }
    );
    assert_eq!(
        c.metrics.listen,
        Some("127.0.0.1:9814".parse().expect("literal"))
    );
    assert_eq!(c.control.socket, Path::new("/run/shield/control.sock"));
    assert_eq!(c.control.group, "");
    assert!(c.jails.is_empty());
}

#[test]
fn example_config_is_the_defaults_plus_its_examples() {
    let path = workspace_file("config/shield.toml");
    let got = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut want = Config {
        source_path: path.clone(),
        ..Config::default()
    };
    // The three values the file marks "example" (or, for the jail, adds).
    want.shield.interfaces = vec!["eth0".into()];
    want.allow.nets = vec![net("203.0.113.10/32")];
    want.jails = vec![JailSpec {
        name: "kamailio-auth".into(),
        logpath: "/var/log/kamailio/kamailio.log".into(),
        filter: Some("kamailio".into()),
        failregex: vec![],
        ignoreregex: vec![],
        maxretry: 5,
        findtime: secs(600),
        bantime: secs(3_600),
    }];
    assert_eq!(got, want);
}

#[test]
fn example_config_shows_every_key() {
    // Parsing the example proves everything in it is known to the schema;
    // this is the other direction: everything the schema knows is shown.
    let text = fs::read_to_string(workspace_file("config/shield.toml")).expect("example");
    let keys = [
        "interfaces",
        "mode",
        "enforce",
        "pin_path",
        "state_dir",
        "detach_on_exit",
        "udp",
        "tcp",
        "cidrs",
        "files",
        "trunk_only",
        "packets_per_second",
        "burst",
        "ipv6_prefix",
        "syn_per_second",
        "syn_burst",
        "drop_malformed",
        "scanner_user_agents",
        "bantime",
        "scope",
        "ignoreip",
        "increment",
        "maxtime",
        "drops",
        "window",
        "bans",
        "ban_nets",
        "sources",
        "allow",
        "deny",
        "listen",
        "socket",
        "group",
        "name",
        "logpath",
        "filter",
        "failregex",
        "ignoreregex",
        "maxretry",
        "findtime",
        "enabled",
        "strip_prefixes",
        "international_prefixes",
        "deny_files",
        "allow_international",
        "international_per_minute",
        "international_burst",
        "action",
        "reject_per_second",
        "check_allowlisted",
        "escalate",
        "max_concurrent_per_source",
        "long_call",
        "max_duration",
    ];
    for key in keys {
        let set = format!("\n{key} = ");
        assert!(text.contains(&set), "example config does not show `{key}`");
    }
    for section in [
        "[shield]",
        "[ports]",
        "[allow]",
        "[deny]",
        "[limits]",
        "[limits.methods]",
        "[limits.tcp]",
        "[sip]",
        "[bans]",
        "[bans.escalate]",
        "[capacity]",
        "[destinations]",
        "[calls]",
        "[metrics]",
        "[control]",
        "[[jail]]",
    ] {
        assert!(
            text.contains(&format!("\n{section}\n")),
            "example config does not show {section}"
        );
    }
}

#[test]
fn trunk_only_example() {
    let path = workspace_file("config/examples/trunk-only.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.shield.interfaces, ["ens1f0", "ens1f1"]);
    assert_eq!(c.shield.mode, AttachMode::Driver);
    assert_eq!(c.ports.tcp, [5061]);
    assert_eq!(
        c.allow.nets,
        [
            net("192.0.2.0/28"),
            net("198.51.100.17/32"),
            net("2001:db8:100::/48")
        ]
    );
    assert!(c.allow.trunk_only);
    assert_eq!(c.limits.packets_per_second, 0);
    assert_eq!(
        c.limits.methods.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
        [Method::Invite, Method::Options]
    );
    assert_eq!((c.bans.scope, c.bans.bantime), (BanScope::Sip, secs(1_800)));
    assert_eq!(
        c.metrics.listen,
        Some("[::1]:9814".parse().expect("literal"))
    );
    let p = c.policy();
    assert!(p.has(pol::F_TRUNK_ONLY) && p.has(pol::F_SCOPE_SIP));
    assert!(!p.packet.is_limited());
}

// ---- values ----------------------------------------------------------------

#[test]
fn every_value_is_resolved() {
    let text = r#"
[shield]
interfaces = ["eth0", "bond0.100"]
mode = "generic"
enforce = false
pin_path = "pins"
state_dir = "/srv/shield"
detach_on_exit = true
[ports]
udp = [5060, 5080, 5060]
tcp = []
[allow]
cidrs = ["198.51.100.0/24", "2001:db8::1", "198.51.100.0/24"]
trunk_only = true
[deny]
cidrs = ["0.0.0.0/0"]
[limits]
packets_per_second = 0
burst = 1
ipv6_prefix = 128
[limits.methods]
OPTIONS = { per_second = 1, burst = 2 }
[limits.tcp]
syn_per_second = 0
syn_burst = 1
[sip]
drop_malformed = false
scanner_user_agents = []
[bans]
bantime = 90
scope = "sip"
ignoreip = ["192.0.2.7"]
increment = false
maxtime = "1d12h"
[bans.escalate]
drops = 0
window = "600"
bantime = "1w"
[capacity]
bans = 1
ban_nets = 2
sources = 3
allow = 4
deny = 5
[metrics]
listen = "off"
[control]
socket = "run/ctl.sock"
group = "voip"
"#;
    let c = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.shield.interfaces, ["eth0", "bond0.100"]);
    assert_eq!(c.shield.mode, AttachMode::Generic);
    assert!(!c.shield.enforce && c.shield.detach_on_exit);
    assert_eq!(c.shield.pin_path, Path::new("/etc/shield/pins"));
    assert_eq!(c.shield.state_dir, Path::new("/srv/shield"));
    assert_eq!((c.ports.udp, c.ports.tcp), (vec![5060, 5080], vec![]));
    assert_eq!(
        c.allow.nets,
        [net("198.51.100.0/24"), net("2001:db8::1/128")]
    );
    assert!(c.allow.trunk_only);
    assert_eq!(c.deny.nets, [net("0.0.0.0/0")]);
    assert_eq!(
        (
            c.limits.packets_per_second,
            c.limits.burst,
            c.limits.ipv6_prefix
        ),
        (0, 1, 128)
    );
    assert_eq!(
        c.limits.methods,
        [(
            Method::Options,
            RateLimit {
                per_second: 1,
                burst: 2
            }
        )]
    );
    assert_eq!(
        c.limits.tcp,
        TcpLimits {
            syn_per_second: 0,
            syn_burst: 1
        }
    );
    assert!(!c.sip.drop_malformed && c.sip.scanner_user_agents.is_empty());
    assert_eq!((c.bans.bantime, c.bans.maxtime), (secs(90), secs(129_600)));
    assert_eq!(c.bans.scope, BanScope::Sip);
    assert_eq!(c.bans.ignoreip, [net("192.0.2.7/32")]);
    assert!(!c.bans.increment);
    assert_eq!(
        c.bans.escalate,
        Escalate {
            drops: 0,
            window: secs(600),
            bantime: secs(604_800)
        }
    );
    assert_eq!(
        c.capacity,
        Capacity {
            bans: 1,
            ban_nets: 2,
            sources: 3,
            allow: 4,
            deny: 5,
            verified: 1_000_000,
            dest_rules: 200_000,
            calls: 100_000
        }
    );
    assert_eq!(c.metrics.listen, None);
    assert_eq!(c.control.socket, Path::new("/etc/shield/run/ctl.sock"));
    assert_eq!(c.control.group, "voip");
}

#[test]
fn methods_table_absent_empty_or_given() {
    assert_eq!(
        parse("[limits]\nburst = 5\n").map(|c| c.limits.methods),
        Ok(Limits::default().methods)
    );
    assert_eq!(
        parse("[limits.methods]\n").map(|c| c.limits.methods),
        Ok(vec![])
    );
    assert_eq!(
        parse("[limits]\nmethods = {}\n").map(|c| c.limits.methods),
        Ok(vec![])
    );
    // Every spelling of the same table, in file order.
    let dotted =
        "limits.methods.BYE = { per_second = 3, burst = 4 }\nlimits.methods.ACK.per_second = 1\n\
                  limits.methods.ACK.burst = 2\n";
    let want = vec![
        (
            Method::Bye,
            RateLimit {
                per_second: 3,
                burst: 4,
            },
        ),
        (
            Method::Ack,
            RateLimit {
                per_second: 1,
                burst: 2,
            },
        ),
    ];
    assert_eq!(parse(dotted).map(|c| c.limits.methods), Ok(want));
}

#[test]
fn maxtime_follows_a_long_bantime_unless_set() {
    let c = parse("[bans]\nbantime = \"2w\"\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.bans.maxtime, secs(2 * 604_800));
    only_error(
        "[bans]\nbantime = \"2h\"\nmaxtime = \"1h\"\n",
        3,
        "bans.maxtime",
        "must be at least bantime (2h), got 1h",
    );
}

#[test]
fn metrics_listen_forms() {
    let listen = |v: &str| parse(&format!("[metrics]\nlisten = {v:?}\n")).map(|c| c.metrics.listen);
    assert_eq!(listen(""), Ok(None));
    assert_eq!(listen("off"), Ok(None));
    assert_eq!(
        listen("0.0.0.0:9100"),
        Ok(Some(SocketAddr::from(([0, 0, 0, 0], 9100))))
    );
    assert_eq!(
        listen("[::]:9100").map(|a| a.map(|a| a.is_ipv6())),
        Ok(Some(true))
    );
    only_error(
        "[metrics]\nlisten = \"localhost:9814\"\n",
        2,
        "metrics.listen",
        "is not an address:port",
    );
    only_error(
        "[metrics]\nlisten = \"127.0.0.1\"\n",
        2,
        "metrics.listen",
        "is not an address:port",
    );
    only_error(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
        2,
        "metrics.listen",
        "port must not be 0",
    );
    only_error(
        "[metrics]\nlisten = false\n",
        2,
        "metrics.listen",
        "expected a string, found a boolean",
    );
}

#[test]
fn policy_record() {
    let p = defaults().policy();
    assert_eq!(
        p.flags,
        pol::F_ENFORCE | pol::F_DROP_MALFORMED | pol::F_SCAN_UA
    );
    assert_eq!(p.ipv6_prefix, 64);
    assert_eq!(p.packet, Bucket::new(50, 100));
    assert_eq!(p.syn, Bucket::new(10, 20));
    assert_eq!(
        p.method_bucket(Method::Register),
        Some((0, &Bucket::new(5, 10)))
    );
    assert_eq!(
        p.method_bucket(Method::Invite),
        Some((1, &Bucket::new(10, 20)))
    );
    assert_eq!(p.method_bucket(Method::Bye), None);
    assert_eq!(p.method_bucket(Method::Other), None);
    assert_eq!(p.method[2..], [Bucket::UNLIMITED; 4]);
    assert_eq!(
        (p.escalate_drops, p.escalate_window_ns),
        (1_000, 10_000_000_000)
    );

    let c = parse(
        "[shield]\nenforce = false\n[allow]\ntrunk_only = true\n[sip]\ndrop_malformed = false\n\
         scanner_user_agents = []\n[bans]\nscope = \"sip\"\n[limits]\npackets_per_second = 0\n\
         ipv6_prefix = 48\n[limits.methods]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = c.policy();
    assert_eq!(p.flags, pol::F_TRUNK_ONLY | pol::F_SCOPE_SIP);
    assert_eq!(p.ipv6_prefix, 48);
    assert!(!p.packet.is_limited());
    assert_eq!(p.method_slot, [0; 16]);

    // Six methods fill every slot, in file order.
    let six = "[limits.methods]\nACK={per_second=1,burst=1}\nBYE={per_second=2,burst=1}\n\
               CANCEL={per_second=3,burst=1}\nINFO={per_second=4,burst=1}\nPRACK={per_second=5,burst=1}\n\
               UPDATE={per_second=6,burst=1}\n";
    let p = parse(six).unwrap_or_else(|e| panic!("{e}")).policy();
    for (slot, m) in [
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Info,
        Method::Prack,
        Method::Update,
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(p.method_slot[m as usize] as usize, slot + 1);
        assert_eq!(p.method[slot], Bucket::new(slot as u64 + 1, 1));
    }
    // Allow/deny/ban-net flags are the loader's business.
    let allow_bits = pol::F_ALLOW_V4 | pol::F_ALLOW_V6 | pol::F_DENY_V4 | pol::F_DENY_V6;
    assert_eq!(
        p.flags & (allow_bits | pol::F_BAN_NETS_V4 | pol::F_BAN_NETS_V6),
        0
    );
    assert_eq!(std::mem::size_of::<Policy>(), 200);
}

// ---- errors ------------------------------------------------------------------

#[test]
fn error_display_names_file_line_key_and_why() {
    let errs = errors("[limits]\nburst = 0\n");
    assert_eq!(
        errs[0].to_string(),
        "/etc/shield/shield.toml:2: limits.burst: must be at least 1 (got 0)"
    );
    let e = ConfigErrors::one(ConfigError {
        file: "x.toml".into(),
        line: None,
        key: String::new(),
        message: "m".into(),
    });
    assert_eq!(e.to_string(), "x.toml: m");
    let e = parse("[limits]\nburst = 0\nipv6_prefix = 129\n").expect_err("two errors");
    assert_eq!(
        e.to_string(),
        "/etc/shield/shield.toml:2: limits.burst: must be at least 1 (got 0)\n\
         /etc/shield/shield.toml:3: limits.ipv6_prefix: must be at most 128 (got 129)"
    );
    assert_eq!(
        (e.len(), e.is_empty(), e.iter().count(), e.errors().len()),
        (2, false, 2, 2)
    );
}

#[test]
fn toml_syntax_errors_have_their_line() {
    let errs = errors("[shield]\nenforce = true\nmode = \n");
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    assert_eq!((errs[0].line, errs[0].key.as_str()), (Some(3), ""));
    assert!(
        errs[0].message.starts_with("TOML syntax error: "),
        "{}",
        errs[0]
    );
    assert!(!errs[0].message.contains('\n'));
    let errs = errors("[ports]\nudp = [5060]\nudp = [5061]\n");
    assert_eq!(errs[0].line, Some(3));
    assert!(errs[0].message.contains("duplicate key"), "{}", errs[0]);
    assert_eq!(errors("[shield\n")[0].line, Some(1));
}

#[test]
fn unknown_keys_in_every_section() {
    let text = r#"colour = "red"
[shield]
interface = ["eth0"]
[ports]
sctp = [5060]
[allow]
cidr = []
[deny]
file = []
[limits]
rate = 5
[limits.methods.INVITE]
per_second = 1
burst = 1
bursts = 2
[limits.tcp]
synburst = 2
[sip]
scanners = []
[bans]
bantim = "1h"
[bans.escalate]
drop = 1
[capacity]
banz = 1
[metrics]
port = 9814
[control]
mode = "0660"
[[jail]]
name = "a"
logpath = "/var/log/a.log"
filter = "asterisk"
max_retry = 3
[extra]
x = 1
"#;
    let errs = errors(text);
    let want = [
        (1, "colour", "unknown key (expected one of: shield,"),
        (3, "shield.interface", "did you mean `interfaces`?"),
        (5, "ports.sctp", "unknown key (expected one of: udp, tcp)"),
        (7, "allow.cidr", "did you mean `cidrs`?"),
        (9, "deny.file", "did you mean `files`?"),
        (11, "limits.rate", "unknown key"),
        (15, "limits.methods.INVITE.bursts", "did you mean `burst`?"),
        (17, "limits.tcp.synburst", "did you mean `syn_burst`?"),
        (19, "sip.scanners", "unknown key"),
        (21, "bans.bantim", "did you mean `bantime`?"),
        (23, "bans.escalate.drop", "did you mean `drops`?"),
        (25, "capacity.banz", "did you mean `bans`?"),
        (27, "metrics.port", "expected one of: listen"),
        (29, "control.mode", "unknown key"),
        (34, "jail[0].max_retry", "did you mean `maxretry`?"),
        (35, "extra", "unknown section"),
    ];
    for (line, key, needle) in want {
        expect_error(&errs, line, key, needle);
    }
    assert_eq!(errs.len(), want.len(), "{}", render(&errs));
}

#[test]
fn wrong_types() {
    let text = r#"[shield]
interfaces = "eth0"
enforce = "yes"
mode = 1
[ports]
udp = [5060, "5061"]
[limits]
burst = 1.5
methods = 3
[bans]
bantime = true
ignoreip = "10.0.0.0/8"
[capacity]
bans = "1000"
[control]
socket = 5
[metrics]
[metrics.listen]
"#;
    let errs = errors(text);
    expect_error(
        &errs,
        2,
        "shield.interfaces",
        "expected an array, found a string",
    );
    expect_error(
        &errs,
        3,
        "shield.enforce",
        "expected a boolean, found a string",
    );
    expect_error(
        &errs,
        4,
        "shield.mode",
        "expected a string, found an integer",
    );
    expect_error(
        &errs,
        6,
        "ports.udp[1]",
        "expected an integer, found a string",
    );
    expect_error(
        &errs,
        8,
        "limits.burst",
        "expected an integer, found a float",
    );
    expect_error(
        &errs,
        9,
        "limits.methods",
        "expected a table, found an integer",
    );
    expect_error(&errs, 11, "bans.bantime", "expected a duration");
    expect_error(
        &errs,
        12,
        "bans.ignoreip",
        "expected an array, found a string",
    );
    expect_error(
        &errs,
        14,
        "capacity.bans",
        "expected an integer, found a string",
    );
    expect_error(
        &errs,
        16,
        "control.socket",
        "expected a string, found an integer",
    );
    expect_error(
        &errs,
        18,
        "metrics.listen",
        "expected a string, found a table",
    );
    assert_eq!(errs.len(), 11, "{}", render(&errs));
    only_error(
        "shield = 1\n",
        1,
        "shield",
        "expected a table, found an integer",
    );
    only_error(
        "[jail]\nname = \"a\"\n",
        1,
        "jail",
        "expected an array of tables ([[jail]]), found a table",
    );
    only_error(
        "[[ports]]\n",
        1,
        "ports",
        "expected a table, found an array of tables",
    );
}

#[test]
fn bad_choices() {
    only_error(
        "[shield]\nmode = \"native\"\n",
        2,
        "shield.mode",
        r#"must be one of "auto", "driver", "generic", "tc" (got "native")"#,
    );
    only_error(
        "[bans]\nscope = \"All\"\n",
        2,
        "bans.scope",
        r#"must be one of "all", "sip""#,
    );
}

#[test]
fn bad_cidrs() {
    let text = "[allow]\ncidrs = [\"192.0.2.1\",\n  \"10.0.0.1/8\"]\n[deny]\ncidrs = [\"2001:db8::/129\"]\n\
                [bans]\nignoreip = [\"example.com\"]\n";
    let errs = errors(text);
    expect_error(
        &errs,
        3,
        "allow.cidrs[1]",
        "`10.0.0.1/8` has host bits set; did you mean 10.0.0.0/8?",
    );
    expect_error(
        &errs,
        5,
        "deny.cidrs[0]",
        "bad prefix length `129` (expected 0 to 128)",
    );
    expect_error(
        &errs,
        7,
        "bans.ignoreip[0]",
        "`example.com` is not an IP address",
    );
    assert_eq!(errs.len(), 3, "{}", render(&errs));
}

#[test]
fn bad_durations() {
    let text = "[bans]\nbantime = \"1x\"\nmaxtime = -5\n[bans.escalate]\nwindow = \"0s\"\nbantime = \"\"\n\
                [[jail]]\nname = \"j\"\nlogpath = \"/l\"\nfilter = \"kamailio\"\nfindtime = \"10 m\"\n\
                bantime = \"99999999999w\"\n";
    let errs = errors(text);
    expect_error(&errs, 2, "bans.bantime", "bad duration: unknown unit `x`");
    expect_error(
        &errs,
        3,
        "bans.maxtime",
        "bad duration: negative durations are not allowed",
    );
    expect_error(
        &errs,
        5,
        "bans.escalate.window",
        "must be at least 1s (got 0s)",
    );
    expect_error(
        &errs,
        6,
        "bans.escalate.bantime",
        "bad duration: empty duration",
    );
    expect_error(&errs, 11, "jail[0].findtime", "`10` has no unit");
    expect_error(&errs, 12, "jail[0].bantime", "bad duration: too long");
    assert_eq!(errs.len(), 6, "{}", render(&errs));
}

#[test]
fn bad_ports() {
    let errs = errors("[ports]\nudp = [0, 5060]\ntcp = [\n  5061,\n  70000,\n]\n");
    expect_error(&errs, 2, "ports.udp[0]", "must be at least 1 (got 0)");
    expect_error(
        &errs,
        5,
        "ports.tcp[1]",
        "must be at most 65535 (got 70000)",
    );
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    only_error(
        "[ports]\nudp = [-1]\n",
        2,
        "ports.udp[0]",
        "must be at least 1 (got -1)",
    );
}

#[test]
fn out_of_range_numbers() {
    let text =
        "[limits]\npackets_per_second = -1\nburst = 4294967296\nipv6_prefix = 0\n[limits.tcp]\n\
                syn_burst = 0\n[capacity]\nsources = 0\n[bans.escalate]\ndrops = -3\n";
    let errs = errors(text);
    expect_error(
        &errs,
        2,
        "limits.packets_per_second",
        "must be at least 0 (got -1)",
    );
    expect_error(
        &errs,
        3,
        "limits.burst",
        "must be at most 4294967295 (got 4294967296)",
    );
    expect_error(&errs, 4, "limits.ipv6_prefix", "must be at least 1 (got 0)");
    expect_error(
        &errs,
        6,
        "limits.tcp.syn_burst",
        "must be at least 1 (got 0)",
    );
    expect_error(&errs, 8, "capacity.sources", "must be at least 1 (got 0)");
    expect_error(
        &errs,
        10,
        "bans.escalate.drops",
        "must be at least 0 (got -3)",
    );
    assert_eq!(errs.len(), 6, "{}", render(&errs));
}

#[test]
fn bad_methods() {
    let text = "[limits.methods]\nregister = { per_second = 5, burst = 10 }\nOTHER = { per_second = 1, burst = 1 }\n\
                FOO = { per_second = 0, burst = 1 }\nBYE = { per_second = 1 }\nACK = { per_second = 1, burst = 1, x = 2 }\n\
                CANCEL = 5\n";
    let errs = errors(text);
    expect_error(
        &errs,
        2,
        "limits.methods.register",
        "method names are case-sensitive: did you mean `REGISTER`?",
    );
    expect_error(
        &errs,
        3,
        "limits.methods.OTHER",
        "unknown SIP method `OTHER` (known: INVITE, ACK,",
    );
    expect_error(&errs, 4, "limits.methods.FOO", "unknown SIP method");
    // The bucket under a bad name is still checked.
    expect_error(
        &errs,
        4,
        "limits.methods.FOO.per_second",
        "must be at least 1 (got 0)",
    );
    expect_error(
        &errs,
        5,
        "limits.methods.BYE.burst",
        "required key is missing",
    );
    expect_error(
        &errs,
        6,
        "limits.methods.ACK.x",
        "unknown key (expected one of: per_second, burst)",
    );
    expect_error(
        &errs,
        7,
        "limits.methods.CANCEL",
        "expected a table, found an integer",
    );
    assert_eq!(errs.len(), 7, "{}", render(&errs));
}

#[test]
fn too_many_methods() {
    let mut text = String::from("[limits.methods]\n");
    for m in [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "PRACK",
        "SUBSCRIBE",
    ] {
        text.push_str(&format!("{m} = {{ per_second = 1, burst = 1 }}\n"));
    }
    only_error(
        &text,
        8,
        "limits.methods.PRACK",
        "too many methods: at most 6",
    );
}

#[test]
fn bad_scanner_user_agents() {
    let long = "x".repeat(33);
    let text = format!("[sip]\nscanner_user_agents = [\"sipvicious\", \"\",\n \"friendly scanner\", \"a/b\", \"{long}\", 7]\n");
    let errs = errors(&text);
    expect_error(
        &errs,
        2,
        "sip.scanner_user_agents[1]",
        "\"\" can never match",
    );
    expect_error(
        &errs,
        3,
        "sip.scanner_user_agents[2]",
        "1 to 32 bytes without '/', ':', spaces",
    );
    expect_error(&errs, 3, "sip.scanner_user_agents[3]", "can never match");
    expect_error(&errs, 3, "sip.scanner_user_agents[4]", "can never match");
    expect_error(
        &errs,
        3,
        "sip.scanner_user_agents[5]",
        "expected a string, found an integer",
    );
    assert_eq!(errs.len(), 5, "{}", render(&errs));
    let many: Vec<String> = (0..257).map(|i| format!("\"ua{i}\"")).collect();
    let text = format!("[sip]\nscanner_user_agents = [\n{}\n]\n", many.join(",\n"));
    only_error(&text, 259, "sip.scanner_user_agents[256]", "at most 256");
}

#[test]
fn bad_interfaces_and_group() {
    let text = "[shield]\ninterfaces = [\"eth0\", \"\", \"a-very-long-ifname\", \"eth0:1\", \"..\", \"eth0\"]\n\
                [control]\ngroup = \"voip ops\"\n";
    let errs = errors(text);
    expect_error(&errs, 2, "shield.interfaces[1]", "must not be empty");
    expect_error(&errs, 2, "shield.interfaces[2]", "longer than 15 bytes");
    expect_error(
        &errs,
        2,
        "shield.interfaces[3]",
        "not a valid interface name",
    );
    expect_error(
        &errs,
        2,
        "shield.interfaces[4]",
        "not a valid interface name",
    );
    expect_error(&errs, 2, "shield.interfaces[5]", "listed more than once");
    expect_error(&errs, 4, "control.group", "is not a valid group name");
    assert_eq!(errs.len(), 6, "{}", render(&errs));
    only_error(
        "[shield]\nstate_dir = \"\"\n",
        2,
        "shield.state_dir",
        "must not be empty",
    );
}

#[test]
fn capacity_is_enforced() {
    let text = "[capacity]\nallow = 2\ndeny = 1\n[allow]\ncidrs = [\"192.0.2.1\", \"192.0.2.2\", \"192.0.2.1\"]\n\
                [deny]\ncidrs = [\"192.0.2.3\", \"2001:db8::/32\"]\n";
    only_error(
        text,
        6,
        "deny",
        "2 entries (cidrs and files, duplicates removed) exceed capacity.deny = 1",
    );
}

// ---- jails -------------------------------------------------------------------

#[test]
fn jails_are_resolved() {
    let filter = "[Definition]\nfailregex = ^auth failed from <HOST>$\n";
    let config = r#"[bans]
bantime = "2h"
[[jail]]
name = "kamailio-auth"
logpath = "log/kamailio.log"
filter = "kamailio"
[[jail]]
name = "pbx"
logpath = "/var/log/asterisk/messages"
filter = "my-filter.conf"
failregex = ['^NOTICE.* <HOST> failed to authenticate']
ignoreregex = ['^DEBUG']
maxretry = 3
findtime = "1h"
bantime = "1d"
[[jail]]
name = "off"
logpath = "/nowhere"
failregex = ['<HOST>']
enabled = false
"#;
    let (dir, path) = scratch(config, &[("my-filter.conf", filter)]);
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let dir = dir.path();
    assert_eq!(
        c.jails,
        [
            JailSpec {
                name: "kamailio-auth".into(),
                logpath: dir.join("log/kamailio.log"),
                filter: Some("kamailio".into()),
                failregex: vec![],
                ignoreregex: vec![],
                maxretry: 5,
                findtime: secs(600),
                bantime: secs(7_200),
            },
            JailSpec {
                name: "pbx".into(),
                logpath: "/var/log/asterisk/messages".into(),
                filter: Some(dir.join("my-filter.conf").to_string_lossy().into_owned()),
                failregex: vec!["^NOTICE.* <HOST> failed to authenticate".into()],
                ignoreregex: vec!["^DEBUG".into()],
                maxretry: 3,
                findtime: secs(3_600),
                bantime: secs(86_400),
            },
        ]
    );
    // The same as an inline array of tables.
    let inline = "jail = [{ name = \"x\", logpath = \"/l\", failregex = [\"<HOST>\"] }]\n";
    assert_eq!(parse(inline).map(|c| c.jails.len()), Ok(1));
}

#[test]
fn jail_errors() {
    let text = r#"[[jail]]
name = "a"
logpath = "/var/log/a.log"
filter = "kamailio"
[[jail]]
name = "a"
logpath = "/var/log/b.log"
filter = "asterisk"
[[jail]]
name = "no-pattern"
logpath = "/var/log/c.log"
[[jail]]
name = "bad regex"
logpath = "/var/log/d.log"
failregex = ['^auth failed from <HOST> (']
ignoreregex = ['[z-a]']
[[jail]]
logpath = ""
filter = "kamailo"
failregex = ['failed']
maxretry = 0
enabled = "no"
"#;
    let errs = errors(text);
    expect_error(
        &errs,
        6,
        "jail[1].name",
        "jail name \"a\" is already used by jail[0]",
    );
    expect_error(
        &errs,
        9,
        "jail[2]",
        "needs a filter, or at least one failregex",
    );
    expect_error(&errs, 13, "jail[3].name", "not a valid jail name");
    expect_error(
        &errs,
        15,
        "jail[3].failregex[0]",
        "invalid regex: unclosed group",
    );
    expect_error(&errs, 16, "jail[3].ignoreregex[0]", "invalid regex:");
    expect_error(&errs, 17, "jail[4].name", "required key is missing");
    expect_error(&errs, 18, "jail[4].logpath", "must not be empty");
    expect_error(
        &errs,
        19,
        "jail[4].filter",
        "\"kamailo\" is neither a built-in filter (kamailio, asterisk,",
    );
    expect_error(&errs, 20, "jail[4].failregex[0]", "has no <HOST>");
    expect_error(&errs, 21, "jail[4].maxretry", "must be at least 1 (got 0)");
    expect_error(
        &errs,
        22,
        "jail[4].enabled",
        "expected a boolean, found a string",
    );
    assert_eq!(errs.len(), 11, "{}", render(&errs));
    // Two <HOST>s would need two groups of one name.
    only_error(
        "[[jail]]\nname = \"x\"\nlogpath = \"/l\"\nfailregex = ['<HOST> <HOST>']\n",
        4,
        "jail[0].failregex[0]",
        "invalid regex",
    );
    // A filter that is a directory is not a filter file.
    only_error(
        "[[jail]]\nname = \"x\"\nlogpath = \"/l\"\nfilter = \"/\"\n",
        4,
        "jail[0].filter",
        "neither a built-in filter",
    );
}

// ---- list files ----------------------------------------------------------------

#[test]
fn list_files_are_read_relative_to_the_config() {
    let allow = "# carriers\n192.0.2.0/24\n\n198.51.100.7   # SBC\n192.0.2.0/24\n2001:db8::/32\n";
    let deny = "203.0.113.0/24\n";
    let (dir, path) = scratch(
        "[allow]\ncidrs = [\"198.51.100.7\"]\nfiles = [\"lists/allow.txt\"]\n[deny]\nfiles = [\"DENY\"]\n",
        &[("DENY", deny)],
    );
    fs::create_dir(dir.path().join("lists")).expect("mkdir");
    fs::write(dir.path().join("lists/allow.txt"), allow).expect("write");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.allow.nets,
        [
            net("198.51.100.7/32"),
            net("192.0.2.0/24"),
            net("2001:db8::/32")
        ]
    );
    assert_eq!(c.deny.nets, [net("203.0.113.0/24")]);
}

#[test]
fn list_file_errors_name_the_list_file_and_line() {
    let (dir, path) = scratch(
        "[allow]\nfiles = [\"allow.txt\"]\n[deny]\nfiles = [\n  \"missing.txt\",\n  \".\",\n]\n",
        &[("allow.txt", "192.0.2.0/24\n\n# ok so far\n10.0.0.1/8\n")],
    );
    let errs: Vec<ConfigError> = Config::load(&path)
        .expect_err("bad lists")
        .into_iter()
        .collect();
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    // Config-file problems first, in line order, then the list file's.
    assert_eq!(
        (errs[0].file.as_path(), errs[0].line, errs[0].key.as_str()),
        (path.as_path(), Some(5), "deny.files[0]")
    );
    assert!(
        errs[0].message.starts_with("cannot read ") && errs[0].message.contains("missing.txt"),
        "{}",
        errs[0]
    );
    assert_eq!(
        (errs[1].line, errs[1].key.as_str()),
        (Some(6), "deny.files[1]")
    );
    assert!(
        errs[1].message.ends_with("not a regular file"),
        "{}",
        errs[1]
    );
    let list = dir.path().join("allow.txt");
    assert_eq!(
        (errs[2].file.as_path(), errs[2].line, errs[2].key.as_str()),
        (list.as_path(), Some(4), "allow.files[0]")
    );
    assert_eq!(
        errs[2].message,
        "`10.0.0.1/8` has host bits set; did you mean 10.0.0.0/8?"
    );
    assert_eq!(
        errs[2].to_string(),
        format!("{}:4: allow.files[0]: {}", list.display(), errs[2].message)
    );
}

#[test]
fn a_garbage_list_file_does_not_flood_the_report() {
    let garbage: String = (0..100).map(|i| format!("junk{i}\n")).collect();
    let (_dir, path) = scratch(
        "[deny]\nfiles = [\"deny.txt\"]\n",
        &[("deny.txt", &garbage)],
    );
    let errs: Vec<ConfigError> = Config::load(&path)
        .expect_err("garbage")
        .into_iter()
        .collect();
    assert_eq!(errs.len(), 11, "{}", render(&errs));
    assert_eq!(errs[10].line, Some(11));
    assert_eq!(errs[10].message, "90 more bad lines from here on");
}

#[test]
fn load_reports_an_unreadable_config() {
    let e = Config::load(Path::new("/nonexistent/shield.toml")).expect_err("missing");
    assert_eq!(e.len(), 1);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/shield.toml: cannot read: "),
        "{e}"
    );
}

// ---- [destinations] --------------------------------------------------------------

#[test]
fn destinations_defaults_refuse_nothing_but_count() {
    assert_eq!(parse("[destinations]\n"), Ok(defaults()));
    let d = crate::dest::Destinations::default();
    assert!(d.strip_prefixes.is_empty());
    assert_eq!(d.international_prefixes, ["00"]);
    assert!(d.entries.is_empty());
    assert_eq!(
        (d.international_per_minute, d.international_burst, d.reject_per_second, d.escalate),
        (0, 5, 100, 5)
    );
    assert_eq!(d.action, crate::dest::Action::Reject);
    assert!(d.check_allowlisted);
    // A policy is the operator's to choose: none, nothing refused.
    assert!(!d.policy().refuses());
    assert_eq!(d.decide("00899123456").refused_by, None);
    assert_eq!(d.decide("00899123456").dialled.class, shield_common::dest::DestClass::International);
}

#[test]
fn destinations_full_section() {
    let c = parse(
        "[destinations]\n\
         strip_prefixes = [\"9\"]\n\
         international_prefixes = [\"00\", \"011\"]\n\
         deny = [\"00899\", \"+900\", \"001900\", \"00976\"]\n\
         allow_international = [\"+44\", \"0033\"]\n\
         international_per_minute = 10\n\
         international_burst = 3\n\
         action = \"drop\"\n\
         reject_per_second = 20\n\
         check_allowlisted = false\n\
         escalate = 0\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = &c.destinations;
    assert_eq!(d.strip_prefixes, ["9"]);
    assert_eq!(d.international_prefixes, ["00", "011"]);
    let entries: Vec<(&str, crate::dest::EntryKind)> =
        d.entries.iter().map(|e| (e.text.as_str(), e.kind)).collect();
    use crate::dest::EntryKind::{Allow, Deny};
    assert_eq!(
        entries,
        [("00899", Deny), ("+900", Deny), ("001900", Deny), ("00976", Deny), ("+44", Allow), ("0033", Allow)]
    );
    assert_eq!((d.international_per_minute, d.international_burst), (10, 3));
    assert_eq!(d.action, crate::dest::Action::Drop);
    assert_eq!((d.reject_per_second, d.check_allowlisted, d.escalate), (20, false, 0));
    // The outside-line 9 comes off, then 00 or 011 means international.
    assert_eq!(d.decide("9 00899 1234").refused_by.as_deref(), Some("00899"));
    assert_eq!(d.decide("90119001234").refused_by.as_deref(), Some("+900"));
    assert_eq!(d.decide("011 44 20 7946 0000").allowed_by.as_deref(), Some("+44"));
    assert_eq!(d.decide("+33 1 23 45 67 89").allowed_by.as_deref(), Some("0033"));
    assert_eq!(d.decide("+49 30 1234").refused_by.as_deref(), Some("allow_international"));
    assert_eq!(d.decide("0800 123 456").refused_by, None);
}

#[test]
fn bad_destination_entries_name_line_and_key() {
    let errs = errors(
        "[destinations]\n\
         deny = [\n\
         \x20 \"00899\",\n\
         \x20 \"premium\",\n\
         \x20 \"12345678901234567\",\n\
         ]\n\
         allow_international = [\"0800\"]\n\
         strip_prefixes = [\"9a\", \"123456789\"]\n\
         international_prefixes = [\"00\", \"011\", \"0011\", \"0012\", \"0013\", \"0014\", \"0015\", \"0016\", \"0017\"]\n",
    );
    expect_error(&errs, 4, "destinations.deny[1]", "\"premium\" is not a number prefix");
    expect_error(&errs, 5, "destinations.deny[2]", "longer than 16 digits");
    expect_error(&errs, 7, "destinations.allow_international[0]", "\"0800\" is not international");
    expect_error(&errs, 8, "destinations.strip_prefixes[0]", "\"9a\" is not a prefix: 1 to 8 digits");
    expect_error(&errs, 8, "destinations.strip_prefixes[1]", "\"123456789\" is not a prefix");
    expect_error(&errs, 9, "destinations.international_prefixes[8]", "at most 8 prefixes");
    assert_eq!(errs.len(), 6, "{}", render(&errs));
    assert!(errs.iter().all(|e| e.file == Path::new(ORIGIN)), "{}", render(&errs));
    only_error(
        "[destinations]\naction = \"hangup\"\n",
        2,
        "destinations.action",
        "reject",
    );
}

#[test]
fn deny_files_bad_lines_are_reported_against_the_file_and_line() {
    let list = "# premium-rate ranges\n00899\n+900   # a comment\n\n0090x\n001900\n12345678901234567\n";
    let (dir, path) = scratch(
        "[destinations]\ndeny_files = [\n  \"premium.txt\",\n  \"missing.txt\",\n]\n",
        &[("premium.txt", list)],
    );
    let errs: Vec<ConfigError> = Config::load(&path)
        .expect_err("bad lines")
        .into_iter()
        .collect();
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    // The config file's problem first: the file it cannot read.
    assert_eq!(
        (errs[0].file.as_path(), errs[0].line, errs[0].key.as_str()),
        (path.as_path(), Some(4), "destinations.deny_files[1]")
    );
    assert!(errs[0].message.starts_with("cannot read ") && errs[0].message.contains("missing.txt"), "{}", errs[0]);
    let file = dir.path().join("premium.txt");
    for (e, line, needle) in [(&errs[1], 5, "\"0090x\" is not a number prefix"), (&errs[2], 7, "longer than 16 digits")] {
        assert_eq!((e.file.as_path(), e.line, e.key.as_str()), (file.as_path(), Some(line), "destinations.deny_files[0]"));
        assert!(e.message.contains(needle), "{e}");
    }
    assert!(
        errs[1].to_string().starts_with(&format!("{}:5: destinations.deny_files[0]: ", file.display())),
        "{}",
        errs[1]
    );
    // The good lines are read.
    fs::write(&path, "[destinations]\ndeny_files = [\"premium.txt\"]\n").expect("write");
    fs::write(&file, "# premium\n00899\n+900   # a comment\n\n001900\n").expect("write");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let texts: Vec<&str> = c.destinations.entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["00899", "+900", "001900"]);
    assert_eq!(c.destinations.decide("+9001234").refused_by.as_deref(), Some("+900"));
}

// ---- all at once ---------------------------------------------------------------

#[test]
fn every_problem_in_a_file_is_reported() {
    let text = r#"[shield]
mode = "fast"
enforce = true
[ports]
udp = [0]
[allow]
cidrs = ["10.0.0.1/8"]
[limits]
burst = 0
[limits.methods]
REGISTR = { per_second = 5, burst = 10 }
[sip]
scanner_user_agents = ["a b"]
[bans]
bantime = "1 hour"
[capacity]
deny = 0
[metrics]
listen = "nowhere"
[[jail]]
name = "j"
logpath = "/l"
filter = "kamailio"
bogus = 1
"#;
    let errs = errors(text);
    let lines: Vec<Option<usize>> = errs.iter().map(|e| e.line).collect();
    let want = [2, 5, 7, 9, 11, 13, 15, 17, 19, 24];
    assert_eq!(lines, want.map(Some), "{}", render(&errs));
}

// ---- properties ------------------------------------------------------------------

/// Lines that are mostly valid TOML and mostly about this schema, so the
/// generated files get past the TOML parser and into the validation code.
fn toml_like_line() -> impl Strategy<Value = String> {
    let sections = prop::sample::select(vec![
        "[shield]",
        "[ports]",
        "[allow]",
        "[deny]",
        "[limits]",
        "[limits.methods]",
        "[limits.tcp]",
        "[sip]",
        "[bans]",
        "[bans.escalate]",
        "[capacity]",
        "[metrics]",
        "[control]",
        "[[jail]]",
        "[other]",
        "[limits.methods.INVITE]",
    ]);
    let keys = prop::sample::select(vec![
        "interfaces",
        "mode",
        "enforce",
        "pin_path",
        "state_dir",
        "udp",
        "tcp",
        "cidrs",
        "files",
        "trunk_only",
        "packets_per_second",
        "burst",
        "ipv6_prefix",
        "methods",
        "per_second",
        "REGISTER",
        "register",
        "syn_burst",
        "scanner_user_agents",
        "bantime",
        "scope",
        "ignoreip",
        "maxtime",
        "drops",
        "window",
        "bans",
        "allow",
        "listen",
        "socket",
        "group",
        "name",
        "logpath",
        "filter",
        "failregex",
        "ignoreregex",
        "maxretry",
        "findtime",
        "enabled",
        "jail",
        "limits.burst",
        "x",
    ]);
    let values = prop::sample::select(vec![
        "0",
        "-1",
        "1",
        "65536",
        "4294967296",
        "9223372036854775807",
        "true",
        "1.5",
        "1979-05-27",
        "\"\"",
        "\"1h\"",
        "\"-5m\"",
        "\"off\"",
        "\"auto\"",
        "\"10.0.0.1/8\"",
        "\"::/0\"",
        "\"(\"",
        "\"kamailio\"",
        "\"/\"",
        "\".\"",
        "[]",
        "[0, 5060]",
        "[\"10.0.0.0/8\", \"x\"]",
        "['<HOST>']",
        "['<HOST> (']",
        "{ per_second = 1, burst = 0 }",
        "{}",
        "[{ name = \"a\" }]",
        "\"127.0.0.1:1\"",
    ]);
    let kv = (keys, values).prop_map(|(k, v)| format!("{k} = {v}"));
    prop_oneof![
        2 => sections.prop_map(str::to_owned),
        6 => kv,
        1 => "[ -~]{0,20}",
    ]
}

const NOWHERE: &str = "/nonexistent/shield.toml";

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Config::parse(&text, Path::new(NOWHERE));
    }

    #[test]
    fn arbitrary_toml_like_files_never_panic(
        lines in prop::collection::vec(toml_like_line(), 0..40),
    ) {
        match Config::parse(&lines.join("\n"), Path::new(NOWHERE)) {
            // Whatever is accepted builds a policy.
            Ok(c) => {
                let _ = c.policy();
            }
            // Every problem says why, and one in the config file under a
            // key also says on which line.
            Err(errs) => {
                for e in &errs {
                    prop_assert!(!e.message.is_empty());
                    let in_config = e.file == Path::new(NOWHERE) && !e.key.is_empty();
                    prop_assert!(!in_config || e.line.is_some(), "{}", e);
                }
            }
        }
    }
}

#[test]
fn verify_section_defaults_values_and_policy() {
    let c = parse("").unwrap();
    assert_eq!(c.verify, Verify::default());
    assert_eq!(c.verify.methods, vec![Method::Register, Method::Invite]);
    assert_eq!(c.verify.unverified_per_second, 0, "off unless configured");
    assert!(!c.policy().unverified.is_limited());
    assert_eq!(c.capacity.verified, shield_common::default_size::VERIFIED);

    let c = parse(
        "[verify]\nmethods = [\"REGISTER\", \"REGISTER\", \"SUBSCRIBE\"]\nttl = \"30m\"\n\
         cidrs = [\"192.0.2.0/24\", \"2001:db8::/32\", \"192.0.2.0/24\"]\n\
         unverified_per_second = 500\nunverified_burst = 1000\ncapacity = 4096\n",
    )
    .unwrap();
    assert_eq!(c.verify.methods, vec![Method::Register, Method::Subscribe]);
    assert_eq!(c.verify.ttl, secs(1800));
    assert_eq!(c.verify.cidrs, vec![net("192.0.2.0/24"), net("2001:db8::/32")]);
    assert_eq!(c.capacity.verified, 4096);
    let p = c.policy();
    assert_eq!(p.unverified, shield_common::Bucket::new(500, 1000));
    assert_eq!(p.verify_ttl_ns, 1_800_000_000_000);
    assert!(p.verifies(Method::Register as usize) && p.verifies(Method::Subscribe as usize));
    assert!(!p.verifies(Method::Invite as usize));
}

#[test]
fn verify_section_errors_name_line_and_key() {
    let errs = errors(
        "[verify]\nmethods = [\"register\", \"FOO\"]\nttl = \"0s\"\ncidrs = [\"10.0.0.300/8\"]\n\
         unverified_per_second = -1\nunverified_burst = 0\ncapacity = 0\nbogus = 1\n",
    );
    expect_error(&errs, 2, "verify.methods[0]", "did you mean `REGISTER`");
    expect_error(&errs, 2, "verify.methods[1]", "unknown SIP method `FOO`");
    expect_error(&errs, 3, "verify.ttl", "");
    expect_error(&errs, 4, "verify.cidrs[0]", "10.0.0.300");
    expect_error(&errs, 5, "verify.unverified_per_second", "");
    expect_error(&errs, 6, "verify.unverified_burst", "");
    expect_error(&errs, 7, "verify.capacity", "");
    expect_error(&errs, 8, "verify.bogus", "");
}

/// `[crowdsec]` with its secrets in files under a temporary directory.
fn crowdsec_config(extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("key"), "0123abcd\n").unwrap();
    fs::write(dir.path().join("pass"), "s3cret-pw\n").unwrap();
    let text = format!(
        "[crowdsec]\nlapi_url = \"http://192.0.2.1:8080\"\napi_key_file = \"{}/key\"\n{extra}",
        dir.path().display()
    );
    (dir, text)
}

#[test]
fn crowdsec_defaults_and_secrets_from_files() {
    assert_eq!(defaults().crowdsec, None);
    let (dir, text) = crowdsec_config(&format!(
        "[crowdsec.push]\nmachine_id = \"sbc1\"\npassword_file = \"{}/pass\"\n",
        std::env::temp_dir().join("none").display()
    ));
    // The password file does not exist: named with its key and line.
    expect_error(&errors(&text), 6, "crowdsec.push.password_file", "cannot read it");
    let text = text.replace(&std::env::temp_dir().join("none").display().to_string(), &dir.path().display().to_string());
    let c = parse(&text).unwrap().crowdsec.unwrap();
    assert_eq!(c.lapi_url, "http://192.0.2.1:8080/");
    assert_eq!(c.api_key.expose(), "0123abcd");
    assert_eq!(c.update_frequency, secs(10));
    assert_eq!(c.scopes, vec![Scope::Ip, Scope::Range]);
    assert!(c.origins.is_empty());
    assert_eq!(c.decision_types, vec!["ban".to_string()]);
    let p = c.push.unwrap();
    assert_eq!((p.machine_id.as_str(), p.password.expose()), ("sbc1", "s3cret-pw"));
    assert_eq!(p.origins, vec!["jail", "escalation", "manual"]);
    // Secrets never reach a log line.
    assert!(!format!("{:?}", parse(&text).unwrap()).contains("s3cret-pw"));
}

#[test]
fn crowdsec_errors_name_line_and_key() {
    let (_dir, text) = crowdsec_config(
        "update_frequency = \"0s\"\nscopes = [\"Ip\", \"Country\"]\nbogus = 1\n\
         [crowdsec.push]\nmachine_id = \"sbc 1\"\npassword_file = \"/nonexistent/pass\"\norigins = [\"crowdsec\"]\n",
    );
    let errs = errors(&text);
    expect_error(&errs, 4, "crowdsec.update_frequency", "at least 1s");
    expect_error(&errs, 5, "crowdsec.scopes[1]", "unknown scope \"Country\"");
    expect_error(&errs, 6, "crowdsec.bogus", "unknown key");
    expect_error(&errs, 8, "crowdsec.push.machine_id", "not a machine id");
    expect_error(&errs, 9, "crowdsec.push.password_file", "/nonexistent/pass");
    expect_error(&errs, 10, "crowdsec.push.origins[0]", "never pushed back");
    for (url, needle) in [("ftp://x/", "http:// or https://"), ("not a url", "not a URL")] {
        let (_d, t) = crowdsec_config("");
        let t = t.replace("http://192.0.2.1:8080", url);
        expect_error(&errors(&t), 2, "crowdsec.lapi_url", needle);
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("empty"), "\n\n").unwrap();
    let t = format!("[crowdsec]\nlapi_url = \"http://x/\"\napi_key_file = \"{}/empty\"\n", dir.path().display());
    expect_error(&errors(&t), 3, "crowdsec.api_key_file", "is empty");
    expect_error(&errors("[crowdsec]\n"), 1, "crowdsec.lapi_url", "required");
}

#[test]
fn crowdsec_ca_file_errors_name_the_file() {
    let (dir, text) = crowdsec_config("");
    let ca = |body: &str| {
        fs::write(dir.path().join("ca.pem"), body).unwrap();
        text.replace("[crowdsec]\n", &format!("[crowdsec]\nca_file = \"{}/ca.pem\"\n", dir.path().display()))
    };
    let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    for (body, needle) in [
        ("", "holds no certificate"),
        ("a key, not a CA\n", "holds no certificate"),
        (garbage, "unusable"),
    ] {
        expect_error(&errors(&ca(body)), 2, "crowdsec.ca_file", needle);
    }
    let missing = text.replace("[crowdsec]\n", "[crowdsec]\nca_file = \"/nonexistent/ca.pem\"\n");
    expect_error(&errors(&missing), 2, "crowdsec.ca_file", "cannot read it");
    // Not a file: refused, not read until memory runs out.
    let zero = text.replace("[crowdsec]\n", "[crowdsec]\nca_file = \"/dev/zero\"\n");
    expect_error(&errors(&zero), 2, "crowdsec.ca_file", "not a regular file");
    let zero_key = text.replace(&format!("{}/key", dir.path().display()), "/dev/zero");
    expect_error(&errors(&zero_key), 3, "crowdsec.api_key_file", "not a regular file");
    // Absent: the public roots alone.
    assert!(parse(&text).unwrap().crowdsec.unwrap().ca.is_none());
}

// ---- [calls] -------------------------------------------------------------------

#[test]
fn calls_defaults_and_full_section() {
    assert_eq!(parse("[calls]\n"), Ok(defaults()));
    let d = super::Calls::default();
    assert_eq!(
        (d.capacity, d.max_concurrent_per_source, d.long_call, d.max_duration),
        (100_000, 0, secs(7_200), secs(43_200))
    );
    let c = parse(
        "[calls]\ncapacity = 5000\nmax_concurrent_per_source = 4\nlong_call = \"30m\"\nmax_duration = \"1h\"\n",
    )
    .expect("valid");
    assert_eq!(c.calls.max_concurrent_per_source, 4);
    assert_eq!(c.capacity.calls, 5000);
    let k = c.calls.kernel();
    assert_eq!((k.max_per_source, k.max_duration_ns), (4, 3_600_000_000_000));
}

#[test]
fn calls_errors_name_line_and_key() {
    only_error("[calls]\nmax_concurrent_per_source = -1\n", 2, "calls.max_concurrent_per_source", "at least 0");
    only_error("[calls]\ncapacity = 0\n", 2, "calls.capacity", "at least 1");
    only_error("[calls]\nlong_call = \"0s\"\n", 2, "calls.long_call", "at least 1s");
    only_error("[calls]\nlong_call = \"soon\"\n", 2, "calls.long_call", "bad duration");
    only_error(
        "[calls]\nlong_call = \"2h\"\nmax_duration = \"1h\"\n",
        3,
        "calls.max_duration",
        "shorter than long_call",
    );
    only_error("[calls]\nmax_calls = 3\n", 2, "calls.max_calls", "");
}

// ---- [auth] --------------------------------------------------------------------

#[test]
fn auth_section_off_when_absent_spec_defaults_when_present() {
    let c = parse("").unwrap();
    assert_eq!(c.auth, crate::config::auth::Auth::default());
    assert!(!c.auth.enabled());
    let c = parse("[auth]\n").unwrap();
    assert_eq!(c.auth, crate::config::auth::Auth::SPEC);
    assert!(c.auth.enabled());
    let c = parse("[auth]\nfailures = 3\nwindow = \"1m\"\nbantime = \"2h\"\nuser_failures = 0\n").unwrap();
    assert_eq!(c.auth.failures, 3);
    assert_eq!(c.auth.window, Duration::from_secs(60));
    assert_eq!(c.auth.bantime, Duration::from_secs(7200));
    assert_eq!(c.auth.user_failures, 0);
    assert!(c.auth.enabled());
    let off = parse("[auth]\nfailures = 0\nuser_failures = 0\n").unwrap();
    assert!(!off.auth.enabled());
}

#[test]
fn auth_section_errors_name_line_and_key() {
    let errs = errors(
        "[auth]\nfailures = -1\nwindow = \"soon\"\nbantime = \"0s\"\nuser_failures = \"x\"\nbogus = 1\n",
    );
    expect_error(&errs, 2, "auth.failures", "");
    expect_error(&errs, 3, "auth.window", "");
    expect_error(&errs, 4, "auth.bantime", "");
    expect_error(&errs, 5, "auth.user_failures", "");
    expect_error(&errs, 6, "auth.bogus", "");
}

#[test]
fn a_bucket_deeper_than_a_source_can_hold_is_refused() {
    // SOURCES keeps 32-bit times that run at most 549 s ahead: 550 at 1/s
    // is the deepest bucket, 551 would silently shrink in the kernel.
    let errs = errors(
        "[limits]\npackets_per_second = 1\nburst = 600\n[limits.methods]\n\
         REGISTER = { per_second = 1, burst = 551 }\nINVITE = { per_second = 1, burst = 550 }\n\
         [limits.tcp]\nsyn_per_second = 2\nsyn_burst = 4000\n",
    );
    expect_error(
        &errs,
        3,
        "limits.burst",
        "600 at 1 a second is 600 s of traffic; a per-source bucket holds at most 549 s (at most 550 at this rate)",
    );
    expect_error(
        &errs,
        5,
        "limits.methods.REGISTER.burst",
        "551 at 1 a second is 551 s of traffic",
    );
    expect_error(
        &errs,
        9,
        "limits.tcp.syn_burst",
        "(at most 1100 at this rate)",
    );
    assert_eq!(errs.len(), 3, "{}", render(&errs));
}
