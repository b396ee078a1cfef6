//! The control socket under abuse: a flood of idle connections from other
//! users and from root, hostile text in ban reasons (from a client and
//! from a log line a jail matched), and requests with fields the daemon
//! does not know.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const NOGROUP: u32 = 65534;
/// What an attacker put into a SIP user name: retitles the terminal, then
/// clears it.
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J";
/// The same, as `shield::text::Escaped` shows it.
const HOSTILE_ESCAPED: &str = r"\x1b]0;pwned\x07\x1b[2J";
/// Characters a terminal acts on that are not C0: C1 CSI, a bidi override.
const HOSTILE_UNICODE: &str = "\u{9b}2J \u{202e}gpj.exe";

/// A daemon whose socket the group `nogroup` may use, so that processes
/// running as other uids (with gid nogroup) can connect.
fn group_daemon(lab: &Lab) -> Shieldd {
    let mut d = Shieldd::new(bins(), &lab.sbc, "");
    let cfg = std::fs::read_to_string(&d.config).expect("config");
    d.write_config(&cfg.replace("[control]\n", "[control]\ngroup = \"nogroup\"\n"));
    // Let other users reach the socket's directory; the socket decides.
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d.start();
    d
}

/// The flood test's helper processes: the test re-runs its own binary
/// (as other users) with `HOG_SOCKET` set, and that run of the test
/// becomes a hog instead, steered by `HOG_CONNECTIONS` and `HOG_MODE`:
/// * `hold`: opens the connections once and keeps them open, silent;
/// * `persist`: keeps that many connections open, reconnecting whenever
///   the daemon drops or refuses one, and prints what each one got:
///   `busy MS` or `idle MS` (ms from connect to the daemon's reply).
///
/// Prints `ready` once every connection was opened.
fn hog(socket: String) -> ! {
    let n: usize = std::env::var("HOG_CONNECTIONS")
        .expect("HOG_CONNECTIONS")
        .parse()
        .expect("a number");
    let persist = std::env::var("HOG_MODE").as_deref() == Ok("persist");
    let opened = Arc::new(AtomicUsize::new(0));
    for _ in 0..n {
        let (socket, opened) = (socket.clone(), opened.clone());
        std::thread::spawn(move || loop {
            let Ok(s) = UnixStream::connect(&socket) else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            if opened.fetch_add(1, Ordering::SeqCst) + 1 == n {
                println!("ready");
            }
            if !persist {
                loop {
                    std::thread::park();
                }
            }
            let t = Instant::now();
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
            let what = if line.contains("\"kind\":\"busy\"") {
                "busy"
            } else if line.contains("no complete request") {
                "idle"
            } else {
                "other"
            };
            println!("{what} {}", t.elapsed().as_millis());
            if what == "busy" {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    loop {
        std::thread::park();
    }
}

/// A running [`hog`] process and what it printed.
struct Hog {
    _child: Guard,
    out: Arc<Mutex<String>>,
}

impl Hog {
    /// Starts a hog as `uid` (gid nogroup; root stays root).
    fn start(exe: &Path, socket: &Path, uid: u32, mode: &str, connections: usize) -> Hog {
        let mut c = Command::new(exe);
        c.args(["idle_floods_do_not_lock_out_root", "--exact", "--nocapture"])
            .env("HOG_SOCKET", socket)
            .env("HOG_CONNECTIONS", connections.to_string())
            .env("HOG_MODE", mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if uid != 0 {
            c = as_user(c, uid, NOGROUP);
        }
        let mut child = c.spawn().expect("spawn hog");
        let out = collect(child.stdout.take().expect("stdout"));
        Hog {
            _child: Guard(child),
            out,
        }
    }

    /// Waits (bounded) until every connection was opened. A daemon that
    /// leaves connections in its listen backlog may never get there; the
    /// test goes on regardless and judges by what root sees.
    fn wait_ready(&self) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if self.out.lock().expect("lock").lines().any(|l| l == "ready") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Milliseconds from connect to reply, for replies of `what`.
    fn replies(&self, what: &str) -> Vec<u64> {
        self.out
            .lock()
            .expect("lock")
            .lines()
            .filter_map(|l| l.strip_prefix(what)?.trim().parse().ok())
            .collect()
    }
}

#[test]
fn idle_floods_do_not_lock_out_root() {
    if let Ok(socket) = std::env::var("HOG_SOCKET") {
        hog(socket);
    }
    let lab = Lab::new();
    let d = group_daemon(&lab);
    let me = reachable(
        std::env::current_exe()
            .expect("test binary")
            .to_str()
            .expect("utf-8"),
    );

    // Ten other users keep reconnecting 10 connections each: more than
    // all the shared slots together.
    let persistent: Vec<Hog> = (0..10)
        .map(|i| Hog::start(&me.path, &d.socket, 60001 + i, "persist", 10))
        .collect();
    // And 200 idle connections as nobody, and 200 as root.
    let holders = [
        Hog::start(&me.path, &d.socket, 65534, "hold", 200),
        Hog::start(&me.path, &d.socket, 0, "hold", 200),
    ];
    for h in persistent.iter().chain(&holders) {
        let ready = h.wait_ready();
        eprintln!("hog ready: {ready}");
    }
    std::thread::sleep(Duration::from_millis(500));

    for attempt in 0..3 {
        let t = Instant::now();
        let out = d.ctl(&["status"]);
        let took = t.elapsed();
        eprintln!("status #{attempt} under the flood took {took:?}");
        assert!(
            out.status.success(),
            "root's shieldctl locked out (after {took:?}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(took < Duration::from_secs(5), "status took {took:?}");
    }

    // Connections over the limits were refused at once, not queued; the
    // ones admitted but idle were dropped after about two seconds (root
    // is served at once now: give them that long).
    wait_for("an idle hog dropped", Duration::from_secs(10), || {
        persistent
            .iter()
            .any(|h| !h.replies("idle").is_empty())
            .then_some(())
    });
    let busy: Vec<u64> = persistent.iter().flat_map(|h| h.replies("busy")).collect();
    let idle: Vec<u64> = persistent.iter().flat_map(|h| h.replies("idle")).collect();
    eprintln!(
        "hogs got {} busy replies (slowest {:?} ms), {} idle drops (slowest {:?} ms)",
        busy.len(),
        busy.iter().max(),
        idle.len(),
        idle.iter().max()
    );
    assert!(!busy.is_empty(), "no connection was refused as busy");
    assert!(
        busy.iter().all(|&ms| ms < 2000),
        "a busy reply took {:?} ms",
        busy.iter().max()
    );
    assert!(!idle.is_empty(), "no idle connection was dropped");
    assert!(
        idle.iter().all(|&ms| (1500..5000).contains(&ms)),
        "idle drops after {idle:?} ms"
    );
    drop(holders);
    drop(persistent);
    assert!(d.ctl_json(&["status"])["interfaces"][0]["name"] == "veth-s");
}

/// One request line on the daemon's socket; the reply line.
fn raw_request(socket: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).expect("read");
    reply
}

/// Fails if `out` holds a character a terminal would act on (newlines
/// between lines aside).
fn assert_inert(what: &str, out: &str) {
    let bad: Vec<char> = out
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(bad.is_empty(), "{what} holds raw {bad:?}:\n{out:?}");
}

#[test]
fn hostile_ban_reasons_reach_no_terminal_raw() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "");
    let logpath = d.add_jail(
        "auth.log",
        "name = \"auth\"\nfailregex = ['auth failed for .* from <HOST>$']\nmaxretry = 1\nbantime = \"5m\"\n",
        "",
    );
    d.start();

    // From a client, as a reason...
    let reason = serde_json::to_string(HOSTILE).expect("json");
    let reply = raw_request(
        &d.socket,
        &format!("{{\"cmd\":\"ban\",\"net\":\"198.51.100.7\",\"reason\":{reason}}}"),
    );
    assert!(reply.contains("\"ok\":true"), "{reply}");
    let out = d.ctl_ok(&["ban", "198.51.100.9", "--reason", HOSTILE_UNICODE]);
    assert_inert("shieldctl ban", &out);
    // ...and from a log line a jail matched (the follower starts at the
    // end of the file: give it a moment to be there).
    std::thread::sleep(Duration::from_millis(500));
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&logpath)
        .expect("open log");
    log.write_all(format!("auth failed for {HOSTILE} from 198.51.100.8\n").as_bytes())
        .expect("write");
    wait_for("the jail's ban", Duration::from_secs(10), || {
        d.ban_of("198.51.100.8/32")
    });

    let banned = d.ctl_ok(&["banned"]);
    assert_inert("shieldctl banned", &banned);
    assert!(
        banned.matches(HOSTILE_ESCAPED).count() == 2,
        "both hostile reasons shown escaped:\n{banned}"
    );
    assert!(banned.contains(r"\u{9b}2J \u{202e}gpj.exe"), "{banned}");

    // JSON escapes them too, and still carries the reason exactly.
    let out = d.ctl(&["--json", "banned"]);
    let json = text(&out.stdout);
    assert_inert("shieldctl --json banned", &json);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let reasons: Vec<&str> = v["bans"]
        .as_array()
        .expect("bans")
        .iter()
        .map(|b| b["reason"].as_str().expect("reason"))
        .collect();
    assert!(reasons.contains(&HOSTILE), "{reasons:?}");
    assert!(reasons.contains(&HOSTILE_UNICODE), "{reasons:?}");

    let log = d.log_text();
    assert_inert("the daemon's log", &log);
    assert!(log.contains(HOSTILE_ESCAPED), "{log}");
}

#[test]
fn unknown_request_fields_are_refused_by_name() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "");
    d.start();

    let reply = raw_request(&d.socket, r#"{"cmd":"ban","net":"198.51.100.7","bogus":1}"#);
    assert!(
        reply.contains("\"kind\":\"bad_request\"") && reply.contains("bogus"),
        "{reply}"
    );
    assert!(d.bans().is_empty(), "banned despite the unknown field");
    for line in [
        r#"{"cmd":"status","bogus":1}"#,
        r#"{"cmd":"banned","verbose":true}"#,
        r#"{"cmd":"detach","bogus":1}"#,
    ] {
        let reply = raw_request(&d.socket, line);
        let field = if line.contains("verbose") {
            "verbose"
        } else {
            "bogus"
        };
        assert!(
            reply.contains("\"kind\":\"bad_request\"") && reply.contains(field),
            "{line}: {reply}"
        );
    }
    assert!(d.is_running(), "a detach with an unknown field was obeyed");

    // shieldctl talking to a daemon that does not know a field it sends
    // (here a proxy adds one): exit 2, naming the field.
    let proxy = d.dir.join("proxy.sock");
    let _proxy = add_field_proxy(&proxy, &d.socket);
    let out = {
        let mut c = Command::new(SHIELDCTL);
        c.arg("--socket").arg(&proxy).arg("status");
        output_within(c, Duration::from_secs(30))
    };
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("bogus"), "{}", text(&out.stderr));
}

/// Forwards each request from `listen` to `daemon` with `"bogus":1` added.
fn add_field_proxy(listen: &Path, daemon: &Path) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(listen).expect("bind proxy");
    let daemon = daemon.to_path_buf();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let mut line = String::new();
            if BufReader::new(&client).read_line(&mut line).is_err() {
                continue;
            }
            let mut req: serde_json::Value = serde_json::from_str(&line).expect("request");
            req["bogus"] = 1.into();
            let reply = raw_request(&daemon, &req.to_string());
            let _ = (&client).write_all(reply.as_bytes());
            let _ = (&client).read(&mut [0u8; 1]);
        }
    })
}

/// JSON lets a key repeat and serde keeps the last: `{"cmd":"status",
/// "cmd":"detach"}` was a detach. A repeated key, at any depth and however
/// it is spelt, is refused by name and changes nothing; and a detach names
/// in the log the uid that asked for it.
#[test]
fn duplicate_request_keys_are_refused_by_name_and_detach_logs_its_uid() {
    let lab = Lab::new();
    let mut d = Shieldd::new(bins(), &lab.sbc, "");
    d.start();

    for (line, key) in [
        (r#"{"cmd":"status","cmd":"detach"}"#, "cmd"),
        (r#"{"cmd":"status","c\u006dd":"detach"}"#, "cmd"),
        (
            r#"{"cmd":"ban","net":"198.51.100.7","net":"198.51.100.8"}"#,
            "net",
        ),
        (
            r#"{"cmd":"ban","net":"198.51.100.7","duration":60,"duration":1}"#,
            "duration",
        ),
        (r#"{"cmd":"banned","net":null,"x":{"k":1,"k":2}}"#, "k"),
    ] {
        let reply = raw_request(&d.socket, line);
        assert!(
            reply.contains("\"kind\":\"bad_request\"")
                && reply.contains("duplicate")
                && reply.contains(&format!("`{key}`")),
            "{line}: {reply}"
        );
        assert!(d.is_running(), "{line} stopped the daemon");
    }
    assert!(d.bans().is_empty(), "a request with a repeated key banned");
    assert_eq!(d.ctl_json(&["status"])["interfaces"][0]["name"], "veth-s");

    d.ctl_ok(&["detach"]);
    assert!(d.wait_exit(Duration::from_secs(10)).success());
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = format!("uid={}", unsafe { libc::geteuid() });
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("detach") && l.contains(&uid)),
        "no detach line naming {uid}:\n{log}"
    );
}

/// A root script that keeps many control connections busy (more than the
/// daemon serves in all), while other users flood the rest: root's own
/// `shieldctl` is still served, every time.
#[test]
fn root_is_served_while_its_own_script_and_others_hold_every_slot() {
    let lab = Lab::new();
    let d = group_daemon(&lab);
    let me = reachable(
        std::env::current_exe()
            .expect("test binary")
            .to_str()
            .expect("utf-8"),
    );
    // The script first: it gets all that root may hold.
    let script = RootScript::start(&d.socket, 100);
    let held = script.held();
    eprintln!("the root script holds {held} busy connections");
    assert!(held > 0, "the root script got no connection at all");
    // Nine other users with eight reconnecting connections each: more
    // than all the shared slots.
    let others: Vec<Hog> = (0..9)
        .map(|i| Hog::start(&me.path, &d.socket, 60101 + i, "persist", 8))
        .collect();
    for h in &others {
        let ready = h.wait_ready();
        eprintln!("hog ready: {ready}");
    }

    for attempt in 0..3 {
        let out = d.ctl(&["status"]);
        assert!(
            out.status.success(),
            "root's shieldctl status #{attempt} locked out: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    drop(others);
    drop(script);
    assert!(d.ctl_json(&["status"])["interfaces"][0]["name"] == "veth-s");
}

/// Root's busy script: opens connections and keeps every one the daemon
/// admitted busy with a `status` request every 300 ms (so none is dropped
/// as idle) until dropped.
struct RootScript {
    held: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RootScript {
    fn start(socket: &Path, connections: usize) -> RootScript {
        let held = Arc::new(AtomicUsize::new(usize::MAX));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (socket, h, s) = (socket.to_path_buf(), held.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut open: Vec<BufReader<UnixStream>> = (0..connections)
                .filter_map(|_| UnixStream::connect(&socket).ok())
                .map(BufReader::new)
                .collect();
            while !s.load(Ordering::SeqCst) {
                open.retain_mut(|c| ask_status(c));
                h.store(open.len(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let script = RootScript {
            held,
            stop,
            thread: Some(thread),
        };
        wait_for(
            "the root script's first round",
            Duration::from_secs(30),
            || (script.held.load(Ordering::SeqCst) != usize::MAX).then_some(()),
        );
        script
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

impl Drop for RootScript {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `status` on `c`; whether it was answered (not refused, not closed).
fn ask_status(c: &mut BufReader<UnixStream>) -> bool {
    let s = c.get_ref();
    if s.set_read_timeout(Some(Duration::from_secs(10))).is_err()
        || (&*s).write_all(b"{\"cmd\":\"status\"}\n").is_err()
    {
        return false;
    }
    let mut line = String::new();
    matches!(c.read_line(&mut line), Ok(n) if n > 0) && line.contains("\"ok\":true")
}
