//! Loading the XDP object into the kernel: the program through the
//! verifier, its maps created or adopted.
//!
//! The object is embedded at build time (`build.rs`). Map sizes come from
//! `[capacity]`; with a pin directory, maps are created pinned there or, when
//! a previous daemon already pinned them, reused, so bans and counters
//! survive a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use aya::{
    maps::MapError,
    programs::{SchedClassifier, Xdp},
    Ebpf, EbpfError, EbpfLoader,
};
use shield_common::default_size;

use super::reuse::{self, Reused};
use super::{KernelError, MapId, ShieldMaps};

/// The XDP object built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shield"));

/// The tc ingress object built by `build.rs` (`shield-ebpf`'s second
/// bin): the same decision on the socket buffer (issue 22 item 4).
static TC_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shield-tc"));

/// Name of the XDP function in the object.
const PROGRAM: &str = "shield";
/// Name of the tc ingress classifier in the tc object.
const TC_PROGRAM: &str = "shield_tc";
/// Name of the egress classifier (SPEC §8) in the object.
const EGRESS: &str = "shield_egress";
/// Name of the call-expiry program (SPEC §13), run by test runs only.
const CALLS_EXPIRE: &str = "shield_calls_expire";

/// Map sizes (SPEC §2 "Capacity").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub allow: u32,
    pub deny: u32,
    pub bans: u32,
    pub ban_nets: u32,
    pub sources: u32,
    /// `[verify] capacity`: the verified-sources LRU.
    pub verified: u32,
    /// `[destinations] capacity`: the destination rules (SPEC §11).
    pub dest_rules: u32,
    /// `[calls] capacity`: calls tracked at once, and callers counted
    /// (SPEC §13).
    pub calls: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            allow: default_size::ALLOW,
            deny: default_size::DENY,
            bans: default_size::BANS,
            ban_nets: default_size::BAN_NETS,
            sources: default_size::SOURCES,
            verified: default_size::VERIFIED,
            dest_rules: default_size::DEST_RULES,
            calls: default_size::CALLS,
        }
    }
}

impl Capacity {
    /// The configured size of `map`; `None` for maps whose size is fixed
    /// by the program.
    fn max_entries(&self, map: MapId) -> Option<u32> {
        match map {
            MapId::AllowV4 | MapId::AllowV6 => Some(self.allow),
            MapId::DenyV4 | MapId::DenyV6 => Some(self.deny),
            MapId::Bans => Some(self.bans),
            MapId::BanNetsV4 | MapId::BanNetsV6 => Some(self.ban_nets),
            MapId::Sources => Some(self.sources),
            MapId::Verified => Some(self.verified),
            MapId::DestRules => Some(self.dest_rules),
            MapId::Calls | MapId::CallCounts => Some(self.calls),
            _ => None,
        }
    }

    /// Small maps for tests and the lab: fast to create, same code paths.
    pub const fn small() -> Capacity {
        Capacity {
            allow: 1024,
            deny: 1024,
            bans: 65_536,
            ban_nets: 1024,
            sources: 65_536,
            verified: 65_536,
            dest_rules: 1024,
            calls: 4096,
        }
    }
}

/// A loaded (verified) program and its maps.
pub struct Shield {
    /// The object with its programs; `None` while [`Shield::open`]'s
    /// verifier thread has it.
    ebpf: Option<Ebpf>,
    /// The XDP program and egress classifier an earlier daemon pinned for
    /// this very object, run instead of the object's own (not verified
    /// again); see [`reuse`].
    reused: Option<Reused>,
    /// [`reuse::object_hash`] of the embedded object.
    object_hash: String,
    /// That thread, until [`Shield::ready`] joins it, with how long the
    /// verifier took.
    verifier: Option<std::thread::JoinHandle<(Result<Ebpf, KernelError>, Duration)>>,
    pub maps: ShieldMaps,
    /// Where the load's time went, for the start-up log.
    pub times: LoadTimes,
    /// The tc object, loaded onto the same maps only when an interface
    /// needs the tc hook ([`Shield::load_tc`]).
    tc: Option<Ebpf>,
}

/// How long [`Shield::open`] spent creating (or adopting) the maps, and
/// the verifier checking the programs (known after [`Shield::ready`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadTimes {
    pub maps: Duration,
    pub verifier: Duration,
    /// The pinned programs of the same object were reused: the verifier
    /// checked only the small call-expiry program.
    pub reused: bool,
}

impl Shield {
    /// Loads the object and runs the verifier. With `pin_dir`, every map is
    /// pinned at `pin_dir/NAME` (reused if already there; pinned maps of
    /// another size are [`KernelError::IncompatiblePins`]).
    pub fn load(capacity: Capacity, pin_dir: Option<&Path>) -> Result<Shield, KernelError> {
        let mut shield = Shield::open(capacity, pin_dir)?;
        shield.ready()?;
        Ok(shield)
    }

    /// [`Shield::load`] with the verifier still running on a thread of its
    /// own: the maps are usable at once, so a start can write a million
    /// bans while the verifier checks the program (each takes about half
    /// a second). [`Shield::ready`] waits for the verdict; the programs
    /// are there only after it.
    pub fn open(capacity: Capacity, pin_dir: Option<&Path>) -> Result<Shield, KernelError> {
        let mut loader = EbpfLoader::new();
        for map in MapId::ALL {
            if let Some(n) = capacity.max_entries(map) {
                loader.map_max_entries(map.name(), n);
            }
            if let Some(dir) = pin_dir {
                loader.map_pin_path(map.name(), dir.join(map.name()));
            }
        }
        let t = Instant::now();
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|source| object_error(source, pin_dir))?;
        // The map fds are already in the programs' instructions (aya
        // relocates them in `load`); the maps only have to stay open.
        let maps = ShieldMaps::from_ebpf(&mut ebpf)?;
        let object_hash = reuse::object_hash(EBPF_OBJECT);
        let reused = pin_dir.and_then(|d| reuse::pinned(d, &object_hash, &maps.kernel_ids()));
        let times = LoadTimes {
            maps: t.elapsed(),
            verifier: Duration::ZERO,
            reused: reused.is_some(),
        };
        let all = reused.is_none();
        let verifier = std::thread::Builder::new()
            .name("verifier".into())
            .spawn(move || {
                let t = Instant::now();
                (verify(ebpf, all), t.elapsed())
            })
            .map_err(|e| KernelError::Map {
                map: "(verifier thread)",
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "spawn",
                    io_error: e,
                }),
            })?;
        Ok(Shield {
            ebpf: None,
            reused,
            object_hash,
            verifier: Some(verifier),
            maps,
            times,
            tc: None,
        })
    }

    /// Waits for the verifier (a no-op once it has answered).
    pub fn ready(&mut self) -> Result<(), KernelError> {
        if let Some(v) = self.verifier.take() {
            let (ebpf, took) = v.join().expect("the verifier thread does not panic");
            self.times.verifier = took;
            self.ebpf = Some(ebpf?);
        }
        Ok(())
    }

    fn ebpf(&mut self) -> &mut Ebpf {
        self.ebpf
            .as_mut()
            .expect("Shield::ready before the programs are used")
    }

    /// The loaded XDP program (for its info, attaching, pinning, test runs).
    pub fn program(&mut self) -> &mut Xdp {
        if self.reused.is_some() {
            return &mut self.reused.as_mut().expect("checked").xdp;
        }
        self.ebpf()
            .program_mut(PROGRAM)
            .expect("checked in load")
            .try_into()
            .expect("checked in load")
    }

    /// The loaded egress classifier (attaching, pinning, test runs).
    pub fn egress(&mut self) -> &mut SchedClassifier {
        if self.reused.is_some() {
            return &mut self.reused.as_mut().expect("checked").egress;
        }
        self.ebpf()
            .program_mut(EGRESS)
            .expect("checked in load")
            .try_into()
            .expect("checked in load")
    }
}

impl Shield {
    /// Pins a freshly loaded object's XDP program and egress classifier
    /// under names carrying the object's hash, so that the next start of
    /// the same build runs them instead of verifying them again ([`reuse`]).
    /// Reused programs are pinned there already.
    pub fn pin_object_programs(&mut self, dir: &Path) -> Result<(), KernelError> {
        if self.reused.is_some() {
            return Ok(());
        }
        let (xdp_pin, egress_pin) = reuse::fresh_pins(dir, &self.object_hash)?;
        let pin_err = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| KernelError::Pin { what, path, source }
        };
        self.program()
            .pin(&xdp_pin)
            .map_err(pin_err("the program", &xdp_pin))?;
        self.egress()
            .pin(&egress_pin)
            .map_err(pin_err("the egress classifier", &egress_pin))
    }

    /// Forgets the call whose Call-ID hash is `id` if it is past its time
    /// (the kernel decides, by its clock and `[calls]`), reporting it
    /// `expired` and giving its caller's count back. True if it did.
    pub fn expire_call(&mut self, id: u64) -> Result<bool, KernelError> {
        // The smallest frame a test run takes is an Ethernet header.
        let mut frame = [0u8; 16];
        frame[..8].copy_from_slice(&id.to_ne_bytes());
        let prog: &mut Xdp = self
            .ebpf()
            .program_mut(CALLS_EXPIRE)
            .ok_or(KernelError::NoProgram(CALLS_EXPIRE))?
            .try_into()
            .map_err(KernelError::Verifier)?;
        let opts = aya::programs::TestRunOptions {
            data_in: Some(&frame),
            ..Default::default()
        };
        let res = aya::programs::TestRun::test_run(&*prog, opts).map_err(KernelError::Verifier)?;
        Ok(res.return_value == 2)
    }
}

impl Drop for Shield {
    /// A start that fails before [`Shield::ready`] still waits for the
    /// verifier, so nothing it loads outlives the failed attempt.
    fn drop(&mut self) {
        if let Some(v) = self.verifier.take() {
            let _ = v.join();
        }
    }
}

/// Runs the verifier on the programs of `ebpf`; with `all` false only on
/// the call-expiry program (the others are reused from their pins).
fn verify(mut ebpf: Ebpf, all: bool) -> Result<Ebpf, KernelError> {
    if all {
        verify_main(&mut ebpf)?;
    }
    let expire: &mut Xdp = ebpf
        .program_mut(CALLS_EXPIRE)
        .ok_or(KernelError::NoProgram(CALLS_EXPIRE))?
        .try_into()
        .map_err(KernelError::Verifier)?;
    expire.load().map_err(KernelError::Verifier)?;
    Ok(ebpf)
}

/// The verifier on the XDP program and the egress classifier.
fn verify_main(ebpf: &mut Ebpf) -> Result<(), KernelError> {
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or(KernelError::NoProgram(PROGRAM))?
        .try_into()
        .map_err(KernelError::Verifier)?;
    prog.load().map_err(KernelError::Verifier)?;
    let egress: &mut SchedClassifier = ebpf
        .program_mut(EGRESS)
        .ok_or(KernelError::NoProgram(EGRESS))?
        .try_into()
        .map_err(KernelError::Verifier)?;
    egress.load().map_err(KernelError::Verifier)
}

/// A failed object load; pinned maps that do not match the object (a
/// `[capacity]` change) get the error that says how to get out.
fn object_error(source: EbpfError, pin_dir: Option<&Path>) -> KernelError {
    if let (
        EbpfError::MapError(MapError::IncompatiblePinnedMap {
            name,
            property,
            expected,
            actual,
        }),
        Some(dir),
    ) = (&source, pin_dir)
    {
        return KernelError::IncompatiblePins {
            pin_path: dir.to_path_buf(),
            detail: format!(
                "pinned map {name} has {property} {actual}, this daemon needs {expected}"
            ),
        };
    }
    KernelError::Object {
        pin_dir: pin_dir.map(Path::to_path_buf),
        source: Box::new(source),
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use
/// the memory cgroup and ignore it. Raising it is harmless either way.
pub fn raise_memlock() {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `r` is a valid rlimit that outlives the call, which only
    // reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The decision as a tc ingress program (issue 22 item 4): a second object,
/// the same modules built for `__sk_buff`, whose maps are this shield's.
impl Shield {
    /// Loads the tc ingress program (once: later calls do nothing) onto
    /// this shield's maps, which must be pinned under `dir` (as
    /// [`Shield::load`] with a pin directory leaves them; `pins::load_tc`
    /// pins them for a shield without one). aya reuses a pinned map of the
    /// same name and shape instead of creating one.
    pub fn load_tc(&mut self, dir: &Path) -> Result<(), KernelError> {
        self.ready()?;
        if self.tc.is_some() {
            return Ok(());
        }
        let mut loader = EbpfLoader::new();
        for map in MapId::ALL {
            // The configured sizes, as the kernel has them: aya refuses a
            // pinned map whose size differs from the object's.
            if Capacity::default().max_entries(map).is_some() {
                if let Some(n) = self.maps.capacity(map) {
                    loader.map_max_entries(map.name(), n);
                }
            }
            loader.map_pin_path(map.name(), dir.join(map.name()));
        }
        let mut ebpf = loader
            .load(TC_OBJECT)
            .map_err(|source| object_error(source, Some(dir)))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(TC_PROGRAM)
            .ok_or(KernelError::NoProgram(TC_PROGRAM))?
            .try_into()
            .map_err(KernelError::Verifier)?;
        prog.load().map_err(KernelError::Verifier)?;
        self.tc = Some(ebpf);
        Ok(())
    }

    /// The loaded tc ingress program, if [`Shield::load_tc`] loaded it.
    pub fn tc_program(&mut self) -> Option<&mut SchedClassifier> {
        self.tc
            .as_mut()?
            .program_mut(TC_PROGRAM)?
            .try_into()
            .ok()
    }
}
