//! Verified sources in the kernel's maps (SPEC §8): the `VERIFIED` hash the
//! egress classifier fills (allocated on use; `shieldd` deletes what
//! expired) from the server's 2xx replies, the
//! `VERIFY_NETS` tries for what operators and the config verify, and the
//! `RESPONSES` counters.
//!
//! `VERIFIED` (and its hint bitmap, `shield_common::verified_hint`) is
//! written by the kernel only: the hint's bits are set with an atomic OR,
//! which user space has no way to do on a map word. Everything user space
//! verifies goes into the tries, which also keeps it out of that sweep. A source is keyed as the XDP program keys it: an IPv4 host,
//! or an IPv6 address masked to `ipv6_prefix`, so `verify 2001:db8::1`
//! verifies its whole /64 (with the default prefix). Trie entries carry
//! their effective expiry, as CIDR bans do (see [`effective_expiry`]).

use std::net::IpAddr;

use aya::maps::{MapError, PerCpuValues};
use ipnet::IpNet;
use shield_common::{
    mask_v6, responses_slot, src_key_v4, tokens, Method, SrcKey, Verified, RESPONSE_CLASSES,
    VERIFIED_BY_CONFIG, VERIFIED_BY_OPERATOR, VERIFIED_BY_REPLY,
};

use super::map_ops::{hash_del, later, source_net};
use super::{KernelError, MapId, ShieldMaps};

/// How a source came to be verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VerifiedBy {
    /// A final 2xx the egress classifier saw leaving.
    Reply,
    /// `shieldctl verify`.
    Operator,
    /// `[verify] cidrs`.
    Config,
}

impl VerifiedBy {
    pub const fn as_str(self) -> &'static str {
        match self {
            VerifiedBy::Reply => "reply",
            VerifiedBy::Operator => "operator",
            VerifiedBy::Config => "config",
        }
    }

    const fn raw(self) -> u32 {
        match self {
            VerifiedBy::Reply => VERIFIED_BY_REPLY,
            VerifiedBy::Operator => VERIFIED_BY_OPERATOR,
            VerifiedBy::Config => VERIFIED_BY_CONFIG,
        }
    }

    /// Unknown values (a map written by something else) read as `Reply`:
    /// the kind that expires by itself.
    const fn from_raw(v: u32) -> VerifiedBy {
        match v {
            VERIFIED_BY_OPERATOR => VerifiedBy::Operator,
            VERIFIED_BY_CONFIG => VerifiedBy::Config,
            _ => VerifiedBy::Reply,
        }
    }
}

/// One verified source or network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedEntry {
    pub net: IpNet,
    /// Monotonic ns; 0 = for ever.
    pub expires_ns: u64,
    pub by: VerifiedBy,
}

impl ShieldMaps {
    /// The `VERIFIED` key `net` is, if it is one source (see the module
    /// docs); `None`: a network.
    fn verified_key(&self, net: IpNet) -> Option<SrcKey> {
        let prefix = self.policy().ipv6_prefix.clamp(1, 128);
        match net.trunc() {
            IpNet::V4(n) if n.prefix_len() == 32 => Some(src_key_v4(n.addr().octets())),
            IpNet::V6(n) if u32::from(n.prefix_len()) >= prefix => {
                Some(mask_v6(&n.addr().octets(), prefix))
            }
            _ => None,
        }
    }

    /// `net` as the trie holds it: one source widened to its key's network
    /// (an IPv6 host to its `/ipv6_prefix`).
    fn verify_net(&self, net: IpNet) -> IpNet {
        let prefix = self.policy().ipv6_prefix.clamp(1, 128) as u8;
        match self.verified_key(net) {
            Some(key) => source_net(&key, prefix),
            None => net.trunc(),
        }
    }

    /// Verifies `net` until `expires_ns` (monotonic; 0 = for ever), or
    /// longer if it already is: this never shortens an entry (unverify
    /// first for that). `by` is the operator or the config (replies are
    /// the kernel's). Returns the expiry in force.
    pub fn verify(&mut self, net: IpNet, expires_ns: u64, by: VerifiedBy) -> Result<u64, KernelError> {
        let net = self.verify_net(net);
        let mut v = Verified {
            expires_ns,
            how: by.raw(),
            _pad: 0,
        };
        if let Some(old) = self.verify_nets.get(&net) {
            v.expires_ns = later(old.expires_ns, expires_ns);
        }
        let changed = self.verify_nets.set(net, v)?;
        self.count_changes(changed)?;
        Ok(v.expires_ns)
    }

    /// Ends `net`'s verification (its `VERIFIED` key and its trie entry);
    /// `false` if it was not verified.
    pub fn unverify(&mut self, net: IpNet) -> Result<bool, KernelError> {
        let in_hash = match self.verified_key(net) {
            Some(key) => hash_del(&mut self.verified, &key)?,
            None => false,
        };
        Ok(self.unverify_net(net)? || in_hash)
    }

    fn unverify_net(&mut self, net: IpNet) -> Result<bool, KernelError> {
        let net = self.verify_net(net);
        let (removed, changed) = self.verify_nets.remove(net)?;
        self.count_changes(changed)?;
        Ok(removed)
    }

    /// Makes the `[verify] cidrs` entries exactly `nets` (for ever); other
    /// entries are left alone.
    pub fn set_config_verified(&mut self, nets: &[IpNet]) -> Result<(), KernelError> {
        let want: Vec<IpNet> = nets.iter().map(IpNet::trunc).collect();
        let stale: Vec<IpNet> = self
            .verified(0)?
            .into_iter()
            .filter(|e| e.by == VerifiedBy::Config && !want.contains(&e.net))
            .map(|e| e.net)
            .collect();
        for net in stale {
            self.unverify(net)?;
        }
        for net in want {
            self.verify(net, 0, VerifiedBy::Config)?;
        }
        Ok(())
    }

    /// Every verified source and network still live at `now_ns` (all of
    /// them with `now_ns = 0`), networks with their own expiry, sorted.
    pub fn verified(&self, now_ns: u64) -> Result<Vec<VerifiedEntry>, KernelError> {
        let prefix = self.policy().ipv6_prefix.clamp(1, 128) as u8;
        let mut out = Vec::new();
        self.scan(MapId::Verified, |k, v| {
            // SAFETY: the kernel wrote a whole Verified; read it unaligned.
            let v: Verified = unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) };
            let key: SrcKey = k.try_into().expect("16-byte key");
            out.push(entry(source_net(&key, prefix), &v));
        })?;
        out.extend(self.verify_nets.iter().map(|(n, v)| entry(*n, v)));
        out.retain(|e| now_ns == 0 || e.expires_ns == 0 || now_ns < e.expires_ns);
        out.sort_by_key(|e| e.net);
        Ok(out)
    }

    /// Deletes the learned entries whose time is up at `now_ns` (the
    /// kernel already ignores them): `VERIFIED` is not an LRU, so nothing
    /// else makes room in it. An entry the egress classifier refreshed
    /// after the walk is kept. Returns how many went.
    pub fn sweep_verified(&mut self, now_ns: u64) -> Result<usize, KernelError> {
        let mut stale: Vec<SrcKey> = Vec::new();
        self.scan(MapId::Verified, |k, v| {
            // SAFETY: the kernel wrote a whole Verified; read it unaligned.
            let v: Verified = unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) };
            if !v.active(now_ns) {
                stale.push(k.try_into().expect("16-byte key"));
            }
        })?;
        let mut gone = 0;
        for key in stale {
            let expired = match self.verified.get(&key, 0) {
                Ok(v) => !v.active(now_ns),
                Err(MapError::KeyNotFound) => false,
                Err(e) => return Err(e.into()),
            };
            if expired && hash_del(&mut self.verified, &key)? {
                gone += 1;
            }
        }
        Ok(gone)
    }

    /// Tokens left in the shared unverified budget at `now_ns`; `None`
    /// when there is no budget.
    pub fn budget_tokens(&self, now_ns: u64) -> Result<Option<u64>, KernelError> {
        let b = self.policy().unverified;
        if !b.is_limited() {
            return Ok(None);
        }
        let tat = self.budget.get(&0, 0)?.tat;
        Ok(Some(tokens(tat, now_ns, &b)))
    }

    #[cfg(feature = "test-api")]
    /// Refills the unverified budget (tests; a restart keeps its state).
    pub fn reset_budget(&mut self) -> Result<(), KernelError> {
        self.budget.set(0, &shield_common::Budget::default(), 0).map_err(KernelError::from)
    }

    /// Sum over CPUs of one `RESPONSES` slot: responses of `class` (1..=6)
    /// to requests of method `m`.
    pub fn response_count(&self, iface_slot: u32, m: Method, class: u8) -> Result<u64, KernelError> {
        let class = u32::from(class).clamp(1, RESPONSE_CLASSES as u32);
        let v = self
            .responses
            .get(&responses_slot(iface_slot, m as u32, class), 0)?;
        Ok(v.iter().sum())
    }

    /// Zeroes one interface slot's response counters.
    pub(super) fn reset_iface_responses(&mut self, slot: u32, cpus: usize) -> Result<(), KernelError> {
        for m in Method::ALL {
            for class in 1..=RESPONSE_CLASSES as u32 {
                let zero = PerCpuValues::try_from(vec![0u64; cpus]).map_err(MapError::from)?;
                self.responses
                    .set(responses_slot(slot, m as u32, class), zero, 0)?;
            }
        }
        Ok(())
    }

    /// The entry the egress classifier learned for `addr`'s key, if any.
    pub fn learned_entry(&self, addr: IpAddr) -> Result<Option<VerifiedEntry>, KernelError> {
        let net = IpNet::from(addr);
        let Some(key) = self.verified_key(net) else {
            return Ok(None);
        };
        match self.verified.get(&key, 0) {
            Ok(v) => Ok(Some(entry(net, &v))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn entry(net: IpNet, v: &Verified) -> VerifiedEntry {
    VerifiedEntry {
        net,
        expires_ns: v.expires_ns,
        by: VerifiedBy::from_raw(v.how),
    }
}

