//! `shieldctl watch`: what XDP drops, live. Drops per second by reason and
//! the top sources (ban time left, verified) come from the daemon's
//! `stats`, `banned ADDR` and `verified`; the sampled dropped frames come
//! straight from the pinned `SAMPLES` ring buffer, which this command turns
//! on for as long as it runs (root: bpffs pins), and off when it ends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use shield::config::{parse_cidr, parse_duration};
use shield::control::client::Session;
use shield::control::protocol::{BannedSource, Call, Lasts, Net, Stats, StatsReply, Verified};
use shield::kernel::monotonic_ns;
use shield::text::Escaped;
use shield::watch::{decode, reason_name, Decoded, PcapOut, PinnedSampler};
use shield_common::{Reason, SampleConfig, SampleView, Verdict};

#[derive(clap::Args, Clone)]
pub struct WatchArgs {
    /// Refresh the view (and the --json rates line) this often.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    interval: String,
    /// Sample 1 in N dropped packets (per CPU).
    #[arg(long, default_value_t = 1, value_name = "N")]
    every: u32,
    /// At most this many samples a second per CPU.
    #[arg(long, default_value_t = 100, value_name = "N")]
    per_second: u32,
    /// Write the sampled frames (after --reason/--source) to this pcap file.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Stop after this many sampled frames (after --reason/--source).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this long.
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    /// Only samples dropped for this reason (repeatable): deny, ban,
    /// not_allowed, malformed, scanner, rate, unverified.
    #[arg(long, value_name = "REASON")]
    reason: Vec<String>,
    /// Only samples from this address or network.
    #[arg(long, value_name = "CIDR")]
    source: Option<String>,
    /// bpffs directory of the pins [default: [shield] pin_path of the config,
    /// or /sys/fs/bpf/shield].
    #[arg(long, value_name = "PATH")]
    pin_path: Option<PathBuf>,
}

impl WatchArgs {
    pub fn pin_path(&self) -> Option<PathBuf> {
        self.pin_path.clone()
    }
}

/// The checked arguments.
struct Opts {
    interval: Duration,
    every: u32,
    per_second: u32,
    pcap: Option<PathBuf>,
    count: Option<u64>,
    until: Option<Instant>,
    reasons: Vec<u8>,
    source: Option<IpNet>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Bad arguments: the message for exit 2.
pub fn check(args: &WatchArgs) -> std::result::Result<(), String> {
    opts(args).map(drop)
}

fn opts(a: &WatchArgs) -> std::result::Result<Opts, String> {
    let interval = parse_duration(&a.interval).map_err(|e| format!("--interval {:?}: {e}", a.interval))?;
    if interval.is_zero() {
        return Err("--interval must be longer than 0s".into());
    }
    let until = match &a.duration {
        Some(d) => Some(Instant::now() + parse_duration(d).map_err(|e| format!("--for {d:?}: {e}"))?),
        None => None,
    };
    if a.every == 0 || a.per_second == 0 {
        return Err("--every and --per-second must be at least 1".into());
    }
    let mut reasons = Vec::new();
    for r in &a.reason {
        let found = Reason::ALL.iter().find(|x| x.as_str() == r && !matches!(x, Reason::Ok | Reason::Allowlisted));
        let Some(found) = found else {
            return Err(format!("--reason {r:?}: not a drop reason (deny, ban, not_allowed, malformed, scanner, rate, unverified)"));
        };
        reasons.push(*found as u8);
    }
    let source = match &a.source {
        Some(s) => Some(parse_cidr(s).map_err(|e| format!("--source {s:?}: {e}"))?),
        None => None,
    };
    Ok(Opts { interval, every: a.every, per_second: a.per_second, pcap: a.pcap.clone(), count: a.count, until, reasons, source })
}

/// Turns sampling off when the watch ends, however it ends (short of
/// SIGKILL: then the per-second bound caps its cost until the next watch
/// ends or shieldd restarts).
struct SamplingOn<'a>(&'a mut PinnedSampler);

impl Drop for SamplingOn<'_> {
    fn drop(&mut self) {
        let _ = self.0.set(SampleConfig::default());
    }
}

pub fn run(args: &WatchArgs, socket: &Path, pin: &Path, json: bool) -> Result<()> {
    let o = opts(args).map_err(anyhow::Error::msg)?;
    let mut sampler = PinnedSampler::open(pin)?;
    let mut pcap = match &o.pcap {
        Some(p) => Some(PcapOut::create(p)?),
        None => None,
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    sampler.set(SampleConfig { every: o.every, per_second: o.per_second })?;
    let on = SamplingOn(&mut sampler);
    let mut view = View::new(socket, json);
    let mut next_tick = Instant::now();
    let mut taken = 0u64;
    while !STOP.load(Ordering::SeqCst) && o.until.is_none_or(|u| Instant::now() < u) {
        let mut got = 0;
        while let Some(item) = on.0.samples.next() {
            let Some(s) = SampleView::parse(&item) else { continue };
            got += 1;
            let d = decode(s.data);
            if !o.wanted(&s, &d) {
                continue;
            }
            if let Some(p) = pcap.as_mut() {
                p.write(wall_clock(s.time_ns), s.len, s.data)?;
            }
            view.sample(&s, d)?;
            taken += 1;
            if o.count.is_some_and(|c| taken >= c) {
                break;
            }
        }
        if o.count.is_some_and(|c| taken >= c) {
            break;
        }
        if Instant::now() >= next_tick {
            // Again each time: a restarted shieldd turns sampling off.
            on.0.set(SampleConfig { every: o.every, per_second: o.per_second })?;
            let c = on.0.counters()?;
            view.tick(c.sampled, c.lost)?;
            next_tick += o.interval;
        }
        if got == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(on);
    let c = sampler.counters()?;
    view.finish(taken, c.lost)
}

impl Opts {
    fn wanted(&self, s: &SampleView, d: &Decoded) -> bool {
        (self.reasons.is_empty() || self.reasons.contains(&s.reason))
            && self.source.is_none_or(|net| d.source.is_some_and(|ip| net.contains(&ip)))
    }
}

/// A sample's monotonic time as time since the Unix epoch.
fn wall_clock(mono_ns: u64) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.saturating_sub(Duration::from_nanos(monotonic_ns().saturating_sub(mono_ns)))
}

/// What the screen (or the JSON lines) shows.
struct View {
    socket: PathBuf,
    session: Option<Session>,
    json: bool,
    tty: bool,
    last: Option<(Instant, BTreeMap<String, u64>)>,
    recent: VecDeque<String>,
    by_source: HashMap<IpAddr, u64>,
}

const RECENT: usize = 12;
const TOP: usize = 8;

impl View {
    fn new(socket: &Path, json: bool) -> View {
        View {
            socket: socket.to_path_buf(),
            session: None,
            json,
            tty: std::io::stdout().is_terminal(),
            last: None,
            recent: VecDeque::new(),
            by_source: HashMap::new(),
        }
    }

    fn sample(&mut self, s: &SampleView, d: Decoded) -> Result<()> {
        if let Some(ip) = d.source {
            *self.by_source.entry(ip).or_default() += 1;
        }
        let reason = reason_name(s.reason);
        if self.json {
            let line = serde_json::json!({ "type": "sample", "reason": reason, "len": s.len, "ifindex": s.ifindex, "packet": d });
            return out(&format!("{}\n", shield::text::json_safe(&line.to_string())));
        }
        let show = |v: &Option<String>| v.as_deref().map_or("-".to_string(), |t| Escaped(t).to_string());
        let src = d.source.map_or("-".to_string(), |ip| ip.to_string());
        let line = format!(
            "{src:<39} {reason:<11} {:<10} {:<14} {}",
            show(&d.method),
            show(&d.ruri_user),
            show(&d.user_agent)
        );
        self.recent.push_front(line);
        self.recent.truncate(RECENT);
        Ok(())
    }

    /// The daemon's answer to `call`, on the tick's connection; if that
    /// fails, once more on a new one.
    fn ask<C: Call>(&mut self, call: C) -> Result<C::Reply> {
        let req = call.into();
        let mut tries = 0;
        let reply = loop {
            if self.session.is_none() {
                self.session = Some(Session::connect(&self.socket, Duration::from_secs(5))?);
            }
            match self.session.as_mut().expect("connected").request(&req) {
                Ok(r) => break r,
                Err(e) => {
                    self.session = None;
                    tries += 1;
                    if tries == 2 {
                        return Err(e).context("asking shieldd");
                    }
                }
            }
        };
        if !reply.ok {
            bail!("shieldd: {}", reply.error.map_or("error".into(), |e| e.message));
        }
        reply.into_reply::<C>().context("unexpected reply from shieldd")
    }

    fn tick(&mut self, sampled: u64, lost: u64) -> Result<()> {
        // A new connection each tick: the daemon ends one idle for a few
        // seconds (with an error reply the next request would read).
        self.session = None;
        let stats = self.ask(Stats {})?;
        let rates = self.rates(&stats);
        let top = self.top(&stats)?;
        let prefixes = self.top_prefixes();
        if self.json {
            let line = serde_json::json!({
                "type": "rates", "drops_per_second": rates, "top": top, "top_prefixes": prefixes,
                "sampled": sampled, "lost_samples": lost,
            });
            return out(&format!("{}\n", shield::text::json_safe(&line.to_string())));
        }
        let mut text = String::new();
        if self.tty {
            text.push_str("\x1b[H\x1b[2J");
        }
        text.push_str(&format!(
            "shieldctl watch: samples taken {sampled}, lost {lost} (ring buffer full; kernel totals)\n\nDrops per second\n"
        ));
        for (reason, rate) in &rates {
            text.push_str(&format!("  {reason:<12} {rate:>12.1}\n"));
        }
        text.push_str("\nTop sources               drops  ban left    verified\n");
        for t in &top {
            text.push_str(&format!("  {:<22} {:>7}  {:<11} {}\n", t.source, t.drops, t.ban_left, if t.verified { "yes" } else { "no" }));
        }
        text.push_str("\nTop prefixes (sampled)       samples  sources\n");
        for p in &prefixes {
            text.push_str(&format!("  {:<26} {:>7}  {:>7}\n", p.prefix, p.samples, p.sources));
        }
        text.push_str("\nSampled dropped packets (newest first)\n");
        text.push_str(&format!("  {:<39} {:<11} {:<10} {:<14} {}\n", "SOURCE", "REASON", "METHOD", "R-URI USER", "USER-AGENT"));
        for l in &self.recent {
            text.push_str(&format!("  {l}\n"));
        }
        if !self.tty {
            text.push('\n');
        }
        out(&text)
    }

    /// Drops per second by reason since the last tick (none at the first).
    fn rates(&mut self, stats: &StatsReply) -> BTreeMap<String, f64> {
        let mut now = BTreeMap::new();
        for row in stats.totals.iter().filter(|r| r.verdict != Verdict::Pass) {
            *now.entry(row.reason.as_str().to_string()).or_insert(0u64) += row.packets;
        }
        let mut rates = BTreeMap::new();
        if let Some((at, before)) = &self.last {
            let secs = at.elapsed().as_secs_f64().max(1e-3);
            for (reason, n) in &now {
                let delta = n.saturating_sub(*before.get(reason).unwrap_or(&0));
                rates.insert(reason.clone(), delta as f64 / secs);
            }
        }
        self.last = Some((Instant::now(), now));
        rates
    }

    fn finish(&mut self, taken: u64, lost: u64) -> Result<()> {
        let line = if self.json {
            format!("{}\n", serde_json::json!({ "type": "end", "samples": taken, "lost_samples": lost }))
        } else {
            format!("shieldctl watch: {taken} sampled packets shown; {lost} samples lost (ring buffer full)\n")
        };
        out(&line)
    }
}

#[derive(serde::Serialize)]
struct Top {
    source: String,
    drops: u64,
    ban_left: String,
    verified: bool,
}

impl View {
    /// The sources with the most drops: the kernel's escalation counts and
    /// the samples seen, each with its ban's time left and whether it is
    /// verified.
    fn top(&mut self, stats: &StatsReply) -> Result<Vec<Top>> {
        let mut drops: HashMap<String, u64> = self.by_source.iter().map(|(ip, n)| (ip.to_string(), *n)).collect();
        for t in &stats.top_sources {
            let e = drops.entry(t.source.to_string()).or_default();
            *e = (*e).max(t.drops);
        }
        let mut list: Vec<(String, u64)> = drops.into_iter().collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        list.truncate(TOP);
        let verified = self.ask(Verified {})?;
        let mut top = Vec::new();
        for (source, n) in list {
            let Ok(net) = parse_cidr(&source) else { continue };
            let r = self.ask(BannedSource { net: Net(net) })?;
            let ban_left = r.bans.first().map_or("-".to_string(), |b| left(b.ban.expires_in_secs));
            let is_verified = verified.entries.iter().any(|v| v.net.0.contains(&net));
            top.push(Top { source, drops: n, ban_left, verified: is_verified });
        }
        Ok(top)
    }
}

#[derive(serde::Serialize)]
struct Prefix {
    prefix: String,
    samples: u64,
    sources: usize,
}

impl View {
    /// The /24s (IPv4) and /64s (IPv6) with the most sampled drops: a flood
    /// from many addresses of one network shows up here though each of its
    /// sources is small.
    fn top_prefixes(&self) -> Vec<Prefix> {
        let mut nets: HashMap<IpNet, (u64, usize)> = HashMap::new();
        for (ip, n) in &self.by_source {
            let len = if ip.is_ipv4() { 24 } else { 64 };
            let Ok(net) = IpNet::new(*ip, len) else { continue };
            let e = nets.entry(net.trunc()).or_default();
            e.0 += n;
            e.1 += 1;
        }
        let mut list: Vec<Prefix> =
            nets.into_iter().map(|(net, (samples, sources))| Prefix { prefix: net.to_string(), samples, sources }).collect();
        list.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.prefix.cmp(&b.prefix)));
        list.truncate(TOP);
        list
    }
}

fn left(l: Lasts) -> String {
    match l {
        Lasts::Forever => "forever".into(),
        Lasts::Secs(s) => shield::config::format_duration(Duration::from_secs(s)),
    }
}

fn out(text: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        // `shieldctl watch | head`: the reader is gone, stop quietly.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STOP.store(true, Ordering::SeqCst);
            Ok(())
        }
        r => r.context("writing the output"),
    }
}
