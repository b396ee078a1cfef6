//! SIP Shield user space: loading and configuring the XDP program, the
//! daemon's building blocks, and the CLI's protocol.

pub mod caps;
pub mod config;
pub mod control;
pub mod crowdsec;
pub mod daemon;
pub mod dest;
pub mod docs;
pub mod jails;
pub mod kernel;
pub mod metrics;
pub mod origin;
pub mod preflight;
pub mod report;
pub mod store;
pub mod text;
pub mod watch;

pub use kernel::{Capacity, Shield};
