//! BENCHMARKS.md from a run's results: method, commands, the tables, the
//! figure, and the comparisons computed from the numbers (nothing here is
//! typed in by hand but the method).

use std::fmt::Write;

use super::defence::Defence;
use super::flood_runs::{cpu_per_million_dropped, FloodRate, Point};
use super::Results;
use crate::lab::flood::Engine;
use crate::lab::progress::thousands;

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// Nearest-rank percentile (`q` in 0..=1); NaN for an empty slice.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// sipp reports call lengths in whole milliseconds.
fn ms(x: f64) -> String {
    if x < 1.0 {
        "< 1 ms".into()
    } else {
        format!("{x:.0} ms")
    }
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

fn baseline(r: &Results, d: Defence) -> Option<&Point> {
    r.points
        .iter()
        .find(|p| p.defence == d.baseline() && p.rate == FloodRate::Off)
}

fn at(r: &Results, d: Defence, rate: FloodRate) -> Option<&Point> {
    r.points.iter().find(|p| p.defence == d && p.rate == rate)
}

/// The headlines at the highest paced rate, where every set-up was
/// offered the same flood: SBC CPU, and CPU per million drops.
fn paced_headlines(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    // The highest paced rate: every set-up was offered the same flood.
    let paced = r
        .points
        .iter()
        .filter_map(|p| match p.rate {
            FloodRate::Pps(n) => Some(n),
            _ => None,
        })
        .max();
    if let Some(n) = paced {
        let rate = FloodRate::Pps(n);
        let cpu = |d| at(r, d, rate).map(|p| 100.0 * p.sbc_cpu_secs() / p.window_secs);
        if let (Some(s), Some(nf), Some(k), Some(none)) = (
            cpu(Defence::Shield),
            cpu(Defence::Nftables),
            cpu(Defence::Pike),
            cpu(Defence::None),
        ) {
            out.push(format!(
                "The same flood of {} packets/s cost the SBC (Kamailio + softirq + shieldd, % of one CPU): SIP Shield \
                 {s:.0} %, nftables {nf:.0} %, Kamailio pike {k:.0} %, no protection {none:.0} %.",
                thousands(n)
            ));
        }
    }
    if let Some(n) = paced {
        let rate = FloodRate::Pps(n);
        let per = |d| at(r, d, rate).and_then(|p| cpu_per_million_dropped(p, baseline(r, d)));
        if let (Some(cs), Some(cn)) = (per(Defence::Shield), per(Defence::Nftables)) {
            let pike = per(Defence::Pike).map_or(String::new(), |ck| format!(", Kamailio pike {ck:.2}"));
            out.push(format!(
                "CPU per million dropped packets at that rate: SIP Shield {cs:.2} CPU-s, nftables {cn:.2}{pike} \
                 ({:.1}x {} between SIP Shield and nftables).",
                if cs > 0.0 && cn > 0.0 { (cn / cs).max(cs / cn) } else { f64::INFINITY },
                if cn >= cs { "in SIP Shield's favour" } else { "in nftables' favour" }
            ));
        }
    }
    out
}

/// The headline comparisons, as sentences computed from the numbers
/// (the README quotes them).
pub fn headlines(r: &Results) -> Vec<String> {
    let mut out = paced_headlines(r);
    let max = FloodRate::Max;
    if let (Some(s), Some(n), Some(k), Some(none)) =
        (at(r, Defence::Shield, max), at(r, Defence::Nftables, max), at(r, Defence::Pike, max), at(r, Defence::None, max))
    {
        out.push(format!(
            "Flooded as fast as this machine sends (its receive path shares the sender's CPU, so each set-up got a \
             different rate: SIP Shield {}, nftables {}, pike {}, no protection {} packets/s), legitimate calls and \
             registrations succeeded: SIP Shield {}, nftables {}, Kamailio pike {}, no protection {}.",
            thousands(s.flood.rate as u64),
            thousands(n.flood.rate as u64),
            thousands(k.flood.rate as u64),
            thousands(none.flood.rate as u64),
            pct(s.legit_success()),
            pct(n.legit_success()),
            pct(k.legit_success()),
            pct(none.legit_success())
        ));
    }
    let b = &r.bans;
    if b.shield_batch_secs > 0.0 && b.nft_secs > 0.0 {
        out.push(format!(
            "Loading {} bans: SIP Shield {:.2} s (batch map update; a shieldd start restoring them from its state \
             dir: {:.2} s), nftables {:.2} s (`nft -f`): the batch update {:.1}x {}.",
            thousands(u64::from(b.count)),
            b.shield_batch_secs,
            b.shieldd_ready_with_bans_secs,
            b.nft_secs,
            (b.nft_secs / b.shield_batch_secs).max(b.shield_batch_secs / b.nft_secs),
            if b.nft_secs >= b.shield_batch_secs { "faster with SIP Shield" } else { "faster with nftables" }
        ));
    }
    if let Some(h) = r.spoof.as_ref().and_then(super::spoof_report::headline) {
        out.push(h);
    }
    let l = &r.latency;
    if !l.shield_ms.is_empty() && !l.fail2ban_ms.is_empty() {
        out.push(format!(
            "Log line to drop (median of {}): SIP Shield's jail {:.1} ms, fail2ban ({} backend, nftables action) {:.0} ms.",
            l.trials,
            median(&l.shield_ms),
            l.fail2ban_backend,
            median(&l.fail2ban_ms)
        ));
    }
    out
}

pub fn markdown(r: &Results, datapath: Option<&str>, banstore: Option<&str>) -> String {
    let mut s = String::new();
    intro(&mut s, r);
    flood_section(&mut s, r);
    skb_section(&mut s, r);
    bans_section(&mut s, r);
    latency_section(&mut s, r);
    included_sections(&mut s, r, datapath, banstore);
    caveats(&mut s, r);
    s
}

/// The title, the headlines, the machine and how the benchmark is run.
fn intro(s: &mut String, r: &Results) {
    let m = &r.machine;
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `cargo xtask bench` (`make bench`) on {}, in {:.1} minutes. Every number, table and the \
         figure below come from that one run{}; rerun the command to regenerate this file \
         (raw numbers: [`lab/results/bench.json`](lab/results/bench.json)).\n",
        r.date,
        r.minutes,
        separate_sections(r)
    );
    let _ = writeln!(s, "## Headlines\n");
    for h in headlines(r) {
        let _ = writeln!(s, "- {h}");
    }
    let _ = writeln!(s, "\n## Machine\n");
    let _ = writeln!(
        s,
        "{} CPUs ({}), {:.1} GiB, Linux {}. Busy CPU before the run (other processes): {:.0} % of the machine{}.\n",
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        m.kernel,
        m.busy_before_pct,
        if m.busy_before_pct > 10.0 { " — the machine was not idle, which adds noise to the CPU figures" } else { "" }
    );
    for (k, v) in &m.versions {
        let _ = writeln!(s, "- {k}: {v}");
    }

    let _ = writeln!(s, "\n## How it is run\n");
    let _ = writeln!(
        s,
        "```\nmake bench            # or: cargo xtask bench   (as root; builds first)\n```\n\n\
         `cargo xtask bench` runs the data-path micro-benchmark (`BPF_PROG_TEST_RUN`, section 4) and then the \
         lab benchmark (`target/release/labbench`, source in `tests/src/lab/bench/`). The lab is the one of \
         `make demo` (`tests/src/lab/mod.rs`): three network namespaces, the attacker and the carrier each joined \
         to the SBC by a veth pair; everybody sends SIP to the SBC's one address, so legitimate and attack traffic \
         share Kamailio's socket and workers. Nothing leaves the machine. \
         `target/release/labbench --only spoof` (after `cargo build --release -p shield-user -p shield-tests --bins`) \
         reruns section 6 alone and puts it into the last run's `bench.json`; `--only skb` does the same for \
         section 1b.\n"
    );
}

/// " except section …, measured on its own …" for the sections a
/// `labbench --only` run replaced, or nothing.
fn separate_sections(r: &Results) -> String {
    let mut parts = Vec::new();
    if let Some(d) = &r.skb_separate {
        parts.push(format!("section 1b, measured on its own on {d} with `labbench --only skb`"));
    }
    if let Some(sp) = r.spoof.as_ref().filter(|sp| sp.separate) {
        parts.push(format!("section 6, measured on its own on {} with `labbench --only spoof`", sp.date));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" except {}", parts.join(", and "))
    }
}

/// Section 1: the set-ups, the traffic, what is measured, the table and the figure.
fn flood_section(s: &mut String, r: &Results) {
    let m = &r.machine;
    let _ = writeln!(s, "## 1. A flood against a real Kamailio\n");
    let _ = writeln!(
        s,
        "**Set-ups** (each started fresh for every measurement: no bans, meters or buckets carried over):\n\n\
         | | set-up |\n|---|---|\n\
         | no protection | Kamailio 5.6 with `lab/kamailio/sbc.cfg` (registrar, digest auth, calls to a PBX; like Kamailio's default configuration it drops scanner User-Agents in its script) |\n\
         | Kamailio pike + htable | `lab/kamailio/sbc-antiflood.cfg`: the same plus pike (16 requests per 2 s per address) and an htable ban list (5 min), exactly as Kamailio's default configuration's `WITH_ANTIFLOOD`; the trunk is exempt, as that configuration advises |\n\
         | nftables | `sbc.cfg` behind `lab/nft/shield-equivalent.nft` at the netdev ingress hook of both SBC interfaces: allow set, deny set, ban set with timeouts, per-source meters (packets 50/s burst 100, INVITE 10/s burst 20, REGISTER 5/s burst 10, SYN 10/s burst 20), an approximate SIP payload check, escalation of repeat offenders into the ban set for 10 min. It cannot look for the User-Agent. |\n\
         | SIP Shield | `sbc.cfg` behind the real `shieldd` with the example `config/shield.toml` (same limits; escalation after 1000 drops in 10 s, ban 10 min), XDP in native mode on both SBC interfaces |\n"
    );
    let _ = writeln!(
        s,
        "**Traffic**, the same for every set-up, for {:.0} s per measurement:\n\n\
         - legitimate, from the carrier: {} subscribers (own addresses, not allowlisted) each registering with digest \
           authentication {} time(s) per second, and {} calls per second from the carrier's trunk (allowlisted) to a PBX \
           behind the SBC (INVITE, 200, ACK, BYE), all real sipp; a registration or call succeeds if it completes \
           within sipp's timeouts (4 s per message, with SIP retransmissions);\n\
         - the flood, from the attacker: our own sender (`tests/src/bin/flood.rs`, engine `{}`: {}) sending {} \
           requests from {} addresses with an ordinary phone's User-Agent, pinned to CPU {:?}. First as fast as it \
           goes, which differs per set-up because on one machine the receive path runs on the sender's CPU; then \
           paced at fractions of the highest rate measured in a calibration run against SIP Shield ({} packets/s).\n",
        r.window_secs,
        r.legit.subscribers,
        r.legit.registrations_per_subscriber,
        r.legit.calls_per_second,
        r.flood_engine.as_str(),
        r.flood_engine.describe(),
        r.flood_methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" and "),
        r.flood_sources,
        r.flood_cpus,
        thousands(r.calibration.rate as u64)
    );
    let _ = writeln!(
        s,
        "**Measured** over each flood's window: the success of the legitimate clients, the requests they had to \
         retransmit and the mean time a registration took (sipp's own counts); \
         Kamailio's CPU (user + system of all its processes, `/proc/PID/stat`); the SBC host's softirq CPU \
         (`/proc/stat`, all CPUs: the kernel's receive path of every packet — XDP, or the IP/UDP stack and \
         netfilter — which a veth runs on the sending CPU, so it is host-wide; it also holds the outside hosts' \
         receive of the SBC's replies); shieldd's CPU; packets the set-up dropped (Kamailio's script counters for \
         pike, the rules' counters for nftables, the XDP program's for SIP Shield); packets lost to overload \
         instead (full socket buffers, full backlogs). \"CPU-s per 1M dropped\" is the SBC CPU (Kamailio + softirq \
         + shieldd) above that set-up's own no-flood baseline, per million packets it dropped. CPU is given in % of \
         one CPU; the machine has {}.\n",
        m.cpus
    );
    flood_table(s, r);
    let _ = writeln!(
        s,
        "\n![Legitimate success and SBC CPU against the flood rate](lab/results/flood.svg)\n"
    );
    let _ = writeln!(s, "{}", flood_observations(r));
}

/// Section 1's table: one row per set-up and flood rate.
fn flood_table(s: &mut String, r: &Results) {
    let _ = writeln!(
        s,
        "| set-up | flood | offered (packets/s) | reached the SBC | registrations ok | calls ok | legit retransmissions | mean registration | requests Kamailio handled | Kamailio CPU | softirq CPU | shieldd CPU | dropped by the set-up | lost to overload | CPU-s per 1M dropped |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut rates: Vec<FloodRate> = Vec::new();
    for p in &r.points {
        if !rates.contains(&p.rate) {
            rates.push(p.rate);
        }
    }
    for rate in &rates {
        for d in Defence::ALL {
            let Some(p) = at(r, d, *rate) else { continue };
            let w = p.window_secs;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {}/{} | {}/{} | {} | {} | {} | {:.0} % | {:.0} % | {} | {} | {} | {} |",
                d.label(),
                rate.label(),
                thousands(p.flood.rate as u64),
                thousands(p.delivered),
                p.registrations_ok,
                p.registrations,
                p.calls_ok,
                p.calls,
                thousands(p.legit_retransmissions),
                ms(p.registration_ms),
                thousands(p.kamailio_requests),
                100.0 * p.kamailio_cpu_secs / w,
                100.0 * p.softirq_secs / w,
                if d == Defence::Shield { format!("{:.1} %", 100.0 * p.shieldd_cpu_secs / w) } else { "—".into() },
                if d == Defence::None { "—".into() } else { thousands(p.defence_drops) },
                thousands(p.overload_drops),
                cpu_per_million_dropped(p, baseline(r, d)).map_or("—".into(), |c| format!("{c:.2}")),
            );
        }
    }
}

/// Section 1b: the same flood as socket buffers (generic XDP and tc ingress
/// against netfilter).
fn skb_section(s: &mut String, r: &Results) {
    if r.skb_points.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "### 1b. The same flood as socket buffers{}\n",
        r.skb_separate
            .as_ref()
            .map_or(String::new(), |d| format!(" (measured on its own on {d}, `labbench --only skb`)"))
    );
    let _ = writeln!(
        s,
        "The XDP frames above are how a NIC driver hands packets over: SIP Shield drops them before the kernel \
         allocates anything for them, nftables needs an skb built first. When a packet is an skb from the start — \
         here: sent with AF_PACKET (`flood --engine packet`), in real life a driver without native XDP — SIP Shield \
         cannot save that allocation; what remains is its program against the netfilter hook and rules. \
         {} packets/s, same traffic otherwise, each set-up {} times, interleaved. \"SIP Shield (shieldd)\" is \
         attached natively to the veth (the driver hands the program each skb as an XDP buffer); \"generic XDP\" \
         is `mode = \"generic\"`, the kernel's skb-mode hook; \"tc ingress\" is `mode = \"tc\"`, the same \
         decision compiled as a tcx ingress program on the skb, which `mode = \"auto\"` falls back to on a driver \
         without native XDP (where the kernel has tcx, Linux >= 6.6):\n",
        thousands(r.skb_rate),
        r.skb_points.iter().filter(|p| p.defence == Defence::Nftables).count()
    );
    let _ = writeln!(s, "| set-up | offered (packets/s) | softirq CPU | SBC CPU | dropped by the set-up | CPU-s per 1M dropped | legit ok |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for p in &r.skb_points {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} % | {:.0} % | {} | {} | {} |",
            p.defence.label(),
            thousands(p.flood.rate as u64),
            100.0 * p.softirq_secs / p.window_secs,
            100.0 * p.sbc_cpu_secs() / p.window_secs,
            thousands(p.defence_drops),
            cpu_per_million_dropped(p, baseline(r, p.defence))
                .map_or("—".into(), |c| format!("{c:.2}")),
            pct(p.legit_success())
        );
    }
    let lowest = skb_lowest(r);
    let nft = lowest.iter().find(|(d, _)| *d == Defence::Nftables).map(|(_, c)| *c);
    let _ = writeln!(
        s,
        "\nThe lowest CPU-s per 1M dropped of each set-up's rounds (other processes on a shared machine only ever \
         add CPU, so the lowest is the least disturbed), and its ratio to nftables' (goal of issue 22: SIP \
         Shield's skb path <= 0.8x):\n"
    );
    let _ = writeln!(s, "| set-up | CPU-s per 1M dropped | to nftables |\n|---|---:|---:|");
    for (d, c) in &lowest {
        let _ = writeln!(
            s,
            "| {} | {c:.2} | {} |",
            d.label(),
            nft.map_or("—".into(), |n| format!("{:.2}x", c / n))
        );
    }
    let _ = writeln!(s);
}

/// Section 1b's lowest CPU per million drops per set-up, over its rounds
/// (set-ups without a figure left out).
fn skb_lowest(r: &Results) -> Vec<(Defence, f64)> {
    let mut seen: Vec<Defence> = Vec::new();
    for p in &r.skb_points {
        if !seen.contains(&p.defence) {
            seen.push(p.defence);
        }
    }
    seen.into_iter()
        .filter_map(|d| {
            let v: Vec<f64> = r
                .skb_points
                .iter()
                .filter(|p| p.defence == d)
                .filter_map(|p| cpu_per_million_dropped(p, baseline(r, d)))
                .collect();
            (!v.is_empty()).then(|| (d, percentile(&v, 0.0)))
        })
        .collect()
}

/// Section 2: loading a million bans.
fn bans_section(s: &mut String, r: &Results) {
    let b = &r.bans;
    let _ = writeln!(s, "## 2. Loading {} bans\n", thousands(u64::from(b.count)));
    let _ = writeln!(
        s,
        "Distinct IPv4 addresses (map keys only, nothing is sent to them), each banned for an hour.\n\n\
         | how | time | bans/s |\n|---|---:|---:|\n\
         | SIP Shield: `ShieldMaps::ban_batch` (`BPF_MAP_UPDATE_BATCH`, what shieldd uses) into a loaded program's map | {:.2} s | {} |\n\
         | SIP Shield: shieldd start-up with them in its state dir, until it answers (program load, verifier, attach and restore) | {:.2} s | |\n\
         | SIP Shield: the same start-up with an empty state dir | {:.2} s | |\n\
         | nftables: `nft -f` of a file adding them to a set with timeouts ({:.0} MB of text; parse + one transaction) | {:.2} s | {} |\n",
        b.shield_batch_secs,
        thousands((f64::from(b.count) / b.shield_batch_secs.max(1e-9)) as u64),
        b.shieldd_ready_with_bans_secs,
        b.shieldd_ready_empty_secs,
        b.nft_file_bytes as f64 / 1e6,
        b.nft_secs,
        thousands((f64::from(b.count) / b.nft_secs.max(1e-9)) as u64),
    );
    let _ = writeln!(
        s,
        "shieldd reported {} active bans after the restart; the batch-loaded map was checked for its entry count. \
         Three of the nftables set's elements (first, middle and last in the file) are attacker addresses: after the \
         load a packet from each was dropped by the ban rule.\n",
        thousands(b.shieldd_bans_active)
    );
}

/// Section 3: from a log line to the drop.
fn latency_section(s: &mut String, r: &Results) {
    let l = &r.latency;
    let _ = writeln!(
        s,
        "## 3. From a failure line in the log to the source being dropped\n"
    );
    let _ = writeln!(
        s,
        "Each trial appends {} Kamailio failure lines for one address (syslog format; the same filter file, \
         `config/filters/kamailio.conf`, for both) to a log while that address sends a numbered UDP probe to the SBC \
         every millisecond; the latency is from the last line's `write(2)` returning to the first probe that never \
         arrived. SIP Shield: shieldd's jail (inotify) writing the ban into the XDP map. fail2ban 1.0.2: its own \
         server in the SBC's namespace with the `{}` backend and Debian's `nftables` action (all ports, drop). \
         One after the other, never both at once; {} trials each.\n",
        super::latency::MAXRETRY,
        l.fail2ban_backend,
        l.trials
    );
    let _ = writeln!(
        s,
        "| | median | p90 | max | min |\n|---|---:|---:|---:|---:|"
    );
    for (name, v) in [
        ("SIP Shield jail", &l.shield_ms),
        ("fail2ban + nftables", &l.fail2ban_ms),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            median(v),
            percentile(v, 0.9),
            percentile(v, 1.0),
            percentile(v, 0.0)
        );
    }
    if let Some(f) = l.fail2ban_first_ms {
        let _ = writeln!(
            s,
            "\nfail2ban's first ban, which also creates its nftables table and chain, took {f:.0} ms (not in the row above)."
        );
    }
    if !l.shieldd_logged_ms.is_empty() {
        let _ = writeln!(
            s,
            "shieldd's own figure for the same bans (line read to map updated, from its log): median {:.2} ms.",
            median(&l.shieldd_logged_ms)
        );
    }
    let _ = writeln!(s);
}

/// Sections 4 and 5, the tables `cargo xtask bench` measured beside this run, and section 6.
fn included_sections(s: &mut String, r: &Results, datapath: Option<&str>, banstore: Option<&str>) {
    let _ = writeln!(
        s,
        "## 4. Data path: ns per packet under `BPF_PROG_TEST_RUN`\n"
    );
    match datapath {
        Some(t) => {
            let _ = writeln!(s, "From the same `cargo xtask bench` run (`tests/benches/datapath.rs`):\n\n```\n{}\n```\n", t.trim());
        }
        None => {
            let _ = writeln!(s, "Run `cargo xtask bench` (not `labbench` alone) to include the data-path table here.\n");
        }
    }

    let _ = writeln!(s, "## 5. The ban store: a million bans on record\n");
    match banstore {
        Some(t) => {
            let _ = writeln!(
                s,
                "From the same `cargo xtask bench` run (`storebench`, `tests/src/lab/bench/store.rs`): shieldd with \
                 a million bans in `shield.db`; `status` on the same daemon is the baseline (a round trip with no \
                 kernel or store write).\n\n```\n{}\n```\n",
                t.trim()
            );
        }
        None => {
            let _ = writeln!(s, "Run `cargo xtask bench` (not `labbench` alone) to include the ban-store table here.\n");
        }
    }

    if let Some(sp) = &r.spoof {
        let _ = writeln!(s, "{}", super::spoof_report::section(sp));
    }
}

/// What the numbers do not say.
fn caveats(s: &mut String, r: &Results) {
    let _ = writeln!(s, "## Caveats\n");
    let _ = writeln!(
        s,
        "- One machine plays attacker, carrier and SBC. A veth delivers on the sending CPU, so the flood's receive \
           work competes with the sender itself: the \"max\" rows differ in offered rate per set-up, and the highest \
           rate here is far below what a NIC delivers to a real SBC. The paced rows are the like-for-like comparison.\n\
         - CPU comes from the kernel's tick sampling (250 Hz here); softirq time is host-wide and includes the \
           outside hosts' receive of the SBC's replies (the more a set-up lets through to Kamailio, the more replies).\n\
         - The nftables rules approximate SIP Shield's: no User-Agent check, a prefix-based SIP check, nftables' \
           `limit` token buckets instead of GCRA, escalation by drop rate instead of a drop count per window.\n\
         - Kamailio's pike counts requests Kamailio has already received and parsed; it protects Kamailio's routing \
           logic, not the host.\n"
    );
    if r.flood_engine == Engine::Redirect {
        let _ = writeln!(
            s,
            "- The flood engine is `redirect` (this kernel refuses live-frames test runs: `flood --engine auto` \
               fell back). The SBC still receives XDP frames, but each frame is first a socket buffer on the \
               sender's side and goes through the hop's XDP program: the sender's CPU makes {} packets/s at most \
               (calibration), where the in-kernel generator made about 3 million on an earlier kernel build. The \
               paced rates are fractions of that highest rate, so they are lower than in runs with the in-kernel \
               generator; at the lowest, the flood is little more than what the per-source limits let through to \
               Kamailio, the same for every set-up, and the CPU per million drops compares Kamailio's work more \
               than the defences'.\n",
            thousands(r.calibration.rate as u64)
        );
    }
    if r.spoof.is_some() {
        let gaps = if r.flood_engine == Engine::Xdp {
            "Section 6's paced floods arrive in bursts (the in-kernel generator's calls, 10 ms apart), and a token \
             bucket of 500/s refills between them: requests that compete for the budget (first registrations, \
             everything behind nftables' global limit) do better there than against a smooth flood; the \
             full-speed rows, with 16 overlapping sender processes, have no such gaps."
        } else {
            "Section 6's floods come from one sender process in batches about 1 ms apart (paced) or back to back \
             (full speed): a token bucket of 500/s finds no gaps to refill in."
        };
        let _ = writeln!(s, "- {gaps}\n");
    }
}

/// The goal for section 1: at every paced rate, CPU per million drops at
/// least `CPU_GOAL` times below nftables'. One line naming each rate where
/// it is not met, with the ratio measured.
const CPU_GOAL: f64 = 10.0;

fn short_of_the_cpu_goal(r: &Results) -> Option<String> {
    let mut short = Vec::new();
    for p in r.points.iter().filter(|p| p.defence == Defence::Shield) {
        if !matches!(p.rate, FloodRate::Pps(_)) {
            continue;
        }
        let Some(nf) = at(r, Defence::Nftables, p.rate) else {
            continue;
        };
        let ours = cpu_per_million_dropped(p, baseline(r, Defence::Shield));
        let theirs = cpu_per_million_dropped(nf, baseline(r, Defence::Nftables));
        if let (Some(a), Some(b)) = (ours, theirs) {
            if a * CPU_GOAL > b {
                short.push(format!("{} {:.1}x", p.rate.label(), b / a.max(1e-9)));
            }
        }
    }
    (!short.is_empty()).then(|| {
        format!(
            "the goal of a CPU per million drops at least {CPU_GOAL:.0}x below nftables' at every paced rate was not \
             met: nftables/SIP Shield at {}",
            short.join(", ")
        )
    })
}

/// Where SIP Shield was not ahead in this run, said plainly: one sentence
/// per comparison it lost.
fn behind(r: &Results) -> Vec<String> {
    let mut behind = Vec::new();
    for p in r.points.iter().filter(|p| p.defence == Defence::Shield) {
        for other in [Defence::Nftables, Defence::Pike] {
            if let Some(o) = at(r, other, p.rate) {
                if o.legit_success() > p.legit_success() + 0.005 {
                    behind.push(format!(
                        "at {} {} had more legitimate success ({} vs {})",
                        p.rate.label(),
                        other.label(),
                        pct(o.legit_success()),
                        pct(p.legit_success())
                    ));
                }
                if p.rate != FloodRate::Max
                    && o.sbc_cpu_secs() + 0.05 * o.window_secs < p.sbc_cpu_secs()
                {
                    behind.push(format!(
                        "at {} {} used less SBC CPU ({:.0} % vs {:.0} % of a CPU)",
                        p.rate.label(),
                        other.label(),
                        100.0 * o.sbc_cpu_secs() / o.window_secs,
                        100.0 * p.sbc_cpu_secs() / p.window_secs
                    ));
                }
            }
        }
    }
    let lowest = skb_lowest(r);
    let of = |d: Defence| lowest.iter().find(|(x, _)| *x == d).map(|(_, c)| *c);
    if let Some(b) = of(Defence::Nftables) {
        for d in [Defence::Shield, Defence::ShieldGeneric, Defence::ShieldTc] {
            match of(d) {
                Some(a) if a >= 0.8 * b => behind.push(format!(
                    "with the flood arriving as socket buffers (section 1b), {}'s CPU per million drops was \
                     {a:.2} CPU-s against nftables' {b:.2} ({:.2}x; goal <= 0.8x)",
                    d.label(),
                    a / b
                )),
                _ => {}
            }
        }
    }
    behind.extend(short_of_the_cpu_goal(r));
    let bl = &r.bans;
    if bl.shieldd_ready_with_bans_secs > bl.nft_secs {
        behind.push(format!(
            "a shieldd restart with {} bans in its state dir took {:.2} s, longer than `nft -f` of the same set ({:.2} s) \
             (the batch update itself: {:.2} s; section 2)",
            thousands(u64::from(bl.count)),
            bl.shieldd_ready_with_bans_secs,
            bl.nft_secs,
            bl.shield_batch_secs
        ));
    }
    behind
}

/// Observations computed from the points, for the text under the table.
fn flood_observations(r: &Results) -> String {
    let mut s = String::new();
    let mut worst: Vec<(Defence, f64, FloodRate)> = Vec::new();
    for d in Defence::ALL {
        let lowest = r
            .points
            .iter()
            .filter(|p| p.defence == d && p.rate != FloodRate::Off)
            .map(|p| (p.legit_success(), p.rate))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((x, rate)) = lowest {
            worst.push((d, x, rate));
        }
    }
    let _ = writeln!(s, "Lowest legitimate success under any flood rate:\n");
    for (d, x, rate) in &worst {
        if *x < 1.0 {
            let _ = writeln!(s, "- {}: {} (at {})", d.label(), pct(*x), rate.label());
        } else {
            let _ = writeln!(s, "- {}: 100 % at every rate", d.label());
        }
    }
    let behind = behind(r);
    let _ = writeln!(s);
    if behind.is_empty() {
        let _ = writeln!(
            s,
            "In this run SIP Shield was not behind another set-up on legitimate success or SBC CPU at any paced rate, \
             nor on CPU per million drops with socket-buffer frames, nor on restoring bans.\n"
        );
    } else {
        let _ = writeln!(s, "Where SIP Shield was not ahead in this run:\n");
        for b in behind {
            let _ = writeln!(s, "- {b}");
        }
        let _ = writeln!(s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&v), 3.0);
        assert_eq!(percentile(&v, 0.9), 5.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!(median(&[]).is_nan());
    }
}
