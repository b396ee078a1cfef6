//! Types and pure logic shared by the XDP program (`shield-ebpf`) and user
//! space (`shield-user`).
//!
//! Everything that crosses the kernel/user boundary is `#[repr(C)]` and free
//! of padding, so the same bytes mean the same thing on both sides. Logic that
//! both sides must agree on (SIP first-line classification, User-Agent token
//! extraction, token-bucket arithmetic, counter slot layout) lives here once.
#![no_std]

pub mod auth;
pub mod bucket;
pub mod calls;
pub mod dest;
pub mod maps;
pub mod policy;
pub mod response;
pub mod sample;
pub mod sip;
pub mod txn;
pub mod verdict;

pub use bucket::{gcra, tokens, Bucket};
pub use maps::*;
pub use policy::*;
pub use response::{CseqLine, RESPONSE_CLASSES};
pub use sample::{Sample, SampleConfig, SampleState, SampleView, SAMPLE_CAP, SAMPLE_HEADER};
pub use sip::{Method, PayloadKind};
pub use txn::{Txn, TxnKey, TXN_WINDOW_NS};
pub use verdict::*;
