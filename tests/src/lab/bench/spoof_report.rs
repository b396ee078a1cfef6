//! BENCHMARKS.md section 6, the spoofed-source flood: the method, the
//! table, ratios and the goals, all computed from the section's points.

use std::fmt::Write;

use super::defence::Defence;
use super::flood_runs::{cpu_per_million_dropped, FloodRate, Point};
use super::spoof::{unverified_requests, SpoofResults};
use crate::lab::flood::Engine;
use crate::lab::progress::thousands;

/// Goal: subscribers registered before the flood, at the highest rate.
const GOAL_REGISTERED: f64 = 0.999;
/// Goal: unverified requests reaching Kamailio, at most the budget plus
/// this share.
const GOAL_BUDGET_SLACK: f64 = 0.10;

fn at(r: &SpoofResults, d: Defence, rate: FloodRate) -> Option<&Point> {
    r.points.iter().find(|p| p.defence == d && p.rate == rate)
}

fn rates(r: &SpoofResults) -> Vec<FloodRate> {
    let mut v: Vec<FloodRate> = Vec::new();
    for p in &r.points {
        if !v.contains(&p.rate) {
            v.push(p.rate);
        }
    }
    v
}

fn frac(ok: u64, n: u64) -> String {
    if n == 0 {
        "—".into()
    } else {
        format!("{ok}/{n} ({:.1} %)", 100.0 * ok as f64 / n as f64)
    }
}

fn share(ok: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        ok as f64 / n as f64
    }
}

/// Unverified requests the budget lets through over a point's window.
fn allowance(r: &SpoofResults, p: &Point) -> f64 {
    r.budget_burst as f64 + r.budget_per_second as f64 * p.window_secs
}

/// The headline sentence (the README quotes it).
pub fn headline(r: &SpoofResults) -> Option<String> {
    let max = FloodRate::Max;
    let v = at(r, Defence::ShieldVerify, max)?;
    let off = at(r, Defence::Shield, max)?;
    let nft = at(r, Defence::NftGlobal, max)?;
    Some(format!(
        "A spoofed-source flood (a random source of {} per packet, as fast as this machine sends: {} packets/s \
         against SIP Shield with `[verify]`'s budget of {}/s): subscribers registered before it succeeded {}, \
         trunk calls {}, and {} requests reached Kamailio ({:.2}x what the budget allows). With `[verify]` off, \
         {} requests reached Kamailio and trunk calls succeeded {}; nftables' one global limit kept Kamailio as \
         quiet ({} requests) but registered subscribers succeeded {}. First registrations from new addresses \
         during that flood: {} behind the budget.",
        r.prefix,
        thousands(v.flood.rate as u64),
        r.budget_per_second,
        pct(share(v.registrations_ok, v.registrations)),
        pct(share(v.calls_ok, v.calls)),
        thousands(v.kamailio_requests),
        unverified_requests(v) as f64 / allowance(r, v),
        thousands(off.kamailio_requests),
        pct(share(off.calls_ok, off.calls)),
        thousands(nft.kamailio_requests),
        pct(share(nft.registrations_ok, nft.registrations)),
        frac(v.newcomers_ok, v.newcomers)
    ))
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// The section's markdown.
pub fn section(r: &SpoofResults) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## 6. A spoofed-source flood: verified sources and the unverified budget\n"
    );
    if r.separate {
        let _ = writeln!(
            s,
            "Measured on {} in {:.1} minutes, on its own (`{}`; busy CPU before it from other processes: {:.0} % \
             of the machine), not in the run of sections 1–3; same lab, machine and method. Reproduce with \
             `cargo build --release -p shield-user -p shield-tests --bins && target/release/labbench --only spoof` \
             (as root).\n",
            r.date,
            r.minutes,
            if r.command.is_empty() { "labbench --only spoof" } else { r.command.as_str() },
            r.busy_before_pct
        );
    }
    let _ = writeln!(s, "{}", method(r));
    let _ = writeln!(s, "{}", table(r));
    let _ = writeln!(s, "{}", ratios(r));
    let _ = writeln!(s, "{}", goals(r));
    let _ = writeln!(s, "{}", reading(r));
    s
}

fn method(r: &SpoofResults) -> String {
    format!(
        "Every flood packet comes from a random address of {} (1,048,576 addresses; `flood --spoof --engine {}`, \
         whose XDP program picks a source per frame), INVITE and REGISTER, to the SBC's SIP address. No source sends more than a \
         few packets, so per-source limits, pike and bans never fire. What a spoofer cannot do is receive: SIP Shield's \
         egress classifier marks a destination verified when Kamailio sends it a final 2xx to a REGISTER or INVITE \
         (a subscriber that answered the digest challenge), and with `[verify] unverified_per_second = {}`, \
         `unverified_burst = {}` every other source shares one budget (SPEC §8).\n\n\
         **Set-ups**: no protection (`sbc.cfg`); Kamailio pike + htable (`sbc-antiflood.cfg`); nftables with the trunk \
         allowlisted and ONE global limit of {}/s, burst {} for everything else to UDP 5060 (`lab/nft/global-limit.nft`: \
         nftables cannot learn verified sources from the server's replies, so this is the best it can do; the \
         subscribers' addresses are not known in advance, so they share the limit with the flood); SIP Shield with the \
         example configuration as it was before (`[verify]` off); SIP Shield with the budget on. Each started fresh.\n\n\
         **Traffic**: before each {:.0} s window every subscriber registers once (8 sipp registrations, so SIP Shield \
         has seen their 200 OK); during it the same legitimate load as section 1 (8 subscribers registering once a \
         second each, 4 trunk calls a second), plus {} subscribers from addresses never seen before (203.0.113.32 and \
         up) each starting its first registration 1 s into the flood: they are unverified and compete with the flood \
         for the budget. Floods: none; paced; as fast as the sender goes against that set-up ({} sender \
         process(es) sharing the CPU). {}\n\n\
         **Measured** as in section 1, plus: the newcomers' success; the requests from the forged sources and from \
         the newcomers that reached Kamailio's script (counted first thing in `request_route`: `spoofed_requests`, \
         `newcomer_requests`), against what the budget allows over the window ({} + {} × seconds); \
         `under_pressure` in `shieldctl verified`, polled once a second.\n{}",
        r.prefix,
        r.engine.as_str(),
        r.budget_per_second,
        r.budget_burst,
        r.budget_per_second,
        r.budget_burst,
        r.window_secs,
        r.newcomers,
        r.max_processes,
        smoothness(r),
        r.budget_burst,
        r.budget_per_second,
        forger_method(r)
    )
}

/// The forger's part of the method (nothing for runs without it).
fn forger_method(r: &SpoofResults) -> String {
    if r.forger_addresses == 0 {
        return String::new();
    }
    format!(
        "\n**Forgeries** (issue 18): during every SIP Shield run with a flood, a forger in the attacker's namespace \
         sends from {n} addresses it owns (198.51.100.200 and up), each every {p:.0} s: a keepalive \
         `OPTIONS sip:198.51.100.1` carrying `CSeq: 1 REGISTER` (Kamailio answers `200 Keepalive`, copying the \
         CSeq) and a forged `200 OK` to a REGISTER whose first Via is the SBC and whose second Via names another of \
         its addresses (the next {n}; Kamailio relays it there statelessly), primed: 20 ms before it, that \
         address sends a REGISTER with the same Call-ID and CSeq, which Kamailio answers 401. The 2xx leave the SBC \
         through the egress classifier; the forger's sockets count the ones that arrive, and at the end of the run \
         `shieldctl --json verified` says how many of its {all} addresses are verified. A 2xx verifies only when it \
         is the first final answer to a REGISTER or INVITE the XDP program saw from that destination with the same \
         Call-ID and CSeq, so the expected count is 0.\n",
        n = r.forger_addresses,
        p = r.forger_period_secs,
        all = 2 * r.forger_addresses
    )
}

/// How smooth the engine's flood is, which matters to whoever competes
/// with it for a token bucket.
fn smoothness(r: &SpoofResults) -> String {
    match r.engine {
        Engine::Xdp => format!(
            "The in-kernel generator sends a chunk of frames per call and manages about 100 calls a second on this \
             machine: paced, a chunk is 10 ms worth of frames, so the flood arrives in bursts with gaps between them; \
             at full speed the {} processes' calls overlap and the stream has no gaps, like the packets of many bots. \
             A token bucket of {}/s refills in any gap, and a legitimate request that arrives in one passes: in the \
             paced rows, whoever competes for the budget (the newcomers; everybody behind nftables' global limit) \
             fares better than against a smooth flood of the same rate. The \"max\" rows show the competition.",
            r.max_processes, r.budget_per_second
        ),
        _ => "One sender process sends a batch per `sendmmsg`; paced, a batch is about 1 ms worth of frames, so the \
              flood is close to smooth at every rate (a token bucket of a few hundred per second sees no gaps to \
              refill in), like the packets of many bots."
            .to_string(),
    }
}

fn table(r: &SpoofResults) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| set-up | flood | offered (packets/s) | registered subscribers ok | first registrations ok | trunk calls ok | \
         requests Kamailio handled | unverified requests at Kamailio | of the budget | Kamailio CPU | softirq CPU | \
         dropped by the set-up | CPU-s per 1M dropped | forgeries: 2xx / sent, addresses verified |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for rate in rates(r) {
        for d in Defence::SPOOF {
            let Some(p) = at(r, d, rate) else { continue };
            let w = p.window_secs;
            let base = at(r, d, FloodRate::Off);
            let _ =
                writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2}x | {:.0} % | {:.0} % | {} | {} | {} |",
                d.label(),
                rate.label(),
                thousands(p.flood.rate as u64),
                frac(p.registrations_ok, p.registrations),
                frac(p.newcomers_ok, p.newcomers),
                frac(p.calls_ok, p.calls),
                thousands(p.kamailio_requests),
                thousands(unverified_requests(p)),
                unverified_requests(p) as f64 / allowance(r, p),
                100.0 * p.kamailio_cpu_secs / w,
                100.0 * p.softirq_secs / w,
                if d == Defence::None { "—".into() } else { thousands(p.defence_drops) },
                cpu_per_million_dropped(p, base).map_or("—".into(), |c| format!("{c:.2}")),
                forgery_cell(p),
            );
        }
    }
    let _ = writeln!(
        s,
        "\n\"of the budget\": unverified requests at Kamailio divided by what the budget allows over the window \
         ({} + {}/s × window); for the set-ups without a budget it only shows how far above it they are.",
        r.budget_burst, r.budget_per_second
    );
    let pressure: Vec<String> = r
        .points
        .iter()
        .filter(|p| p.defence == Defence::ShieldVerify)
        .map(|p| {
            let seen = p.under_pressure_seen.unwrap_or(false);
            format!("{}: {}", p.rate.label(), if seen { "yes" } else { "no" })
        })
        .collect();
    let _ = writeln!(
        s,
        "`under_pressure` in `shieldctl verified` (polled once a second) with the budget on: {}.",
        pressure.join(", ")
    );
    s
}

/// The forgeries' table cell: 2xx answers / forgeries sent, verified
/// addresses of the forger's.
fn forgery_cell(p: &Point) -> String {
    p.forgeries.as_ref().map_or("—".into(), |f| {
        format!(
            "{} / {}, {} of {}",
            thousands(f.answered_2xx()),
            thousands(f.sent()),
            f.verified.map_or("?".into(), |n| n.to_string()),
            f.addresses
        )
    })
}

/// Ratios against the other set-ups at the same flood.
fn ratios(r: &SpoofResults) -> String {
    let mut s = String::from(
        "Ratios at the same flood: each other set-up's requests at Kamailio and SBC CPU (Kamailio + softirq + \
         shieldd) as a multiple of SIP Shield's with the budget on:\n\n",
    );
    for rate in rates(r).into_iter().filter(|x| *x != FloodRate::Off) {
        let Some(v) = at(r, Defence::ShieldVerify, rate) else {
            continue;
        };
        let mut parts = Vec::new();
        for d in [
            Defence::None,
            Defence::Pike,
            Defence::NftGlobal,
            Defence::Shield,
        ] {
            let Some(o) = at(r, d, rate) else { continue };
            let req = o.kamailio_requests as f64 / (v.kamailio_requests.max(1)) as f64;
            let cpu = o.sbc_cpu_secs() / v.sbc_cpu_secs().max(1e-3);
            parts.push(format!(
                "{}: {:.1}x the requests at Kamailio, {:.1}x the SBC CPU",
                d.label(),
                req,
                cpu
            ));
        }
        let per =
            |d| at(r, d, rate).and_then(|p| cpu_per_million_dropped(p, at(r, d, FloodRate::Off)));
        if let (Some(a), Some(b)) = (per(Defence::ShieldVerify), per(Defence::NftGlobal)) {
            parts.push(format!(
                "CPU per million drops {a:.2} CPU-s against the global nftables limit's {b:.2} ({:.1}x)",
                b / a.max(1e-9)
            ));
        }
        let _ = writeln!(s, "- at {}: {}.", rate.label(), parts.join("; "));
    }
    s
}

/// The goals, met or not.
fn goals(r: &SpoofResults) -> String {
    let mut s = String::from("Goals, SIP Shield with the budget on:\n\n");
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let v: Vec<&Point> = r
        .points
        .iter()
        .filter(|p| p.defence == Defence::ShieldVerify)
        .collect();
    if let Some(m) = at(r, Defence::ShieldVerify, FloodRate::Max) {
        let x = share(m.registrations_ok, m.registrations);
        let with = if m.forgeries.is_some() {
            ", forgeries in the flood"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "- subscribers registered before the flood ≥ {:.1} % at the highest rate ({} packets/s{}): {} — {}",
            100.0 * GOAL_REGISTERED,
            thousands(m.flood.rate as u64),
            with,
            pct(x),
            met(x >= GOAL_REGISTERED)
        );
    }
    let trunk = v.iter().all(|p| p.calls > 0 && p.calls_ok == p.calls);
    let _ = writeln!(
        s,
        "- trunk calls 100 % at every rate: {} — {}",
        v.iter()
            .map(|p| format!("{}/{}", p.calls_ok, p.calls))
            .collect::<Vec<_>>()
            .join(", "),
        met(trunk)
    );
    let worst = v
        .iter()
        .map(|p| unverified_requests(p) as f64 / allowance(r, p))
        .fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "- unverified requests reaching Kamailio ≤ the budget + {:.0} % (burst + rate × window): at most {:.2}x of it — {}",
        100.0 * GOAL_BUDGET_SLACK,
        worst,
        met(worst <= 1.0 + GOAL_BUDGET_SLACK)
    );
    if let Some(line) = forgery_goal(r) {
        let _ = writeln!(s, "{line}");
    }
    s
}

/// What the forger got from each SIP Shield set-up at the highest rate.
fn forgery_reading(r: &SpoofResults) -> Option<String> {
    let got = |d| {
        let p = at(r, d, FloodRate::Max)?;
        let f = p.forgeries.as_ref()?;
        Some(format!(
            "{}: {} of {} forgeries got a 2xx, {} addresses verified",
            d.label(),
            thousands(f.answered_2xx()),
            thousands(f.sent()),
            f.verified.map_or("?".into(), |n| n.to_string())
        ))
    };
    let parts: Vec<String> = [Defence::Shield, Defence::ShieldVerify]
        .into_iter()
        .filter_map(got)
        .collect();
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        "- The forgeries at full speed ({}). With `[verify]` off they pass as any new source does, and Kamailio \
         answers the keepalives and relays the forged 200 OKs; with the budget on they compete with the flood for \
         it, so fewer get through. A 2xx that answers no REGISTER or INVITE seen from its destination verifies \
         nothing either way.",
        parts.join("; ")
    ))
}

/// Goal: forged 2xx verified no address, over every SIP Shield point with
/// the forger (both set-ups, every flood); None for runs without it.
fn forgery_goal(r: &SpoofResults) -> Option<String> {
    let f: Vec<_> = r
        .points
        .iter()
        .filter_map(|p| p.forgeries.as_ref())
        .collect();
    if f.is_empty() {
        return None;
    }
    let sent: u64 = f.iter().map(|x| x.sent()).sum();
    let answered: u64 = f.iter().map(|x| x.answered_2xx()).sum();
    let verified: u64 = f.iter().map(|x| x.verified.unwrap_or(0)).sum();
    let known = f.iter().all(|x| x.verified.is_some());
    Some(format!(
        "- forged 2xx verified no address (both SIP Shield set-ups, every flood): {} forgeries sent in {} runs, \
         Kamailio's 2xx reached the forger {} times, {} of the forger's addresses verified{} — {}",
        thousands(sent),
        f.len(),
        thousands(answered),
        verified,
        if known { "" } else { " (not read in every run)" },
        if known && verified == 0 { "met" } else { "NOT met" }
    ))
}

/// The reading's first two points: SIP Shield with and without the
/// budget at full speed, and what the budget costs newcomers.
fn budget_reading(r: &SpoofResults) -> Option<String> {
    let max = FloodRate::Max;
    let (v, sh) = (at(r, Defence::ShieldVerify, max)?, at(r, Defence::Shield, max)?);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- Without `[verify]` SIP Shield passes a spoofed flood: every forged source is new and within its \
         per-source limits, so at {} packets/s Kamailio got {} requests ({} from forged sources), registered \
         subscribers succeeded {} and trunk calls {}. The sender reached fewer packets/s against it than against \
         the others because on this machine the receive path runs on the sender's CPU, and with `[verify]` off \
         the XDP program creates per-source state for every forged packet (section 4's \"100k new sources\" \
         row). With the budget on, Kamailio got {} requests, registered subscribers succeeded {} and trunk \
         calls {}.",
        thousands(sh.flood.rate as u64),
        thousands(sh.kamailio_requests),
        thousands(sh.spoofed_at_kamailio),
        pct(share(sh.registrations_ok, sh.registrations)),
        pct(share(sh.calls_ok, sh.calls)),
        thousands(v.kamailio_requests),
        pct(share(v.registrations_ok, v.registrations)),
        pct(share(v.calls_ok, v.calls))
    );
    let paced: Vec<String> = r
        .points
        .iter()
        .filter(|p| p.defence == Defence::ShieldVerify && matches!(p.rate, FloodRate::Pps(_)))
        .map(|p| {
            format!(
                "{} at {}",
                frac(p.newcomers_ok, p.newcomers),
                p.rate.label()
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "- First registrations from new addresses during the flood, behind the budget: {} at the highest rate \
         ({}). A newcomer is indistinguishable from a forged source until Kamailio sends it a 200 OK, so its \
         REGISTER competes with the flood for the same {}/s: against a smooth flood about {} in {} of its \
         packets gets through, and sipp gives up after its retransmissions. In the paced rows ({}) the gaps \
         between the generator's bursts let it through (see the method above). This is the price of the budget; \
         an operator who must admit unknown sources during an attack lists them in `[verify] cidrs` or raises \
         the budget.",
        frac(v.newcomers_ok, v.newcomers),
        thousands(v.flood.rate as u64),
        r.budget_per_second,
        r.budget_per_second,
        thousands(v.flood.rate.max(1.0) as u64),
        paced.join(", ")
    );
    Some(s)
}

/// The reading, with the numbers it rests on.
fn reading(r: &SpoofResults) -> String {
    let mut s = String::from("Reading:\n\n");
    let max = FloodRate::Max;
    if let Some(lines) = budget_reading(r) {
        s.push_str(&lines);
    }
    if let Some(line) = forgery_reading(r) {
        let _ = writeln!(s, "{line}");
    }
    if let Some(n) = at(r, Defence::NftGlobal, max) {
        let _ = writeln!(
            s,
            "- nftables' global limit protects Kamailio as well as the budget does ({} requests reached it at {} \
             packets/s) but cannot tell a subscriber from a forged source: registered subscribers succeeded {} at \
             that rate, and their newcomers {}.",
            thousands(n.kamailio_requests),
            thousands(n.flood.rate as u64),
            pct(share(n.registrations_ok, n.registrations)),
            frac(n.newcomers_ok, n.newcomers)
        );
    }
    if let (Some(v), Some(n)) = (
        at(r, Defence::ShieldVerify, max),
        at(r, Defence::NftGlobal, max),
    ) {
        let per = |p: &Point| cpu_per_million_dropped(p, at(r, p.defence, FloodRate::Off));
        if let (Some(a), Some(b)) = (per(v), per(n)) {
            let _ = writeln!(
                s,
                "- CPU per million drops at full speed: {a:.2} CPU-s with the budget, {b:.2} with nftables' global \
                 limit. The budget's drop is dearer than section 1's ban drop: it comes after the SIP payload check \
                 (SPEC §2 step 7b; a ban is step 4), and every frame's source misses the verified map."
            );
        }
    }
    if let Some(k) = at(r, Defence::Pike, max) {
        let _ = writeln!(
            s,
            "- pike counts requests per source address: no forged source reaches its 16 per 2 s, so it dropped {} \
             and Kamailio parsed {} requests.",
            thousands(k.defence_drops),
            thousands(k.kamailio_requests)
        );
    }
    let _ = writeln!(
        s,
        "- The trunk is allowlisted behind nftables and SIP Shield (and exempt from pike in Kamailio's script): \
         where its calls fail, Kamailio was overloaded, not the filter.\n"
    );
    s
}
