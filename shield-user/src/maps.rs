//! Typed access to the XDP program's maps: policy, port sets, CIDR lists,
//! bans, scanner tokens, interface slots and the counters.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf,
    },
    Ebpf,
};
use ipnet::IpNet;
use shield_common::{
    names, sip::UaKey, sip_stats_index, stats_index, BanValue, Counter, Method, Policy, Reason,
    SrcKey, SrcState, Verdict, F_ALLOW_V4, F_ALLOW_V6, F_BAN_NETS_V4, F_BAN_NETS_V6, F_DENY_V4,
    F_DENY_V6, MAX_IFACE_SLOTS, PORTS_ENTRIES, PORT_TCP, PORT_UDP,
};

use crate::loader::LoadError;

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` and
/// `bpf_ktime_get_coarse_ns` read, so ban expiry times mean the same thing
/// on both sides.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Which list a CIDR goes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Allow,
    Deny,
}

type Trie<K, V> = LpmTrie<MapData, K, V>;

/// The maps, owned (taken out of the [`Ebpf`] object or opened from pins).
pub struct ShieldMaps {
    pub policy: Array<MapData, Policy>,
    pub ports: Array<MapData, u8>,
    pub iface_slot: Array<MapData, u32>,
    pub allow_v4: Trie<[u8; 4], u8>,
    pub allow_v6: Trie<[u8; 16], u8>,
    pub deny_v4: Trie<[u8; 4], u8>,
    pub deny_v6: Trie<[u8; 16], u8>,
    pub bans_v4: HashMap<MapData, [u8; 4], BanValue>,
    pub bans_v6: HashMap<MapData, [u8; 16], BanValue>,
    pub ban_nets_v4: Trie<[u8; 4], BanValue>,
    pub ban_nets_v6: Trie<[u8; 16], BanValue>,
    pub scanners: HashMap<MapData, UaKey, u8>,
    pub sources: HashMap<MapData, SrcKey, SrcState>,
    pub stats: PerCpuArray<MapData, Counter>,
    pub sip_stats: PerCpuArray<MapData, u64>,
    pub events: Option<RingBuf<MapData>>,
    /// The policy as configured; the trie-occupancy flags are added on write.
    base_policy: Policy,
    /// Entries per trie, so the kernel can skip empty ones.
    occupancy: [usize; 6],
}

const OCC_ALLOW_V4: usize = 0;
const OCC_ALLOW_V6: usize = 1;
const OCC_DENY_V4: usize = 2;
const OCC_DENY_V6: usize = 3;
const OCC_BAN_NETS_V4: usize = 4;
const OCC_BAN_NETS_V6: usize = 5;
const OCC_FLAGS: [u32; 6] =
    [F_ALLOW_V4, F_ALLOW_V6, F_DENY_V4, F_DENY_V6, F_BAN_NETS_V4, F_BAN_NETS_V6];

fn map_err(name: &'static str) -> impl Fn(MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

macro_rules! take {
    ($ebpf:expr, $name:expr) => {{
        let m = $ebpf.take_map($name).ok_or(LoadError::Map {
            name: $name,
            source: MapError::InvalidName { name: $name.to_string() },
        })?;
        m.try_into().map_err(map_err($name))?
    }};
}

impl ShieldMaps {
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<ShieldMaps, LoadError> {
        let mut maps = ShieldMaps {
            policy: take!(ebpf, names::POLICY),
            ports: take!(ebpf, names::PORTS),
            iface_slot: take!(ebpf, names::IFACE_SLOT),
            allow_v4: take!(ebpf, names::ALLOW_V4),
            allow_v6: take!(ebpf, names::ALLOW_V6),
            deny_v4: take!(ebpf, names::DENY_V4),
            deny_v6: take!(ebpf, names::DENY_V6),
            bans_v4: take!(ebpf, names::BANS_V4),
            bans_v6: take!(ebpf, names::BANS_V6),
            ban_nets_v4: take!(ebpf, names::BAN_NETS_V4),
            ban_nets_v6: take!(ebpf, names::BAN_NETS_V6),
            scanners: take!(ebpf, names::SCANNERS),
            sources: take!(ebpf, names::SOURCES),
            stats: take!(ebpf, names::STATS),
            sip_stats: take!(ebpf, names::SIP_STATS),
            events: Some(take!(ebpf, names::EVENTS)),
            base_policy: Policy::default(),
            occupancy: [0; 6],
        };
        // Reused pinned maps may already hold entries and a policy.
        maps.occupancy = [
            maps.allow_v4.keys().count(),
            maps.allow_v6.keys().count(),
            maps.deny_v4.keys().count(),
            maps.deny_v6.keys().count(),
            maps.ban_nets_v4.keys().count(),
            maps.ban_nets_v6.keys().count(),
        ];
        if let Ok(p) = maps.policy.get(&0, 0) {
            maps.base_policy = p;
        }
        Ok(maps)
    }

    /// Writes the policy record (flags for non-empty tries added).
    pub fn set_policy(&mut self, p: &Policy) -> Result<(), MapError> {
        self.base_policy = *p;
        self.write_policy()
    }

    pub fn policy(&self) -> Policy {
        self.base_policy
    }

    fn write_policy(&mut self) -> Result<(), MapError> {
        let mut p = self.base_policy;
        for (i, flag) in OCC_FLAGS.iter().enumerate() {
            if self.occupancy[i] > 0 {
                p.flags |= flag;
            } else {
                p.flags &= !flag;
            }
        }
        self.policy.set(0, &p, 0)
    }

    /// Makes the protected port sets exactly `udp` and `tcp`.
    pub fn set_ports(&mut self, udp: &[u16], tcp: &[u16]) -> Result<(), MapError> {
        let mut want = vec![0u8; PORTS_ENTRIES as usize];
        for &p in udp {
            want[p as usize] |= PORT_UDP;
        }
        for &p in tcp {
            want[p as usize] |= PORT_TCP;
        }
        for (port, &w) in want.iter().enumerate() {
            let port = port as u32;
            if self.ports.get(&port, 0)? != w {
                self.ports.set(port, &w, 0)?;
            }
        }
        Ok(())
    }

    /// Registers an interface for the per-interface counters.
    pub fn set_iface_slot(&mut self, ifindex: u32, slot: u32) -> Result<(), MapError> {
        self.iface_slot.set(ifindex, &(slot % MAX_IFACE_SLOTS), 0)
    }

    /// Makes the scanner User-Agent set exactly `keys`.
    pub fn set_scanners(&mut self, keys: &[UaKey]) -> Result<(), MapError> {
        let want: HashSet<UaKey> = keys.iter().copied().collect();
        let have: Vec<UaKey> = self.scanners.keys().collect::<Result<_, _>>()?;
        for k in &have {
            if !want.contains(k) {
                self.scanners.remove(k)?;
            }
        }
        for k in &want {
            self.scanners.insert(k, &1, 0)?;
        }
        Ok(())
    }

    /// Adds a CIDR to the allow or deny list.
    pub fn list_add(&mut self, list: List, net: IpNet) -> Result<bool, MapError> {
        let added = match (list, net) {
            (List::Allow, IpNet::V4(n)) => trie_add(&mut self.allow_v4, v4_key(n), 1)?,
            (List::Allow, IpNet::V6(n)) => trie_add(&mut self.allow_v6, v6_key(n), 1)?,
            (List::Deny, IpNet::V4(n)) => trie_add(&mut self.deny_v4, v4_key(n), 1)?,
            (List::Deny, IpNet::V6(n)) => trie_add(&mut self.deny_v6, v6_key(n), 1)?,
        };
        if added {
            self.occupancy[occ_slot(list, &net)] += 1;
            self.write_policy()?;
        }
        Ok(added)
    }

    /// Removes a CIDR from the allow or deny list; `false` if it was not there.
    pub fn list_del(&mut self, list: List, net: IpNet) -> Result<bool, MapError> {
        let removed = match (list, net) {
            (List::Allow, IpNet::V4(n)) => trie_del(&mut self.allow_v4, v4_key(n))?,
            (List::Allow, IpNet::V6(n)) => trie_del(&mut self.allow_v6, v6_key(n))?,
            (List::Deny, IpNet::V4(n)) => trie_del(&mut self.deny_v4, v4_key(n))?,
            (List::Deny, IpNet::V6(n)) => trie_del(&mut self.deny_v6, v6_key(n))?,
        };
        if removed {
            let slot = occ_slot(list, &net);
            self.occupancy[slot] = self.occupancy[slot].saturating_sub(1);
            self.write_policy()?;
        }
        Ok(removed)
    }

    /// The CIDRs in a list, sorted.
    pub fn list(&self, list: List) -> Result<Vec<IpNet>, MapError> {
        let (v4, v6) = match list {
            List::Allow => (&self.allow_v4, &self.allow_v6),
            List::Deny => (&self.deny_v4, &self.deny_v6),
        };
        let mut out = BTreeSet::new();
        for k in v4.keys() {
            out.insert(net_of_v4(&k?));
        }
        for k in v6.keys() {
            out.insert(net_of_v6(&k?));
        }
        Ok(out.into_iter().collect())
    }

    /// Makes a list exactly `nets`, touching only what differs.
    pub fn set_list(&mut self, list: List, nets: &[IpNet]) -> Result<(), MapError> {
        let want: BTreeSet<IpNet> = nets.iter().map(|n| n.trunc()).collect();
        for have in self.list(list)? {
            if !want.contains(&have) {
                self.list_del(list, have)?;
            }
        }
        for n in want {
            self.list_add(list, n)?;
        }
        Ok(())
    }

    /// Bans a source until `expires_ns` (monotonic; 0 = forever). Host
    /// addresses go into the exact-match hash (the flood path), prefixes
    /// into the LPM trie.
    pub fn ban(&mut self, net: IpNet, expires_ns: u64) -> Result<(), MapError> {
        let v = BanValue { expires_ns };
        match net.trunc() {
            IpNet::V4(n) if n.prefix_len() == 32 => self.bans_v4.insert(&n.addr().octets(), &v, 0),
            IpNet::V6(n) if n.prefix_len() == 128 => self.bans_v6.insert(&n.addr().octets(), &v, 0),
            IpNet::V4(n) => {
                if trie_add(&mut self.ban_nets_v4, v4_key(n), v)? {
                    self.occupancy[OCC_BAN_NETS_V4] += 1;
                    self.write_policy()?;
                }
                Ok(())
            }
            IpNet::V6(n) => {
                if trie_add(&mut self.ban_nets_v6, v6_key(n), v)? {
                    self.occupancy[OCC_BAN_NETS_V6] += 1;
                    self.write_policy()?;
                }
                Ok(())
            }
        }
    }

    /// Lifts a ban; `false` if there was none.
    pub fn unban(&mut self, net: IpNet) -> Result<bool, MapError> {
        let removed = match net.trunc() {
            IpNet::V4(n) if n.prefix_len() == 32 => hash_del(&mut self.bans_v4, &n.addr().octets())?,
            IpNet::V6(n) if n.prefix_len() == 128 => {
                hash_del(&mut self.bans_v6, &n.addr().octets())?
            }
            IpNet::V4(n) => {
                let r = trie_del(&mut self.ban_nets_v4, v4_key(n))?;
                if r {
                    self.occupancy[OCC_BAN_NETS_V4] -= 1;
                    self.write_policy()?;
                }
                r
            }
            IpNet::V6(n) => {
                let r = trie_del(&mut self.ban_nets_v6, v6_key(n))?;
                if r {
                    self.occupancy[OCC_BAN_NETS_V6] -= 1;
                    self.write_policy()?;
                }
                r
            }
        };
        Ok(removed)
    }

    /// Every ban in the kernel with its expiry (monotonic ns, 0 = forever).
    pub fn bans(&self) -> Result<Vec<(IpNet, u64)>, MapError> {
        let mut out = Vec::new();
        for kv in self.bans_v4.iter() {
            let (k, v) = kv?;
            out.push((IpNet::from(IpAddr::from(k)), v.expires_ns));
        }
        for kv in self.bans_v6.iter() {
            let (k, v) = kv?;
            out.push((IpNet::from(IpAddr::from(k)), v.expires_ns));
        }
        for kv in self.ban_nets_v4.iter() {
            let (k, v) = kv?;
            out.push((net_of_v4(&k), v.expires_ns));
        }
        for kv in self.ban_nets_v6.iter() {
            let (k, v) = kv?;
            out.push((net_of_v6(&k), v.expires_ns));
        }
        Ok(out)
    }

    /// Sum over CPUs of one `STATS` slot.
    pub fn counter(&self, iface_slot: u32, verdict: Verdict, reason: Reason) -> Result<Counter, MapError> {
        let v = self.stats.get(&stats_index(iface_slot, verdict, reason), 0)?;
        Ok(sum_counters(&v))
    }

    /// Sum over CPUs of one `SIP_STATS` slot.
    pub fn sip_counter(&self, iface_slot: u32, m: Method, verdict: Verdict) -> Result<u64, MapError> {
        let v = self.sip_stats.get(&sip_stats_index(iface_slot, m, verdict), 0)?;
        Ok(v.iter().sum())
    }

    /// Every non-zero counter slot: (iface slot, verdict, reason, counter).
    pub fn counters(&self) -> Result<Vec<(u32, Verdict, Reason, Counter)>, MapError> {
        let mut out = Vec::new();
        for s in 0..MAX_IFACE_SLOTS {
            for v in Verdict::ALL {
                for r in Reason::ALL {
                    let c = self.counter(s, v, r)?;
                    if c.packets != 0 {
                        out.push((s, v, r, c));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Zeroes the counters (tests and the bench start from a clean slate).
    pub fn reset_counters(&mut self) -> Result<(), MapError> {
        // As many values as the kernel hands back per slot (possible CPUs).
        let cpus = self.stats.get(&0, 0)?.len();
        for i in 0..self.stats.len() {
            let zero = PerCpuValues::try_from(vec![Counter::default(); cpus])?;
            self.stats.set(i, zero, 0)?;
        }
        for i in 0..self.sip_stats.len() {
            let zero = PerCpuValues::try_from(vec![0u64; cpus])?;
            self.sip_stats.set(i, zero, 0)?;
        }
        Ok(())
    }

    /// Forgets all per-source bucket state.
    pub fn clear_sources(&mut self) -> Result<(), MapError> {
        let keys: Vec<SrcKey> = self.sources.keys().collect::<Result<_, _>>()?;
        for k in keys {
            hash_del(&mut self.sources, &k)?;
        }
        Ok(())
    }
}

fn sum_counters(v: &PerCpuValues<Counter>) -> Counter {
    v.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

fn occ_slot(list: List, net: &IpNet) -> usize {
    match (list, net) {
        (List::Allow, IpNet::V4(_)) => OCC_ALLOW_V4,
        (List::Allow, IpNet::V6(_)) => OCC_ALLOW_V6,
        (List::Deny, IpNet::V4(_)) => OCC_DENY_V4,
        (List::Deny, IpNet::V6(_)) => OCC_DENY_V6,
    }
}

fn v4_key(n: ipnet::Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(n.prefix_len()), n.network().octets())
}

fn v6_key(n: ipnet::Ipv6Net) -> Key<[u8; 16]> {
    Key::new(u32::from(n.prefix_len()), n.network().octets())
}

fn net_of_v4(k: &Key<[u8; 4]>) -> IpNet {
    let (len, data) = (k.prefix_len(), k.data());
    IpNet::new(IpAddr::from(data), len as u8).expect("kernel keys have valid prefixes")
}

fn net_of_v6(k: &Key<[u8; 16]>) -> IpNet {
    let (len, data) = (k.prefix_len(), k.data());
    IpNet::new(IpAddr::from(data), len as u8).expect("kernel keys have valid prefixes")
}

/// Inserts or overwrites; `true` if the key was new.
fn trie_add<K: aya::Pod, V: aya::Pod>(
    t: &mut Trie<K, V>,
    key: Key<K>,
    value: V,
) -> Result<bool, MapError> {
    let new = matches!(t.get(&key, 0), Err(MapError::KeyNotFound));
    t.insert(&key, &value, 0)?;
    Ok(new)
}

fn trie_del<K: aya::Pod, V: aya::Pod>(t: &mut Trie<K, V>, key: Key<K>) -> Result<bool, MapError> {
    match t.remove(&key) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

fn hash_del<K: aya::Pod, V: aya::Pod>(h: &mut HashMap<MapData, K, V>, key: &K) -> Result<bool, MapError> {
    match h.remove(key) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
