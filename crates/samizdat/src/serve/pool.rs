//! Relay buffers borrowed only while bytes move.
//!
//! An idle connection must not hold a buffer (the memory goal is a few KB
//! per idle connection), yet large buffers are what makes a relay fast
//! (64 KiB moves 2.6× the bytes of 8 KiB per CPU-second). So a pump waits
//! for readiness without a buffer, borrows one here, and returns it as soon
//! as the read has been written on.

use std::sync::Mutex;

/// Size of one relay buffer: 64 KiB and a little more, so that four full
/// fake-TLS records (16,384 payload bytes after a 5-byte header) fit in
/// one, read with one vectored read and sent with one write.
pub const BUF_SIZE: usize = 4 * (wire::faketls::MAX_PLAINTEXT + 5);

/// A bounded free-list of buffers.
#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<Vec<Box<[u8]>>>,
    /// Free buffers kept for reuse; more are returned to the allocator.
    keep: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` idle buffers.
    pub fn new(keep: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// Borrows a buffer of [`BUF_SIZE`] bytes (contents unspecified).
    pub fn take(&self) -> Box<[u8]> {
        let reused = self.free.lock().map(|mut f| f.pop()).unwrap_or(None);
        reused.unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
    }

    /// Returns a buffer.
    pub fn give(&self, buf: Box<[u8]>) {
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.keep {
                free.push(buf);
            }
        }
    }

    /// Frees every idle buffer (after a crowd of connections has left, so
    /// that their memory can go back to the system).
    pub fn release(&self) {
        if let Ok(mut free) = self.free.lock() {
            *free = Vec::new();
        }
    }

    /// Idle buffers held right now.
    pub fn idle(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}
