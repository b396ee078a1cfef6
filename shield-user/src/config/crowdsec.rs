//! `[crowdsec]` and `[crowdsec.push]` (SPEC §9): the CrowdSec Local API
//! this host pulls decisions from, and the watcher account it pushes its
//! own bans with. The secrets are read from their files here, so a missing
//! or empty key file is a config error with file, line and key, and a
//! reload picks up a rotated key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{read_regular_file, Section, Val};

/// `[crowdsec]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crowdsec {
    /// The LAPI's base URL, ending in `/`.
    pub lapi_url: String,
    /// Trusted besides the public roots when `lapi_url` is `https://`.
    pub ca: Option<CaFile>,
    /// The bouncer key (`cscli bouncers add`), from `api_key_file`.
    pub api_key: Secret,
    pub update_frequency: Duration,
    pub scopes: Vec<Scope>,
    /// Decision origins to enforce (`crowdsec`, `cscli`, `CAPI`, `lists`,
    /// ...); empty: every origin.
    pub origins: Vec<String>,
    /// Decision types to enforce; `ban` by default (XDP can only drop).
    pub decision_types: Vec<String>,
    pub push: Option<Push>,
}

/// `[crowdsec.push]`: local bans shared with the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    pub machine_id: String,
    pub password: Secret,
    /// Kinds of local ban pushed (`jail`, `escalation`, `manual`).
    pub origins: Vec<String>,
}

/// The scopes a bouncer of XDP maps can enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Ip,
    Range,
}

impl Scope {
    /// CrowdSec's spelling; LAPI compares scopes case-insensitively.
    pub fn parse(s: &str) -> Option<Scope> {
        if s.eq_ignore_ascii_case("ip") {
            Some(Scope::Ip)
        } else if s.eq_ignore_ascii_case("range") {
            Some(Scope::Range)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "Ip",
            Scope::Range => "Range",
        }
    }
}

/// A credential: compared and cloned like a string, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `ca_file`: the PEM certificates a LAPI's certificate may chain to
/// (a private CA), read and checked at load so a bad file is a config
/// error and a reload picks up a new one.
#[derive(Clone)]
pub struct CaFile {
    pub path: PathBuf,
    pub certs: Vec<reqwest::Certificate>,
    /// What the file held: equal contents, equal settings (no restart).
    pem: Vec<u8>,
}

impl PartialEq for CaFile {
    fn eq(&self, other: &CaFile) -> bool {
        self.path == other.path && self.pem == other.pem
    }
}

impl Eq for CaFile {}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaFile({}, {} certificates)", self.path.display(), self.certs.len())
    }
}

/// Local ban kinds that may be pushed.
const PUSHABLE: [&str; 3] = ["jail", "escalation", "manual"];
const DEFAULT_UPDATE: Duration = Duration::from_secs(10);
/// LAPI accepts longer ids, but a watcher name is also a log and metric
/// label here.
const MAX_MACHINE_ID: usize = 64;

/// `[crowdsec]`, `None` when the section is absent.
pub(super) fn crowdsec(mut s: Section) -> Option<Crowdsec> {
    if !s.is_present() {
        return None;
    }
    let lapi_url = s.require("lapi_url").and_then(|v| lapi_url(&v));
    let ca = s.get("ca_file").and_then(|v| ca_file(&v));
    let api_key = s.require("api_key_file").and_then(|v| secret(&v));
    let update_frequency = s.duration("update_frequency", DEFAULT_UPDATE);
    let scopes = match s.array("scopes") {
        None => vec![Scope::Ip, Scope::Range],
        Some(vals) => scopes(&vals),
    };
    let origins = s.array("origins").map_or_else(Vec::new, |v| words(&v));
    let decision_types = s
        .array("decision_types")
        .map_or_else(|| vec!["ban".to_string()], |v| words(&v));
    let push = push(s.child("push"));
    s.finish();
    Some(Crowdsec {
        lapi_url: lapi_url?,
        ca,
        api_key: api_key?,
        update_frequency,
        scopes,
        origins,
        decision_types,
        push,
    })
}

fn push(mut s: Section) -> Option<Push> {
    if !s.is_present() {
        return None;
    }
    let machine_id = s.require("machine_id").and_then(|v| machine_id(&v));
    let password = s.require("password_file").and_then(|v| secret(&v));
    let origins = match s.array("origins") {
        None => PUSHABLE.iter().map(|o| o.to_string()).collect(),
        Some(vals) => push_origins(&vals),
    };
    s.finish();
    Some(Push {
        machine_id: machine_id?,
        password: password?,
        origins,
    })
}

/// An `http://` or `https://` URL with a host, as the base of the API
/// routes (`/` appended when missing, so `v1/...` joins under it).
fn lapi_url(v: &Val) -> Option<String> {
    let text = v.str()?;
    match reqwest::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            let mut s = u.to_string();
            if !s.ends_with('/') {
                s.push('/');
            }
            Some(s)
        }
        Ok(u) => {
            v.error(format_args!(
                "{text:?} is not an http:// or https:// URL with a host (scheme {:?})",
                u.scheme()
            ));
            None
        }
        Err(e) => {
            v.error(format_args!(
                "{text:?} is not a URL ({e}); e.g. \"http://127.0.0.1:8080/\""
            ));
            None
        }
    }
}

/// The certificates of a PEM file, each one a root rustls accepts (a
/// client is built with them to find out).
fn ca_file(v: &Val) -> Option<CaFile> {
    let path = v.path()?;
    match read_ca(&path) {
        Ok((certs, pem)) => Some(CaFile { path, certs, pem }),
        Err(why) => {
            v.error(format_args!("{}: {why}", path.display()));
            None
        }
    }
}

fn read_ca(path: &Path) -> Result<(Vec<reqwest::Certificate>, Vec<u8>), String> {
    let pem = read_regular_file(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .into_bytes();
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("is not PEM: {}", crate::text::chain(&e)))?;
    if certs.is_empty() {
        return Err("holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)".into());
    }
    let mut client = reqwest::Client::builder();
    for c in &certs {
        client = client.add_root_certificate(c.clone());
    }
    client
        .build()
        .map_err(|e| format!("a certificate in it is unusable: {}", crate::text::chain(&e)))?;
    Ok((certs, pem))
}

/// The first line of the file the value names, which must be a usable
/// HTTP header value.
fn secret(v: &Val) -> Option<Secret> {
    let path = v.path()?;
    match read_secret(&path) {
        Ok(s) => Some(Secret(s)),
        Err(why) => {
            v.error(format_args!("{}: {why}", path.display()));
            None
        }
    }
}

fn read_secret(path: &Path) -> Result<String, String> {
    let text = read_regular_file(path).map_err(|e| format!("cannot read it: {e}"))?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err("is empty (expected the key or password on its first line)".into());
    }
    if !line.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("its first line has characters other than printable ASCII".into());
    }
    Ok(line.to_string())
}

fn machine_id(v: &Val) -> Option<String> {
    let id = v.str()?;
    let ok = !id.is_empty()
        && id.len() <= MAX_MACHINE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        v.error(format_args!(
            "{id:?} is not a machine id (1 to {MAX_MACHINE_ID} letters, digits, '-', '_', '.')"
        ));
        return None;
    }
    Some(id.to_string())
}

fn scopes(vals: &[Val]) -> Vec<Scope> {
    let mut out = Vec::new();
    for v in vals {
        let Some(s) = v.str() else { continue };
        match Scope::parse(s) {
            Some(sc) if !out.contains(&sc) => out.push(sc),
            Some(_) => {}
            None => v.error(format_args!(
                "unknown scope {s:?}: XDP maps can enforce \"Ip\" and \"Range\""
            )),
        }
    }
    out
}

/// Non-empty strings without control characters, each once.
fn words(vals: &[Val]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in vals {
        let Some(s) = v.str() else { continue };
        if s.is_empty() || s.chars().any(char::is_control) {
            v.error(format_args!("{s:?} is not a name"));
        } else if !out.iter().any(|o| o.eq_ignore_ascii_case(s)) {
            out.push(s.to_string());
        }
    }
    out
}

fn push_origins(vals: &[Val]) -> Vec<String> {
    let mut out = Vec::new();
    for v in vals {
        let Some(s) = v.str() else { continue };
        if !PUSHABLE.contains(&s) {
            v.error(format_args!(
                "{s:?} cannot be pushed: one of {} (bans from CrowdSec are never pushed back)",
                PUSHABLE.join(", ")
            ));
        } else if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    out
}
