//! The benchmark's baseline: the smallest XDP program there is,
//! `r0 = XDP_DROP; exit`, loaded with a raw `BPF_PROG_LOAD` so it needs no
//! object file and cannot be mistaken for part of the product.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

/// A loaded `XDP_DROP` program.
pub struct BareDrop {
    fd: OwnedFd,
}

impl BareDrop {
    pub fn load() -> io::Result<BareDrop> {
        // mov64 r0, XDP_DROP (1); exit
        let insns: [u64; 2] = [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: attr points to valid memory for the duration of the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &raw const attr,
                size_of::<ProgLoadAttr>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new fd we own.
        Ok(BareDrop {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
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
        // SAFETY: attr and the frame outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &raw mut attr,
                size_of::<TestRunAttr>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        assert_eq!(attr.retval, 1, "baseline must return XDP_DROP");
        Ok(attr.duration)
    }
}
