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
pub mod framing;
pub mod maps;
pub mod policy;
pub mod response;
pub mod sample;
pub mod sip;
pub mod srcstate;
pub mod txn;
pub mod verdict;

pub use bucket::{gcra, tokens, Bucket};
pub use maps::*;
pub use policy::*;
pub use response::{CseqLine, RESPONSE_CLASSES};
pub use sample::{Sample, SampleConfig, SampleState, SampleView, SAMPLE_CAP, SAMPLE_HEADER};
pub use sip::{Method, PayloadKind};
pub use srcstate::{Meta, SrcState};
pub use txn::{Txn, TxnKey, TXN_WINDOW_NS};
pub use verdict::*;

/// Every `aya::Pod` type of every module: no byte is padding (their
/// `Pod` impls rely on it). Here, at the root, so that `maps` does not
/// import the modules whose types it checks.
#[cfg(test)]
mod pod_sizes {
    use crate::maps::*;
    use crate::policy::METHOD_BUCKETS;

    #[test]
    fn sizes_without_padding() {
        use core::mem::size_of;
        // The other `aya::Pod` types: their fields' sizes, summed.
        assert_eq!(size_of::<crate::txn::TxnKey>(), 16 + 8 + 4 + 4);
        assert_eq!(size_of::<crate::txn::Txn>(), 8 + 4 + 4);
        assert_eq!(size_of::<crate::dest::DestRule>(), 4 + 4);
        assert_eq!(size_of::<crate::dest::DestSource>(), 8 * 3);
        assert_eq!(size_of::<crate::dest::DigitPrefix>(), 8 + 4 + 4);
        assert_eq!(size_of::<crate::bucket::Bucket>(), 8 + 8);
        assert_eq!(
            size_of::<crate::dest::DestPolicy>(),
            4 * 4 + 2 * crate::dest::MAX_PREFIXES * 16 + 3 * 16
        );
        assert_eq!(
            size_of::<RefusalEvent>(),
            8 + 16 + 16 + 2 + 2 + 1 + 1 + 2 + 4 * 4 + REFUSAL_PAYLOAD
        );
        assert_eq!(
            core::mem::size_of::<crate::SrcState>(),
            8 + 4 * (2 + METHOD_BUCKETS)
        );
        assert_eq!(core::mem::size_of::<OffenderEvent>(), 32);
        assert_eq!(core::mem::size_of::<Counter>(), 16);
        assert_eq!(core::mem::size_of::<Verified>(), 16);
        assert_eq!(core::mem::size_of::<Budget>(), 64);
        assert_eq!(core::mem::size_of::<BanKey>(), 16 + 1 + 3);
    }
}
