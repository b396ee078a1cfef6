//! The daemon tests use the harness they share with the lab
//! (`shield_tests::daemon`, `netns`, `udp`), with the binaries cargo built
//! for them: `CARGO_BIN_EXE_*` points at fresh `shieldd`/`shieldctl` only
//! in this crate's tests.

#![allow(dead_code, unused_imports)]

pub use shield_tests::daemon::{wait_for, Binaries, Shieldd};
pub use shield_tests::paths::path_str;
pub use shield_tests::process::{
    as_user, collect, output_within, reachable, run_within, text, Guard,
};
pub use shield_tests::netns::{Lab, Netns, PEER_IP, SBC_IF, SBC_IP};
pub use shield_tests::udp::{send, settle, Ends, Flood, Sink, OPTIONS};

pub mod deb;

pub const SHIELDD: &str = env!("CARGO_BIN_EXE_shieldd");
pub const SHIELDCTL: &str = env!("CARGO_BIN_EXE_shieldctl");

/// The binaries under test.
pub fn bins() -> Binaries {
    Binaries::new(SHIELDD, SHIELDCTL)
}

/// `[limits]` that let the tests' steady streams through.
pub const NO_LIMITS: &str = "[limits]\npackets_per_second = 0\n";
