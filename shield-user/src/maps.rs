//! Typed access to the XDP program's maps: policy, port sets, CIDR lists,
//! bans, scanner tokens, interface slots and the counters.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf,
    },
    sys::SyscallError,
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
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
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
    /// The policy as configured; the trie-occupancy flags and the list
    /// generation are added on write.
    base_policy: Policy,
    /// `Policy::acl_gen`: bumped on every allow/deny change, which
    /// invalidates the allow/deny bits the kernel caches in ban entries.
    acl_gen: u32,
    /// Entries per trie, so the kernel can skip empty ones. Exact: every
    /// change goes through [`trie_add`] / [`trie_del`], which report
    /// whether the exact prefix was new or present.
    occupancy: [usize; 6],
    /// Each CIDR ban's own expiry (monotonic ns, 0 = forever); the trie
    /// holds the effective one, see [`ShieldMaps::ban_net_expiry`].
    ban_nets: BTreeMap<IpNet, u64>,
    /// Second handles on the maps, for the `bpf(2)` commands aya's typed
    /// wrappers lack (batches); see [`crate::bpfsys`].
    raw: Vec<RawMap>,
}

/// A map's fd and size, by name.
struct RawMap {
    name: &'static str,
    fd: OwnedFd,
    max_entries: u32,
    /// The kernel's id of the map (tells maps created anew from adopted
    /// ones, see [`crate::state::MapsMark`]).
    id: u32,
}

const OCC_ALLOW_V4: usize = 0;
const OCC_ALLOW_V6: usize = 1;
const OCC_DENY_V4: usize = 2;
const OCC_DENY_V6: usize = 3;
const OCC_BAN_NETS_V4: usize = 4;
const OCC_BAN_NETS_V6: usize = 5;
const OCC_FLAGS: [u32; 6] = [
    F_ALLOW_V4,
    F_ALLOW_V6,
    F_DENY_V4,
    F_DENY_V6,
    F_BAN_NETS_V4,
    F_BAN_NETS_V6,
];

fn map_err(name: &'static str) -> impl Fn(MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

macro_rules! take {
    ($ebpf:expr, $name:expr) => {{
        let m = $ebpf.take_map($name).ok_or(LoadError::Map {
            name: $name,
            source: MapError::InvalidName {
                name: $name.to_string(),
            },
        })?;
        m.try_into().map_err(map_err($name))?
    }};
}

impl ShieldMaps {
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<ShieldMaps, LoadError> {
        let mut raw = Vec::new();
        for name in names::ALL {
            let Some(data) = ebpf.map(name).and_then(map_data) else {
                continue;
            };
            let fd = data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|io_error| LoadError::Map {
                    name,
                    source: MapError::SyscallError(SyscallError {
                        call: "dup",
                        io_error,
                    }),
                })?;
            let info = data.info().map_err(map_err(name))?;
            raw.push(RawMap {
                name,
                fd,
                max_entries: info.max_entries(),
                id: info.id(),
            });
        }
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
            acl_gen: 1,
            occupancy: [0; 6],
            ban_nets: BTreeMap::new(),
            raw,
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
        // Adopted CIDR bans: the kernel holds effective expiries, which are
        // never earlier than the own ones; the daemon's restore rewrites
        // them from the store.
        let mut nets = Vec::new();
        for kv in maps.ban_nets_v4.iter() {
            let (k, v) = kv.map_err(map_err(names::BAN_NETS_V4))?;
            nets.push((net_of_v4(&k), v.expires_ns));
        }
        for kv in maps.ban_nets_v6.iter() {
            let (k, v) = kv.map_err(map_err(names::BAN_NETS_V6))?;
            nets.push((net_of_v6(&k), v.expires_ns));
        }
        maps.ban_nets.extend(nets);
        if let Ok(p) = maps.policy.get(&0, 0) {
            maps.base_policy = p;
            maps.acl_gen = p.acl_gen.max(1);
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

    /// Writes the policy record: the configured policy, the list
    /// generation, and one `F_*` flag per trie telling the kernel whether
    /// to look it up at all. The one place occupancy becomes flags: a flag
    /// is clear only when its trie holds no prefix (a wrong clear flag lets
    /// every banned/denied source of that trie through; a wrong set flag
    /// only costs a lookup).
    fn write_policy(&mut self) -> Result<(), MapError> {
        let mut p = self.base_policy;
        p.acl_gen = self.acl_gen;
        for (i, flag) in OCC_FLAGS.iter().enumerate() {
            if self.occupancy[i] > 0 {
                p.flags |= flag;
            } else {
                p.flags &= !flag;
            }
        }
        self.policy.set(0, &p, 0)
    }

    fn bump_acl_gen(&mut self) {
        // Skip 0: a fresh ban entry's "not cached yet".
        self.acl_gen = self.acl_gen.wrapping_add(1).max(1);
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
            self.bump_acl_gen();
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
            self.bump_acl_gen();
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
        let v = BanValue::until(expires_ns);
        match net.trunc() {
            IpNet::V4(n) if n.prefix_len() == 32 => self.bans_v4.insert(&n.addr().octets(), &v, 0),
            IpNet::V6(n) if n.prefix_len() == 128 => self.bans_v6.insert(&n.addr().octets(), &v, 0),
            n => {
                self.ban_nets.insert(n, expires_ns);
                self.write_ban_net(n)?;
                self.rewrite_nested(n)
            }
        }
    }

    /// Lifts a ban; `false` if there was none.
    pub fn unban(&mut self, net: IpNet) -> Result<bool, MapError> {
        match net.trunc() {
            IpNet::V4(n) if n.prefix_len() == 32 => hash_del(&mut self.bans_v4, &n.addr().octets()),
            IpNet::V6(n) if n.prefix_len() == 128 => {
                hash_del(&mut self.bans_v6, &n.addr().octets())
            }
            n => {
                self.ban_nets.remove(&n);
                let removed = match n {
                    IpNet::V4(n4) => trie_del(&mut self.ban_nets_v4, v4_key(n4))?,
                    IpNet::V6(n6) => trie_del(&mut self.ban_nets_v6, v6_key(n6))?,
                };
                if removed {
                    let slot = ban_net_slot(&n);
                    self.occupancy[slot] = self.occupancy[slot].saturating_sub(1);
                    self.write_policy()?;
                }
                // What it covered falls back to its own expiry.
                self.rewrite_nested(n)?;
                Ok(removed)
            }
        }
    }

    /// The expiry a CIDR ban's trie entry carries: the latest of its own
    /// and of every CIDR ban covering it. The kernel's lookup returns only
    /// the longest matching prefix, so a /26 that expires before the /25
    /// around it would otherwise end the /25's ban for its addresses, also
    /// when no daemon is running to fix it up.
    fn ban_net_expiry(&self, net: IpNet) -> u64 {
        let own = self.ban_nets.get(&net).copied().unwrap_or(0);
        (0..net.prefix_len())
            .filter_map(|len| {
                let covering = IpNet::new(net.addr(), len).expect("shorter prefix").trunc();
                self.ban_nets.get(&covering).copied()
            })
            .fold(own, later)
    }

    /// Writes one CIDR ban's trie entry with its effective expiry.
    fn write_ban_net(&mut self, net: IpNet) -> Result<(), MapError> {
        let v = BanValue::until(self.ban_net_expiry(net));
        let added = match net {
            IpNet::V4(n) => trie_add(&mut self.ban_nets_v4, v4_key(n), v)?,
            IpNet::V6(n) => trie_add(&mut self.ban_nets_v6, v6_key(n), v)?,
        };
        if added {
            self.occupancy[ban_net_slot(&net)] += 1;
            self.write_policy()?;
        }
        Ok(())
    }

    /// Rewrites the CIDR bans strictly inside `net` after `net` changed.
    fn rewrite_nested(&mut self, net: IpNet) -> Result<(), MapError> {
        let inside: Vec<IpNet> = self
            .ban_nets
            .range(net..=IpNet::new(net.broadcast(), net.max_prefix_len()).expect("host net"))
            .map(|(n, _)| *n)
            .filter(|n| n.prefix_len() > net.prefix_len() && net.contains(n))
            .collect();
        for n in inside {
            self.write_ban_net(n)?;
        }
        Ok(())
    }

    /// Sum over CPUs of one `STATS` slot.
    pub fn counter(
        &self,
        iface_slot: u32,
        verdict: Verdict,
        reason: Reason,
    ) -> Result<Counter, MapError> {
        let v = self
            .stats
            .get(&stats_index(iface_slot, verdict, reason), 0)?;
        Ok(sum_counters(&v))
    }

    /// Sum over CPUs of one `SIP_STATS` slot.
    pub fn sip_counter(
        &self,
        iface_slot: u32,
        m: Method,
        verdict: Verdict,
    ) -> Result<u64, MapError> {
        let v = self
            .sip_stats
            .get(&sip_stats_index(iface_slot, m, verdict), 0)?;
        Ok(v.iter().sum())
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

/// Entries per `BPF_MAP_UPDATE_BATCH` call: big enough that the syscall
/// cost vanishes, small enough that one call never holds the CPU for long.
const UPDATE_CHUNK: usize = 16_384;
/// Entries per `BPF_MAP_LOOKUP_BATCH` call.
const LOOKUP_CHUNK: usize = 8_192;

/// Bulk operations, counts and dumps (the daemon's restore path, metrics,
/// `shieldctl stats`), built on the batch commands in [`crate::bpfsys`].
impl ShieldMaps {
    /// Bans many sources at once, each until its monotonic expiry (0 =
    /// forever). Host addresses go into the exact-match hashes with
    /// `BPF_MAP_UPDATE_BATCH` (one syscall per 16k bans, falling back to
    /// one per ban on kernels without it); prefixes go into the tries one by
    /// one (LPM tries have no batch ops). Returns how many were written; on
    /// error the bans before the failing one are in force.
    pub fn ban_batch(&mut self, bans: &[(IpNet, u64)]) -> Result<usize, MapError> {
        let (mut k4, mut v4, mut k6, mut v6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut nets = Vec::new();
        for &(net, expires_ns) in bans {
            let v = BanValue::until(expires_ns);
            // SAFETY: BanValue is repr(C) plain data without padding.
            let exp = unsafe {
                std::slice::from_raw_parts(
                    (&raw const v).cast::<u8>(),
                    std::mem::size_of::<BanValue>(),
                )
            };
            match net.trunc() {
                IpNet::V4(n) if n.prefix_len() == 32 => {
                    k4.extend_from_slice(&n.addr().octets());
                    v4.extend_from_slice(exp);
                }
                IpNet::V6(n) if n.prefix_len() == 128 => {
                    k6.extend_from_slice(&n.addr().octets());
                    v6.extend_from_slice(exp);
                }
                n => nets.push((n, expires_ns)),
            }
        }
        let mut written = self.update_many(names::BANS_V4, &k4, &v4)?;
        written += self.update_many(names::BANS_V6, &k6, &v6)?;
        for (net, expires_ns) in nets {
            self.ban(net, expires_ns)?;
            written += 1;
        }
        Ok(written)
    }

    /// Every ban in the kernel with its expiry (monotonic ns, 0 = forever;
    /// a CIDR ban's own expiry, not the effective one its trie entry
    /// carries). The hashes are read in batches: a million bans in a few
    /// hundred syscalls instead of two million.
    pub fn bans_dump(&self) -> Result<Vec<(IpNet, u64)>, MapError> {
        let mut out = Vec::new();
        let expiry = |v: &[u8]| u64::from_ne_bytes(v[..8].try_into().expect("8-byte value"));
        self.scan(names::BANS_V4, |k, v| {
            let a: [u8; 4] = k.try_into().expect("4-byte key");
            out.push((IpNet::from(IpAddr::from(a)), expiry(v)));
        })?;
        self.scan(names::BANS_V6, |k, v| {
            let a: [u8; 16] = k.try_into().expect("16-byte key");
            out.push((IpNet::from(IpAddr::from(a)), expiry(v)));
        })?;
        out.extend(self.ban_nets.iter().map(|(n, e)| (*n, *e)));
        Ok(out)
    }

    /// Entries in a map (by its name in [`names`]): the tries from the
    /// occupancy this handle keeps, hash maps by a batched walk. `None` for
    /// arrays and the ring buffer, whose "entries" are fixed.
    pub fn entry_count(&self, name: &str) -> Result<Option<usize>, MapError> {
        let occ = match name {
            names::ALLOW_V4 => Some(OCC_ALLOW_V4),
            names::ALLOW_V6 => Some(OCC_ALLOW_V6),
            names::DENY_V4 => Some(OCC_DENY_V4),
            names::DENY_V6 => Some(OCC_DENY_V6),
            names::BAN_NETS_V4 => Some(OCC_BAN_NETS_V4),
            names::BAN_NETS_V6 => Some(OCC_BAN_NETS_V6),
            _ => None,
        };
        if let Some(i) = occ {
            return Ok(Some(self.occupancy[i]));
        }
        if !matches!(
            name,
            names::BANS_V4 | names::BANS_V6 | names::SOURCES | names::SCANNERS
        ) {
            return Ok(None);
        }
        let mut n = 0;
        self.scan(name, |_, _| n += 1)?;
        Ok(Some(n))
    }

    /// The kernel's ids of the ban maps, by name.
    pub fn ban_map_ids(&self) -> BTreeMap<String, u32> {
        let bans = [
            names::BANS_V4,
            names::BANS_V6,
            names::BAN_NETS_V4,
            names::BAN_NETS_V6,
        ];
        self.raw
            .iter()
            .filter(|m| bans.contains(&m.name))
            .map(|m| (m.name.to_string(), m.id))
            .collect()
    }

    /// `max_entries` of a map as the kernel created it.
    pub fn capacity(&self, name: &str) -> Option<u32> {
        self.raw
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.max_entries)
    }

    /// The sources with the most escalation-counted drops (rate, scanner,
    /// malformed) in their current window, most first: one batched walk of
    /// `SOURCES`. Empty when escalation is off (the kernel then counts none).
    pub fn top_offenders(&self, n: usize, now_ns: u64) -> Result<Vec<(IpNet, u64)>, MapError> {
        let window = self.base_policy.escalate_window_ns;
        let prefix = self.base_policy.ipv6_prefix.clamp(1, 128) as u8;
        let mut all = Vec::new();
        self.scan(names::SOURCES, |k, v| {
            // SAFETY: the kernel wrote a whole SrcState; read it unaligned.
            let st: SrcState = unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) };
            if st.esc_drops == 0 || now_ns.saturating_sub(st.esc_start_ns) >= window {
                return;
            }
            let key: SrcKey = k.try_into().expect("16-byte key");
            all.push((source_net(&key, prefix), st.esc_drops));
        })?;
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        Ok(all)
    }

    /// Zeroes one interface slot's counters (a slot handed to another
    /// interface must not inherit the old one's totals).
    pub fn reset_iface_counters(&mut self, slot: u32) -> Result<(), MapError> {
        let cpus = self.stats.get(&0, 0)?.len();
        for v in Verdict::ALL {
            for r in Reason::ALL {
                let zero = PerCpuValues::try_from(vec![Counter::default(); cpus])?;
                self.stats.set(stats_index(slot, v, r), zero, 0)?;
            }
            for m in Method::ALL {
                let zero = PerCpuValues::try_from(vec![0u64; cpus])?;
                self.sip_stats.set(sip_stats_index(slot, m, v), zero, 0)?;
            }
        }
        Ok(())
    }

    fn raw(&self, name: &str) -> Result<&RawMap, MapError> {
        self.raw
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| MapError::InvalidName {
                name: name.to_string(),
            })
    }

    /// Visits every (key, value) of a hash map: batched where the kernel
    /// can, key by key where it cannot.
    fn scan(&self, name: &str, mut each: impl FnMut(&[u8], &[u8])) -> Result<(), MapError> {
        let m = self.raw(name)?;
        let (ks, vs) = (key_size(name), value_size(name));
        match crate::bpfsys::lookup_all_batch(m.fd.as_fd(), ks, vs, LOOKUP_CHUNK, &mut each) {
            Ok(()) => return Ok(()),
            Err(e) if crate::bpfsys::batch_unsupported(&e) => {}
            Err(e) => return Err(syscall("BPF_MAP_LOOKUP_BATCH", e)),
        }
        // Keys only, then each value: entries may vanish in between (LRU).
        let mut keys = Vec::new();
        crate::bpfsys::for_each_key(m.fd.as_fd(), ks, |k| keys.extend_from_slice(k))
            .map_err(|e| syscall("BPF_MAP_GET_NEXT_KEY", e))?;
        let mut value = vec![0u8; vs];
        for k in keys.chunks(ks) {
            let found = crate::bpfsys::lookup_elem(m.fd.as_fd(), k, &mut value)
                .map_err(|e| syscall("BPF_MAP_LOOKUP_ELEM", e))?;
            if found {
                each(k, &value);
            }
        }
        Ok(())
    }

    /// Writes `keys.len() / key_size` entries, batched where possible.
    fn update_many(&self, name: &str, keys: &[u8], values: &[u8]) -> Result<usize, MapError> {
        let m = self.raw(name)?;
        let (ks, vs) = (key_size(name), value_size(name));
        let count = keys.len() / ks;
        let mut done = 0;
        while done < count {
            let n = UPDATE_CHUNK.min(count - done);
            let k = &keys[done * ks..(done + n) * ks];
            let v = &values[done * vs..(done + n) * vs];
            match crate::bpfsys::update_batch(m.fd.as_fd(), k, v, n) {
                Ok(()) => done += n,
                Err((0, e)) if done == 0 && crate::bpfsys::batch_unsupported(&e) => {
                    return self.update_each(m, keys, values, ks, vs);
                }
                Err((_, e)) => return Err(syscall("BPF_MAP_UPDATE_BATCH", e)),
            }
        }
        Ok(done)
    }

    fn update_each(
        &self,
        m: &RawMap,
        keys: &[u8],
        values: &[u8],
        ks: usize,
        vs: usize,
    ) -> Result<usize, MapError> {
        for (k, v) in keys.chunks(ks).zip(values.chunks(vs)) {
            crate::bpfsys::update_elem(m.fd.as_fd(), k, v)
                .map_err(|e| syscall("BPF_MAP_UPDATE_ELEM", e))?;
        }
        Ok(keys.len() / ks)
    }
}

/// `Map` is an enum over the kinds; the shield uses these.
fn map_data(m: &Map) -> Option<&MapData> {
    match m {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::RingBuf(d) => Some(d),
        _ => None,
    }
}

fn key_size(name: &str) -> usize {
    match name {
        names::BANS_V4 => 4,
        names::SCANNERS => std::mem::size_of::<UaKey>(),
        _ => 16,
    }
}

fn value_size(name: &str) -> usize {
    match name {
        names::BANS_V4 | names::BANS_V6 => std::mem::size_of::<BanValue>(),
        names::SOURCES => std::mem::size_of::<SrcState>(),
        _ => 1,
    }
}

fn syscall(call: &'static str, io_error: std::io::Error) -> MapError {
    MapError::SyscallError(SyscallError { call, io_error })
}

/// The network a `SOURCES` key stands for: `::ffff:a.b.c.d` is an IPv4
/// host, anything else an IPv6 prefix.
fn source_net(key: &SrcKey, ipv6_prefix: u8) -> IpNet {
    if key[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        IpNet::from(IpAddr::from([key[12], key[13], key[14], key[15]]))
    } else {
        IpNet::new(IpAddr::from(*key), ipv6_prefix)
            .expect("prefix in 1..=128")
            .trunc()
    }
}

fn sum_counters(v: &PerCpuValues<Counter>) -> Counter {
    v.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

fn ban_net_slot(net: &IpNet) -> usize {
    match net {
        IpNet::V4(_) => OCC_BAN_NETS_V4,
        IpNet::V6(_) => OCC_BAN_NETS_V6,
    }
}

/// The later of two expiries, 0 being "never".
fn later(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        0
    } else {
        a.max(b)
    }
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

/// `BPF_NOEXIST` / `BPF_EXIST`: update flags that compare the exact key.
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// Inserts or overwrites the exact prefix `key`; `true` if it was new.
///
/// Not `get()` first: a lookup in an LPM trie is a longest-prefix match, so
/// `get(198.51.100.192/26)` answers with a covering /25 and cannot say
/// whether the /26 itself is there. `BPF_NOEXIST` compares the exact
/// prefix (and prefix length) in the kernel.
fn trie_add<K: aya::Pod, V: aya::Pod>(
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

fn trie_del<K: aya::Pod, V: aya::Pod>(t: &mut Trie<K, V>, key: Key<K>) -> Result<bool, MapError> {
    match t.remove(&key) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn hash_del<K: aya::Pod, V: aya::Pod>(
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
