//! An `AF_PACKET` socket that puts whole Ethernet frames on one
//! interface: the lab's flood sender, the hops of its redirect engine and
//! the fleet's attackers send with it.

use std::ffi::CString;

use anyhow::{bail, Context, Result};

/// An `AF_PACKET` socket bound to one interface (send only).
pub struct PacketSocket {
    fd: libc::c_int,
    mac: [u8; 6],
}

impl PacketSocket {
    /// A socket on `iface` of the calling thread's namespace.
    pub fn open(iface: &str) -> Result<PacketSocket> {
        let name = CString::new(iface)?;
        // SAFETY: plain socket calls on an fd this struct owns; the structs
        // passed are fully initialised.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            if ifindex == 0 {
                bail!("no interface {iface} here");
            }
            // Protocol 0: a send-only socket (it receives nothing).
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                bail!(
                    "AF_PACKET socket: {} (needs CAP_NET_RAW)",
                    std::io::Error::last_os_error()
                );
            }
            let mut s = PacketSocket { fd, mac: [0; 6] };
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex;
            if libc::bind(
                fd,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                bail!(
                    "bind AF_PACKET to {iface}: {}",
                    std::io::Error::last_os_error()
                );
            }
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                4,
            );
            let sndbuf: libc::c_int = 8 << 20;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&raw const sndbuf).cast(),
                4,
            );
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
                *d = *s as libc::c_char;
            }
            if libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr) != 0 {
                bail!("SIOCGIFHWADDR {iface}: {}", std::io::Error::last_os_error());
            }
            for (d, b) in s
                .mac
                .iter_mut()
                .zip(ifr.ifr_ifru.ifru_hwaddr.sa_data.iter())
            {
                *d = *b as u8;
            }
            Ok(s)
        }
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Sends one complete frame.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: a bound socket; `frame` outlives the call.
        let r = unsafe { libc::send(self.fd, frame.as_ptr().cast(), frame.len(), 0) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sends `frames` with one `sendmmsg`; how many the kernel took.
    pub fn send_frames(&self, frames: &[&[u8]]) -> std::io::Result<usize> {
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                // The kernel only reads it (a send).
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; each points at one live iovec.
        let mut msgs: Vec<libc::mmsghdr> = (0..iov.len())
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs, iov and the frames outlive the call.
        let r = unsafe { libc::sendmmsg(self.fd, msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.fd) };
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {s:?}"))?;
    parts
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC {s:?}: six bytes expected"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01").expect("mac"),
            [2, 0, 10, 255, 0, 1]
        );
        assert!(parse_mac("02:00").is_err());
    }
}
