//! A hostile LAPI (issue 18): answers no real CrowdSec gives, served by a
//! small scripted HTTP server in the fleet's `lapi` namespace, to a real
//! `shieldd` in SBC 0's namespace. CrowdSec 1.4.6 cannot be made to send an
//! id as a string, reuse an id for another address or hold a request
//! unanswered: no real component produces these answers, so the test does.
//! (What real CrowdSec can send, a decision on its own address, is tested
//! against it in fleet_crowdsec.rs.)
//!
//! Fails (never skips) without root.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use shield_tests::fleet::{lapi_link_addr, member_config, Fleet, LAPI_PORT};

/// `[crowdsec] update_frequency`.
const EVERY: Duration = Duration::from_secs(1);

/// What the fake LAPI answers.
#[derive(Default)]
struct Script {
    /// The body for `startup=true` and for `startup=false`.
    full: String,
    delta: String,
    /// Stream requests are held unanswered while set.
    hang: bool,
    /// A request is being held.
    holding: bool,
}

/// The fake LAPI: one thread per connection, `Connection: close`.
#[derive(Clone)]
struct FakeLapi(Arc<Mutex<Script>>);

impl FakeLapi {
    /// Listens on the `lapi` namespace's address on SBC 0's link.
    fn start(fleet: &Fleet) -> FakeLapi {
        let listener = fleet
            .lapi
            .run(|| TcpListener::bind((lapi_link_addr(0), LAPI_PORT)))
            .expect("bind the fake LAPI");
        let me = FakeLapi(Arc::new(Mutex::new(Script {
            full: r#"{"new":null,"deleted":null}"#.into(),
            delta: r#"{"new":null,"deleted":null}"#.into(),
            ..Script::default()
        })));
        let served = me.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = served.clone();
                std::thread::spawn(move || s.serve(conn));
            }
        });
        me
    }

    fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.0.lock().expect("script lock"));
    }

    fn holding(&self) -> bool {
        self.0.lock().expect("script lock").holding
    }

    fn serve(&self, conn: TcpStream) {
        let mut r = BufReader::new(conn);
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            return;
        }
        let startup = line.contains("startup=true");
        // The headers, up to the empty line.
        loop {
            let mut h = String::new();
            match r.read_line(&mut h) {
                Ok(0) | Err(_) => return,
                Ok(_) if h == "\r\n" => break,
                Ok(_) => {}
            }
        }
        loop {
            let mut s = self.0.lock().expect("script lock");
            if !s.hang {
                s.holding = false;
                break;
            }
            s.holding = true;
            drop(s);
            std::thread::sleep(Duration::from_millis(20));
        }
        let body = {
            let s = self.0.lock().expect("script lock");
            if startup {
                s.full.clone()
            } else {
                s.delta.clone()
            }
        };
        let mut conn = r.into_inner();
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.flush();
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
    }
}

/// One decision of a stream list.
fn decision(id: &str, value: &str, origin: &str) -> String {
    serde_json::json!({
        "duration": "3h59m50s", "origin": origin, "scenario": "hostile test", "scope": "Ip",
        "type": "ban", "value": value,
    })
    .to_string()
    .replacen('{', &format!("{{\"id\":{id},"), 1)
}

fn list(new: &[String]) -> String {
    format!(r#"{{"new":[{}],"deleted":null}}"#, new.join(","))
}

fn in_map(d: &Shieldd, a: &str) -> bool {
    d.ban_map().expect("map").contains(a.parse().expect("v4"))
}

/// Text a hostile LAPI puts in a decision's origin (a metrics label).
const HOSTILE: &str = "o\"r}\n\x1b[2J";

/// A fake LAPI whose full list is `full`, and a started shieldd on SBC 0
/// pulling from it every [`EVERY`], once it applied a full list. (The
/// daemon is declared last: it stops before the namespaces go.)
fn setup(full: String) -> (Fleet, FakeLapi, Shieldd) {
    let fleet = Fleet::new(1);
    let lapi = FakeLapi::start(&fleet);
    lapi.set(|s| s.full = full);
    let mut d = Shieldd::with_config(bins(), fleet.sbc(0), |d| {
        std::fs::write(d.dir.join("crowdsec.key"), "fake-key\n").expect("key file");
        std::fs::write(d.dir.join("auth.log"), "").expect("jail log");
        member_config(d, &fleet.lapi_url(0), EVERY, None)
    });
    d.start();
    wait_for("a first full stream", Duration::from_secs(15), || {
        (d.ctl_json(&["status"])["crowdsec"]["synced"] == true).then_some(())
    });
    (fleet, lapi, d)
}

/// Item 7: one decision with an id given as a string is skipped and
/// counted; the others in the same list are applied.
#[test]
fn one_unreadable_decision_is_skipped_and_counted_the_rest_applied() {
    let (fleet, _lapi, d) = setup(list(&[
        decision("\"41\"", "198.51.100.41", "cscli"),
        decision("42", "192.0.2.150", "cscli"),
        decision("43", "198.51.100.43", "cscli"),
    ]));
    let st = d.ctl_json(&["status"]);
    assert_eq!(st["crowdsec"]["up"], true, "{st}");
    assert_eq!(st["crowdsec"]["skipped"]["malformed"], 1, "{st}");
    assert!(
        in_map(&d, "192.0.2.150") && in_map(&d, "198.51.100.43"),
        "{st}"
    );
    assert!(
        !in_map(&d, "198.51.100.41"),
        "the unreadable decision was enforced"
    );
    let metrics = d.metrics(fleet.sbc(0)).expect("metrics");
    assert!(
        metrics.contains("sipshield_crowdsec_skipped_total{why=\"malformed\"} 1"),
        "{metrics}"
    );
    let log = d.log_text();
    assert!(
        log.contains("cannot be read") && log.contains("198.51.100.41"),
        "{log}"
    );
}

/// Item 4: a decision origin that would close its label and start a
/// forged line stays inside its label; promtool takes the whole scrape.
#[test]
fn a_hostile_origin_stays_inside_its_metrics_label() {
    let (fleet, _lapi, d) = setup(list(&[decision("43", "198.51.100.43", HOSTILE)]));
    assert!(in_map(&d, "198.51.100.43"));
    let metrics = d.metrics(fleet.sbc(0)).expect("metrics");
    assert!(
        !metrics.contains('\x1b'),
        "a raw terminal control in\n{metrics}"
    );
    shield_tests::promtool::check_metrics(&metrics)
        .unwrap_or_else(|e| panic!("promtool rejects the scrape: {e}\n{metrics}"));
    assert!(
        metrics
            .contains(r#"sipshield_crowdsec_decisions{origin="o\"r}\\x0a\\x1b[2J",scope="Ip"} 1"#),
        "{metrics}"
    );
}

/// Item 5: id 42 names 192.0.2.150, then 192.0.2.151: the kernel lifts
/// .150, which nothing bans any more.
#[test]
fn a_reused_id_moves_the_ban_in_the_kernel() {
    let (_fleet, lapi, d) = setup(list(&[decision("42", "192.0.2.150", "cscli")]));
    assert!(in_map(&d, "192.0.2.150"));
    lapi.set(|s| s.delta = list(&[decision("42", "192.0.2.151", "cscli")]));
    wait_for(
        "the reused id on 192.0.2.151",
        Duration::from_secs(15),
        || d.ban_of("192.0.2.151/32").map(drop),
    );
    lapi.set(|s| s.delta = list(&[]));
    // That control reply came after the whole list was applied.
    assert!(in_map(&d, "192.0.2.151"));
    assert!(d.ban_of("192.0.2.150/32").is_none(), "{:?}", d.bans());
    assert!(
        !in_map(&d, "192.0.2.150"),
        "the kernel still drops 192.0.2.150, which nothing bans"
    );
}

/// Item 6 (status): a pull left unanswered makes LAPI `up` false while it
/// hangs; before, `up` stayed true until the request timed out (30 s).
#[test]
fn a_pull_without_an_answer_marks_lapi_down() {
    let (_fleet, lapi, mut d) = setup(list(&[]));
    lapi.set(|s| s.hang = true);
    wait_for(
        "a pull held by the fake LAPI",
        Duration::from_secs(15),
        || lapi.holding().then_some(()),
    );
    let st = wait_for(
        "status DOWN during the unanswered pull",
        Duration::from_secs(60),
        || {
            let st = d.ctl_json(&["status"]);
            (st["crowdsec"]["up"] == false).then_some(st)
        },
    );
    let why = st["crowdsec"]["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        why.contains("no answer"),
        "down for another reason than the hanging pull: {st}"
    );
    assert!(lapi.holding(), "the pull had already given up: {st}");
    lapi.set(|s| s.hang = false);
    wait_for(
        "up again once LAPI answers",
        Duration::from_secs(30),
        || (d.ctl_json(&["status"])["crowdsec"]["up"] == true).then_some(()),
    );
    assert!(d.is_running());
}
