//! SIP Shield user space.

/// The XDP object built by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shield"));

pub mod config;
pub mod jails;
