//! The benchmark's baseline: the smallest XDP program there is,
//! `r0 = XDP_DROP; exit`, loaded raw so it needs no object file and cannot
//! be mistaken for part of the product.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use shield::kernel::sys::{prog_load_xdp, prog_test_run, TestRun};

/// A loaded `XDP_DROP` program.
pub struct BareDrop {
    fd: OwnedFd,
}

impl BareDrop {
    pub fn load() -> io::Result<BareDrop> {
        // mov64 r0, XDP_DROP (1); exit
        let fd = prog_load_xdp(&[0x0000_0001_0000_00b7, 0x0000_0000_0000_0095])?;
        Ok(BareDrop { fd })
    }

    /// Mean ns per run over `repeat` runs on `frame`, as the kernel times it.
    pub fn time(&self, frame: &[u8], repeat: u32) -> io::Result<u32> {
        let run = TestRun {
            data: frame,
            repeat,
            ..Default::default()
        };
        let res = prog_test_run(self.fd.as_fd(), &run)?;
        assert_eq!(res.retval, 1, "baseline must return XDP_DROP");
        Ok(res.duration_ns)
    }
}
