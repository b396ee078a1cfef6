//! Authentication seen on the wire (SPEC §12) on the daemon's side: each
//! settled proven attempt the kernel reports goes through the pure
//! [`AuthBook`]; a source at `[auth] failures` is banned (origin `auth`,
//! reason `auth_failures`, detail the last username, escaped), a username
//! at `user_failures` is reported.

use std::time::Instant;

use ipnet::IpNet;

use super::banning::Request;
use super::Core;
use crate::control::protocol::{AuthReply, AuthSource, AuthUser};
use crate::daemon::auth::Verdict;
use crate::kernel::AuthOutcome;
use crate::origin::Origin;
use crate::text::Escaped;

/// The ban reason (SPEC §12).
pub const REASON: &str = "auth_failures";
/// Rows `shieldctl auth` shows.
const TOP_USERS: usize = 50;

impl Core {
    /// The ring buffer of settled attempts, for the task that reads it.
    pub fn take_auth_events(&mut self) -> Option<crate::kernel::EventRing> {
        self.shield.maps.auth.events.take()
    }

    /// One settled attempt from the kernel.
    pub fn on_auth(&mut self, o: &AuthOutcome) {
        let cfg = self.config.auth;
        let user = String::from_utf8_lossy(&o.username).into_owned();
        if o.success {
            self.auth.success(o.addr);
            return;
        }
        tracing::debug!(source = %o.addr, username = %Escaped(&user), status = o.status, "digest authentication failed");
        for v in self.auth.failure(&cfg, o.addr, &o.username, Instant::now()) {
            match v {
                Verdict::Ban { addr, failures, .. } => {
                    tracing::warn!(
                        source = %addr,
                        failures,
                        "failed digest authentications seen on the wire, last username \"{}\"",
                        Escaped(&user)
                    );
                    let detail = format!(
                        "{failures} failed digest authentications, last username \"{}\"",
                        Escaped(&user)
                    );
                    let req = Request::new(
                        IpNet::from(addr),
                        super::banning::ban_now(Origin::Auth, REASON.to_string()),
                        &detail,
                        "kernel",
                    );
                    self.ban_auto(req, cfg.bantime, None);
                }
                Verdict::UserTargeted { failures, sources, .. } => {
                    tracing::warn!(
                        username = %Escaped(&user),
                        failures,
                        sources = sources.len(),
                        "one username is being guessed from several sources (SPEC §12 user_failures)"
                    );
                }
                Verdict::Nothing => {}
            }
        }
    }

    /// `shieldctl auth`: the top usernames with their sources, and the
    /// sources with failures, within the window.
    pub fn auth_report(&mut self) -> AuthReply {
        let cfg = self.config.auth;
        let now = Instant::now();
        let users = self
            .auth
            .top_users(&cfg, now, TOP_USERS)
            .into_iter()
            .map(|(name, n, sources)| AuthUser {
                username: Escaped(&String::from_utf8_lossy(&name)).to_string(),
                failures: n as u64,
                sources: sources.iter().map(ToString::to_string).collect(),
            })
            .collect();
        let mut sources: Vec<AuthSource> = self
            .auth
            .failing_sources(&cfg, now)
            .into_iter()
            .map(|(a, n)| AuthSource { source: a.to_string(), failures: n as u64 })
            .collect();
        sources.sort_by(|a, b| b.failures.cmp(&a.failures));
        sources.truncate(TOP_USERS);
        AuthReply {
            enabled: cfg.enabled(),
            failures: cfg.failures,
            user_failures: cfg.user_failures,
            window_secs: cfg.window.as_secs(),
            users,
            sources,
        }
    }

    /// Usernames `addr` tried, escaped (for `shieldctl banned ADDR`).
    pub fn auth_usernames(&self, addr: std::net::IpAddr) -> Vec<String> {
        self.auth
            .usernames(addr)
            .iter()
            .map(|u| Escaped(&String::from_utf8_lossy(u)).to_string())
            .collect()
    }
}
