//! Section 7 of BENCHMARKS.md from [`FleetResults`], and putting it into
//! the document: in place of an earlier section 7, else before
//! `## Caveats`.

use std::fmt::Write as _;

use super::fleet::FleetResults;
use super::fleet_flood::FloodRow;
use super::fleet_spread::quantile;
use crate::lab::flood::Engine;
use crate::lab::progress::thousands;

/// The heading every version of the section starts with.
pub const HEADING: &str = "## 7. A fleet: CrowdSec decisions into the kernel";

/// `doc` with `section` in place of its section 7, or before its
/// `## Caveats`, or at its end.
pub fn splice(doc: &str, section: &str) -> String {
    super::splice_section(doc, HEADING, section)
}

/// The section as it stands in `doc`, if any (to carry it over when the
/// rest of the document is rewritten).
pub fn existing(doc: &str) -> Option<String> {
    super::existing_section(doc, HEADING)
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        return "—".into();
    }
    format!("{a}/{b} ({:.1} %)", 100.0 * a as f64 / b as f64)
}

fn ratio(a: f64, b: f64) -> String {
    if b <= 0.0 {
        return "—".into();
    }
    format!("{:.1}x", a / b)
}

/// The whole section.
pub fn markdown(r: &FleetResults) -> String {
    let mut s = String::new();
    intro(&mut s, r);
    sync(&mut s, r);
    probes(&mut s, r);
    floods(&mut s, r);
    spread(&mut s, r);
    reading(&mut s, r);
    s
}

fn intro(s: &mut String, r: &FleetResults) {
    let m = &r.mix;
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(s, "Measured by `fleetbench` (`tests/src/bin/fleetbench.rs`, `tests/src/lab/bench/fleet*.rs`) on {}, in {:.1} minutes; every figure of this section comes from that one run (raw numbers: [`lab/results/fleet.json`](lab/results/fleet.json)). To reproduce, as root:\n", r.date, r.minutes);
    let _ = writeln!(s, "```\ncargo xtask bench -- --only fleet     # builds, then runs target/release/fleetbench; rewrites this section only\n```\n");
    let _ = writeln!(s, "Machine: {}; busy before the run (other processes): {:.0} % of the machine. {}.\n",
        r.machine, r.busy_before_pct,
        r.versions.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
    let _ = writeln!(s, "**Set-up**: Debian's crowdsec run as a Local API only (`crowdsec -no-cs`, private config and SQLite database, `tests/src/crowdsec.rs`) in a `lapi` namespace; three SBC namespaces, each with a veth to it and a `pub0` facing an attacker namespace of its own (`tests/src/fleet.rs`). On SBC 0 the real `shieldd` (XDP on `pub0`, `[crowdsec]` with `update_frequency = \"{}s\"`, no rate limits); on SBC 1 Debian's `crowdsec-firewall-bouncer` ({}) in nftables mode, run with `nsenter --net` and a private YAML (its own `cscli bouncers add` key, private table, chain and set names, log to stdout, not daemonized, same update frequency). Nothing else runs on them.\n",
        r.every_secs, r.versions.iter().find(|(k, _)| k == "crowdsec-firewall-bouncer").map_or("?", |(_, v)| v.as_str()));
    let _ = writeln!(s, "**Decisions**: {} bans in the LAPI, {} IPv4 Ip (198.18.0.0/15), {} IPv4 Range (/28s of 100.64.0.0/10), {} IPv6 Ip and {} IPv6 Range (/64s), all of 2001:db8::/32, 4 h each (`bench_decisions`). `cscli decisions import` took {:.1} s (not part of the comparison; the Ranges with `--scope Range`, because crowdsec 1.4.6's import gives every line the flag's scope, `Ip` by default, whatever the file says). LAPI's own answer to a full stream (`GET /v1/decisions/stream?startup=true`, curl from SBC 0's namespace with a key of its own, just before): first byte after {:.2} s, complete after {:.2} s, {:.1} MB, {} decisions listed.\n",
        thousands(r.decisions as u64), thousands(m.ip4 as u64), thousands(m.range4 as u64), thousands(m.ip6 as u64), thousands(m.range6 as u64),
        r.import_secs, r.lapi.first_byte_secs, r.lapi.total_secs, r.lapi.bytes as f64 / 1e6, thousands(r.lapi.listed as u64));
}

fn sync(s: &mut String, r: &FleetResults) {
    let (d, b) = (&r.shieldd, &r.bouncer);
    let shield_secs = (d.fetch_ms + d.apply_ms) as f64 / 1e3;
    let _ = writeln!(s, "### 7a. The first full stream: 100,000 decisions into the data path\n");
    let _ = writeln!(s, "One after the other on the same LAPI. shieldd was started without `[crowdsec]` (so its program load is not counted) and given the section with `shieldctl reload`, which starts its bouncer; its figures are its log line (`fetch_ms`: the HTTP request, LAPI's work and the JSON parse; `apply_ms`: decisions book and BPF map writes) and its own CPU (utime + stime, `/proc/PID/stat`) from the reload to that line; `status` confirmed the count. The nftables bouncer was started fresh; its time is from spawning it to its log's `decisions added` lines summing to the decisions listed (polled every 20 ms), its CPU everything the process used until then (start-up included: a Go binary that sets up two tables), and the set sizes are read with `nft -j list set` afterwards.\n");
    let _ = writeln!(s, "| bouncer | time to all enforced | of which LAPI + transfer + parse | apply | CPU-s of the bouncer | enforced afterwards |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
    let _ = writeln!(s, "| SIP Shield (`shieldd`, XDP maps) | {:.2} s (reload to `status` confirming: {:.2} s) | {:.2} s | {:.2} s | {:.2} | `status`: {} decisions; log: listed {}, added {}, skipped {} |",
        shield_secs, d.reload_to_confirmed_secs, d.fetch_ms as f64 / 1e3, d.apply_ms as f64 / 1e3, d.cpu_secs,
        thousands(d.status_decisions), thousands(d.listed), thousands(d.added), thousands(d.skipped));
    let took = if b.timed_out {
        format!("not done after {:.0} s (from its start)", b.waited_secs)
    } else {
        format!("{:.2} s (from its start)", b.start_to_added_secs)
    };
    let _ = writeln!(s, "| crowdsec-firewall-bouncer (nftables sets) | {took} | — | — | {:.2} | log: {} added; set elements: {} IPv4 + {} IPv6 = {} |\n",
        b.cpu_secs, thousands(b.logged_added), thousands(b.set4 as u64), thousands(b.set6 as u64), thousands((b.set4 + b.set6) as u64));
    let after_lapi = shield_secs - r.lapi.total_secs;
    let n = (b.set4 + b.set6) as f64;
    if b.timed_out {
        let _ = writeln!(s, "- The nftables bouncer had not finished when the bench stopped waiting: after {:.0} s ({:.0} CPU-s: it is multi-threaded) its sets held {} of the {} elements, {:.0} per second on average, and its log had not yet said `decisions added` (it does once per stream); it went on loading in the background, busy on a CPU, during 7b and 7c. shieldd had them all after {:.2} s: at least {} as fast; by then the bouncer had used {} shieldd's CPU.",
            b.waited_secs, b.cpu_secs, thousands(n as u64), thousands(r.lapi.listed as u64), n / b.waited_secs.max(1e-3), shield_secs, ratio(b.waited_secs, shield_secs), ratio(b.cpu_secs, d.cpu_secs));
    } else {
        let _ = writeln!(s, "- Time to all enforced: crowdsec-firewall-bouncer {} shieldd's; CPU: {} shieldd's.",
            ratio(b.start_to_added_secs, shield_secs), ratio(b.cpu_secs, d.cpu_secs));
    }
    let _ = writeln!(s, "- Goal, shieldd ≤ 2 s after LAPI's answer: its fetch + apply ({:.2} s) less LAPI's complete answer to curl ({:.2} s) leaves {:.2} s for the parse and the map writes (apply alone {:.2} s) — {}.",
        shield_secs, r.lapi.total_secs, after_lapi.max(0.0), d.apply_ms as f64 / 1e3, if after_lapi <= 2.0 { "met" } else { "NOT met" });
    if !d.by_origin.is_empty() {
        let _ = writeln!(s, "- shieldd's `status` by origin/scope: {}.", d.by_origin.iter().map(|(k, v)| format!("{k} {}", thousands(*v))).collect::<Vec<_>>().join(", "));
    }
    if !d.skipped_by.is_empty() {
        let _ = writeln!(s, "- shieldd's `status` skipped (not enforced), by reason: {}. A Range decision as LAPI sent it: `{}`.", d.skipped_by.iter().map(|(k, v)| format!("{k} {}", thousands(*v))).collect::<Vec<_>>().join(", "), r.lapi.range_sample);
    }
    s.push('\n');
}

fn probes(s: &mut String, r: &FleetResults) {
    let p = &r.probes;
    let _ = writeln!(s, "### 7b. Is each decision really enforced?\n");
    let _ = writeln!(s, "A random sample of the decisions (fixed seed): for each, {} SIP OPTIONS from the address in the first column, written onto SBC 0's and SBC 1's `pub0` (`Fleet::send_sip_from`, AF_PACKET from the attacker namespace). A UDP listener bound to each SBC's SIP port counted what reached it per source; a probe counts as blocked when none of its packets arrived. Both bouncers drop before the socket (XDP on `pub0`; the bouncer's rule in nftables' `input` hook), so one yardstick serves both; the control rows show the listener hears what nothing blocks.\n", p.packets_per_probe);
    let _ = writeln!(s, "The nftables bouncer's column counts only the probes whose decision was already in its sets when the probes started (its set elements were read just before); the column before it says how many that was.\n");
    let _ = writeln!(s, "| probe | probed | SIP Shield blocked | of them in the nftables sets | crowdsec-firewall-bouncer (nftables) blocked | example (source ← decision) |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
    for row in &p.rows {
        let ex = row.examples.first().map_or(String::new(), |(a, d)| format!("{a} ← {d}"));
        let partial = if row.shieldd_partial + row.nft_partial > 0 {
            format!(" (partly: {}, {})", row.shieldd_partial, row.nft_partial)
        } else {
            String::new()
        };
        let _ = writeln!(s, "| {}{partial} | {} | {} | {} | {} | {ex} |", row.kind, row.probes, pct(row.shieldd_blocked, row.probes), row.nft_loaded, pct(row.nft_loaded_blocked, row.nft_loaded));
    }
    let _ = writeln!(s, "\nCross-check over the same probes ({} packets to each SBC): shieldd's XDP program counted {} `drop`/`ban`; the nftables bouncer's rule counters {}; UDP receive-buffer errors on the SBCs: {}.\n",
        thousands(p.sent), thousands(p.xdp_ban_drops), thousands(p.nft_rule_drops), p.rcvbuf_errors);
}

/// Median of the rows of one bouncer.
fn median_of(rows: &[FloodRow], name: &str, f: impl Fn(&FloodRow) -> f64) -> f64 {
    let v: Vec<f64> = rows.iter().filter(|r| r.bouncer == name).map(f).collect();
    quantile(&v, 0.5)
}

fn floods(s: &mut String, r: &FleetResults) {
    let _ = writeln!(s, "### 7c. A flood from one banned address\n");
    let _ = writeln!(s, "The lab's flood sender (engine `{}`: {}; pinned to CPU 1) sent INVITEs from 198.18.0.0, one of the Ip decisions, at {} packets/s, alternately at SBC 0 (shieldd: dropped by XDP) and SBC 1 (nftables bouncer: dropped by its rule in the `input` hook, after the IP stack). Softirq CPU is host-wide (`/proc/stat`; a veth receives on the sending CPU), so each flood's figure has the softirq CPU of an idle window of the same length just before it subtracted.{}\n", r.floods.first().map_or(Engine::Auto, |f| f.engine).as_str(), r.floods.first().map_or(Engine::Auto, |f| f.engine).describe(), thousands(r.flood_rate),
        if r.bouncer.timed_out { " The nftables bouncer was still loading its first stream meanwhile (a CPU busy in its process, not in softirq), for both bouncers' rounds alike." } else { "" });
    let _ = writeln!(s, "| bouncer | round | sent | packets/s | dropped | softirq CPU-s (flood) | idle window | softirq CPU-s per 1M dropped | bouncer process CPU-s |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in &r.floods {
        let _ = writeln!(s, "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.3} | {:.2} |",
            f.bouncer, f.round, thousands(f.sent), thousands(f.rate as u64), thousands(f.dropped), f.softirq_secs, f.idle_softirq_secs, f.per_million(), f.process_secs);
    }
    let (a, b) = (median_of(&r.floods, "shieldd", FloodRow::per_million), median_of(&r.floods, "nftables", FloodRow::per_million));
    let _ = writeln!(s, "\nMedian softirq CPU-s per million dropped: SIP Shield {a:.3}, nftables bouncer {b:.3}: the nftables drop costs {} the XDP drop.\n", ratio(b, a));
}

fn spread(s: &mut String, r: &FleetResults) {
    let p = &r.spread;
    let all = p.all_ms();
    let med = quantile(&all, 0.5);
    let _ = writeln!(s, "### 7d. Ban propagation across three SBCs\n");
    let _ = writeln!(s, "shieldd on all three SBCs with `[crowdsec]` (`update_frequency = \"{}s\"`) and `[crowdsec.push]` (a machine each, `cscli machines add`); the LAPI still holds the {} decisions. {} bans made on SBC 0 (`shieldctl ban 198.51.100.X --duration 10m`, random addresses, a random pause of 0.3 to 2.9 s after the previous one had spread), each timed from just before that `shieldctl` until SBC 1's and SBC 2's pinned `BANS` maps held the address (polled every 20 ms): the push to LAPI, LAPI's decision, the next pull.\n",
        r.every_secs, thousands(r.decisions as u64), p.bans);
    let _ = writeln!(s, "| | median | p90 | max | min | (SBC, ban) pairs |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for (name, v) in [("SBC 1", &p.sbc1_ms), ("SBC 2", &p.sbc2_ms), ("both", &all)] {
        let _ = writeln!(s, "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} |", quantile(v, 0.5), quantile(v, 0.9), quantile(v, 1.0), quantile(v, 0.0), v.len());
    }
    let _ = writeln!(s, "\n`shieldctl ban` itself: median {:.1} ms. SBC 0 reported {} alerts pushed; afterwards SBC 1 held {} decisions, SBC 2 {}.",
        quantile(&p.ctl_ms, 0.5), p.pushed, thousands(p.decisions_sbc1), thousands(p.decisions_sbc2));
    let _ = writeln!(s, "Goal, median ≤ update_frequency ({} s): {:.0} ms — {}.\n", r.every_secs, med, if med <= r.every_secs as f64 * 1e3 { "met" } else { "NOT met" });
}

fn reading(s: &mut String, r: &FleetResults) {
    let row = |k: usize| r.probes.rows.get(k).cloned().unwrap_or_default();
    let (r4, r6) = (row(0), row(1));
    let _ = writeln!(s, "Reading:\n");
    let _ = writeln!(s, "- crowdsec-firewall-bouncer 0.0.25's nftables sets are plain address sets (`type ipv4_addr`, `flags timeout`, no `interval` flag), so a Range decision becomes one element, its network address: of the sampled ranges in its sets it blocked {} (IPv4) and {} (IPv6) from inside, while their network addresses were blocked. One element per decision ({} elements when probed). This is cs-firewall-bouncer issues #396 / #412. shieldd puts Ranges into LPM tries: {} and {} blocked.",
        pct(r4.nft_loaded_blocked, r4.nft_loaded), pct(r6.nft_loaded_blocked, r6.nft_loaded), thousands((r.bouncer.set4 + r.bouncer.set6) as u64),
        pct(r4.shieldd_blocked, r4.probes), pct(r6.shieldd_blocked, r6.probes));
    let _ = writeln!(s, "- Both wait for the same LAPI answer ({:.2} s of LAPI's own work and transfer for 100,000 decisions here); what differs is what each does with it.", r.lapi.total_secs);
    let _ = writeln!(s, "- Caveats: one run on a 2-vCPU virtual machine shared with other tenants; CPU comes from tick sampling (`/proc`, 100 ticks per second for a process); the flood rows are paced, far below a NIC's rate, and a veth delivers on the sender's CPU; propagation depends on where in the 2 s pull cycle a ban falls (uniformly, by design), on the push (one HTTP POST) and on LAPI's SQLite.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_before_caveats_then_in_place() {
        let doc = "# B\n\n## 6. x\n\ntext\n\n## Caveats\n\n- c\n";
        let one = splice(doc, &format!("{HEADING}\n\nfirst\n"));
        assert!(one.contains("text\n\n## 7. A fleet"), "{one}");
        assert!(one.contains("first\n\n## Caveats"), "{one}");
        let two = splice(&one, &format!("{HEADING}\n\nsecond\n"));
        assert!(!two.contains("first") && two.contains("second\n\n## Caveats"), "{two}");
        assert_eq!(existing(&two).as_deref(), Some(format!("{HEADING}\n\nsecond\n\n").as_str()));
        assert_eq!(splice("# B\n", "## 7. A fleet: CrowdSec decisions into the kernel\n"), format!("# B\n\n{HEADING}\n\n"));
    }
}
