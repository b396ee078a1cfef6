//! `mode = "tc"` (issue 22 item 4): a real `shieldd` runs the decision as
//! a tcx ingress program on the SBC's veth, with real UDP between two
//! network namespaces. Traffic passes and is counted, a banned source is
//! dropped, status and metrics name the hook, a restart adopts the pinned
//! link in place (same link, bans kept), and `shieldctl detach` takes it
//! away. The lab and the pins are removed on drop, also when a check fails.

mod common;

use std::time::Duration;

use common::*;

const EVERY: Duration = Duration::from_millis(1);

fn tc_daemon(lab: &Lab) -> Shieldd {
    Shieldd::with_config(bins(), &lab.sbc, |d| {
        format!(
            "[shield]\ninterfaces = [\"{SBC_IF}\"]\nmode = \"tc\"\npin_path = \"{}\"\nstate_dir = \"{}\"\n\n\
             [control]\nsocket = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{}\"\n\n{NO_LIMITS}",
            d.pin.display(),
            d.state.display(),
            d.socket.display(),
            shield_tests::daemon::METRICS_PORT,
        )
    })
}

/// The interface's status entry: (mode, link id).
fn iface(d: &Shieldd) -> (String, u64) {
    let st = d.ctl_json(&["status"]);
    let i = &st["interfaces"][0];
    assert_eq!(i["name"], SBC_IF, "{st}");
    (
        i["mode"].as_str().expect("mode").to_string(),
        i["link_id"].as_u64().expect("link id"),
    )
}

/// The program a BPF link runs (`bpftool link show id LINK`).
fn link_program(link: u64) -> u64 {
    let out = std::process::Command::new("bpftool")
        .args(["--json", "link", "show", "id", &link.to_string()])
        .output()
        .expect("bpftool (package bpftool, installed by scripts/setup.sh)");
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    v["prog_id"].as_u64().expect("prog_id")
}

/// Whether the SBC's veth has an XDP program (`ip link` prints `xdp`).
fn has_xdp(lab: &Lab) -> bool {
    let out = lab.sbc.run(|| {
        std::process::Command::new("ip")
            .args(["-d", "link", "show", SBC_IF])
            .output()
            .expect("ip link")
    });
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

#[test]
fn tc_mode_drops_a_banned_source_on_the_socket_buffer_and_adopts_on_restart() {
    let lab = Lab::new();
    let mut d = tc_daemon(&lab);
    d.start();
    let (mode, link) = iface(&d);
    assert_eq!(mode, "tc");
    assert!(!has_xdp(&lab), "tc mode attached an XDP program");
    // Status names the program the link runs: the tc one, not the XDP
    // program that is loaded only for its maps.
    let st = d.ctl_json(&["status"]);
    let shown = st["interfaces"][0]["program_id"].as_u64().expect("program id");
    assert_eq!(shown, link_program(link), "{st}");
    assert_ne!(Some(shown), st["program_id"].as_u64(), "{st}");
    assert!(d.pin.join(format!("link_tc_{SBC_IF}")).exists(), "link pin");
    let metrics = d.metrics(&lab.sbc).expect("metrics");
    assert!(
        metrics.contains(&format!(r#"sipshield_xdp_attached{{interface="{SBC_IF}",mode="tc"}} 1"#)),
        "{metrics}"
    );

    // Allowed: every packet arrives, each counted once by the tc program.
    let sink = Sink::start(&lab);
    let ok = d.packets("pass", "ok");
    send(&lab, PEER_IP, 200, EVERY);
    settle();
    assert_eq!(sink.from(PEER_IP).count, 200);
    // (Plus the neighbour lookups, ARP: not IP, passed `ok` as well.)
    let counted = d.packets("pass", "ok") - ok;
    assert!((200..210).contains(&counted), "{counted} counted ok");

    // Banned: none arrives, each counted `ban`.
    d.ctl_ok(&["ban", "198.51.100.2", "--reason", "tc test"]);
    let dropped = d.packets("drop", "ban");
    send(&lab, PEER_IP, 200, EVERY);
    settle();
    assert_eq!(sink.from(PEER_IP).count, 200, "a banned packet got through");
    assert_eq!(d.packets("drop", "ban") - dropped, 200);

    // A restart swaps the program inside the pinned link: the same link,
    // still tc, the ban still dropping.
    d.restart().expect("restart");
    let (mode, link_after) = iface(&d);
    assert_eq!((mode.as_str(), link_after), ("tc", link), "not adopted in place");
    send(&lab, PEER_IP, 100, EVERY);
    settle();
    assert_eq!(sink.from(PEER_IP).count, 200, "a banned packet got through after the restart");

    // Detach takes the hook away (the ban with it: nothing drops now) and
    // the pins.
    d.ctl_ok(&["detach"]);
    d.wait_exit(Duration::from_secs(30));
    assert!(!d.pin.exists(), "pins left after detach");
    send(&lab, PEER_IP, 100, EVERY);
    settle();
    assert_eq!(sink.from(PEER_IP).count, 300, "the tc program is still attached");
}
