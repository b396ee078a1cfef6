//! A private CrowdSec Local API (LAPI) for the bouncer tests: Debian 12's
//! `crowdsec` 1.4.6 run API-only (`crowdsec -no-cs`) inside a network
//! namespace of the test's own, with its own configuration, SQLite
//! database, credentials and logs in a temporary directory. Nothing under
//! /etc/crowdsec or /var/lib/crowdsec is written: the hub, parsers,
//! profiles and plugins are read from there, shared read-only.
//!
//! The configuration is Debian's `/etc/crowdsec/config.yaml` without its
//! `api.server.online_client` block (no Central API), with an overlay
//! `config.yaml.local` beside it (crowdsec deep-merges `<config>.local`)
//! that points every piece of state into the temporary directory.
//!
//! `cscli` always runs as `cscli -c COPY` inside the LAPI's namespace.
//! Facts that shape this module (verified on 1.4.6, see
//! /work/notes/lapi-facts.md): `bouncers add` and `machines add` write the
//! database directly; `decisions add|delete|list|import` go through the
//! LAPI with the machine credentials of `api.client.credentials_path`, so
//! [`Lapi::start`] registers a machine `cscli` for them.
//!
//! [`Lapi::start_tls`] serves `https://` with a certificate from a fresh
//! private CA ([`crate::pki`]); `cscli` and `curl` trust that CA only.
//!
//! On drop, also when a test panics, the LAPI's process group is killed
//! and the directory removed; when panicking, its log is printed.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ipnet::IpNet;

use crate::process::{run_within, Proc};
use crate::netns::{nsenter, Netns};
use crate::pki::Pki;

/// Debian's configuration, the template of every private one.
pub const SYSTEM_CONFIG: &str = "/etc/crowdsec/config.yaml";
/// How long the LAPI may take to answer after being started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `cscli` may take (an import of 100,000 decisions excepted).
pub const CSCLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `cscli decisions import` may take.
pub const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);
/// The machine `cscli` itself logs in as (see the module comment).
const CSCLI_MACHINE: &str = "cscli";

/// Fails the test (never skips) when crowdsec or cscli is missing.
pub fn require_crowdsec() {
    for tool in ["crowdsec", "cscli", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is not installed: run scripts/setup.sh (Debian 12's crowdsec package)"
        );
    }
    assert!(
        Path::new(SYSTEM_CONFIG).exists(),
        "{SYSTEM_CONFIG} is missing: run scripts/setup.sh (Debian 12's crowdsec package)"
    );
}

/// A private LAPI running in a namespace.
pub struct Lapi {
    proc: Option<Proc>,
    ns: String,
    listen: SocketAddr,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// Its TLS certificate and the private CA that signed it, when it
    /// serves `https://`.
    pki: Option<Pki>,
    /// How many times it was started (each start gets its own log).
    starts: u32,
}

/// Scope of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Ip,
    Range,
}

/// One decision for [`Lapi::import_decisions`].
#[derive(Clone, Debug)]
pub struct Decision {
    pub scope: Scope,
    /// An address (`Ip`) or a prefix in CIDR notation (`Range`).
    pub value: String,
    /// A Go duration: `4h`, `90m`, `30s`.
    pub duration: String,
    pub reason: String,
}

impl Lapi {
    /// Starts a LAPI in `ns` listening on `listen` (`0.0.0.0:8080` for every
    /// address of the namespace), and waits until it answers.
    pub fn start(ns: &Netns, listen: SocketAddr) -> Result<Lapi> {
        Lapi::start_with(ns, listen, None)
    }

    /// As [`Lapi::start`], serving `https://` with a certificate for
    /// `ips` (and loopback) signed by a private CA ([`Lapi::ca`]).
    pub fn start_tls(ns: &Netns, listen: SocketAddr, ips: &[IpAddr]) -> Result<Lapi> {
        Lapi::start_with(ns, listen, Some(ips))
    }

    fn start_with(ns: &Netns, listen: SocketAddr, tls: Option<&[IpAddr]>) -> Result<Lapi> {
        require_crowdsec();
        let dir = tempfile::Builder::new()
            .prefix("shield-lapi")
            .tempdir_in("/tmp")
            .context("LAPI: temporary directory")?;
        let config = dir.path().join("config.yaml");
        let pki = match tls {
            Some(ips) => {
                let ips: Vec<IpAddr> = ips.iter().copied().chain([Ipv4Addr::LOCALHOST.into()]).collect();
                Some(Pki::for_ips(dir.path(), &ips).context("LAPI: its certificate")?)
            }
            None => None,
        };
        let mut lapi = Lapi {
            proc: None,
            ns: ns.name.clone(),
            listen,
            dir,
            config,
            pki,
            starts: 0,
        };
        lapi.write_config()?;
        // cscli's own machine: `decisions ...` log in with it. The file is
        // api.client.credentials_path.
        let creds = lapi.path("local_api_credentials.yaml");
        let url = lapi.local_url();
        lapi.cscli(&[
            "machines",
            "add",
            CSCLI_MACHINE,
            "--auto",
            "--force",
            "-f",
            path_str(&creds)?,
            "--url",
            url.trim_end_matches('/'),
        ])
        .context("LAPI: registering cscli's machine")?;
        lapi.launch()?;
        Ok(lapi)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The private directory (config, database, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA its certificate chains to, when it serves `https://`.
    pub fn ca(&self) -> Option<&Path> {
        self.pki.as_ref().map(|p| p.ca.as_path())
    }

    /// The private configuration file (`cscli -c` it).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Copies Debian's config without the Central API and writes the
    /// overlay that makes everything private.
    fn write_config(&self) -> Result<()> {
        let system = std::fs::read_to_string(SYSTEM_CONFIG)
            .with_context(|| format!("LAPI: reading {SYSTEM_CONFIG} (is crowdsec installed?)"))?;
        let copy = remove_block(&system, "online_client");
        ensure!(
            !copy.contains("online_client"),
            "LAPI: could not remove api.server.online_client from {SYSTEM_CONFIG}"
        );
        std::fs::write(&self.config, copy).context("LAPI: writing config.yaml")?;
        let data = self.path("data");
        let logs = self.path("log");
        for d in [&data, &logs] {
            std::fs::create_dir_all(d).with_context(|| format!("LAPI: {}", d.display()))?;
        }
        let tls = self.pki.as_ref().map_or_else(String::new, |p| {
            format!(
                "    tls:\n      cert_file: {}\n      key_file: {}\n",
                p.cert.display(),
                p.key.display()
            )
        });
        let overlay = format!(
            "common:\n  daemonize: false\n  log_media: stdout\n  log_dir: {logs}/\n  working_dir: {dir}\n\
             config_paths:\n  data_dir: {data}/\n\
             db_config:\n  type: sqlite\n  db_path: {db}\n  use_wal: true\n\
             api:\n  client:\n    credentials_path: {creds}\n  server:\n    listen_uri: {listen}\n    console_path: {console}\n{tls}\
             prometheus:\n  enabled: false\n",
            logs = logs.display(),
            dir = self.dir.path().display(),
            data = data.display(),
            db = data.join("crowdsec.db").display(),
            creds = self.path("local_api_credentials.yaml").display(),
            listen = self.listen,
            console = self.path("console.yaml").display(),
        );
        let local = self.path("config.yaml.local");
        std::fs::write(&local, overlay).context("LAPI: writing config.yaml.local")?;
        Ok(())
    }

    /// Starts the process and waits until the API answers.
    fn launch(&mut self) -> Result<()> {
        self.starts += 1;
        let log = self.path(&format!("lapi-{}.log", self.starts));
        let mut cmd = nsenter(&self.ns, "crowdsec");
        cmd.arg("-c").arg(&self.config).arg("-no-cs");
        let proc = Proc::spawn("crowdsec LAPI", cmd, Some(&log))?;
        self.proc = Some(proc);
        let probe = format!("{}v1/decisions/stream", self.local_url());
        let t = Instant::now();
        loop {
            let proc = self.proc.as_mut().expect("just started");
            if !proc.is_running() {
                bail!(
                    "LAPI exited at start ({:?}); its log:\n{}",
                    proc.exit_status(),
                    proc.log_tail(30)
                );
            }
            // Any HTTP answer will do: 403 without a key.
            if let Ok((code, _)) = self.curl(&[&probe]) {
                if code != 0 {
                    break;
                }
            }
            if t.elapsed() > START_TIMEOUT {
                bail!(
                    "LAPI did not answer on {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.listen,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The URL the LAPI is reached at from its own namespace (an
    /// unspecified listen address becomes loopback), `http://ADDR:PORT/`.
    pub fn local_url(&self) -> String {
        let ip = match self.listen.ip() {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            a => a,
        };
        format!("{}://{}/", self.scheme(), SocketAddr::new(ip, self.listen.port()))
    }

    /// `https` when it serves TLS ([`Lapi::start_tls`]), else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.pki.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `curl ARGS...` in its namespace, trusting its CA when it has one.
    fn curl(&self, args: &[&str]) -> Result<(u16, String)> {
        match self.ca() {
            Some(ca) => {
                let mut all = vec!["--cacert", path_str(ca)?];
                all.extend_from_slice(args);
                curl_in(&self.ns, &all)
            }
            None => curl_in(&self.ns, args),
        }
    }

    /// `http://ADDR:PORT/` of the listen address, reachable from the
    /// LAPI's namespace (an unspecified address becomes loopback, as in
    /// [`Lapi::local_url`]). From another namespace use the address that
    /// namespace routes to, e.g. [`crate::fleet::Fleet::lapi_url`].
    pub fn url(&self) -> String {
        self.local_url()
    }

    /// The address it listens on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The namespace it runs in.
    pub fn ns_name(&self) -> &str {
        &self.ns
    }

    /// The current log's last `lines` lines.
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_else(|| {
                let p = self.path(&format!("lapi-{}.log", self.starts));
                let t = std::fs::read_to_string(p).unwrap_or_default();
                let all: Vec<&str> = t.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            })
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// `cscli -c COPY ARGS...` in the LAPI's namespace; its stdout.
    pub fn cscli(&self, args: &[&str]) -> Result<String> {
        self.cscli_within(args, CSCLI_TIMEOUT)
    }

    fn cscli_within(&self, args: &[&str], within: Duration) -> Result<String> {
        let mut cmd = nsenter(&self.ns, "cscli");
        cmd.arg("-c").arg(&self.config).args(args);
        // Go takes its roots from SSL_CERT_FILE: cscli trusts the CA.
        if let Some(ca) = self.ca() {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let out = run_within(cmd, within).with_context(|| format!("cscli {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "cscli {} failed ({}): {}\nLAPI log:\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail(15)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A new bouncer's API key (`cscli bouncers add NAME -o raw`).
    pub fn bouncer_key(&self, name: &str) -> Result<String> {
        let key = self.cscli(&["bouncers", "add", name, "-o", "raw"])?;
        let key = key.trim().to_string();
        ensure!(
            !key.is_empty() && !key.contains(char::is_whitespace),
            "cscli bouncers add {name}: unexpected output {key:?}"
        );
        Ok(key)
    }

    /// A new machine (watcher) that logs in with `password` at
    /// `POST /v1/watchers/login`; validated at once.
    pub fn add_machine(&self, name: &str, password: &str) -> Result<()> {
        let creds = self.path(&format!("machine-{name}.yaml"));
        self.cscli(&[
            "machines",
            "add",
            name,
            "--password",
            password,
            "--force",
            "-f",
            path_str(&creds)?,
        ])?;
        Ok(())
    }

    /// `cscli decisions add --ip IP --duration D --reason R` (a ban).
    pub fn add_decision_ip(&self, ip: IpAddr, duration: &str, reason: &str) -> Result<()> {
        self.add_decision("--ip", &ip.to_string(), duration, reason)
    }

    /// `cscli decisions add --range CIDR --duration D --reason R` (a ban).
    pub fn add_decision_range(&self, net: IpNet, duration: &str, reason: &str) -> Result<()> {
        self.add_decision("--range", &net.to_string(), duration, reason)
    }

    fn add_decision(&self, flag: &str, value: &str, duration: &str, reason: &str) -> Result<()> {
        self.cscli(&[
            "decisions", "add", flag, value, "--duration", duration, "--reason", reason,
        ])?;
        Ok(())
    }

    /// `cscli decisions delete --ip IP`. Note LAPI's semantics: every
    /// decision that contains IP goes, ranges included.
    pub fn delete_decisions_ip(&self, ip: IpAddr) -> Result<()> {
        self.cscli(&["decisions", "delete", "--ip", &ip.to_string()])?;
        Ok(())
    }

    /// `cscli decisions delete --range CIDR` (decisions whose range
    /// contains CIDR).
    pub fn delete_decisions_range(&self, net: IpNet) -> Result<()> {
        self.cscli(&["decisions", "delete", "--range", &net.to_string()])?;
        Ok(())
    }

    /// `cscli decisions list -o json`: alerts with their active decisions
    /// (`null` when there are none).
    pub fn decisions_json(&self) -> Result<serde_json::Value> {
        let out = self.cscli(&["decisions", "list", "-o", "json"])?;
        serde_json::from_str(&out).with_context(|| format!("cscli decisions list: not JSON: {out}"))
    }

    /// `cscli alerts list -a -l 0 -o json`: every alert, machines' pushes
    /// included (e.g. a shieldd's), `null` when there are none. Without
    /// `-a` (`include_capi=false`) 1.4.6 hides alerts whose decisions have
    /// an origin other than its own (crowdsec, cscli...), so a pushed
    /// `sipshield` alert would not be listed.
    pub fn alerts_json(&self) -> Result<serde_json::Value> {
        let out = self.cscli(&["alerts", "list", "-a", "-l", "0", "-o", "json"])?;
        serde_json::from_str(&out).with_context(|| format!("cscli alerts list: not JSON: {out}"))
    }

    /// `POST /v1/watchers/login` as machine `name` (see
    /// [`Lapi::add_machine`]), from the LAPI's namespace; the JWT.
    pub fn login(&self, name: &str, password: &str) -> Result<String> {
        let body = serde_json::json!({ "machine_id": name, "password": password }).to_string();
        let url = format!("{}v1/watchers/login", self.local_url());
        let (code, out) = self.curl(&["-d", &body, &url])?;
        ensure!(code == 200, "login as {name}: HTTP {code}: {out}");
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("login: not JSON: {out}"))?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("login: no token in {out}"))
    }

    /// `POST /v1/alerts` with a watcher's `token` (see [`Lapi::login`]) and
    /// `alerts` (a JSON array, see [`ban_alert`]); the status and body.
    pub fn post_alerts(&self, token: &str, alerts: &serde_json::Value) -> Result<(u16, String)> {
        let url = format!("{}v1/alerts", self.local_url());
        let auth = format!("Authorization: Bearer {token}");
        let file = self.path("alerts.json");
        std::fs::write(&file, alerts.to_string()).context("writing the alerts body")?;
        let data = format!("@{}", path_str(&file)?);
        self.curl(&["-H", &auth, "--data-binary", &data, &url])
    }

    /// Inserts `decisions` with `cscli decisions import`, one file per
    /// scope; how long it took. crowdsec 1.4.6's import gives every line
    /// the `--scope` flag's value (`Ip` by default) whatever the file says,
    /// so a Range imported without it would reach bouncers as scope `Ip`
    /// with a CIDR value.
    pub fn import_decisions(&self, decisions: &[Decision]) -> Result<Duration> {
        let mut took = Duration::ZERO;
        for (scope, name) in [(Scope::Ip, "Ip"), (Scope::Range, "Range")] {
            let mut json = String::with_capacity(decisions.len() * 110);
            for d in decisions.iter().filter(|d| d.scope == scope) {
                json.push(if json.is_empty() { '[' } else { ',' });
                write!(
                    json,
                    r#"{{"duration":"{}","origin":"cscli-import","reason":"{}","scope":"{name}","type":"ban","value":"{}"}}"#,
                    d.duration, d.reason, d.value
                )
                .expect("write to String");
            }
            if json.is_empty() {
                continue;
            }
            json.push(']');
            let file = self.path("import.json");
            std::fs::write(&file, json).context("writing the import file")?;
            let t = Instant::now();
            self.cscli_within(
                &["decisions", "import", "-i", path_str(&file)?, "--scope", name],
                IMPORT_TIMEOUT,
            )?;
            took += t.elapsed();
            let _ = std::fs::remove_file(&file);
        }
        Ok(took)
    }

    /// Stops the LAPI (SIGTERM to its group, SIGKILL after 5 s). Its state
    /// stays for [`Lapi::restart`].
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
            // Keep the log reachable through log_tail.
            drop(p);
        }
    }

    /// Starts it again on the same database and address (keys, machines
    /// and decisions survive); stops it first if it runs.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- LAPI log ({}):\n{}",
                self.dir.path().display(),
                self.log_tail(40)
            );
        }
        self.stop();
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("not UTF-8: {}", p.display()))
}

/// `yaml` without the block whose key is `key` (at any indentation): the
/// key's line and every following line indented deeper (or blank).
pub fn remove_block(yaml: &str, key: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    let mut skip_deeper_than: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        let content = line.trim_start();
        if let Some(i) = skip_deeper_than {
            if content.is_empty() || indent > i {
                continue;
            }
            skip_deeper_than = None;
        }
        if content.starts_with(&format!("{key}:")) {
            skip_deeper_than = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Runs `curl -s ARGS... -w '\n%{http_code}'` inside the namespace named
/// `ns`; the HTTP status (0 when nothing answered) and the body.
pub fn curl_in(ns: &str, args: &[&str]) -> Result<(u16, String)> {
    let (code, body) = crate::process::curl(ns, args, "%{http_code}")?;
    Ok((code.trim().parse().unwrap_or(0), body))
}

/// `GET {url}v1/decisions/stream[?startup=true]` with `X-Api-Key`, from
/// inside `ns`; the status and the JSON body (`Null` when not JSON).
pub fn decisions_stream(
    ns: &Netns,
    url: &str,
    key: &str,
    startup: bool,
) -> Result<(u16, serde_json::Value)> {
    let q = if startup { "?startup=true" } else { "" };
    let target = format!("{url}v1/decisions/stream{q}");
    let header = format!("X-Api-Key: {key}");
    let (code, body) = curl_in(&ns.name, &["-H", &header, &target])?;
    let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    Ok((code, v))
}

/// The `value`s of a stream answer's `new` or `deleted` list (`which`),
/// with their scope: `("Ip", "198.51.100.50")`.
pub fn stream_values(v: &serde_json::Value, which: &str) -> Vec<(String, String)> {
    v[which]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["scope"].as_str().unwrap_or_default().to_string(),
                        d["value"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One alert as LAPI 1.4.6 accepts it (every required field; see
/// /work/notes/lapi-facts.md) carrying one ban decision on `scope`
/// (`"Ip"` or `"Range"`, capitalised: other spellings are stored but never
/// streamed) `value` for `duration` (a Go duration: `1h`, not `1d`).
pub fn ban_alert(
    scope: &str,
    value: &str,
    duration: &str,
    origin: &str,
    scenario: &str,
) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let at = shield::text::rfc3339(now);
    serde_json::json!({
        "scenario": scenario, "scenario_hash": "", "scenario_version": "",
        "message": format!("{origin}: ban {value}"), "events_count": 1,
        "start_at": at, "stop_at": at, "capacity": 0, "leakspeed": "0",
        "simulated": false, "events": [],
        "source": { "scope": scope, "value": value },
        "decisions": [{
            "duration": duration, "origin": origin, "scenario": scenario,
            "scope": scope, "type": "ban", "value": value
        }]
    })
}

/// `n` distinct ban decisions for a benchmark, a quarter each of IPv4 Ip
/// (198.18.0.0/15, RFC 2544), IPv4 Range (/28s of 100.64.0.0/10, RFC
/// 6598), IPv6 Ip and IPv6 Range (/64s, both in 2001:db8::/32). At most
/// 4 × 65,536.
pub fn bench_decisions(n: usize, duration: &str) -> Vec<Decision> {
    assert!(n <= 4 * 65_536, "bench_decisions: at most 262144");
    (0..n)
        .map(|i| {
            let j = (i / 4) as u32;
            let (scope, value) = match i % 4 {
                0 => (
                    Scope::Ip,
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + j).to_string(),
                ),
                1 => (
                    Scope::Range,
                    format!(
                        "{}/28",
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (j << 4))
                    ),
                ),
                2 => (
                    Scope::Ip,
                    format!("2001:db8:b::{:x}:{:x}", j >> 16, j & 0xffff),
                ),
                _ => (Scope::Range, format!("2001:db8:c:{j:x}::/64")),
            };
            Decision {
                scope,
                value,
                duration: duration.to_string(),
                reason: "bench".to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_nested_block() {
        let y = "api:\n  server:\n    listen_uri: x\n    online_client: # c\n      credentials_path: /y\n\n    trusted_ips:\n      - 127.0.0.1\nprometheus:\n  enabled: true\n";
        let r = remove_block(y, "online_client");
        assert_eq!(
            r,
            "api:\n  server:\n    listen_uri: x\n    trusted_ips:\n      - 127.0.0.1\nprometheus:\n  enabled: true\n"
        );
    }

    #[test]
    fn bench_decisions_are_distinct_and_parse() {
        let d = bench_decisions(100_000, "4h");
        let set: std::collections::HashSet<_> = d.iter().map(|d| d.value.clone()).collect();
        assert_eq!(set.len(), d.len());
        for x in &d {
            match x.scope {
                Scope::Ip => {
                    x.value.parse::<IpAddr>().expect("ip");
                }
                Scope::Range => {
                    let n: IpNet = x.value.parse().expect("net");
                    assert_eq!(n, n.trunc(), "{}", x.value);
                }
            }
        }
    }
}
