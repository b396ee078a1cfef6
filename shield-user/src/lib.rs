//! SIP Shield user space: loading and configuring the XDP program, the
//! daemon's building blocks, and the CLI's protocol.

pub mod config;
pub mod jails;
pub mod loader;
pub mod maps;

pub use loader::{Capacity, Shield};
