//! Bans and list entries that would cut off too much. Pure rules plus the
//! host's own addresses; `Core` asks before it writes anything.
//!
//! Two kinds of refusal:
//! - **never**: a ban covering an unspecified, loopback or link-local
//!   address, or one of this host's own addresses. Jails have tried to ban
//!   0.0.0.0, 127.0.0.1 and `::` (log lines name them); no `--force` helps.
//! - **too wide**: a prefix shorter than `[bans] min_prefix_v4` /
//!   `min_prefix_v6` (default /8 and /32): refused unless forced, for bans
//!   and for shieldctl's allow/deny entries (`allow add 0.0.0.0/0` turns the
//!   shield off).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::bans::overlaps;

/// Networks no ban may touch, whatever the configuration.
const NEVER: [&str; 7] = [
    "0.0.0.0/32",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "::/128",
    "::1/128",
    "fe80::/10",
    // IPv4-mapped loopback: the kernel keys IPv4 sources this way.
    "::ffff:127.0.0.0/104",
];

fn never_nets() -> impl Iterator<Item = IpNet> {
    NEVER.iter().map(|n| n.parse().expect("valid constant"))
}

/// Why `net` may never be banned, if so. `own` are this host's addresses.
pub fn never_ban(net: &IpNet, own: &[IpAddr]) -> Option<String> {
    if let Some(n) = never_nets().find(|n| overlaps(n, net)) {
        return Some(format!(
            "{net} covers {n} (unspecified, loopback or link-local addresses are never banned)"
        ));
    }
    own.iter()
        .find(|a| net.contains(*a))
        .map(|a| format!("{net} covers {a}, an address of this host"))
}

/// Why `net` is too wide without `--force`, if it is.
pub fn too_wide(net: &IpNet, min_v4: u8, min_v6: u8) -> Option<String> {
    let (min, key) = match net {
        IpNet::V4(_) => (min_v4, "min_prefix_v4"),
        IpNet::V6(_) => (min_v6, "min_prefix_v6"),
    };
    (net.prefix_len() < min)
        .then(|| format!("{net} is wider than /{min} ([bans] {key}); add --force if you mean it"))
}

/// This host's addresses, re-read at most every few seconds (a ban path
/// may run thousands of times a second; addresses change rarely).
#[derive(Default)]
pub struct OwnAddresses {
    cached: Vec<IpAddr>,
    read_at: Option<Instant>,
}

const REFRESH: Duration = Duration::from_secs(5);

impl OwnAddresses {
    pub fn get(&mut self) -> &[IpAddr] {
        if self.read_at.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.cached = host_addresses();
            self.read_at = Some(Instant::now());
        }
        &self.cached
    }
}

/// The addresses on this network namespace's interfaces (`getifaddrs`).
/// Empty if they cannot be read: the fixed rules still apply.
fn host_addresses() -> Vec<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    list.filter_map(|ifa| {
        let a = ifa.address?;
        a.as_sockaddr_in()
            .map(|s| IpAddr::V4(s.ip()))
            .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn special_addresses_and_what_covers_them_are_never_banned() {
        for net in [
            "0.0.0.0/32",
            "0.0.0.0/0",
            "127.0.0.1/32",
            "::/128",
            "::/0",
            "::1/128",
            "fe80::1/128",
            "169.254.1.1/32",
            "::ffff:127.0.0.1/128",
        ] {
            assert!(never_ban(&n(net), &[]).is_some(), "{net}");
        }
        for net in [
            "198.51.100.7/32",
            "198.51.100.0/24",
            "2001:db8::/32",
            "1.0.0.0/8",
        ] {
            assert!(never_ban(&n(net), &[]).is_none(), "{net}");
        }
        let own: [IpAddr; 1] = ["198.51.100.1".parse().unwrap()];
        assert!(never_ban(&n("198.51.100.0/24"), &own).is_some());
        assert!(never_ban(&n("198.51.100.1/32"), &own).is_some());
        assert!(never_ban(&n("198.51.100.8/29"), &own).is_none());
    }

    #[test]
    fn prefixes_shorter_than_the_minimum_are_too_wide() {
        assert!(too_wide(&n("0.0.0.0/0"), 8, 32).is_some());
        assert!(too_wide(&n("10.0.0.0/7"), 8, 32).is_some());
        assert!(too_wide(&n("10.0.0.0/8"), 8, 32).is_none());
        assert!(too_wide(&n("2001:db8::/31"), 8, 32).is_some());
        assert!(too_wide(&n("2001:db8::/32"), 8, 32).is_none());
        let why = too_wide(&n("::/0"), 8, 32).unwrap();
        assert!(
            why.contains("min_prefix_v6") && why.contains("--force"),
            "{why}"
        );
    }

    #[test]
    fn this_hosts_addresses_include_loopback() {
        let mut own = OwnAddresses::default();
        assert!(own.get().contains(&"127.0.0.1".parse().unwrap()));
    }
}
