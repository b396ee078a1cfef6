//! The HTTP side of the LAPI: a bouncer ([`Bouncer`], `X-Api-Key`) and a
//! watcher ([`Watcher`], JWT from `/v1/watchers/login`). One typed method
//! per route; every failure names the route, so the metrics and the logs
//! say which call failed and why.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use thiserror::Error;

use super::wire::{Alert, Listed, Login, LoginReply, StreamReply, WireDecision};
use crate::config::{Crowdsec, Push, Scope, Secret};

/// One request's limit: a startup stream of 100k decisions is a few MB.
const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// LAPI's JWTs last an hour; log in again well before.
const JWT_LIFETIME: Duration = Duration::from_secs(45 * 60);
/// Largest answer read: a full list of a million decisions is ~150 MB.
const MAX_BODY: usize = 256 << 20;
/// Longest error body quoted in a message.
const MAX_BODY_QUOTED: usize = 200;

/// The LAPI routes shieldd calls (the `route` label of
/// `sipshield_crowdsec_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    Stream,
    Login,
    Lookup,
    Alerts,
    Delete,
}

impl Route {
    pub const ALL: [Route; 5] = [Route::Stream, Route::Login, Route::Lookup, Route::Alerts, Route::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Stream => "decisions_stream",
            Route::Login => "watchers_login",
            Route::Alerts => "alerts",
            Route::Lookup => "decisions",
            Route::Delete => "decisions_delete",
        }
    }
}

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{}: cannot reach LAPI at {url}: {}{}", .route.as_str(), crate::text::chain(.source), tls_hint(.source))]
    Transport {
        route: Route,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{}: LAPI answered {status}{hint}: {body}", .route.as_str())]
    Status {
        route: Route,
        status: StatusCode,
        hint: &'static str,
        body: String,
    },
    #[error("{}: LAPI's answer is not the JSON expected: {source}", .route.as_str())]
    Body {
        route: Route,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: LAPI's answer is larger than {max} bytes; not read", .route.as_str())]
    TooLarge { route: Route, max: usize },
    #[error("the LAPI URL {0:?} does not join with the API routes")]
    Url(String),
    #[error("resolving the LAPI host {host:?} of [crowdsec] lapi_url: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// What to do when LAPI's certificate is the problem.
fn tls_hint(e: &reqwest::Error) -> &'static str {
    if crate::text::chain(e).contains("certificate") {
        " (if a private CA signed LAPI's certificate, name it in [crowdsec] ca_file)"
    } else {
        ""
    }
}

impl ApiError {
    pub fn route(&self) -> Option<Route> {
        match self {
            ApiError::Transport { route, .. }
            | ApiError::Status { route, .. }
            | ApiError::Body { route, .. }
            | ApiError::TooLarge { route, .. } => Some(*route),
            ApiError::Url(_) | ApiError::Client(_) | ApiError::Resolve { .. } => None,
        }
    }

    /// The `outcome` label: `error` (no answer) or the HTTP status.
    pub fn outcome(&self) -> String {
        match self {
            ApiError::Status { status, .. } => status.as_u16().to_string(),
            ApiError::Body { .. } => "bad_body".into(),
            ApiError::TooLarge { .. } => "too_large".into(),
            _ => "error".into(),
        }
    }

    /// LAPI 1.4 answers 500 for an id it does not know: deleting it again
    /// is done, not a failure to retry.
    pub fn gone(&self) -> bool {
        matches!(self, ApiError::Status { status, body, .. }
            if *status == StatusCode::INTERNAL_SERVER_ERROR && body.contains("doesn't exist"))
    }

    fn unauthorized(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if *status == StatusCode::UNAUTHORIZED)
    }
}

/// The host of `lapi_url` as written: an address literal, or a name to
/// resolve (with the port to resolve it for).
#[derive(Debug, PartialEq, Eq)]
pub enum LapiHost {
    Addr(IpAddr),
    Name(String, u16),
}

impl LapiHost {
    pub fn of(lapi_url: &str) -> Result<LapiHost, ApiError> {
        let bad = || ApiError::Url(lapi_url.to_string());
        let url = Url::parse(lapi_url).map_err(|_| bad())?;
        let host = url.host_str().ok_or_else(bad)?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        Ok(match literal.parse::<IpAddr>() {
            Ok(a) => LapiHost::Addr(a.to_canonical()),
            Err(_) => LapiHost::Name(host.to_string(), url.port_or_known_default().unwrap_or(80)),
        })
    }
}

/// The addresses `lapi_url` reaches LAPI at: the literal, or what its name
/// resolves to now. They are never banned (a ban would cut this host off
/// the decisions that could lift it).
pub async fn lapi_addresses(lapi_url: &str) -> Result<Vec<IpAddr>, ApiError> {
    match LapiHost::of(lapi_url)? {
        LapiHost::Addr(a) => Ok(vec![a]),
        LapiHost::Name(host, port) => {
            let found = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|source| ApiError::Resolve { host: host.clone(), source })?;
            let mut addrs: Vec<IpAddr> = found.map(|sa| sa.ip().to_canonical()).collect();
            addrs.sort();
            addrs.dedup();
            Ok(addrs)
        }
    }
}

/// The part both sides share: base URL, client, User-Agent.
#[derive(Clone, Debug)]
struct Http {
    client: Client,
    base: Url,
}

impl Http {
    fn new(cfg: &Crowdsec) -> Result<Http, ApiError> {
        let base = Url::parse(&cfg.lapi_url).map_err(|_| ApiError::Url(cfg.lapi_url.clone()))?;
        let mut builder = Client::builder()
            .user_agent(concat!("sipshield-shieldd/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        for c in cfg.ca.iter().flat_map(|ca| &ca.certs) {
            builder = builder.add_root_certificate(c.clone());
        }
        let client = builder.build().map_err(ApiError::Client)?;
        Ok(Http { client, base })
    }

    fn url(&self, path: &str) -> Result<Url, ApiError> {
        self.base
            .join(path)
            .map_err(|_| ApiError::Url(self.base.to_string()))
    }

    /// Sends `req` and reads a JSON answer of type `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        route: Route,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let transport = |source| ApiError::Transport {
            route,
            url: self.base.to_string(),
            source,
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        // Read with a limit: a broken or hostile LAPI must not make the
        // daemon allocate without bound.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ApiError::TooLarge { route, max: MAX_BODY });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let hint = match status {
                StatusCode::FORBIDDEN => " (the bouncer key is wrong: `cscli bouncers add NAME -o raw` gives one)",
                StatusCode::UNAUTHORIZED => " (machine id or password wrong, or the machine is not validated)",
                _ => "",
            };
            return Err(ApiError::Status {
                route,
                status,
                hint,
                body: crate::text::Escaped(&text.chars().take(MAX_BODY_QUOTED).collect::<String>())
                    .to_string(),
            });
        }
        serde_json::from_slice(&body).map_err(|source| ApiError::Body { route, source })
    }
}

/// The bouncer: reads decisions.
#[derive(Clone, Debug)]
pub struct Bouncer {
    http: Http,
    key: Secret,
}

impl Bouncer {
    pub fn new(cfg: &Crowdsec) -> Result<Bouncer, ApiError> {
        Ok(Bouncer {
            http: Http::new(cfg)?,
            key: cfg.api_key.clone(),
        })
    }

    /// `GET /v1/decisions/stream`: everything active (`startup`), or what
    /// changed since this bouncer's last call.
    pub async fn stream(&self, startup: bool) -> Result<StreamReply, ApiError> {
        let mut url = self.http.url("v1/decisions/stream")?;
        url.query_pairs_mut()
            .append_pair("startup", if startup { "true" } else { "false" });
        let req = self
            .http
            .client
            .get(url)
            .header("X-Api-Key", self.key.expose());
        self.http.call(Route::Stream, req).await
    }

    /// The active decisions on exactly `net` (`GET /v1/decisions`, which
    /// answers with every decision *containing* it; the rest are
    /// filtered out here).
    pub async fn decisions_on(&self, net: &ipnet::IpNet) -> Result<Vec<WireDecision>, ApiError> {
        let (scope, value) = super::wire::scope_value(net);
        let mut url = self.http.url("v1/decisions")?;
        let key = if scope == crate::config::Scope::Ip { "ip" } else { "range" };
        url.query_pairs_mut().append_pair(key, &value);
        let req = self
            .http
            .client
            .get(url)
            .header("X-Api-Key", self.key.expose());
        // One unreadable entry must not hide the others (it is skipped).
        let all: Option<Vec<Listed>> = self.http.call(Route::Lookup, req).await?;
        Ok(all
            .unwrap_or_default()
            .into_iter()
            .filter_map(Listed::decision)
            .filter(|d| {
                Scope::parse(&d.scope) == Some(scope)
                    && d.value.trim().parse::<ipnet::IpNet>().map(|n| n.trunc()).ok().or_else(|| {
                        d.value.trim().parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from)
                    }) == Some(*net)
            })
            .collect())
    }
}

/// The watcher: pushes alerts with decisions, deletes its decisions.
#[derive(Debug)]
pub struct Watcher {
    http: Http,
    machine_id: String,
    password: Secret,
    jwt: Option<(Secret, Instant)>,
    /// Logins that succeeded since [`Watcher::take_logins`] (they happen
    /// inside other calls; failed ones fail the call and are counted so).
    logins: u64,
}

#[derive(Debug, Deserialize)]
struct Deleted {
    #[serde(default, rename = "nbDeleted")]
    _nb_deleted: serde_json::Value,
}

impl Watcher {
    pub fn new(cfg: &Crowdsec, push: &Push) -> Result<Watcher, ApiError> {
        Ok(Watcher {
            http: Http::new(cfg)?,
            machine_id: push.machine_id.clone(),
            password: push.password.clone(),
            jwt: None,
            logins: 0,
        })
    }

    async fn token(&mut self) -> Result<Secret, ApiError> {
        if let Some((t, at)) = &self.jwt {
            if at.elapsed() < JWT_LIFETIME {
                return Ok(t.clone());
            }
        }
        let body = Login {
            machine_id: &self.machine_id,
            password: self.password.expose(),
            scenarios: Vec::new(),
        };
        let req = self.http.client.post(self.http.url("v1/watchers/login")?).json(&body);
        let reply: LoginReply = self.http.call(Route::Login, req).await?;
        let t = Secret::new(reply.token);
        self.jwt = Some((t.clone(), Instant::now()));
        self.logins += 1;
        Ok(t)
    }

    /// The successful logins since the last call.
    pub fn take_logins(&mut self) -> u64 {
        std::mem::take(&mut self.logins)
    }

    /// A call with the JWT; one fresh login and retry if LAPI says it
    /// expired (LAPI restarted with a new secret, or the clock jumped).
    async fn authed<T: DeserializeOwned>(
        &mut self,
        route: Route,
        method: Method,
        url: Url,
        body: Option<&[Alert]>,
    ) -> Result<T, ApiError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut req = self
                .http
                .client
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose());
            if let Some(b) = body {
                req = req.json(b);
            }
            match self.http.call(route, req).await {
                Err(e) if e.unauthorized() && attempt == 0 => self.jwt = None,
                r => return r,
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// `POST /v1/alerts`: LAPI's ids of the alerts made.
    pub async fn push(&mut self, alerts: &[Alert]) -> Result<Vec<String>, ApiError> {
        let url = self.http.url("v1/alerts")?;
        self.authed(Route::Alerts, Method::POST, url, Some(alerts)).await
    }

    /// `DELETE /v1/decisions/{id}`: by id only. The filtered form deletes
    /// every decision *containing* an address, other hosts' and the
    /// operator's ranges included.
    pub async fn delete(&mut self, id: i64) -> Result<(), ApiError> {
        let url = self.http.url(&format!("v1/decisions/{id}"))?;
        let _: Deleted = self.authed(Route::Delete, Method::DELETE, url, None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lapi_host_is_an_address_or_a_name() {
        let a = |s: &str| LapiHost::of(s).unwrap();
        assert_eq!(a("http://192.0.2.1:8080/"), LapiHost::Addr("192.0.2.1".parse().unwrap()));
        assert_eq!(a("https://[2001:db8::1]:8443/"), LapiHost::Addr("2001:db8::1".parse().unwrap()));
        // An IPv4-mapped literal is the IPv4 address bans are keyed by.
        assert_eq!(a("http://[::ffff:192.0.2.1]/"), LapiHost::Addr("192.0.2.1".parse().unwrap()));
        assert_eq!(a("https://lapi.example/"), LapiHost::Name("lapi.example".into(), 443));
        assert_eq!(a("http://lapi.example:8080/"), LapiHost::Name("lapi.example".into(), 8080));
        assert!(matches!(LapiHost::of("not a url"), Err(ApiError::Url(_))));
    }

    #[tokio::test]
    async fn lapi_addresses_resolve_names() {
        let v = lapi_addresses("http://localhost:8080/").await.unwrap();
        assert!(v.iter().all(|a| a.is_loopback()) && !v.is_empty(), "{v:?}");
        assert_eq!(lapi_addresses("http://192.0.2.1:8080/").await.unwrap(), ["192.0.2.1".parse::<IpAddr>().unwrap()]);
    }
}
