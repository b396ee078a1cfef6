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
//! source address, either the last octet from a small IPv4 range or, for
//! spoofed floods ([`Randomise::prefix_len`]), every bit below an IPv4 or
//! IPv6 prefix; it writes eight random letters at each of the payload's
//! counter fields (Via branch, tag, Call-ID); and it rewrites the checksums
//! that cover what changed: the IPv4 header checksum, and an IPv6 frame's
//! UDP checksum (source address and letters). Both are RFC 1624 updates
//! against the template (see [`crate::csum`]): one constant from the
//! template plus the frame's changed words, so a recycled page that still
//! holds an earlier frame gets the right sum too. An IPv4 frame's UDP
//! checksum stays 0.

use std::ffi::CString;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use shield::kernel::sys::{prog_load_xdp, prog_test_run, TestRun, BPF_F_TEST_XDP_LIVE_FRAMES};

use crate::csum::{self, Layout, Tracked};

const XDP_DROP: i32 = 1;
const XDP_TX: i32 = 3;
const HELPER_GET_PRANDOM_U32: i32 = 7;
const HELPER_REDIRECT: i32 = 23;
#[cfg(test)]
const XDP_REDIRECT: i32 = 4;

/// What the program does with the frame it has made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `XDP_TX`: a live-frames test run transmits it out of the interface
    /// its context names.
    Tx,
    /// `bpf_redirect(ifindex)`: attached to a veth (see [`super::hop`]),
    /// the frame goes to that interface's `ndo_xdp_xmit`; a veth hands its
    /// peer an `xdp_frame`, so the peer's XDP program runs with no skb.
    Redirect(u32),
}
/// Random letters written at each of [`Randomise::letters_at`].
const LETTERS: usize = 8;

/// What the program randomises in each frame.
#[derive(Clone, Debug, Default)]
pub struct Randomise {
    /// Source address last octet: `first + random % count` (IPv4, when
    /// `prefix_len` is `None`).
    pub first_octet: u8,
    pub count: u8,
    /// Where eight random letters go (each field at least 8 bytes long).
    pub letters_at: Vec<usize>,
    /// Spoofed sources: every bit of the source address after the first
    /// `prefix_len` is random; the template's source supplies the prefix.
    /// IPv4 (`..=32`) or IPv6 (`..=128`) templates.
    pub prefix_len: Option<u8>,
    /// Bytes from each of `letters_at` that may differ from the template
    /// when the frame is handed to [`XdpGen::send`] (the flood writes a
    /// 16-digit counter there per call): an IPv6 frame's UDP checksum
    /// follows all of them. Less than 8 counts as 8.
    pub field_len: usize,
}

impl Randomise {
    /// The source address bytes the program writes.
    fn source_bytes(&self, l: &Layout) -> Range<usize> {
        match self.prefix_len {
            None => l.src.end - 1..l.src.end,
            Some(len) => l.src.start + usize::from(len) / 8..l.src.end,
        }
    }

    /// The payload bytes that may change: the letter fields.
    fn fields(&self) -> Vec<Range<usize>> {
        let len = self.field_len.max(LETTERS);
        self.letters_at.iter().map(|&a| a..a + len).collect()
    }
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
fn or_imm(dst: u8, imm: i32) -> u64 {
    insn(0x47, dst, 0, 0, imm)
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
/// `dst = *(u16 *)(src + off)`
fn ldx_h(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x69, dst, src, off, 0)
}
/// `*(u8 *)(dst + off) = src`
fn stx_b(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x73, dst, src, off, 0)
}
/// `*(u16 *)(dst + off) = src`
fn stx_h(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x6b, dst, src, off, 0)
}
/// `if dst > src goto +off`
fn jgt_reg(dst: u8, src: u8, off: i16) -> u64 {
    insn(0x2d, dst, src, off, 0)
}
/// `if dst != imm goto +off`
fn jne_imm(dst: u8, imm: i32, off: i16) -> u64 {
    insn(0x55, dst, 0, off, imm)
}
fn call(helper: i32) -> u64 {
    insn(0x85, 0, 0, 0, helper)
}
fn exit() -> u64 {
    insn(0x95, 0, 0, 0, 0)
}

/// Where the bounds check sits in every program (its jump is patched).
const BOUNDS_CHECK_AT: usize = 5;

/// The generator program for `frame` (an Ethernet/IPv4 or /IPv6 UDP
/// template, see [`Layout`]). Registers: r7 the frame, r0 the latest random
/// number, r1 and r9 scratch.
pub fn program(frame: &[u8], r: &Randomise, verdict: Verdict) -> Vec<u64> {
    let l = Layout::of(frame).expect("an Ethernet/IPv4 or Ethernet/IPv6 template");
    let src = r.source_bytes(&l);
    let mut spans = r.fields();
    spans.push(src.clone());
    let sums = csum::tracked(frame, &spans);
    let max_end = spans
        .iter()
        .map(|s| s.end)
        .chain(
            sums.iter()
                .flat_map(|t| t.words.iter().chain([&t.at]).map(|w| w + 2)),
        )
        .max()
        .unwrap_or(0);
    assert!(
        max_end <= frame.len() && max_end < i16::MAX as usize,
        "fields inside the frame"
    );
    let mut p = vec![
        mov_reg(6, 1),
        ldx_w(7, 6, 0), // r7 = data
        ldx_w(3, 6, 4), // r3 = data_end
        mov_reg(4, 7),
        add_imm(4, max_end as i32),
        jgt_reg(4, 3, 0), // patched: goto drop
    ];
    match r.prefix_len {
        None => last_octet(&mut p, src.start, r),
        Some(len) => random_bits(&mut p, frame, src, u32::from(len)),
    }
    letters(&mut p, &r.letters_at);
    for t in &sums {
        checksum(&mut p, t);
    }
    match verdict {
        Verdict::Tx => p.extend([mov_imm(0, XDP_TX), exit()]),
        // r0 = bpf_redirect(ifindex, 0): XDP_REDIRECT, or XDP_ABORTED
        // for an ifindex that is gone.
        Verdict::Redirect(ifindex) => p.extend([
            mov_imm(1, ifindex as i32),
            mov_imm(2, 0),
            call(HELPER_REDIRECT),
            exit(),
        ]),
    }
    // A frame shorter than the template is not one of ours (on a hop, it
    // could be anything the kernel sends there): dropped, untouched.
    let drop = p.len();
    p.extend([mov_imm(0, XDP_DROP), exit()]);
    p[BOUNDS_CHECK_AT] = jgt_reg(4, 3, (drop - BOUNDS_CHECK_AT - 1) as i16);
    p
}

/// The source's last octet: `first + random % count`.
fn last_octet(p: &mut Vec<u64>, at: usize, r: &Randomise) {
    assert!(r.count > 0 && u32::from(r.first_octet) + u32::from(r.count) <= 256);
    p.extend([
        call(HELPER_GET_PRANDOM_U32),
        mov_reg(9, 0),
        mod_imm(9, i32::from(r.count)),
        add_imm(9, i32::from(r.first_octet)),
        stx_b(7, 9, at as i16),
    ]);
}

/// Random bits in the source bytes `at` after the first `prefix_len` bits
/// of the address (which starts at `at.start - prefix_len / 8`): a new
/// random number every four bytes; the byte the prefix ends in keeps the
/// template's prefix bits.
fn random_bits(p: &mut Vec<u64>, frame: &[u8], at: Range<usize>, prefix_len: u32) {
    for (k, i) in at.enumerate() {
        if k % 4 == 0 {
            p.push(call(HELPER_GET_PRANDOM_U32));
        }
        let host: u8 = if k == 0 {
            0xff >> (prefix_len % 8)
        } else {
            0xff
        };
        p.push(mov_reg(1, 0));
        p.push(rsh_imm(1, 8 * (k % 4) as i32));
        p.push(and_imm(1, i32::from(host)));
        let prefix_bits = frame[i] & !host;
        if prefix_bits != 0 {
            p.push(or_imm(1, i32::from(prefix_bits)));
        }
        p.push(stx_b(7, 1, i as i16));
    }
}

/// Eight random letters (`a`-`p`, one per nibble of one random number),
/// the same at each of `fields`.
fn letters(p: &mut Vec<u64>, fields: &[usize]) {
    p.push(call(HELPER_GET_PRANDOM_U32));
    for nibble in 0..LETTERS {
        p.push(mov_reg(1, 0));
        p.push(rsh_imm(1, 4 * nibble as i32));
        p.push(and_imm(1, 15));
        p.push(add_imm(1, i32::from(b'a')));
        for &at in fields {
            p.push(stx_b(7, 1, (at + nibble) as i16));
        }
    }
}

/// `t`'s checksum from the frame's words, as [`Tracked::value`] computes
/// it, but on little-endian loads: a one's-complement sum of byte-swapped
/// words is the byte-swapped sum (RFC 1071), so the constant goes in
/// swapped and the result is stored as loaded.
fn checksum(p: &mut Vec<u64>, t: &Tracked) {
    p.push(mov_imm(9, i32::from(t.base.swap_bytes())));
    for &w in &t.words {
        p.push(ldx_h(1, 7, w as i16));
        p.push(add_reg(9, 1));
    }
    // Two folds: fewer than 2^16 words are summed.
    for _ in 0..2 {
        p.extend([
            mov_reg(1, 9),
            rsh_imm(1, 16),
            and_imm(9, 0xffff),
            add_reg(9, 1),
        ]);
    }
    p.push(xor_imm(9, 0xffff));
    if t.udp {
        p.extend([jne_imm(9, 0, 1), mov_imm(9, 0xffff)]);
    }
    p.push(stx_h(7, 9, t.at as i16));
}

/// [`program`], loaded.
pub fn load(frame: &[u8], r: &Randomise, verdict: Verdict) -> io::Result<OwnedFd> {
    prog_load_xdp(&program(frame, r, verdict))
        .map_err(|e| io::Error::new(e.kind(), format!("loading the generator program: {e}")))
}

/// A loaded generator for one template frame, sending out of one interface
/// of the calling thread's namespace.
pub struct XdpGen {
    prog: OwnedFd,
    ifindex: u32,
}

impl XdpGen {
    pub fn new(iface: &str, frame: &[u8], r: &Randomise) -> io::Result<XdpGen> {
        let prog = load(frame, r, Verdict::Tx)?;
        Ok(XdpGen {
            prog,
            ifindex: ifindex(iface)?,
        })
    }

    /// Whether the kernel allows live-frames test runs on `iface`: one
    /// run of a program that drops its frame, so nothing is sent. Kernels
    /// built to refuse them say EPERM.
    pub fn live_frames(iface: &str) -> io::Result<()> {
        let prog = prog_load_xdp(&[mov_imm(0, XDP_DROP), exit()])?;
        let probe = XdpGen {
            prog,
            ifindex: ifindex(iface)?,
        };
        probe.send(&[0u8; 60], 1)
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

/// The index of `iface` in the calling thread's namespace.
pub fn ifindex(iface: &str) -> io::Result<u32> {
    let name = CString::new(iface)?;
    // SAFETY: a valid C string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {iface} here"),
        )),
        i => Ok(i),
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
    use crate::gen::Rng;
    use crate::lab::flood_frames::{sip_payload_to, udp6_frame, udp_frame, FloodMethod};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    /// Runs `prog` on `frame` with the semantics of the kernel's eBPF
    /// interpreter, for the instructions [`program`] emits; `random` plays
    /// `bpf_get_prandom_u32`. Returns r0.
    fn interpret(prog: &[u64], frame: &mut [u8], mut random: impl FnMut() -> u32) -> u64 {
        const CTX: u64 = 1 << 40;
        const DATA: u64 = 1 << 32;
        let mut r = [0u64; 11];
        r[1] = CTX;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            let (code, dst, src) = (
                i as u8,
                ((i >> 8) & 0xf) as usize,
                ((i >> 12) & 0xf) as usize,
            );
            let off = i64::from((i >> 16) as u16 as i16);
            let imm = (i >> 32) as u32 as i32 as i64 as u64;
            let at = |base: u64| (base as i64 + off - DATA as i64) as usize;
            match code {
                0xb7 => r[dst] = imm,
                0xbf => r[dst] = r[src],
                0x07 => r[dst] = r[dst].wrapping_add(imm),
                0x0f => r[dst] = r[dst].wrapping_add(r[src]),
                0x57 => r[dst] &= imm,
                0x47 => r[dst] |= imm,
                0x77 => r[dst] >>= imm,
                0xa7 => r[dst] ^= imm,
                0x97 => r[dst] %= imm,
                0x61 => {
                    assert_eq!(r[src], CTX, "only the context is loaded as a word");
                    r[dst] = DATA + if off == 0 { 0 } else { frame.len() as u64 };
                }
                0x69 => {
                    r[dst] = u64::from(u16::from_le_bytes([
                        frame[at(r[src])],
                        frame[at(r[src]) + 1],
                    ]))
                }
                0x73 => frame[at(r[dst])] = r[src] as u8,
                0x6b => {
                    let a = at(r[dst]);
                    frame[a..a + 2].copy_from_slice(&(r[src] as u16).to_le_bytes());
                }
                0x2d if r[dst] > r[src] => pc = (pc as i64 + off) as usize,
                0x55 if r[dst] != imm => pc = (pc as i64 + off) as usize,
                0x2d | 0x55 => {}
                0x85 if imm == i64::from(HELPER_REDIRECT) as u64 => {
                    assert_eq!(r[2], 0, "bpf_redirect's flags");
                    r[0] = ((XDP_REDIRECT as u64) << 32) | r[1]; // verdict, ifindex
                    r[1..=5].fill(0xdead_beef_dead_beef); // clobbered
                }
                0x85 => {
                    assert_eq!(imm, 7, "bpf_get_prandom_u32");
                    r[0] = u64::from(random());
                    r[1..=5].fill(0xdead_beef_dead_beef); // clobbered
                }
                0x95 => return r[0],
                _ => panic!("opcode {code:#x} at {}", pc - 1),
            }
        }
    }

    /// A flood template: the frame and its `#` counter fields.
    fn template(src: SocketAddr, dst: SocketAddr) -> (Vec<u8>, Vec<usize>) {
        let p = sip_payload_to(FloodMethod::Invite, src.port(), dst, "x");
        let f = match (src, dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => udp_frame([2; 6], [4; 6], s, d, &p),
            (SocketAddr::V6(s), SocketAddr::V6(d)) => udp6_frame([2; 6], [4; 6], s, d, &p),
            _ => unreachable!(),
        };
        let at = f
            .windows(16)
            .enumerate()
            .filter(|(_, w)| *w == b"################")
            .map(|(i, _)| i)
            .collect();
        (f, at)
    }

    fn udp6_ok(f: &[u8]) -> bool {
        let mut seg = f[54..].to_vec();
        seg[6..8].copy_from_slice(&[0, 0]);
        let full = csum::udp6(
            f[22..38].try_into().expect("src"),
            f[38..54].try_into().expect("dst"),
            &seg,
        );
        u16::from_be_bytes([f[60], f[61]]) == full
    }

    /// Runs the program for `r` many times on one buffer (as a recycled
    /// page), the caller's counter digits changing between calls; checks
    /// each frame with `check` and returns the sources seen.
    fn run_many(t: &(Vec<u8>, Vec<usize>), r: &Randomise, check: impl Fn(&[u8])) -> Vec<Vec<u8>> {
        let prog = program(&t.0, r, Verdict::Tx);
        let mut rng = Rng::new(9);
        let mut frame = t.0.clone();
        let mut sources = Vec::new();
        for n in 0..3000 {
            if n % 100 == 0 {
                for &a in &t.1 {
                    frame[a..a + 16].copy_from_slice(format!("{n:016x}").as_bytes());
                }
            }
            assert_eq!(
                interpret(&prog, &mut frame, || rng.next_u64() as u32),
                XDP_TX as u64
            );
            check(&frame);
            for &a in &t.1 {
                assert!(
                    frame[a..a + 8].iter().all(|c| (b'a'..=b'p').contains(c)),
                    "letters"
                );
            }
            let l = Layout::of(&frame).expect("layout");
            sources.push(frame[l.src].to_vec());
        }
        sources
    }

    fn distinct(v: &[Vec<u8>]) -> usize {
        v.iter().collect::<std::collections::HashSet<_>>().len()
    }

    #[test]
    fn last_octets_stay_in_their_range_with_valid_header_checksums() {
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 0), 5062);
        let t = template(src.into(), "198.51.100.1:5060".parse().expect("dst"));
        let r = Randomise {
            first_octet: 100,
            count: 64,
            letters_at: t.1.clone(),
            field_len: 16,
            ..Randomise::default()
        };
        let srcs = run_many(&t, &r, |f| {
            assert_eq!(csum::checksum(&f[14..34]), 0, "header checksum")
        });
        assert!(srcs
            .iter()
            .all(|s| s[..3] == [198, 51, 100] && (100..164).contains(&s[3])));
        assert_eq!(distinct(&srcs), 64);
    }

    #[test]
    fn spoofed_ipv4_sources_fill_the_prefix() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 64, 0, 0), 5062);
        let t = template(src.into(), "198.51.100.1:5060".parse().expect("dst"));
        let r = Randomise {
            prefix_len: Some(12),
            letters_at: t.1.clone(),
            field_len: 16,
            ..Randomise::default()
        };
        let srcs = run_many(&t, &r, |f| {
            assert_eq!(csum::checksum(&f[14..34]), 0, "header checksum");
            assert_eq!(f[40..42], [0, 0], "no UDP checksum");
        });
        assert!(
            srcs.iter().all(|s| s[0] == 10 && s[1] & 0xf0 == 0x40),
            "in 10.64.0.0/12"
        );
        assert!(distinct(&srcs) > 2950, "{}", distinct(&srcs));
    }

    #[test]
    fn spoofed_ipv6_sources_keep_the_udp_checksum_valid() {
        for len in [48u8, 52, 64] {
            let base: Ipv6Addr = "2001:db8:5::".parse().expect("base");
            let src = SocketAddrV6::new(base, 5062, 0, 0);
            let t = template(src.into(), "[2001:db8::1]:5060".parse().expect("dst"));
            let r = Randomise {
                prefix_len: Some(len),
                letters_at: t.1.clone(),
                field_len: 16,
                ..Randomise::default()
            };
            let srcs = run_many(&t, &r, |f| assert!(udp6_ok(f), "UDP checksum, /{len}"));
            let net = ipnet::Ipv6Net::new(base, len).expect("net");
            for s in &srcs {
                let a = Ipv6Addr::from(<[u8; 16]>::try_from(s.as_slice()).expect("16"));
                assert!(net.contains(&a), "{a} in {net}");
            }
            assert_eq!(distinct(&srcs), srcs.len(), "/{len}");
        }
    }

    #[test]
    fn native_order_sums_are_swapped_big_endian_ones() {
        let mut rng = Rng::new(3);
        for _ in 0..5000 {
            let frame = rng.bytes(64);
            let words: Vec<usize> = (0..64).step_by(2).filter(|_| rng.chance(40)).collect();
            let t = Tracked::new(&frame, 2 * rng.below(32), words.clone(), rng.chance(50));
            let mut acc = u64::from(t.base.swap_bytes());
            acc += words
                .iter()
                .map(|&w| u64::from(u16::from_le_bytes([frame[w], frame[w + 1]])))
                .sum::<u64>();
            let mut c = !csum::fold(acc);
            if t.udp && c == 0 {
                c = 0xffff;
            }
            assert_eq!(c.to_le_bytes(), t.value(&frame).to_be_bytes());
        }
    }

    #[test]
    fn the_bounds_check_jumps_to_the_exit() {
        let t = template(
            "[2001:db8:5::]:5062".parse().expect("src"),
            "[2001:db8::1]:5060".parse().expect("dst"),
        );
        let r = Randomise {
            prefix_len: Some(48),
            letters_at: t.1.clone(),
            field_len: 16,
            ..Randomise::default()
        };
        let p = program(&t.0, &r, Verdict::Tx);
        let jump = p[BOUNDS_CHECK_AT];
        let off = ((jump >> 16) & 0xffff) as i16;
        assert_eq!(
            BOUNDS_CHECK_AT + 1 + off as usize,
            p.len() - 2,
            "to `r0 = XDP_DROP`"
        );
        assert_eq!(p[p.len() - 1], exit());
        let mut short = t.0[..60].to_vec();
        let before = short.clone();
        assert_eq!(interpret(&p, &mut short, || 0), XDP_DROP as u64);
        assert_eq!(short, before, "a frame too short is dropped untouched");
    }

    /// On a hop the program hands every frame it made to `bpf_redirect`
    /// (to the interface given, no flags) and drops what is not its own.
    #[test]
    fn the_redirect_verdict_calls_bpf_redirect() {
        let t = template(
            "198.51.100.0:5062".parse().expect("src"),
            "198.51.100.1:5060".parse().expect("dst"),
        );
        let r = Randomise {
            first_octet: 100,
            count: 64,
            letters_at: t.1.clone(),
            field_len: 16,
            ..Randomise::default()
        };
        let p = program(&t.0, &r, Verdict::Redirect(7));
        let tx = program(&t.0, &r, Verdict::Tx);
        let mut a = t.0.clone();
        let mut b = t.0.clone();
        assert_eq!(
            interpret(&p, &mut a, || 12345),
            (4 << 32) | 7,
            "XDP_REDIRECT to ifindex 7"
        );
        assert_eq!(interpret(&tx, &mut b, || 12345), XDP_TX as u64);
        assert_eq!(a, b, "the same frame either way");
        assert_ne!(a, t.0, "a new source and letters");
        let mut short = t.0[..60].to_vec();
        assert_eq!(interpret(&p, &mut short, || 0), XDP_DROP as u64);
    }
}
