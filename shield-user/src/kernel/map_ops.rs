//! Operations every map wrapper of this module shares: taking a typed map
//! out of the loaded object, exact-prefix trie writes, deletes that treat
//! "not there" as done, and the CIDR keys and expiries of the tries.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        HashMap, Map, MapData, MapError,
    },
    Ebpf,
};
use ipnet::IpNet;
use shield_common::{SrcKey, FAMILY_V4, FAMILY_V6};

use super::map_id::MapId;
use super::KernelError;

pub(super) type Trie<K, V> = LpmTrie<MapData, K, V>;

pub(super) fn map_err(map: MapId) -> impl Fn(MapError) -> KernelError {
    move |source| KernelError::Map {
        map: map.name(),
        source,
    }
}

/// Takes `map` out of `ebpf` as its typed wrapper.
pub(super) fn take<T>(ebpf: &mut Ebpf, map: MapId) -> Result<T, KernelError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let m = ebpf.take_map(map.name()).ok_or_else(|| KernelError::Map {
        map: map.name(),
        source: MapError::InvalidName {
            name: map.name().to_string(),
        },
    })?;
    m.try_into().map_err(map_err(map))
}

/// The network a `SOURCES` key stands for: `::ffff:a.b.c.d` is an IPv4
/// host, anything else an IPv6 prefix.
pub(super) fn source_net(key: &SrcKey, ipv6_prefix: u8) -> IpNet {
    if key[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        IpNet::from(IpAddr::from([key[12], key[13], key[14], key[15]]))
    } else {
        IpNet::new(IpAddr::from(*key), ipv6_prefix)
            .expect("prefix in 1..=128")
            .trunc()
    }
}

/// The host a `BANS` key (a [`shield_common::BanKey`]'s bytes) stands
/// for; `None` for a key the kernel never matches (another family, or
/// bytes after an IPv4 address: only a hand-made entry has them).
pub(super) fn ban_key_net(k: &[u8]) -> Option<IpNet> {
    let (addr, rest) = k.split_first_chunk::<16>()?;
    match rest {
        [FAMILY_V4, 0, 0, 0] if addr[4..] == [0; 12] => {
            Some(IpNet::from(IpAddr::from([addr[0], addr[1], addr[2], addr[3]])))
        }
        [FAMILY_V6, 0, 0, 0] => Some(IpNet::from(IpAddr::from(*addr))),
        _ => None,
    }
}

/// The host a key of an earlier version's per-family ban map
/// (`names::OBSOLETE_BANS`: 4 or 16 bytes) stands for.
pub(super) fn obsolete_ban_net(k: &[u8]) -> Option<IpNet> {
    if let Ok(a) = <[u8; 4]>::try_from(k) {
        Some(IpNet::from(IpAddr::from(a)))
    } else {
        <[u8; 16]>::try_from(k).ok().map(|a| IpNet::from(IpAddr::from(a)))
    }
}

/// The expiry a CIDR's trie entry carries: the latest of its own and of
/// every entry of `nets` covering it. The kernel's lookup returns only the
/// longest matching prefix, so a /26 that expires before the /25 around it
/// would otherwise end the /25's effect for its addresses, also when no
/// daemon is running to fix it up. (CIDR bans and verified CIDRs.)
pub(super) fn effective_expiry<V>(
    nets: &BTreeMap<IpNet, V>,
    net: IpNet,
    expiry: impl Fn(&V) -> u64,
) -> u64 {
    let own = nets.get(&net).map(&expiry).unwrap_or(0);
    (0..net.prefix_len())
        .filter_map(|len| {
            let covering = IpNet::new(net.addr(), len).expect("shorter prefix").trunc();
            nets.get(&covering).map(&expiry)
        })
        .fold(own, later)
}

/// The entries of `nets` strictly inside `net` (to rewrite after `net`
/// changed).
pub(super) fn nested<V>(nets: &BTreeMap<IpNet, V>, net: IpNet) -> Vec<IpNet> {
    nets.range(net..=IpNet::new(net.broadcast(), net.max_prefix_len()).expect("host net"))
        .map(|(n, _)| *n)
        .filter(|n| n.prefix_len() > net.prefix_len() && net.contains(n))
        .collect()
}

/// The later of two expiries, 0 being "never".
pub(super) fn later(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        0
    } else {
        a.max(b)
    }
}

pub(super) fn v4_key(n: ipnet::Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(n.prefix_len()), n.network().octets())
}

pub(super) fn v6_key(n: ipnet::Ipv6Net) -> Key<[u8; 16]> {
    Key::new(u32::from(n.prefix_len()), n.network().octets())
}

pub(super) fn net_of_v4(k: &Key<[u8; 4]>) -> IpNet {
    let (len, data) = (k.prefix_len(), k.data());
    IpNet::new(IpAddr::from(data), len as u8).expect("kernel keys have valid prefixes")
}

pub(super) fn net_of_v6(k: &Key<[u8; 16]>) -> IpNet {
    let (len, data) = (k.prefix_len(), k.data());
    IpNet::new(IpAddr::from(data), len as u8).expect("kernel keys have valid prefixes")
}

/// `BPF_NOEXIST` / `BPF_EXIST`: update flags that compare the exact key.
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// Inserts or overwrites the exact prefix `key`; `true` if it was new.
///
/// Not `get()` first: a lookup in an LPM trie is a longest-prefix match, so
/// `get(198.51.100.192/26)` answers with a covering /25 and cannot say
/// whether the /26 itself is there. `BPF_NOEXIST` compares the exact
/// prefix (and prefix length) in the kernel.
pub(super) fn trie_add<K: aya::Pod, V: aya::Pod>(
    t: &mut Trie<K, V>,
    key: Key<K>,
    value: V,
) -> Result<bool, MapError> {
    match t.insert(&key, &value, BPF_NOEXIST) {
        Ok(()) => Ok(true),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
            t.insert(&key, &value, BPF_EXIST)?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

pub(super) fn trie_del<K: aya::Pod, V: aya::Pod>(t: &mut Trie<K, V>, key: Key<K>) -> Result<bool, KernelError> {
    match t.remove(&key) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn hash_del<K: aya::Pod, V: aya::Pod>(
    h: &mut HashMap<MapData, K, V>,
    key: &K,
) -> Result<bool, MapError> {
    match h.remove(key) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Deletes every entry of `h` (test runs only: the kernel may add entries
/// meanwhile, which stay).
#[cfg(feature = "test-api")]
pub(super) fn clear_hash<K: aya::Pod, V: aya::Pod>(h: &mut HashMap<MapData, K, V>) -> Result<(), KernelError> {
    let keys: Vec<K> = h.keys().collect::<Result<_, _>>()?;
    for k in keys {
        hash_del(h, &k)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shield_common::BanKey;

    fn bytes(k: &BanKey) -> Vec<u8> {
        let mut v = k.addr.to_vec();
        v.push(k.family);
        v.extend_from_slice(&k._pad);
        v
    }

    #[test]
    fn ban_keys_decode_to_their_host_and_nothing_else() {
        let v4: IpNet = "192.0.2.7/32".parse().unwrap();
        let v6: IpNet = "2001:db8::7/128".parse().unwrap();
        let mapped: IpNet = "::ffff:192.0.2.7/128".parse().unwrap();
        assert_eq!(ban_key_net(&bytes(&BanKey::v4([192, 0, 2, 7]))), Some(v4));
        let IpAddr::V6(a) = v6.addr() else { unreachable!() };
        assert_eq!(ban_key_net(&bytes(&BanKey::v6(a.octets()))), Some(v6));
        let IpAddr::V6(m) = mapped.addr() else { unreachable!() };
        assert_eq!(ban_key_net(&bytes(&BanKey::v6(m.octets()))), Some(mapped));
        // Hostile or hand-made keys: wrong family, junk after IPv4, padding, length.
        let mut k = BanKey::v4([192, 0, 2, 7]);
        k.family = 5;
        assert_eq!(ban_key_net(&bytes(&k)), None);
        let mut k = BanKey::v4([192, 0, 2, 7]);
        k.addr[9] = 1;
        assert_eq!(ban_key_net(&bytes(&k)), None);
        let mut k = BanKey::v6(a.octets());
        k._pad[1] = 1;
        assert_eq!(ban_key_net(&bytes(&k)), None);
        assert_eq!(ban_key_net(&[4u8; 19]), None);
        assert_eq!(obsolete_ban_net(&[192, 0, 2, 7]), Some(v4));
        assert_eq!(obsolete_ban_net(&a.octets()), Some(v6));
        assert_eq!(obsolete_ban_net(&[1, 2, 3]), None);
    }
}
