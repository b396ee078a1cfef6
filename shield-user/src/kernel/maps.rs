//! Typed access to the XDP program's maps: policy, port sets, CIDR lists,
//! bans, scanner tokens, interface slots and the counters. Maps are named
//! by [`MapId`], never by string; [`ShieldMaps::write_policy`] is the one
//! place trie occupancy becomes the `POLICY` flags.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::fd::{AsFd, OwnedFd};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf},
    sys::SyscallError,
    Ebpf,
};
use ipnet::IpNet;
use shield_common::{
    sip::UaKey, sip_stats_index, stats_index, BanKey, BanValue, Budget, Counter, Method, Policy, Reason, SampleConfig,
    Meta, SampleState, SrcKey, SrcState, Txn, TxnKey, Verdict, Verified, MAX_IFACE_SLOTS, PORTS_ENTRIES, PORT_TCP, PORT_UDP,
};

use super::cidr::{Changed, ExpiringNets};
use super::map_id::{hash_layout, occ, trie_slot, MapId, TRIES};
#[cfg(feature = "test-api")]
use super::map_ops::clear_hash;
use super::map_ops::{ban_key_net, hash_del, map_err, net_of_v4, net_of_v6, source_net, take, trie_add, trie_del, v4_key, v6_key, Trie};
use super::{sys, KernelError};

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the very clock the programs
/// read (`bpf_ktime_get_coarse_ns`, see `now_ns` in shield-ebpf), so expiry
/// times mean the same thing on both sides. The precise clock runs up to a
/// tick ahead of it: a ban it calls past could still drop for a tick.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the coarse clock exists since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Which list a CIDR goes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Allow,
    Deny,
}

impl List {
    /// The trie a CIDR of this list goes into.
    fn trie(self, net: &IpNet) -> MapId {
        match (self, net) {
            (List::Allow, IpNet::V4(_)) => MapId::AllowV4,
            (List::Allow, IpNet::V6(_)) => MapId::AllowV6,
            (List::Deny, IpNet::V4(_)) => MapId::DenyV4,
            (List::Deny, IpNet::V6(_)) => MapId::DenyV6,
        }
    }
}

/// The maps, owned (taken out of the [`Ebpf`] object, whose maps may be
/// adopted pins). Private, so that every write goes through the methods
/// that keep occupancy, flags and nested ban expiries right.
pub struct ShieldMaps {
    policy: Array<MapData, Policy>,
    ports: Array<MapData, u8>,
    iface_slot: Array<MapData, u32>,
    allow_v4: Trie<[u8; 4], u8>,
    allow_v6: Trie<[u8; 16], u8>,
    deny_v4: Trie<[u8; 4], u8>,
    deny_v6: Trie<[u8; 16], u8>,
    bans: HashMap<MapData, BanKey, BanValue>,
    scanners: HashMap<MapData, UaKey, u8>,
    // Held for the test API (`clear_*`), which is all that reads it.
    #[cfg_attr(not(feature = "test-api"), allow(dead_code))]
    sources: HashMap<MapData, SrcKey, SrcState>,
    stats: PerCpuArray<MapData, Counter>,
    sip_stats: PerCpuArray<MapData, u64>,
    pub(super) verified: HashMap<MapData, SrcKey, Verified>,
    pub(super) budget: Array<MapData, Budget>,
    pub(super) responses: PerCpuArray<MapData, u64>,
    // Held for the test API (`clear_*`), which is all that reads it.
    #[cfg_attr(not(feature = "test-api"), allow(dead_code))]
    txns: HashMap<MapData, TxnKey, Txn>,
    events_lost: PerCpuArray<MapData, u64>,
    /// The destination policy's maps (SPEC §11).
    pub dest: super::dest::DestMaps,
    /// The call table's maps (SPEC §13).
    pub calls: super::calls::CallMaps,
    /// Authentication seen on the wire (SPEC §12).
    pub auth: super::auth::AuthMaps,
    sample_cfg: Array<MapData, SampleConfig>,
    sample_state: PerCpuArray<MapData, SampleState>,
    /// Sampled dropped packets (`shieldctl watch`); taken by its reader.
    pub samples: Option<RingBuf<MapData>>,
    /// Offender reports; the daemon takes it to read it.
    pub events: Option<super::EventRing>,
    /// The policy as configured; the trie-occupancy flags and the list
    /// generation are added on write.
    base_policy: Policy,
    /// `Policy::acl_gen`: bumped on every allow/deny change, which
    /// invalidates the allow/deny bits the kernel caches in ban entries.
    acl_gen: u32,
    /// Entries per trie (indexed like [`TRIES`]), so the kernel can skip
    /// empty ones. Exact: every change goes through [`trie_add`] /
    /// [`trie_del`], which report whether the exact prefix was new or
    /// present.
    occupancy: [usize; TRIES.len()],
    /// The CIDR bans (`BAN_NETS_V4/V6`), each with its own expiry; the
    /// tries hold the effective ones (see [`super::cidr`]).
    ban_nets: ExpiringNets<BanValue>,
    /// The verified CIDRs (`VERIFY_NETS_V4/V6`), the same way.
    pub(super) verify_nets: ExpiringNets<Verified>,
    /// Second handles on the maps, for the `bpf(2)` commands aya's typed
    /// wrappers lack (batches); see [`sys`].
    raw: Vec<RawMap>,
}

/// A map's fd and size.
struct RawMap {
    id: MapId,
    fd: OwnedFd,
    max_entries: u32,
    /// The kernel's id of the map (tells maps created anew from adopted
    /// ones, see the store's `MapsMark`).
    kernel_id: u32,
}

/// Second handles on every map of `ebpf`, before the typed wrappers take
/// them out.
fn raw_maps(ebpf: &Ebpf) -> Result<Vec<RawMap>, KernelError> {
    let mut raw = Vec::new();
    for id in MapId::ALL {
        let Some(data) = ebpf.map(id.name()).and_then(map_data) else {
            continue;
        };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| map_err(id)(syscall("dup", e)))?;
        let info = data.info().map_err(map_err(id))?;
        raw.push(RawMap {
            id,
            fd,
            max_entries: info.max_entries(),
            kernel_id: info.id(),
        });
    }
    Ok(raw)
}

impl ShieldMaps {
    /// Takes the maps out of a loaded object.
    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> Result<ShieldMaps, KernelError> {
        let raw = raw_maps(ebpf)?;
        let mut maps = ShieldMaps {
            policy: take(ebpf, MapId::Policy)?,
            ports: take(ebpf, MapId::Ports)?,
            iface_slot: take(ebpf, MapId::IfaceSlot)?,
            allow_v4: take(ebpf, MapId::AllowV4)?,
            allow_v6: take(ebpf, MapId::AllowV6)?,
            deny_v4: take(ebpf, MapId::DenyV4)?,
            deny_v6: take(ebpf, MapId::DenyV6)?,
            bans: take(ebpf, MapId::Bans)?,
            scanners: take(ebpf, MapId::Scanners)?,
            sources: take(ebpf, MapId::Sources)?,
            stats: take(ebpf, MapId::Stats)?,
            sip_stats: take(ebpf, MapId::SipStats)?,
            events: Some(super::EventRing(take(ebpf, MapId::Events)?)),
            verified: take(ebpf, MapId::Verified)?,
            budget: take(ebpf, MapId::Budget)?,
            responses: take(ebpf, MapId::Responses)?,
            txns: take(ebpf, MapId::Txns)?,
            events_lost: take(ebpf, MapId::EventsLost)?,
            dest: super::dest::DestMaps::from_ebpf(ebpf)?,
            calls: super::calls::CallMaps::from_ebpf(ebpf)?,
            auth: super::auth::AuthMaps::from_ebpf(ebpf)?,
            sample_cfg: take(ebpf, MapId::SampleCfg)?,
            sample_state: take(ebpf, MapId::SampleState)?,
            samples: Some(take(ebpf, MapId::Samples)?),
            base_policy: Policy::default(),
            acl_gen: 1,
            occupancy: [0; TRIES.len()],
            ban_nets: ExpiringNets::new(
                take(ebpf, MapId::BanNetsV4)?,
                take(ebpf, MapId::BanNetsV6)?,
                [MapId::BanNetsV4, MapId::BanNetsV6],
            ),
            verify_nets: ExpiringNets::new(
                take(ebpf, MapId::VerifyNetsV4)?,
                take(ebpf, MapId::VerifyNetsV6)?,
                [MapId::VerifyNetsV4, MapId::VerifyNetsV6],
            ),
            raw,
        };
        maps.adopt()?;
        Ok(maps)
    }

    /// Reused pinned maps may already hold entries and a policy: count the
    /// tries, learn the CIDR bans and take over the policy record.
    fn adopt(&mut self) -> Result<(), KernelError> {
        // In the order of TRIES.
        self.occupancy = [
            self.allow_v4.keys().count(),
            self.allow_v6.keys().count(),
            self.deny_v4.keys().count(),
            self.deny_v6.keys().count(),
            self.ban_nets.counts()[0],
            self.ban_nets.counts()[1],
            self.verify_nets.counts()[0],
            self.verify_nets.counts()[1],
        ];
        // Adopted CIDR bans: the kernel holds effective expiries, which are
        // never earlier than the own ones; the daemon's restore rewrites
        // them from the store.
        self.ban_nets.adopt()?;
        self.verify_nets.adopt()?;
        if let Ok(p) = self.policy.get(&0, 0) {
            self.base_policy = p;
            self.acl_gen = p.acl_gen.max(1);
        }
        Ok(())
    }

    /// Writes the policy record (flags for non-empty tries added).
    pub fn set_policy(&mut self, p: &Policy) -> Result<(), KernelError> {
        self.base_policy = *p;
        self.write_policy().map_err(KernelError::from)
    }

    /// The policy as configured (without the trie flags).
    pub fn policy(&self) -> Policy {
        self.base_policy
    }

    /// Writes the policy record: the configured policy, the list
    /// generation, and one `F_*` flag per trie telling the kernel whether
    /// to look it up at all. The one place occupancy becomes flags: a flag
    /// is clear only when its trie holds no prefix (a wrong clear flag lets
    /// every banned/denied source of that trie through; a wrong set flag
    /// only costs a lookup). After the count of adopted tries, occupancy
    /// changes only in [`ShieldMaps::count_prefix`], which calls this.
    fn write_policy(&mut self) -> Result<(), KernelError> {
        let mut p = self.base_policy;
        p.acl_gen = self.acl_gen;
        for (i, (_, flag)) in TRIES.iter().enumerate() {
            if self.occupancy[i] > 0 {
                p.flags |= flag;
            } else {
                p.flags &= !flag;
            }
        }
        self.policy.set(0, &p, 0).map_err(KernelError::from)
    }

    /// Counts a prefix [`trie_add`] reported new (`added`) or [`trie_del`]
    /// reported removed in `trie`, and rewrites the policy record so its
    /// flag follows. An allow/deny change also bumps the list generation,
    /// which invalidates the allow/deny bits ban entries cache.
    pub(super) fn count_prefix(&mut self, trie: MapId, added: bool) -> Result<(), KernelError> {
        let n = &mut self.occupancy[occ(trie)];
        *n = if added { *n + 1 } else { n.saturating_sub(1) };
        if matches!(
            trie,
            MapId::AllowV4 | MapId::AllowV6 | MapId::DenyV4 | MapId::DenyV6
        ) {
            // Skip 0: a fresh ban entry's "not cached yet".
            self.acl_gen = self.acl_gen.wrapping_add(1).max(1);
        }
        self.write_policy().map_err(KernelError::from)
    }

    /// Makes the protected port sets exactly `udp` and `tcp`.
    pub fn set_ports(&mut self, udp: &[u16], tcp: &[u16]) -> Result<(), KernelError> {
        let mut want = vec![0u8; PORTS_ENTRIES as usize];
        for &p in udp {
            want[p as usize] |= PORT_UDP;
        }
        for &p in tcp {
            want[p as usize] |= PORT_TCP;
        }
        let have = self.ports_now()?;
        for (port, (&w, &h)) in want.iter().zip(&have).enumerate() {
            if w != h {
                self.ports.set(port as u32, &w, 0)?;
            }
        }
        Ok(())
    }

    /// The whole `PORTS` array in one `BPF_MAP_LOOKUP_BATCH` (a lookup per
    /// port was 65,536 syscalls, about 0.1 s of every start and reload);
    /// port by port where the kernel has no batch lookup for arrays.
    fn ports_now(&self) -> Result<Vec<u8>, KernelError> {
        let mut have = vec![0u8; PORTS_ENTRIES as usize];
        let m = self
            .raw
            .iter()
            .find(|m| m.id == MapId::Ports)
            .ok_or_else(|| MapError::InvalidName {
                name: MapId::Ports.name().to_string(),
            })?;
        let r = sys::lookup_all_batch(m.fd.as_fd(), 4, 1, have.len(), |k, v| {
            let port = u32::from_ne_bytes(k.try_into().expect("4-byte key")) as usize;
            if let Some(h) = have.get_mut(port) {
                *h = v[0];
            }
        });
        match r {
            Ok(()) => Ok(have),
            Err(e) if sys::batch_unsupported(&e) => {
                for (port, h) in have.iter_mut().enumerate() {
                    *h = self.ports.get(&(port as u32), 0)?;
                }
                Ok(have)
            }
            Err(e) => Err(syscall("BPF_MAP_LOOKUP_BATCH", e).into()),
        }
    }

    /// Registers an interface for the per-interface counters.
    pub fn set_iface_slot(&mut self, ifindex: u32, slot: u32) -> Result<(), KernelError> {
        self.iface_slot.set(ifindex, &(slot % MAX_IFACE_SLOTS), 0).map_err(KernelError::from)
    }

    /// The counter slot an interface is registered under (0: none).
    pub fn iface_slot(&self, ifindex: u32) -> Result<u32, KernelError> {
        self.iface_slot.get(&ifindex, 0).map_err(KernelError::from)
    }

    /// Makes the scanner User-Agent set exactly `keys`.
    pub fn set_scanners(&mut self, keys: &[UaKey]) -> Result<(), KernelError> {
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
    pub fn list_add(&mut self, list: List, net: IpNet) -> Result<bool, KernelError> {
        let added = match (list, net) {
            (List::Allow, IpNet::V4(n)) => trie_add(&mut self.allow_v4, v4_key(n), 1)?,
            (List::Allow, IpNet::V6(n)) => trie_add(&mut self.allow_v6, v6_key(n), 1)?,
            (List::Deny, IpNet::V4(n)) => trie_add(&mut self.deny_v4, v4_key(n), 1)?,
            (List::Deny, IpNet::V6(n)) => trie_add(&mut self.deny_v6, v6_key(n), 1)?,
        };
        if added {
            self.count_prefix(list.trie(&net), true)?;
        }
        Ok(added)
    }

    /// Removes a CIDR from the allow or deny list; `false` if it was not there.
    pub fn list_del(&mut self, list: List, net: IpNet) -> Result<bool, KernelError> {
        let removed = match (list, net) {
            (List::Allow, IpNet::V4(n)) => trie_del(&mut self.allow_v4, v4_key(n))?,
            (List::Allow, IpNet::V6(n)) => trie_del(&mut self.allow_v6, v6_key(n))?,
            (List::Deny, IpNet::V4(n)) => trie_del(&mut self.deny_v4, v4_key(n))?,
            (List::Deny, IpNet::V6(n)) => trie_del(&mut self.deny_v6, v6_key(n))?,
        };
        if removed {
            self.count_prefix(list.trie(&net), false)?;
        }
        Ok(removed)
    }

    /// The CIDRs in a list, sorted.
    pub fn list(&self, list: List) -> Result<Vec<IpNet>, KernelError> {
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
    pub fn set_list(&mut self, list: List, nets: &[IpNet]) -> Result<(), KernelError> {
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
    pub fn ban(&mut self, net: IpNet, expires_ns: u64) -> Result<(), KernelError> {
        let v = BanValue::until(expires_ns);
        match net.trunc() {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                self.bans.insert(&BanKey::v4(n.addr().octets()), &v, 0).map_err(KernelError::from)
            }
            IpNet::V6(n) if n.prefix_len() == 128 => {
                self.bans.insert(&BanKey::v6(n.addr().octets()), &v, 0).map_err(KernelError::from)
            }
            n => {
                let changed = self.ban_nets.set(n, v)?;
                self.count_changes(changed)
            }
        }
    }

    /// Lifts a ban; `false` if there was none.
    pub fn unban(&mut self, net: IpNet) -> Result<bool, KernelError> {
        match net.trunc() {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                hash_del(&mut self.bans, &BanKey::v4(n.addr().octets())).map_err(KernelError::from)
            }
            IpNet::V6(n) if n.prefix_len() == 128 => {
                hash_del(&mut self.bans, &BanKey::v6(n.addr().octets())).map_err(KernelError::from)
            }
            n => {
                let (removed, changed) = self.ban_nets.remove(n)?;
                self.count_changes(changed)?;
                Ok(removed)
            }
        }
    }

    /// Counts the trie entries an [`ExpiringNets`] change added or removed.
    pub(super) fn count_changes(&mut self, changed: Changed) -> Result<(), KernelError> {
        for (trie, added) in changed {
            self.count_prefix(trie, added)?;
        }
        Ok(())
    }

    /// Sum over CPUs of one `STATS` slot.
    pub fn counter(
        &self,
        iface_slot: u32,
        verdict: Verdict,
        reason: Reason,
    ) -> Result<Counter, KernelError> {
        let v = self.counter_per_cpu(iface_slot, verdict, reason)?;
        Ok(sum_counters(&v))
    }

    /// One `STATS` slot, CPU by CPU.
    pub fn counter_per_cpu(
        &self,
        iface_slot: u32,
        verdict: Verdict,
        reason: Reason,
    ) -> Result<PerCpuValues<Counter>, KernelError> {
        Ok(self.stats.get(&stats_index(iface_slot, verdict, reason), 0)?)
    }

    /// Sum over CPUs of one `SIP_STATS` slot.
    pub fn sip_counter(
        &self,
        iface_slot: u32,
        m: Method,
        verdict: Verdict,
    ) -> Result<u64, KernelError> {
        let v = self
            .sip_stats
            .get(&sip_stats_index(iface_slot, m, verdict), 0)?;
        Ok(v.iter().sum())
    }

    /// Offender reports the programs could not put into the full ring
    /// buffer, summed over CPUs.
    pub fn events_lost(&self) -> Result<u64, KernelError> {
        Ok(self.events_lost.get(&0, 0)?.iter().sum())
    }

    /// Turns drop sampling on (`every` > 0: 1 in `every` drops, at most
    /// `per_second` a second per CPU) or off (`every` = 0).
    pub fn set_sampling(&mut self, cfg: SampleConfig) -> Result<(), KernelError> {
        self.sample_cfg.set(0, &cfg, 0).map_err(KernelError::from)
    }

    /// The sampling configuration in force.
    pub fn sampling(&self) -> Result<SampleConfig, KernelError> {
        self.sample_cfg.get(&0, 0).map_err(KernelError::from)
    }

    /// The sampling counters, summed over CPUs (`window_ns` and `taken`
    /// are per CPU and meaningless summed: left 0).
    pub fn sample_state(&self) -> Result<SampleState, KernelError> {
        let mut sum = SampleState::default();
        for s in self.sample_state.get(&0, 0)?.iter() {
            sum.seen += s.seen;
            sum.sampled += s.sampled;
            sum.lost += s.lost;
        }
        Ok(sum)
    }

    #[cfg(feature = "test-api")]
    /// Forgets all per-source bucket state.
    pub fn clear_sources(&mut self) -> Result<(), KernelError> {
        clear_hash(&mut self.sources)
    }

    #[cfg(feature = "test-api")]
    /// Forgets the requests remembered for verification (`TXNS`).
    pub fn clear_txns(&mut self) -> Result<(), KernelError> {
        clear_hash(&mut self.txns)
    }
}

/// Entries per `BPF_MAP_UPDATE_BATCH` call: big enough that the syscall
/// cost vanishes, small enough that one call never holds the CPU for long.
const UPDATE_CHUNK: usize = 16_384;
/// Entries per `BPF_MAP_LOOKUP_BATCH` call.
const LOOKUP_CHUNK: usize = 8_192;

/// Bulk operations, counts and dumps (the daemon's restore path, metrics,
/// `shieldctl stats`), built on the batch commands in [`sys`].
impl ShieldMaps {
    /// Bans many sources at once, each until its monotonic expiry (0 =
    /// forever). Host addresses go into the exact-match hash with
    /// `BPF_MAP_UPDATE_BATCH` (one syscall per 16k bans, falling back to
    /// one per ban on kernels without it); prefixes go into the tries one by
    /// one (LPM tries have no batch ops). Returns how many were written; on
    /// error some of the bans are in force (a large write goes in two
    /// halves at once).
    pub fn ban_batch(&mut self, bans: &[(IpNet, u64)]) -> Result<usize, KernelError> {
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        let mut nets = Vec::new();
        for &(net, expires_ns) in bans {
            let key = match net.trunc() {
                IpNet::V4(n) if n.prefix_len() == 32 => BanKey::v4(n.addr().octets()),
                IpNet::V6(n) if n.prefix_len() == 128 => BanKey::v6(n.addr().octets()),
                n => {
                    nets.push((n, expires_ns));
                    continue;
                }
            };
            keys.extend_from_slice(pod_bytes(&key));
            values.extend_from_slice(pod_bytes(&BanValue::until(expires_ns)));
        }
        let mut written = self.update_many(MapId::Bans, &keys, &values)?;
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
    pub fn bans_dump(&self) -> Result<Vec<(IpNet, u64)>, KernelError> {
        let mut out = Vec::new();
        let expiry = |v: &[u8]| u64::from_ne_bytes(v[..8].try_into().expect("8-byte value"));
        let mut malformed = 0usize;
        self.scan(MapId::Bans, |k, v| match ban_key_net(k) {
            Some(net) => out.push((net, expiry(v))),
            None => malformed += 1,
        })?;
        if malformed > 0 {
            // Only a hand-made entry (bpftool) has another family or bytes
            // after an IPv4 address; the kernel never matches it.
            tracing::warn!(map = MapId::Bans.name(), entries = malformed, "ignoring ban entries whose key is not an IPv4 or IPv6 address (written by hand?)");
        }
        out.extend(self.ban_nets.iter().map(|(n, v)| (*n, v.expires_ns)));
        Ok(out)
    }

    /// Entries in a map: the tries from the occupancy this handle keeps,
    /// hash maps by a batched walk. `None` for arrays and the ring buffer,
    /// whose "entries" are fixed.
    pub fn entry_count(&self, map: MapId) -> Result<Option<usize>, KernelError> {
        if let Some(i) = trie_slot(map) {
            return Ok(Some(self.occupancy[i]));
        }
        if !map.holds_entries() {
            return Ok(None);
        }
        let mut n = 0;
        self.scan(map, |_, _| n += 1)?;
        Ok(Some(n))
    }

    /// The kernel's ids of the ban maps, by map name (as the state file
    /// records them).
    pub fn ban_map_ids(&self) -> BTreeMap<String, u32> {
        let bans = [
            MapId::Bans,
            MapId::BanNetsV4,
            MapId::BanNetsV6,
        ];
        self.raw
            .iter()
            .filter(|m| bans.contains(&m.id))
            .map(|m| (m.id.name().to_string(), m.kernel_id))
            .collect()
    }

    /// The kernel's ids of every map held (a pinned program that uses
    /// only these can be reused, see `reuse`).
    pub(super) fn kernel_ids(&self) -> Vec<u32> {
        self.raw.iter().map(|m| m.kernel_id).collect()
    }

    /// `max_entries` of a map as the kernel created it.
    pub fn capacity(&self, map: MapId) -> Option<u32> {
        self.raw.iter().find(|m| m.id == map).map(|m| m.max_entries)
    }

    /// The sources with the most escalation-counted drops (rate, scanner,
    /// malformed) in their current window, most first: one batched walk of
    /// `SOURCES`. Empty when escalation is off (the kernel then counts none).
    pub fn top_offenders(&self, n: usize, now_ns: u64) -> Result<Vec<(IpNet, u64)>, KernelError> {
        let window = self.base_policy.escalate_window_ns;
        let prefix = self.base_policy.ipv6_prefix.clamp(1, 128) as u8;
        let mut all = Vec::new();
        self.scan(MapId::Sources, |k, v| {
            // SAFETY: the kernel wrote a whole SrcState; read it unaligned.
            let st: SrcState = unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) };
            let drops = Meta::drops_at(st.meta, now_ns, window);
            if drops == 0 {
                return;
            }
            let key: SrcKey = k.try_into().expect("16-byte key");
            all.push((source_net(&key, prefix), u64::from(drops)));
        })?;
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        Ok(all)
    }

    /// Zeroes one interface slot's counters (a slot handed to another
    /// interface must not inherit the old one's totals).
    pub fn reset_iface_counters(&mut self, slot: u32) -> Result<(), KernelError> {
        let cpus = self.stats.get(&0, 0)?.len();
        for v in Verdict::ALL {
            for r in Reason::ALL {
                let zero = PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(MapError::from)?;
                self.stats.set(stats_index(slot, v, r), zero, 0)?;
            }
            for m in Method::ALL {
                let zero = PerCpuValues::try_from(vec![0u64; cpus]).map_err(MapError::from)?;
                self.sip_stats.set(sip_stats_index(slot, m, v), zero, 0)?;
            }
        }
        self.reset_iface_responses(slot, cpus)
    }

    /// The raw handle of a hash map and its key and value sizes.
    fn hash(&self, map: MapId) -> Result<(&RawMap, usize, usize), KernelError> {
        let invalid = || MapError::InvalidName {
            name: map.name().to_string(),
        };
        let (ks, vs) = hash_layout(map).ok_or_else(invalid)?;
        let m = self.raw.iter().find(|m| m.id == map).ok_or_else(invalid)?;
        Ok((m, ks, vs))
    }

    /// Visits every (key, value) of a hash map: batched where the kernel
    /// can, key by key where it cannot.
    pub(super) fn scan(&self, map: MapId, each: impl FnMut(&[u8], &[u8])) -> Result<(), KernelError> {
        let (m, ks, vs) = self.hash(map)?;
        scan_fd(m.fd.as_fd(), ks, vs, each).map_err(KernelError::from)
    }

    /// Writes `keys.len() / key_size` entries, batched where possible. A
    /// large write goes in two halves at once, from two threads: the ban
    /// maps are not preallocated, so the kernel's time goes into
    /// allocating each element, which runs on any CPU (the hash has a lock
    /// per bucket).
    fn update_many(&self, map: MapId, keys: &[u8], values: &[u8]) -> Result<usize, KernelError> {
        let (m, ks, vs) = self.hash(map)?;
        let count = keys.len() / ks;
        if count < 2 * UPDATE_CHUNK {
            return update_range(m, keys, values, ks, vs).map_err(KernelError::from);
        }
        let half = count / 2;
        let (k1, k2) = keys.split_at(half * ks);
        let (v1, v2) = values.split_at(half * vs);
        std::thread::scope(|s| {
            let first = s.spawn(|| update_range(m, k1, v1, ks, vs));
            let second = update_range(m, k2, v2, ks, vs);
            Ok(first.join().expect("a batch update does not panic")? + second?)
        })
    }
}

/// Visits every (key, value) of the hash map `fd` (keys of `ks` bytes,
/// values of `vs`): batched where the kernel can, key by key where it
/// cannot.
pub(super) fn scan_fd(
    fd: std::os::fd::BorrowedFd<'_>,
    ks: usize,
    vs: usize,
    mut each: impl FnMut(&[u8], &[u8]),
) -> Result<(), MapError> {
    match sys::lookup_all_batch(fd, ks, vs, LOOKUP_CHUNK, &mut each) {
        Ok(()) => return Ok(()),
        Err(e) if sys::batch_unsupported(&e) => {}
        Err(e) => return Err(syscall("BPF_MAP_LOOKUP_BATCH", e)),
    }
    // Keys only, then each value: entries may vanish in between (LRU).
    let mut keys = Vec::new();
    sys::for_each_key(fd, ks, |k| keys.extend_from_slice(k))
        .map_err(|e| syscall("BPF_MAP_GET_NEXT_KEY", e))?;
    let mut value = vec![0u8; vs];
    for k in keys.chunks(ks) {
        let found = sys::lookup_elem(fd, k, &mut value)
            .map_err(|e| syscall("BPF_MAP_LOOKUP_ELEM", e))?;
        if found {
            each(k, &value);
        }
    }
    Ok(())
}

/// The bytes of a map key or value.
fn pod_bytes<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: `aya::Pod` types are repr(C) plain data without padding
    // bytes; the slice borrows `v` and covers exactly its size.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// [`ShieldMaps::update_many`]'s work on one range, in chunks of
/// `UPDATE_CHUNK`; one update per entry on kernels without batches.
fn update_range(
    m: &RawMap,
    keys: &[u8],
    values: &[u8],
    ks: usize,
    vs: usize,
) -> Result<usize, MapError> {
    let count = keys.len() / ks;
    let mut done = 0;
    while done < count {
        let n = UPDATE_CHUNK.min(count - done);
        let k = &keys[done * ks..(done + n) * ks];
        let v = &values[done * vs..(done + n) * vs];
        match sys::update_batch(m.fd.as_fd(), k, v, n) {
            Ok(()) => done += n,
            Err((0, e)) if done == 0 && sys::batch_unsupported(&e) => {
                return update_each(m, keys, values, ks, vs);
            }
            Err((_, e)) => return Err(syscall("BPF_MAP_UPDATE_BATCH", e)),
        }
    }
    Ok(done)
}

fn update_each(
    m: &RawMap,
    keys: &[u8],
    values: &[u8],
    ks: usize,
    vs: usize,
) -> Result<usize, MapError> {
    for (k, v) in keys.chunks(ks).zip(values.chunks(vs)) {
        sys::update_elem(m.fd.as_fd(), k, v).map_err(|e| syscall("BPF_MAP_UPDATE_ELEM", e))?;
    }
    Ok(keys.len() / ks)
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

fn syscall(call: &'static str, io_error: std::io::Error) -> MapError {
    MapError::SyscallError(SyscallError { call, io_error })
}

fn sum_counters(v: &PerCpuValues<Counter>) -> Counter {
    v.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

impl ShieldMaps {
    /// Pins every map at `dir/NAME` (the layout `load` gives a pin
    /// directory), for a second object to be loaded onto them (the tc
    /// ingress program of a shield that has no pin directory).
    pub(super) fn pin_all(&self, dir: &std::path::Path) -> Result<(), KernelError> {
        for m in &self.raw {
            let fd = m
                .fd
                .try_clone()
                .map_err(|e| map_err(m.id)(syscall("dup", e)))?;
            let data = MapData::from_fd(fd).map_err(map_err(m.id))?;
            let path = dir.join(m.id.name());
            data.pin(&path).map_err(|source| KernelError::Pin {
                what: m.id.name(),
                path,
                source,
            })?;
        }
        Ok(())
    }
}
