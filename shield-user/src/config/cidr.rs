//! CIDRs for the allow, deny and ignore lists: `a.b.c.d`, `a.b.c.d/n`,
//! IPv6 with or without `/n`. A bare address is a host route (/32 or /128).
//!
//! Host bits set (`10.0.0.1/8`) are rejected rather than masked: the LPM trie
//! would store the network anyway, and an operator who wrote that usually
//! meant either the host or a different prefix length, so we ask.

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

/// Why a CIDR was rejected.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("`{0}` is not an IP address")]
    BadAddress(String),
    #[error("bad prefix length `{prefix}` (expected 0 to {max})")]
    BadPrefix { prefix: String, max: u8 },
    #[error("`{given}` has host bits set; did you mean {network}?")]
    HostBits { given: String, network: IpNet },
}

/// Parses one CIDR or bare address. No surrounding whitespace is accepted:
/// callers that read free-form text trim first.
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| CidrError::BadAddress(addr.to_owned()))?;
    let Some(prefix) = prefix else {
        return Ok(IpNet::from(addr));
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bad_prefix = || CidrError::BadPrefix {
        prefix: prefix.to_owned(),
        max,
    };
    // `u8::from_str` accepts a leading '+'; a prefix length is digits only.
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_prefix());
    }
    let len: u8 = prefix.parse().map_err(|_| bad_prefix())?;
    let net = IpNet::new(addr, len).map_err(|_| bad_prefix())?;
    if net.network() != addr {
        return Err(CidrError::HostBits {
            given: text.to_owned(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// Parses a list file: one CIDR per line, `#` starts a comment (whole line or
/// trailing), blank lines are skipped. Yields `(line number from 1, result)`
/// for every line that holds an entry, so the caller can report each bad one.
pub fn parse_cidr_list(text: &str) -> impl Iterator<Item = (usize, Result<IpNet, CidrError>)> + '_ {
    text.lines().enumerate().filter_map(|(i, line)| {
        let entry = line.split_once('#').map_or(line, |(entry, _)| entry).trim();
        (!entry.is_empty()).then(|| (i + 1, parse_cidr(entry)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net(s: &str) -> IpNet {
        s.parse().expect("test literal")
    }

    #[test]
    fn accepts() {
        assert_eq!(parse_cidr("203.0.113.10"), Ok(net("203.0.113.10/32")));
        assert_eq!(parse_cidr("203.0.113.0/24"), Ok(net("203.0.113.0/24")));
        assert_eq!(parse_cidr("0.0.0.0/0"), Ok(net("0.0.0.0/0")));
        assert_eq!(parse_cidr("10.0.0.1/32"), Ok(net("10.0.0.1/32")));
        assert_eq!(parse_cidr("2001:db8::1"), Ok(net("2001:db8::1/128")));
        assert_eq!(parse_cidr("2001:db8::/32"), Ok(net("2001:db8::/32")));
        assert_eq!(parse_cidr("::/0"), Ok(net("::/0")));
        assert_eq!(parse_cidr("10.0.0.0/08"), Ok(net("10.0.0.0/8")));
    }

    #[test]
    fn host_bits_suggest_the_network() {
        let err = parse_cidr("10.0.0.1/8").unwrap_err();
        assert_eq!(
            err,
            CidrError::HostBits {
                given: "10.0.0.1/8".into(),
                network: net("10.0.0.0/8")
            }
        );
        assert_eq!(
            err.to_string(),
            "`10.0.0.1/8` has host bits set; did you mean 10.0.0.0/8?"
        );
        let err = parse_cidr("2001:db8::1/64").unwrap_err();
        assert!(
            err.to_string().ends_with("did you mean 2001:db8::/64?"),
            "{err}"
        );
    }

    #[test]
    fn rejects() {
        let bad_addr = |s: &str| CidrError::BadAddress(s.into());
        assert_eq!(parse_cidr(""), Err(bad_addr("")));
        assert_eq!(parse_cidr("10.0.0"), Err(bad_addr("10.0.0")));
        assert_eq!(parse_cidr("256.0.0.1"), Err(bad_addr("256.0.0.1")));
        assert_eq!(parse_cidr("010.0.0.1"), Err(bad_addr("010.0.0.1")));
        assert_eq!(parse_cidr("example.com"), Err(bad_addr("example.com")));
        assert_eq!(parse_cidr(" 10.0.0.1"), Err(bad_addr(" 10.0.0.1")));
        assert_eq!(parse_cidr("fe80::1%eth0"), Err(bad_addr("fe80::1%eth0")));
        assert_eq!(parse_cidr("[::1]"), Err(bad_addr("[::1]")));
        let bad_prefix = |p: &str, max| CidrError::BadPrefix {
            prefix: p.into(),
            max,
        };
        assert_eq!(parse_cidr("10.0.0.0/33"), Err(bad_prefix("33", 32)));
        assert_eq!(parse_cidr("10.0.0.0/"), Err(bad_prefix("", 32)));
        assert_eq!(parse_cidr("10.0.0.0/+8"), Err(bad_prefix("+8", 32)));
        assert_eq!(parse_cidr("10.0.0.0/-1"), Err(bad_prefix("-1", 32)));
        assert_eq!(parse_cidr("10.0.0.0/8/8"), Err(bad_prefix("8/8", 32)));
        assert_eq!(parse_cidr("10.0.0.0/300"), Err(bad_prefix("300", 32)));
        assert_eq!(parse_cidr("::/129"), Err(bad_prefix("129", 128)));
    }

    #[test]
    fn list_files() {
        let text =
            "# carriers\n\n203.0.113.0/24\n  198.51.100.7  # SBC\n10.0.0.1/8\n\t\n2001:db8::/32\n";
        let got: Vec<_> = parse_cidr_list(text).collect();
        assert_eq!(
            got,
            vec![
                (3, Ok(net("203.0.113.0/24"))),
                (4, Ok(net("198.51.100.7/32"))),
                (
                    5,
                    Err(CidrError::HostBits {
                        given: "10.0.0.1/8".into(),
                        network: net("10.0.0.0/8")
                    })
                ),
                (7, Ok(net("2001:db8::/32"))),
            ]
        );
        assert_eq!(parse_cidr_list("").count(), 0);
        assert_eq!(
            parse_cidr_list("a\r\nb\r\n")
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse_cidr(&s);
            let _ = parse_cidr_list(&s).count();
        }

        #[test]
        fn canonical_networks_round_trip(
            a in any::<u32>(),
            len in 0u8..=32,
            b in any::<u128>(),
            len6 in 0u8..=128,
        ) {
            let v4 = IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), len).expect("len <= 32").trunc();
            prop_assert_eq!(parse_cidr(&v4.to_string()), Ok(v4));
            let v6 = IpNet::new(IpAddr::V6(Ipv6Addr::from(b)), len6).expect("len <= 128").trunc();
            prop_assert_eq!(parse_cidr(&v6.to_string()), Ok(v6));
        }
    }
}
