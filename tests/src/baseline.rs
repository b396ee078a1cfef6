//! The benchmark's baseline: the smallest XDP program there is,
//! `r0 = XDP_DROP; exit`, loaded raw so it needs no object file and cannot
//! be mistaken for part of the product.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::rawbpf::{load_xdp, test_run, TestRunAttr};

/// A loaded `XDP_DROP` program.
pub struct BareDrop {
    fd: OwnedFd,
}

impl BareDrop {
    pub fn load() -> io::Result<BareDrop> {
        // mov64 r0, XDP_DROP (1); exit
        let fd = load_xdp(&[0x0000_0001_0000_00b7, 0x0000_0000_0000_0095])?;
        Ok(BareDrop { fd })
    }

    /// Mean ns per run over `repeat` runs on `frame`, as the kernel times it.
    pub fn time(&self, frame: &[u8], repeat: u32) -> io::Result<u32> {
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ..Default::default()
        };
        test_run(&mut attr)?;
        assert_eq!(attr.retval, 1, "baseline must return XDP_DROP");
        Ok(attr.duration)
    }
}
