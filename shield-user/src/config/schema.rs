//! The schema: each section's keys, types, ranges and defaults, and the
//! checks that involve more than one key (capacities, `maxtime >= bantime`,
//! unique jail names, a jail needing some pattern).

use std::collections::HashSet;
use std::hash::Hash;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use regex::Regex;
use shield_common::sip::{ua_key, UA_TOKEN_MAX};
use shield_common::bucket::Bucket;
use shield_common::srcstate::{fits, max_burst};
use shield_common::{default_size, Method, METHOD_BUCKETS};
use toml_edit::TableLike;

use super::cidr::{parse_cidr, parse_cidr_list};
use super::duration::format_duration;
use super::reader::{read_list_text, Ctx, Section, Spot, Val};
use super::{
    Allow, AttachMode, BanScope, Bans, Capacity, Config, Control, Deny, Escalate, Limits, Metrics,
    Ports, RateLimit, ShieldSection, Sip, TcpLimits, Verify,
};
use crate::jails::JailSpec;

/// Filters shipped with the product; any other `filter` is a file path.
pub const BUILTIN_FILTERS: [&str; 4] = ["kamailio", "asterisk", "opensips", "freeswitch"];

/// What `<HOST>` stands for when checking that a pattern compiles.
const HOST_GROUP: &str = r"(?P<host>\S+)";

/// A list file full of garbage should not bury every other problem.
const MAX_LIST_FILE_ERRORS: usize = 10;

const JAIL_MAXRETRY: u32 = 5;
const JAIL_FINDTIME: Duration = Duration::from_secs(600);

pub(super) fn read(cx: &Ctx, doc: &dyn TableLike) -> Config {
    let mut root = Section::root(cx, doc);
    let shield = shield(root.child("shield"));
    let ports = ports(root.child("ports"));
    let (allow, allow_at) = allow(root.child("allow"));
    let (deny, deny_at) = deny(root.child("deny"));
    let limits = limits(root.child("limits"));
    let sip = sip(root.child("sip"));
    let bans = bans(root.child("bans"));
    let mut capacity = capacity(root.child("capacity"));
    let (verify, verified_capacity) = verify(root.child("verify"));
    capacity.verified = verified_capacity;
    let metrics = metrics(root.child("metrics"));
    let control = control(root.child("control"));
    let crowdsec = super::crowdsec::crowdsec(root.child("crowdsec"));
    let destinations = super::destinations::destinations(root.child("destinations"));
    capacity.dest_rules = destinations.capacity;
    let calls = super::calls::calls(root.child("calls"));
    capacity.calls = calls.capacity;
    let auth = super::auth::auth(root.child("auth"));
    let jails = jails(root.tables("jail"), bans.bantime);
    root.finish();

    check_capacity(cx, &allow_at, allow.nets.len(), capacity.allow);
    check_capacity(cx, &deny_at, deny.nets.len(), capacity.deny);

    Config {
        source_path: cx.file.clone(),
        shield,
        ports,
        allow,
        deny,
        limits,
        sip,
        bans,
        capacity,
        verify,
        metrics,
        control,
        crowdsec,
        destinations,
        calls,
        auth,
        jails,
    }
}

fn shield(mut s: Section) -> ShieldSection {
    let d = ShieldSection::default();
    let modes = [
        ("auto", AttachMode::Auto),
        ("driver", AttachMode::Driver),
        ("generic", AttachMode::Generic),
        ("tc", AttachMode::Tc),
    ];
    let out = ShieldSection {
        interfaces: interfaces(&mut s),
        mode: s.choice("mode", &modes, d.mode),
        enforce: s.bool("enforce", d.enforce),
        pin_path: s.path("pin_path", d.pin_path),
        state_dir: s.path("state_dir", d.state_dir),
        detach_on_exit: s.bool("detach_on_exit", d.detach_on_exit),
    };
    s.finish();
    out
}

fn interfaces(s: &mut Section) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for v in s.array("interfaces").unwrap_or_default() {
        let Some(name) = v.str() else { continue };
        if let Err(why) = check_ifname(name) {
            v.error(why);
        } else if names.iter().any(|n| n == name) {
            v.error(format_args!("interface {name:?} is listed more than once"));
        } else {
            names.push(name.to_owned());
        }
    }
    names
}

/// The kernel's `dev_valid_name()`: 1 to IFNAMSIZ - 1 bytes, not `.` or
/// `..`, no `/`, `:` or whitespace.
fn check_ifname(name: &str) -> Result<(), String> {
    const IFNAMSIZ: usize = 16;
    if name.is_empty() {
        return Err("interface name must not be empty".into());
    }
    if name.len() >= IFNAMSIZ {
        return Err(format!(
            "interface name {name:?} is longer than {} bytes",
            IFNAMSIZ - 1
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

fn ports(mut s: Section) -> Ports {
    let d = Ports::default();
    let out = Ports {
        udp: port_list(&mut s, "udp").unwrap_or(d.udp),
        tcp: port_list(&mut s, "tcp").unwrap_or(d.tcp),
    };
    s.finish();
    out
}

/// A port list; `None` when absent (so the default applies), empty when
/// written as `[]` (nothing protected on that protocol).
fn port_list(s: &mut Section, key: &'static str) -> Option<Vec<u16>> {
    let ports = s
        .array(key)?
        .iter()
        .filter_map(|v| v.int::<u16>(1..=u16::MAX))
        .collect();
    Some(dedup(ports))
}

fn allow(mut s: Section) -> (Allow, Spot) {
    let out = Allow {
        nets: net_lists(&mut s),
        trunk_only: s.bool("trunk_only", false),
    };
    let at = s.spot().clone();
    s.finish();
    (out, at)
}

fn deny(mut s: Section) -> (Deny, Spot) {
    let out = Deny {
        nets: net_lists(&mut s),
    };
    let at = s.spot().clone();
    s.finish();
    (out, at)
}

/// `cidrs` and `files` of an allow or deny section, merged.
fn net_lists(s: &mut Section) -> Vec<IpNet> {
    let mut nets = cidrs(s, "cidrs");
    for v in s.array("files").unwrap_or_default() {
        if let Some(path) = v.path() {
            read_list_file(&v, &path, &mut nets);
        }
    }
    dedup(nets)
}

fn cidrs(s: &mut Section, key: &'static str) -> Vec<IpNet> {
    let vals = s.array(key).unwrap_or_default();
    vals.iter()
        .filter_map(|v| parse_cidr(v.str()?).map_err(|e| v.error(e)).ok())
        .collect()
}

/// Appends the CIDRs of a list file; bad lines are reported against the
/// list file and the config key that named it.
fn read_list_file(v: &Val, path: &Path, nets: &mut Vec<IpNet>) {
    let Some(text) = read_list_text(v, path) else {
        return;
    };
    let mut bad = 0;
    let mut first_unshown = None;
    for (line, parsed) in parse_cidr_list(&text) {
        match parsed {
            Ok(net) => nets.push(net),
            Err(e) if bad < MAX_LIST_FILE_ERRORS => {
                bad += 1;
                v.cx.error_in(path, Some(line), &v.spot.key, e);
            }
            Err(_) => {
                bad += 1;
                first_unshown = first_unshown.or(Some(line));
            }
        }
    }
    if first_unshown.is_some() {
        let more = bad - MAX_LIST_FILE_ERRORS;
        v.cx.error_in(
            path,
            first_unshown,
            &v.spot.key,
            format_args!("{more} more bad lines from here on"),
        );
    }
}

fn check_capacity(cx: &Ctx, at: &Spot, entries: usize, capacity: u32) {
    if entries > capacity as usize {
        cx.error(
            at,
            format_args!(
                "{entries} entries (cidrs and files, duplicates removed) exceed capacity.{} = {capacity}",
                at.key
            ),
        );
    }
}

fn limits(mut s: Section) -> Limits {
    let d = Limits::default();
    let out = Limits {
        packets_per_second: s.int("packets_per_second", d.packets_per_second, 0..=u32::MAX),
        burst: s.int("burst", d.burst, 1..=u32::MAX),
        ipv6_prefix: s.int("ipv6_prefix", d.ipv6_prefix, 1..=128),
        methods: methods(s.child("methods"), d.methods),
        tcp: tcp_limits(s.child("tcp")),
    };
    check_depth(&mut s, ("packets_per_second", "burst"), out.packets_per_second, out.burst);
    s.finish();
    out
}

/// `[limits.methods]`: absent gives `default`, present (even empty) is
/// exactly what it lists. The keys are method names, so they are checked
/// here rather than by [`Section::finish`].
fn methods(s: Section, default: Vec<(Method, RateLimit)>) -> Vec<(Method, RateLimit)> {
    if !s.is_present() {
        return default;
    }
    let mut out = Vec::new();
    let mut named = 0;
    for (name, v) in s.entries() {
        let method = Method::from_name(name.as_bytes());
        if method.is_none() {
            v.error(unknown_method(name));
        }
        // Read the bucket even under a bad name: its problems count too.
        let rate = v.table().and_then(rate_limit);
        let Some(method) = method else { continue };
        named += 1;
        if named == METHOD_BUCKETS + 1 {
            v.error(format_args!(
                "too many methods: at most {METHOD_BUCKETS} can have a bucket of their own (this is method {named})"
            ));
        }
        if named <= METHOD_BUCKETS {
            out.extend(rate.map(|rate| (method, rate)));
        }
    }
    out
}

fn unknown_method(name: &str) -> String {
    if let Some(m) = Method::from_name(name.to_ascii_uppercase().as_bytes()) {
        return format!(
            "unknown SIP method `{name}` (method names are case-sensitive: did you mean `{}`?)",
            m.as_str()
        );
    }
    let known: Vec<&str> = Method::ALL
        .iter()
        .filter(|&&m| m != Method::Other)
        .map(|m| m.as_str())
        .collect();
    format!("unknown SIP method `{name}` (known: {})", known.join(", "))
}

fn rate_limit(mut t: Section) -> Option<RateLimit> {
    let per_second = t.require("per_second").and_then(|v| v.int(1..=u32::MAX));
    let burst = t.require("burst").and_then(|v| v.int(1..=u32::MAX));
    if let (Some(p), Some(b)) = (per_second, burst) {
        check_depth(&mut t, ("per_second", "burst"), p, b);
    }
    t.finish();
    Some(RateLimit {
        per_second: per_second?,
        burst: burst?,
    })
}

/// A per-source bucket lives in `SOURCES` as 32-bit times that may run at
/// most 549 s ahead (shield-common `srcstate`): a deeper `burst` is an
/// error here rather than a smaller bucket in the kernel.
/// The error goes to the burst's key, or to the rate's where the burst is
/// the default.
fn check_depth(s: &mut Section, (rate, key): (&'static str, &'static str), per_second: u32, burst: u32) {
    if per_second == 0 || fits(&Bucket::new(per_second.into(), burst.into())) {
        return;
    }
    if let Some(v) = s.get(key).or_else(|| s.get(rate)) {
        v.error(format_args!(
            "{burst} at {per_second} a second is {:.0} s of traffic; a per-source bucket holds at most 549 s \
             (at most {} at this rate)",
            f64::from(burst) / f64::from(per_second),
            max_burst(per_second.into())
        ));
    }
}

fn tcp_limits(mut s: Section) -> TcpLimits {
    let d = TcpLimits::default();
    let out = TcpLimits {
        syn_per_second: s.int("syn_per_second", d.syn_per_second, 0..=u32::MAX),
        syn_burst: s.int("syn_burst", d.syn_burst, 1..=u32::MAX),
    };
    check_depth(&mut s, ("syn_per_second", "syn_burst"), out.syn_per_second, out.syn_burst);
    s.finish();
    out
}

fn sip(mut s: Section) -> Sip {
    let d = Sip::default();
    let out = Sip {
        drop_malformed: s.bool("drop_malformed", d.drop_malformed),
        scanner_user_agents: s
            .array("scanner_user_agents")
            .map_or(d.scanner_user_agents, |v| scanners(&v)),
    };
    s.finish();
    out
}

/// A configured scanner list (it replaces the default one).
fn scanners(vals: &[Val]) -> Vec<String> {
    if let Some(v) = vals.get(default_size::SCANNERS as usize) {
        v.error(format_args!(
            "too many scanner User-Agents: at most {} fit the map",
            default_size::SCANNERS
        ));
    }
    let valid = |v: &&Val| match v.str() {
        Some(ua) if ua_key(ua).is_some() => true,
        Some(ua) => {
            v.error(format_args!(
                "{ua:?} can never match a User-Agent product token: it must be 1 to {UA_TOKEN_MAX} bytes \
                 without '/', ':', spaces or control characters"
            ));
            false
        }
        None => false,
    };
    vals.iter()
        .filter(valid)
        .filter_map(|v| v.str().map(str::to_owned))
        .collect()
}

fn bans(mut s: Section) -> Bans {
    let d = Bans::default();
    let bantime = s.duration("bantime", d.bantime);
    let scope = s.choice(
        "scope",
        &[("all", BanScope::All), ("sip", BanScope::Sip)],
        d.scope,
    );
    let ignoreip = dedup(cidrs(&mut s, "ignoreip"));
    let increment = s.bool("increment", d.increment);
    // Unset, maxtime follows a long bantime up rather than contradicting it.
    let maxtime = match s.get("maxtime") {
        None => d.maxtime.max(bantime),
        Some(v) => match v.duration() {
            Some(m) if m < bantime => {
                v.error(format_args!(
                    "must be at least bantime ({}), got {}",
                    format_duration(bantime),
                    format_duration(m)
                ));
                bantime
            }
            m => m.unwrap_or(d.maxtime),
        },
    };
    let min_prefix_v4 = s.int("min_prefix_v4", d.min_prefix_v4, 0..=32);
    let min_prefix_v6 = s.int("min_prefix_v6", d.min_prefix_v6, 0..=128);
    let history = s.duration("history", d.history);
    let escalate = escalate(s.child("escalate"));
    s.finish();
    Bans {
        bantime,
        scope,
        ignoreip,
        increment,
        maxtime,
        min_prefix_v4,
        min_prefix_v6,
        history,
        escalate,
    }
}

fn escalate(mut s: Section) -> Escalate {
    let d = Escalate::default();
    let out = Escalate {
        drops: s.int("drops", d.drops, 0..=shield_common::srcstate::MAX_ESCALATE_DROPS),
        window: s.duration("window", d.window),
        bantime: s.duration("bantime", d.bantime),
    };
    s.finish();
    out
}

/// `[verify]`, and its `capacity` (the size of the verified-sources LRU).
fn verify(mut s: Section) -> (Verify, u32) {
    let d = Verify::default();
    let out = Verify {
        methods: s
            .array("methods")
            .map_or(d.methods, |v| verify_methods(&v)),
        ttl: s.duration("ttl", d.ttl),
        cidrs: dedup(cidrs(&mut s, "cidrs")),
        unverified_per_second: s.int(
            "unverified_per_second",
            d.unverified_per_second,
            0..=u32::MAX,
        ),
        unverified_burst: s.int("unverified_burst", d.unverified_burst, 1..=u32::MAX),
    };
    let capacity = s.int("capacity", default_size::VERIFIED, 1..=u32::MAX);
    if let Some(v) = s.get("cidrs") {
        if out.cidrs.len() > default_size::VERIFY_NETS as usize {
            v.error(format_args!(
                "too many CIDRs: at most {} fit the map",
                default_size::VERIFY_NETS
            ));
        }
    }
    s.finish();
    (out, capacity)
}

/// `[verify] methods`: known method names, each once.
fn verify_methods(vals: &[Val]) -> Vec<Method> {
    let mut out = Vec::new();
    for v in vals {
        let Some(name) = v.str() else { continue };
        match Method::from_name(name.as_bytes()) {
            Some(m) if !out.contains(&m) => out.push(m),
            Some(_) => {}
            None => v.error(unknown_method(name)),
        }
    }
    out
}

fn capacity(mut s: Section) -> Capacity {
    let d = Capacity::default();
    let out = Capacity {
        bans: s.int("bans", d.bans, 1..=u32::MAX),
        ban_nets: s.int("ban_nets", d.ban_nets, 1..=u32::MAX),
        sources: s.int("sources", d.sources, 1..=u32::MAX),
        allow: s.int("allow", d.allow, 1..=u32::MAX),
        deny: s.int("deny", d.deny, 1..=u32::MAX),
        // Set from `[verify] capacity`, `[destinations] capacity` and
        // `[calls] capacity`.
        verified: d.verified,
        dest_rules: d.dest_rules,
        calls: d.calls,
    };
    s.finish();
    out
}

fn metrics(mut s: Section) -> Metrics {
    let d = Metrics::default();
    let listen = match s.get("listen") {
        None => d.listen,
        Some(v) => match v.str() {
            None => d.listen,
            Some("" | "off") => None,
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) if addr.port() != 0 => Some(addr),
                Ok(_) => {
                    v.error("port must not be 0");
                    d.listen
                }
                Err(_) => {
                    v.error(format_args!(
                        "{text:?} is not an address:port such as \"127.0.0.1:9814\" or \"[::1]:9814\" (or \"off\")"
                    ));
                    d.listen
                }
            },
        },
    };
    s.finish();
    Metrics { listen }
}

fn control(mut s: Section) -> Control {
    let d = Control::default();
    let socket = s.path("socket", d.socket);
    let group = match s.get("group") {
        None => d.group,
        Some(v) => match v.str() {
            // ':' and ',' separate fields in /etc/group; the rest cannot be typed.
            Some(g)
                if g.chars()
                    .any(|c| c == ':' || c == ',' || c.is_whitespace() || c.is_control()) =>
            {
                v.error(format_args!("{g:?} is not a valid group name"));
                d.group
            }
            Some(g) => g.to_owned(),
            None => d.group,
        },
    };
    s.finish();
    Control { socket, group }
}

/// Every `[[jail]]` is validated; only enabled ones are returned.
fn jails(tables: Vec<Section>, default_bantime: Duration) -> Vec<JailSpec> {
    let mut names: Vec<(String, String)> = Vec::new(); // (name, key of its jail)
    let mut out = Vec::new();
    for mut t in tables {
        let jail = t.spot().key.clone();
        let name = t
            .require("name")
            .and_then(|v| jail_name(&v, &jail, &mut names));
        let logpath = t.require("logpath").and_then(|v| v.path());
        let filter_val = t.get("filter");
        let filter = filter_val.as_ref().and_then(filter);
        let failregex_vals = t.array("failregex").unwrap_or_default();
        let failregex = patterns(&failregex_vals, true);
        let ignoreregex = patterns(&t.array("ignoreregex").unwrap_or_default(), false);
        let maxretry = t.int("maxretry", JAIL_MAXRETRY, 1..=u32::MAX);
        let findtime = t.duration("findtime", JAIL_FINDTIME);
        let bantime = t.duration("bantime", default_bantime);
        let enabled = t.bool("enabled", true);
        if filter_val.is_none() && failregex_vals.is_empty() {
            t.cx()
                .error(t.spot(), "needs a filter, or at least one failregex");
        }
        t.finish();
        // Without a name or logpath there is already an error to report.
        let (Some(name), Some(logpath)) = (name, logpath) else {
            continue;
        };
        if enabled {
            out.push(JailSpec {
                name,
                logpath,
                filter,
                failregex,
                ignoreregex,
                maxretry,
                findtime,
                bantime,
            });
        }
    }
    out
}

/// A jail name is a metrics label and a ban origin: `[A-Za-z0-9_.-]+`, unique.
fn jail_name(v: &Val, jail: &str, names: &mut Vec<(String, String)>) -> Option<String> {
    let name = v.str()?;
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || !name.chars().all(ok) {
        v.error(format_args!(
            "{name:?} is not a valid jail name (letters, digits, '_', '.', '-')"
        ));
        return None;
    }
    if let Some((_, first)) = names.iter().find(|(n, _)| n == name) {
        v.error(format_args!(
            "jail name {name:?} is already used by {first}"
        ));
        return None;
    }
    names.push((name.to_owned(), jail.to_owned()));
    Some(name.to_owned())
}

/// A built-in filter name, or the path of a fail2ban filter file (resolved,
/// and required to exist now rather than when the jail first starts).
fn filter(v: &Val) -> Option<String> {
    let name = v.str()?;
    if BUILTIN_FILTERS.contains(&name) {
        return Some(name.to_owned());
    }
    if name.is_empty() {
        v.error("must not be empty (leave it out to use failregex alone)");
        return None;
    }
    let path = v.cx.resolve(name);
    if !path.is_file() {
        v.error(format_args!(
            "{name:?} is neither a built-in filter ({}) nor an existing file ({})",
            BUILTIN_FILTERS.join(", "),
            path.display()
        ));
        return None;
    }
    path.into_os_string()
        .into_string()
        .map_err(|_| v.error("filter path is not valid UTF-8"))
        .ok()
}

/// fail2ban patterns, checked to compile with `<HOST>` standing for an
/// address; a failregex must also capture the host to ban.
fn patterns(vals: &[Val], need_host: bool) -> Vec<String> {
    let check = |v: &Val| -> Option<String> {
        let pattern = v.str()?;
        match Regex::new(&pattern.replace("<HOST>", HOST_GROUP)) {
            Err(e) => v.error(format_args!("invalid regex: {}", regex_error(&e))),
            Ok(re) if need_host && !re.capture_names().any(|n| n == Some("host")) => {
                v.error("has no <HOST>: nothing to take the address to ban from")
            }
            Ok(_) => return Some(pattern.to_owned()),
        }
        None
    };
    vals.iter().filter_map(check).collect()
}

/// The regex crate draws a multi-line diagram; the last line says why.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let why = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    why.strip_prefix("error: ").unwrap_or(why).to_owned()
}

/// Drops repeats, keeping the first of each in order.
fn dedup<T: Copy + Eq + Hash>(items: Vec<T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|x| seen.insert(*x)).collect()
}
