//! The XDP program's reports to user space (offenders, refusals): ring
//! buffers, read from async code. The daemon gets records, never aya's
//! ring buffer or a raw pointer.

use std::io;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use aya::Pod;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A ring buffer the program reports through, not yet watched.
pub struct EventRing(pub(super) RingBuf<MapData>);

/// An [`EventRing`] watched by tokio's reactor.
pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
    /// At most this long between drains, should a wakeup ever be missed.
    poll: Duration,
}

impl EventRing {
    /// Watched from now on; needs a tokio runtime.
    pub fn reader(self, poll: Duration) -> io::Result<EventReader> {
        // SAFETY: the ring buffer owns its map fd and keeps it open,
        // unchanged, for as long as the AsyncFd owns the ring buffer.
        let fd = unsafe { AsyncFd::register_with_interest(self.0, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(EventReader { fd, poll })
    }

    /// The next record, copied out, without waiting (tests read this way).
    pub fn next(&mut self) -> Option<Vec<u8>> {
        self.0.next().map(|item| item.to_vec())
    }
}

impl EventReader {
    /// Waits until the kernel may have written (or `poll` passed), then
    /// drains every record there, each copied out. Often empty.
    pub async fn next_batch(&mut self) -> Vec<Vec<u8>> {
        // Readiness is cleared before draining, not after: the kernel only
        // wakes a reader that has caught up, so a record landing between a
        // drain and a late clear would never wake us again.
        if let Ok(Ok(mut guard)) = tokio::time::timeout(self.poll, self.fd.readable_mut()).await {
            guard.clear_ready();
        }
        let rb = self.fd.get_mut();
        let mut batch = Vec::new();
        while let Some(item) = rb.next() {
            batch.push(item.to_vec());
        }
        batch
    }

    /// [`next_batch`](Self::next_batch) read as `T`s; records shorter than
    /// a `T` are skipped.
    pub async fn next_records<T: Pod>(&mut self) -> Vec<T> {
        self.next_batch()
            .await
            .iter()
            .filter(|item| item.len() >= std::mem::size_of::<T>())
            // SAFETY: a whole `T` is there (length checked), and `T: Pod`
            // is valid for any bytes; the copy may be unaligned.
            .map(|item| unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) })
            .collect()
    }
}
