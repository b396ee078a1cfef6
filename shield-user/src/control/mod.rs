//! `shieldctl` ↔ `shieldd`: the request/response protocol over the Unix
//! control socket, its server (in the daemon) and its client.

pub mod client;
pub mod protocol;
pub mod server;

pub use protocol::{ErrorKind, ListOp, Request, Response};
