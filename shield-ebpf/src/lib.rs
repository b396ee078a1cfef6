//! Host build of the eBPF crate: empty. It exists so `shield-user` can name
//! this crate as a build dependency and be rebuilt when it changes.
#![no_std]
