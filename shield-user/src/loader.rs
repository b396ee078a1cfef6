//! Loading the XDP object into the kernel and attaching it.
//!
//! The object is embedded at build time (`build.rs`). Map sizes come from
//! `[capacity]`; with a pin directory, maps are created pinned there or, when
//! a previous daemon already pinned them, reused, so bans and counters
//! survive a restart.

use std::path::{Path, PathBuf};

use aya::{
    programs::{links::FdLink, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use shield_common::{default_size, names};
use thiserror::Error;

use crate::maps::ShieldMaps;

/// The XDP object built by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shield"));

/// Name of the XDP function in the object.
pub const PROGRAM: &str = "shield";

/// Map sizes (SPEC §2 "Capacity").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub allow: u32,
    pub deny: u32,
    pub bans: u32,
    pub ban_nets: u32,
    pub sources: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            allow: default_size::ALLOW,
            deny: default_size::DENY,
            bans: default_size::BANS,
            ban_nets: default_size::BAN_NETS,
            sources: default_size::SOURCES,
        }
    }
}

impl Capacity {
    /// Small maps for tests and the lab: fast to create, same code paths.
    pub const fn small() -> Capacity {
        Capacity {
            allow: 1024,
            deny: 1024,
            bans: 65_536,
            ban_nets: 1024,
            sources: 65_536,
        }
    }
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("loading the XDP object (maps{}) failed: {source}", pin_note(.pin_dir))]
    Object {
        pin_dir: Option<PathBuf>,
        #[source]
        source: aya::EbpfError,
    },
    #[error("the XDP object has no program `{PROGRAM}`")]
    NoProgram,
    #[error("the verifier rejected the XDP program: {0}")]
    Verifier(#[source] aya::programs::ProgramError),
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("attaching to {iface} ({mode:?}): {source}")]
    Attach {
        iface: String,
        mode: XdpMode,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attaching to {iface}: the kernel gave no bpf_link (needs Linux >= 5.9): {source}")]
    Link {
        iface: String,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("pinning {what} at {path}: {source}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

fn pin_note(p: &Option<PathBuf>) -> String {
    match p {
        Some(p) => format!(" pinned under {}", p.display()),
        None => String::new(),
    }
}

/// A loaded (verified) program and its maps.
pub struct Shield {
    ebpf: Ebpf,
    pub maps: ShieldMaps,
}

impl Shield {
    /// Loads the object and runs the verifier. With `pin_dir`, every map is
    /// pinned at `pin_dir/NAME` (reused if already there).
    pub fn load(capacity: Capacity, pin_dir: Option<&Path>) -> Result<Shield, LoadError> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::ALLOW_V4, capacity.allow)
            .map_max_entries(names::ALLOW_V6, capacity.allow)
            .map_max_entries(names::DENY_V4, capacity.deny)
            .map_max_entries(names::DENY_V6, capacity.deny)
            .map_max_entries(names::BANS_V4, capacity.bans)
            .map_max_entries(names::BANS_V6, capacity.bans)
            .map_max_entries(names::BAN_NETS_V4, capacity.ban_nets)
            .map_max_entries(names::BAN_NETS_V6, capacity.ban_nets)
            .map_max_entries(names::SOURCES, capacity.sources);
        let pins: Vec<(&'static str, PathBuf)> = match pin_dir {
            Some(dir) => names::ALL.iter().map(|n| (*n, dir.join(n))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|source| LoadError::Object {
                pin_dir: pin_dir.map(Path::to_path_buf),
                source,
            })?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(LoadError::NoProgram)?
            .try_into()
            .map_err(LoadError::Verifier)?;
        prog.load().map_err(LoadError::Verifier)?;
        let maps = ShieldMaps::from_ebpf(&mut ebpf)?;
        Ok(Shield { ebpf, maps })
    }

    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .expect("checked in load")
            .try_into()
            .expect("checked in load")
    }

    /// Attaches to `iface` and returns the link as an fd link (pinnable).
    /// The link lives as long as the returned value or its pin.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<FdLink, LoadError> {
        let err = |source| LoadError::Attach {
            iface: iface.to_string(),
            mode,
            source,
        };
        let name = std::ffi::CString::new(iface).map_err(|_| {
            err(aya::programs::ProgramError::UnknownInterface { name: c"?".into() })
        })?;
        let prog = self.program();
        let id = prog.attach(name.as_c_str(), mode).map_err(err)?;
        let link = prog.take_link(id).map_err(err)?;
        // bpf_link (kernel >= 5.9) is what lets the attachment outlive us.
        FdLink::try_from(link).map_err(|source| LoadError::Link {
            iface: iface.to_string(),
            source,
        })
    }
}
