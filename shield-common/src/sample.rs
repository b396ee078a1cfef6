//! Sampled dropped packets (`shieldctl watch`): what the XDP program puts
//! in the `SAMPLES` ring buffer and the knobs in `SAMPLE_CFG`.
//!
//! Sampling is off (`every == 0`) unless someone watches: a dropped packet
//! then costs one array lookup. When on, every `every`-th drop on a CPU is
//! a candidate, at most `per_second` of them a second on each CPU are
//! copied (the first `SAMPLE_CAP` bytes of the frame), and a copy that
//! finds the ring buffer full is counted lost (`SampleState::lost`), so a
//! slow reader knows what it missed.

/// Bytes of a frame copied into a sample: enough for Ethernet, IP, UDP and
/// the SIP headers up to the User-Agent of a typical request.
pub const SAMPLE_CAP: u32 = 1024;

/// `SAMPLE_CFG[0]`, written by whoever watches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleConfig {
    /// 1 in `every` drops is a candidate; 0: sampling off.
    pub every: u32,
    /// Samples taken per second and CPU at most.
    pub per_second: u32,
}

/// `SAMPLE_STATE[0]`, per CPU: written by the kernel only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleState {
    /// Drops seen while sampling was on.
    pub seen: u64,
    /// Start of the current one-second window (monotonic coarse ns).
    pub window_ns: u64,
    /// Samples taken in the current window.
    pub taken: u64,
    /// Samples taken in all.
    pub sampled: u64,
    /// Samples that found the ring buffer full.
    pub lost: u64,
}

/// One sample in the `SAMPLES` ring buffer: header, then `caplen` bytes of
/// the frame (of `len` on the wire).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Monotonic coarse ns when the frame was dropped.
    pub time_ns: u64,
    pub ifindex: u32,
    /// The frame's length.
    pub len: u32,
    /// Bytes of it in `data`.
    pub caplen: u32,
    /// The drop reason (`Reason as u8`).
    pub reason: u8,
    pub _pad: [u8; 3],
    pub data: [u8; SAMPLE_CAP as usize],
}

/// Bytes before `data` in a [`Sample`].
pub const SAMPLE_HEADER: usize = 24;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (layout_without_padding).
    unsafe impl aya::Pod for super::SampleConfig {}
    // SAFETY: repr(C), Copy, integers only with explicit `_pad` fields:
    // every byte pattern is a value, no byte is padding (layout_without_padding).
    unsafe impl aya::Pod for super::SampleState {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_without_padding() {
        assert_eq!(core::mem::size_of::<SampleConfig>(), 8);
        assert_eq!(core::mem::size_of::<SampleState>(), 40);
        assert_eq!(core::mem::offset_of!(Sample, data), SAMPLE_HEADER);
        assert_eq!(core::mem::size_of::<Sample>(), SAMPLE_HEADER + SAMPLE_CAP as usize);
    }
}

/// A sample as read from the ring buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleView<'a> {
    pub time_ns: u64,
    pub ifindex: u32,
    pub len: u32,
    pub reason: u8,
    /// The captured bytes (`caplen` of them).
    pub data: &'a [u8],
}

impl<'a> SampleView<'a> {
    /// Reads a ring buffer record; `None` if it is not a whole sample or
    /// claims more bytes than it holds.
    pub fn parse(bytes: &'a [u8]) -> Option<SampleView<'a>> {
        if bytes.len() < SAMPLE_HEADER {
            return None;
        }
        let u32_at = |o: usize| u32::from_ne_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&bytes[..8]);
        let caplen = u32_at(16) as usize;
        if caplen > SAMPLE_CAP as usize || SAMPLE_HEADER + caplen > bytes.len() {
            return None;
        }
        Some(SampleView {
            time_ns: u64::from_ne_bytes(t),
            ifindex: u32_at(8),
            len: u32_at(12),
            reason: bytes[20],
            data: &bytes[SAMPLE_HEADER..SAMPLE_HEADER + caplen],
        })
    }
}
