//! Internet checksums (RFC 1071) of the lab's flood frames, and their
//! incremental update (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`) when a
//! few fields of a template frame change: the flood's packet engine uses
//! [`Tracked::apply`] per frame; the in-kernel generator
//! ([`super::xdpgen`]) compiles the same [`Tracked`] into BPF
//! instructions.
//!
//! Updates are always taken against the template (`m` is the template's
//! words, `m'` the frame's), never against whatever a buffer held before:
//! so a recycled buffer holding some earlier frame still gets the right sum.

use std::ops::Range;

/// Ethernet header length (untagged).
const ETH: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The one's-complement sum, unfolded, of the big-endian 16-bit words of
/// `data` (an odd last byte is padded with zero).
pub fn sum(data: &[u8]) -> u64 {
    data.chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// The sum of the 16-bit words of `frame` at the (even) offsets `words`.
pub fn sum_words(frame: &[u8], words: &[usize]) -> u64 {
    words
        .iter()
        .map(|&w| u64::from(u16::from_be_bytes([frame[w], frame[w + 1]])))
        .sum()
}

/// Folds a sum to 16 bits with end-around carry. Never 0 for a non-zero
/// sum.
pub fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum of `data` (an IPv4 header verifies to 0).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// `fold(~HC + ~m)`: what eqn. 3 adds the new words `m'` to, for a
/// checksum `check` over data whose changing words summed to `old`.
pub fn base(check: u16, old: u64) -> u16 {
    fold(u64::from(!check) + u64::from(!fold(old)))
}

/// RFC 1624 eqn. 3: the checksum once words summing to `old` have become
/// words summing to `new`.
pub fn update(check: u16, old: u64, new: u64) -> u16 {
    !fold(u64::from(base(check, old)) + new)
}

/// A UDP checksum as sent: a computed 0 goes out as 0xffff (0 means "no
/// checksum", which IPv6 forbids).
pub fn udp_nonzero(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// The full UDP checksum of an IPv6 `segment` (UDP header with a zero
/// checksum field, and payload) from `src` to `dst`.
pub fn udp6(src: &[u8; 16], dst: &[u8; 16], segment: &[u8]) -> u16 {
    let pseudo = sum(src) + sum(dst) + segment.len() as u64 + 17;
    udp_nonzero(!fold(pseudo + sum(segment)))
}

/// The even offsets of the 16-bit words that hold the bytes of `spans`
/// (sorted, each once).
pub fn words(spans: &[Range<usize>]) -> Vec<usize> {
    let mut w: Vec<usize> = spans
        .iter()
        .flat_map(|s| (s.start & !1..s.end).step_by(2))
        .collect();
    w.sort_unstable();
    w.dedup();
    w
}

/// Where things are in an untagged Ethernet/IPv4 (IHL 5) or Ethernet/IPv6
/// (no extension headers) UDP frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The source address.
    pub src: Range<usize>,
    /// The IPv4 header (covered by its checksum); `None` for IPv6.
    pub ip_header: Option<Range<usize>>,
    /// The UDP checksum field.
    pub udp_check: usize,
}

impl Layout {
    /// The layout of `frame`, by its EtherType; `None` for anything else.
    pub fn of(frame: &[u8]) -> Option<Layout> {
        match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
            ETHERTYPE_IPV4 => Some(Layout {
                src: ETH + 12..ETH + 16,
                ip_header: Some(ETH..ETH + 20),
                udp_check: ETH + 20 + 6,
            }),
            ETHERTYPE_IPV6 => Some(Layout {
                src: ETH + 8..ETH + 24,
                ip_header: None,
                udp_check: ETH + 40 + 6,
            }),
            _ => None,
        }
    }
}

/// A checksum field of a template frame that follows changes to some of
/// its words: `check = ~fold(base + the frame's words)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// Offset of the checksum field.
    pub at: usize,
    /// Offsets of the words that change (even, sorted).
    pub words: Vec<usize>,
    /// [`base`] of the template's checksum and words.
    pub base: u16,
    /// A UDP checksum: never written as 0.
    pub udp: bool,
}

impl Tracked {
    pub fn new(template: &[u8], at: usize, words: Vec<usize>, udp: bool) -> Tracked {
        let check = u16::from_be_bytes([template[at], template[at + 1]]);
        let base = base(check, sum_words(template, &words));
        Tracked {
            at,
            words,
            base,
            udp,
        }
    }

    /// The checksum for `frame` (the template with new bytes in `words`).
    pub fn value(&self, frame: &[u8]) -> u16 {
        let c = !fold(u64::from(self.base) + sum_words(frame, &self.words));
        if self.udp {
            udp_nonzero(c)
        } else {
            c
        }
    }

    /// Writes [`Tracked::value`] into `frame`.
    pub fn apply(&self, frame: &mut [u8]) {
        let c = self.value(frame);
        frame[self.at..self.at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// The checksums of the UDP `frame` (see [`Layout`]) that cover bytes in
/// `spans`, each tracking the words of `spans` it covers: the IPv4 header
/// checksum (for spans in the header) and the UDP checksum when it is in
/// use (always with IPv6; a zero IPv4 UDP checksum stays zero).
pub fn tracked(frame: &[u8], spans: &[Range<usize>]) -> Vec<Tracked> {
    let Some(l) = Layout::of(frame) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(h) = &l.ip_header {
        let inside: Vec<Range<usize>> = spans
            .iter()
            .filter(|s| s.start >= h.start && s.end <= h.end)
            .cloned()
            .collect();
        if !inside.is_empty() {
            out.push(Tracked::new(frame, h.start + 10, words(&inside), false));
        }
    }
    let udp_in_use = frame[l.udp_check] != 0 || frame[l.udp_check + 1] != 0;
    if udp_in_use && !spans.is_empty() {
        out.push(Tracked::new(frame, l.udp_check, words(spans), true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::Rng;

    /// A random IPv6/UDP frame with a correct checksum.
    fn frame6(rng: &mut Rng, payload_len: usize) -> Vec<u8> {
        let udp_len = ((8 + payload_len) as u16).to_be_bytes();
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0, udp_len[0], udp_len[1], 17, 64]);
        f.extend_from_slice(&rng.bytes(32 + 4)); // addresses, ports
        f.extend_from_slice(&[udp_len[0], udp_len[1], 0, 0]);
        f.extend_from_slice(&rng.bytes(payload_len));
        let c = full6(&f);
        f[60..62].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn full6(f: &[u8]) -> u16 {
        let mut seg = f[54..].to_vec();
        seg[6..8].copy_from_slice(&[0, 0]);
        udp6(
            f[22..38].try_into().expect("src"),
            f[38..54].try_into().expect("dst"),
            &seg,
        )
    }

    /// Random spans: the source's low bytes and a few payload fields (odd
    /// and even offsets, odd and even lengths).
    fn spans(rng: &mut Rng, len: usize) -> Vec<Range<usize>> {
        let source_tail = 22 + 1 + rng.below(15)..38;
        let mut s = vec![source_tail];
        for _ in 0..1 + rng.below(4) {
            let start = 62 + rng.below(len - 62 - 20);
            s.push(start..start + 1 + rng.below(17));
        }
        s
    }

    #[test]
    fn eqn3_matches_a_full_recomputation() {
        let mut rng = Rng::new(0x5eed);
        for _ in 0..2000 {
            let n = 2 + 2 * rng.below(40);
            let data = rng.bytes(n);
            let check = checksum(&data);
            let mut changed = data.clone();
            let ws: Vec<usize> = (0..data.len())
                .step_by(2)
                .filter(|_| rng.chance(30))
                .collect();
            for &w in &ws {
                changed[w..w + 2].copy_from_slice(&rng.bytes(2));
            }
            let inc = update(check, sum_words(&data, &ws), sum_words(&changed, &ws));
            assert_eq!(inc, checksum(&changed), "{data:?} -> {changed:?}");
        }
    }

    #[test]
    fn tracked_udp6_checksums_match_a_full_recomputation() {
        let mut rng = Rng::new(6);
        for _ in 0..2000 {
            let payload_len = 40 + rng.below(400);
            let template = frame6(&mut rng, payload_len);
            let spans = spans(&mut rng, template.len());
            let t = tracked(&template, &spans);
            assert_eq!(t.len(), 1, "the UDP checksum");
            let mut f = template.clone();
            for s in &spans {
                let new = rng.bytes(s.len());
                f[s.clone()].copy_from_slice(&new);
            }
            t[0].apply(&mut f);
            assert_eq!(u16::from_be_bytes([f[60], f[61]]), full6(&f));
        }
    }

    #[test]
    fn an_ipv4_header_checksum_follows_the_source() {
        let mut rng = Rng::new(4);
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[30..34].copy_from_slice(&[198, 51, 100, 1]);
        f[26..30].copy_from_slice(&[10, 64, 0, 0]);
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let host_bytes = 27..30;
        let t = tracked(&f, &[host_bytes]);
        assert_eq!(t.len(), 1, "the header checksum (UDP checksum 0)");
        for _ in 0..5000 {
            let mut g = f.clone();
            g[27..30].copy_from_slice(&rng.bytes(3));
            t[0].apply(&mut g);
            assert_eq!(checksum(&g[14..34]), 0, "{g:?}");
        }
    }

    #[test]
    fn words_cover_odd_spans_once() {
        assert_eq!(words(&[3..6, 5..9, 20..21]), vec![2, 4, 6, 8, 20]);
        assert!(words(&[]).is_empty());
    }

    #[test]
    fn zero_udp_checksums_are_sent_as_ffff() {
        assert_eq!(udp_nonzero(0), 0xffff);
        assert_eq!(udp_nonzero(0x1234), 0x1234);
    }
}
