//! An in-kernel packet generator for the flood: `BPF_PROG_TEST_RUN` in
//! live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18+) runs a tiny
//! XDP program on a template frame `repeat` times and really transmits what
//! it returns `XDP_TX` for, out of the attacker's veth. The frames reach the
//! SBC's veth as XDP frames, not socket buffers, the way a NIC hands packets
//! to its driver: so the SBC's XDP program sees them before any skb exists
//! (and without one, the SBC's kernel builds an skb, as a driver would).
//! This is what the kernel's own xdp-trafficgen does.
//!
//! The program (hand-assembled, loaded with a raw `BPF_PROG_LOAD`, so no
//! object file is involved) makes every frame different: it writes a random
//! last octet of the source address (from a range) and fixes the IPv4
//! header checksum incrementally (RFC 1624), and writes eight random letters
//! at each of the payload's counter fields (Via branch, tag, Call-ID).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use shield::kernel::sys::{prog_load_xdp, prog_test_run, TestRun, BPF_F_TEST_XDP_LIVE_FRAMES};

const XDP_TX: i32 = 3;
const HELPER_GET_PRANDOM_U32: i32 = 7;

/// Offsets in an untagged Ethernet/IPv4 (IHL 5) frame.
pub const IP_CHECKSUM_AT: usize = 14 + 10;
pub const IP_SRC_LAST_OCTET_AT: usize = 14 + 15;

/// What the program randomises in each frame.
#[derive(Clone, Debug)]
pub struct Randomise {
    /// Source address last octet: `first + random % count`.
    pub first_octet: u8,
    pub count: u8,
    /// Where eight random letters go (each field at least 8 bytes long).
    pub letters_at: Vec<usize>,
}

/// One BPF instruction.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst | (src << 4)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

// The few instructions the program needs (eBPF encoding).
fn mov_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, 0, imm)
}
fn mov_reg(dst: u8, src: u8) -> u64 {
    insn(0xbf, dst, src, 0, 0)
}
fn add_imm(dst: u8, imm: i32) -> u64 {
    insn(0x07, dst, 0, 0, imm)
}
fn add_reg(dst: u8, src: u8) -> u64 {
    insn(0x0f, dst, src, 0, 0)
}
fn and_imm(dst: u8, imm: i32) -> u64 {
    insn(0x57, dst, 0, 0, imm)
}
fn rsh_imm(dst: u8, imm: i32) -> u64 {
    insn(0x77, dst, 0, 0, imm)
}
fn xor_imm(dst: u8, imm: i32) -> u64 {
    insn(0xa7, dst, 0, 0, imm)
}
fn mod_imm(dst: u8, imm: i32) -> u64 {
    insn(0x97, dst, 0, 0, imm)
}
/// `dst = *(u32 *)(src + off)`
fn ldx_w(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x61, dst, src, off, 0)
}
/// `*(u8 *)(dst + off) = src`
fn stx_b(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x73, dst, src, off, 0)
}
/// `if dst > src goto +off`
fn jgt_reg(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x2d, dst, src, off, 0)
}
fn call(helper: i32) -> u64 {
    insn(0x85, 0, 0, 0, helper)
}
fn exit() -> u64 {
    insn(0x95, 0, 0, 0, 0)
}

/// The one's-complement constant of RFC 1624 for `frame` (whose source
/// last octet must be 0): checksum' = ~fold(K + new_last_octet).
fn checksum_constant(frame: &[u8]) -> u32 {
    let hc = u32::from(u16::from_be_bytes([
        frame[IP_CHECKSUM_AT],
        frame[IP_CHECKSUM_AT + 1],
    ]));
    let word_at = IP_SRC_LAST_OCTET_AT - 1;
    let m0 = u32::from(u16::from_be_bytes([frame[word_at], frame[word_at + 1]]));
    (!hc & 0xffff) + (!m0 & 0xffff) + m0
}

/// The generator program for `frame`.
pub fn program(frame: &[u8], r: &Randomise) -> Vec<u64> {
    assert_eq!(
        frame[IP_SRC_LAST_OCTET_AT], 0,
        "template source must end in .0"
    );
    assert!(r.count > 0 && u32::from(r.first_octet) + u32::from(r.count) <= 256);
    let max_end = r
        .letters_at
        .iter()
        .map(|a| a + 8)
        .max()
        .unwrap_or(0)
        .max(IP_SRC_LAST_OCTET_AT + 1);
    let k = checksum_constant(frame);
    let mut p = vec![
        mov_reg(6, 1),
        ldx_w(7, 6, 0), // r7 = data
        ldx_w(3, 6, 4), // r3 = data_end
        mov_reg(4, 7),
        add_imm(4, max_end as i32),
        jgt_reg(4, 3, 0), // patched: goto out
        call(HELPER_GET_PRANDOM_U32),
        mov_reg(9, 0),
        mod_imm(9, i32::from(r.count)),
        add_imm(9, i32::from(r.first_octet)),
        stx_b(7, 9, IP_SRC_LAST_OCTET_AT as i16),
        add_imm(9, k as i32),
        mov_reg(1, 9),
        rsh_imm(1, 16),
        and_imm(9, 0xffff),
        add_reg(9, 1),
        mov_reg(1, 9),
        rsh_imm(1, 16),
        and_imm(9, 0xffff),
        add_reg(9, 1),
        xor_imm(9, 0xffff),
        mov_reg(1, 9),
        rsh_imm(1, 8),
        stx_b(7, 1, IP_CHECKSUM_AT as i16),
        stx_b(7, 9, IP_CHECKSUM_AT as i16 + 1),
        call(HELPER_GET_PRANDOM_U32),
    ];
    for nibble in 0..8 {
        p.push(mov_reg(1, 0));
        p.push(rsh_imm(1, 4 * nibble));
        p.push(and_imm(1, 15));
        p.push(add_imm(1, i32::from(b'a')));
        for &at in &r.letters_at {
            p.push(stx_b(7, 1, (at + nibble as usize) as i16));
        }
    }
    let out = p.len();
    p.push(mov_imm(0, XDP_TX));
    p.push(exit());
    // The bounds check jumps to `out`.
    let jump_at = 5;
    p[jump_at] = jgt_reg(4, 3, (out - jump_at - 1) as i16);
    p
}

/// A loaded generator for one template frame, sending out of one interface
/// of the calling thread's namespace.
pub struct XdpGen {
    prog: OwnedFd,
    ifindex: u32,
}

impl XdpGen {
    pub fn new(iface: &str, frame: &[u8], r: &Randomise) -> io::Result<XdpGen> {
        let prog = prog_load_xdp(&program(frame, r))
            .map_err(|e| io::Error::new(e.kind(), format!("loading the generator program: {e}")))?;
        let name = CString::new(iface)?;
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {iface}"),
            ));
        }
        Ok(XdpGen { prog, ifindex })
    }

    /// Transmits `repeat` frames made from `frame` (the template, possibly
    /// with new counter fields) through the program.
    pub fn send(&self, frame: &[u8], repeat: u32) -> io::Result<()> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex. data_end must be the length.
        let ctx: Vec<u8> = [0, frame.len() as u32, 0, self.ifindex, 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let run = TestRun {
            data: frame,
            ctx: Some(&ctx),
            repeat,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: 64,
        };
        prog_test_run(self.prog.as_fd(), &run).map(drop)
    }
}

/// Turns GRO on for `dev` (in the calling thread's namespace). A veth only
/// accepts XDP frames from its peer when it runs NAPI, which an attached
/// XDP program or GRO switches on: with GRO on, the lab's SBC receives the
/// generator's frames whatever defence it runs.
pub fn enable_gro(dev: &str) -> io::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_SGRO: u32 = 0x0000_002c;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut v = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: 1,
    };
    // SAFETY: a zeroed ifreq is valid; the name fits (IFNAMSIZ checked by
    // the kernel); ifru_data points at `v`, alive for the call.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(dev.as_bytes().iter().take(15)) {
            *d = *s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (&raw mut v).cast();
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        if libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program's checksum arithmetic, run in Rust: every source octet
    /// gives the checksum a full recomputation gives.
    #[test]
    fn incremental_checksum_matches_a_full_one() {
        let mut ip = [0u8; 34];
        ip[14] = 0x45;
        ip[16..18].copy_from_slice(&480u16.to_be_bytes());
        ip[22] = 64;
        ip[23] = 17;
        ip[26..30].copy_from_slice(&[198, 51, 100, 0]);
        ip[30..34].copy_from_slice(&[198, 51, 100, 1]);
        let full = |h: &[u8]| -> u16 {
            let mut s: u32 = h
                .chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .sum();
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            !(s as u16)
        };
        let c0 = full(&ip[14..34]);
        ip[24..26].copy_from_slice(&c0.to_be_bytes());
        let k = checksum_constant(&ip);
        for b in 0..=255u32 {
            let mut x = k + b;
            x = (x & 0xffff) + (x >> 16);
            x = (x & 0xffff) + (x >> 16);
            let inc = (x ^ 0xffff) as u16;
            let mut h = ip;
            h[29] = b as u8;
            h[24..26].copy_from_slice(&[0, 0]);
            assert_eq!(inc, full(&h[14..34]), "octet {b}");
        }
    }

    #[test]
    fn the_bounds_check_jumps_to_the_exit() {
        let frame = vec![0u8; 200];
        let p = program(
            &frame,
            &Randomise {
                first_octet: 100,
                count: 64,
                letters_at: vec![60, 100],
            },
        );
        let jump = p[5];
        let off = ((jump >> 16) & 0xffff) as i16;
        assert_eq!(5 + 1 + off as usize, p.len() - 2, "to `r0 = XDP_TX`");
        assert_eq!(p[p.len() - 1], exit());
    }
}
