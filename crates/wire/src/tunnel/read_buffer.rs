//! The read buffer of a record parser: bytes arrive at the end, whole
//! records leave from the front, and the rest moves back to the start only
//! when that frees room. Its size bounds what one peer can make us hold.

/// A fixed-size buffer with a filled window `start..end`.
pub(crate) struct ReadBuffer {
    pub(crate) buf: Box<[u8]>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl ReadBuffer {
    /// An empty buffer of `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> ReadBuffer {
        ReadBuffer {
            buf: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Bytes buffered and not yet taken.
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The filled window.
    pub(crate) fn filled(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Free space to read into (the window moves to the front first when
    /// that is what frees room); empty only when the buffer holds a
    /// window as large as itself.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start > 0
            && (self.start == self.end
                || self.end == self.buf.len()
                || self.start >= self.buf.len() / 2)
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`ReadBuffer::spare`] as filled.
    pub(crate) fn advance(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies as much of `data` as fits; returns the bytes taken.
    pub(crate) fn feed(&mut self, data: &[u8]) -> usize {
        let spare = self.spare();
        let n = spare.len().min(data.len());
        spare[..n].copy_from_slice(&data[..n]);
        self.advance(n);
        n
    }
}
