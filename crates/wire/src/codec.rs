//! The one byte reader every binary parser in `wire` (and the lab's JA3/JA4
//! reader) is written with.
//!
//! Before this module there were five private readers, each with its own
//! bounds checks; a bug fixed in one stayed in the other four. [`Reader`]
//! reads big-endian integers, fixed arrays and TLS-style length-prefixed
//! vectors from a slice and answers `None` when the slice is too short, so a
//! parser never indexes past the end and never panics on hostile input.
//! Callers that report errors turn the `None` into their own error naming
//! the field (`r.vec16().ok_or(Error::Truncated("cipher_suites"))?`).
//!
//! A reader also knows its offset in the outermost buffer ([`Reader::offset`])
//! so parsers that *locate* fields rather than copy them
//! ([`crate::tunnel::hello::locate`]) can use the same type.

/// Bytes left after a structure that must fill its container exactly
/// (rustls' `read_bytes` rule: a length prefix that disagrees with its
/// contents is an error, not something to skip over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} trailing bytes")]
pub struct TrailingData(pub usize);

/// A cursor over a byte slice. Every read either returns the value and
/// advances, or returns `None` and leaves the reader where it was.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the outermost buffer.
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, offsets counted from its start.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader::at(buf, 0)
    }

    /// A reader over `buf`, which starts `base` bytes into some larger
    /// buffer, so [`offset`](Self::offset) answers in that buffer's terms.
    pub fn at(buf: &'a [u8], base: usize) -> Reader<'a> {
        Reader { buf, pos: 0, base }
    }

    /// Offset of the next byte in the outermost buffer.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(drop)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Some(out)
    }

    /// Everything left; the reader is then empty.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    /// A big-endian 24-bit integer (TLS handshake lengths).
    pub fn u24(&mut self) -> Option<u32> {
        let [a, b, c] = self.array()?;
        Some(u32::from_be_bytes([0, a, b, c]))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// A vector with a one-byte length prefix (TLS `<0..2^8-1>`).
    pub fn vec8(&mut self) -> Option<&'a [u8]> {
        self.prefixed(1).map(|r| r.buf)
    }

    /// A vector with a two-byte length prefix (TLS `<0..2^16-1>`).
    pub fn vec16(&mut self) -> Option<&'a [u8]> {
        self.prefixed(2).map(|r| r.buf)
    }

    /// A vector with a one-byte length prefix, as a reader that keeps
    /// counting offsets in the outer buffer.
    pub fn sub8(&mut self) -> Option<Reader<'a>> {
        self.prefixed(1)
    }

    /// A vector with a two-byte length prefix, as a reader that keeps
    /// counting offsets in the outer buffer.
    pub fn sub16(&mut self) -> Option<Reader<'a>> {
        self.prefixed(2)
    }

    /// The next `n` bytes as a reader that keeps counting offsets in the
    /// outer buffer.
    pub fn sub(&mut self, n: usize) -> Option<Reader<'a>> {
        let base = self.offset();
        Some(Reader::at(self.take(n)?, base))
    }

    /// The bytes this reader covers, read or not.
    pub fn as_slice(&self) -> &'a [u8] {
        self.buf
    }

    /// Succeeds only when every byte has been read.
    pub fn expect_end(&self) -> Result<(), TrailingData> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(TrailingData(n)),
        }
    }

    fn prefixed(&mut self, width: usize) -> Option<Reader<'a>> {
        let start = self.pos;
        let n = match width {
            1 => self.u8().map(usize::from),
            _ => self.u16().map(usize::from),
        };
        let sub = n.and_then(|n| self.sub(n));
        if sub.is_none() {
            self.pos = start;
        }
        sub
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_integers_big_endian() {
        let bytes = [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
        ];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(0x0203));
        assert_eq!(r.u24(), Some(0x040506));
        assert_eq!(r.u32(), Some(0x0708090a));
        assert_eq!(r.u64(), Some(0x0b0c0d0e0f101112));
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
        assert_eq!(r.expect_end(), Ok(()));
    }

    #[test]
    fn a_short_read_fails_and_leaves_the_reader_in_place() {
        let mut r = Reader::new(&[0, 5, 1, 2]);
        assert_eq!(r.vec16(), None, "length 5 overruns 2 bytes");
        assert_eq!(r.offset(), 0);
        assert_eq!(r.u32(), Some(0x00050102));
        let mut r = Reader::new(&[9]);
        assert_eq!(r.u16(), None);
        assert_eq!(r.array::<2>(), None);
        assert_eq!(r.take(usize::MAX), None, "no overflow on huge lengths");
        assert_eq!(r.u8(), Some(9));
    }

    #[test]
    fn expect_end_names_the_trailing_bytes() {
        let mut r = Reader::new(&[1, 2, 3]);
        r.u8();
        assert_eq!(r.expect_end(), Err(TrailingData(2)));
        assert_eq!(r.rest(), &[2, 3]);
        assert_eq!(r.expect_end(), Ok(()));
    }

    #[test]
    fn sub_readers_count_offsets_in_the_outer_buffer() {
        let bytes = [0xff, 0xff, 3, 7, 8, 9, 0, 1, 4];
        let mut r = Reader::at(&bytes[2..], 2);
        let mut inner = r.sub8().unwrap();
        assert_eq!(inner.offset(), 3);
        assert_eq!(inner.as_slice(), &[7, 8, 9]);
        inner.u8();
        assert_eq!(inner.offset(), 4);
        assert_eq!(r.vec16(), Some(&[4][..]));
        assert_eq!(r.offset(), bytes.len());
    }

    proptest! {
        #[test]
        fn vectors_round_trip(
            a in proptest::collection::vec(any::<u8>(), 0..255),
            b in proptest::collection::vec(any::<u8>(), 0..600),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut bytes = vec![a.len() as u8];
            bytes.extend(&a);
            bytes.extend((b.len() as u16).to_be_bytes());
            bytes.extend(&b);
            bytes.extend(&tail);
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.vec8(), Some(&a[..]));
            prop_assert_eq!(r.vec16(), Some(&b[..]));
            prop_assert_eq!(r.expect_end().is_err(), !tail.is_empty());
            prop_assert_eq!(r.rest(), &tail[..]);
        }

        #[test]
        fn never_panics_on_any_input(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            while r.vec8().is_some() || r.u16().is_some() || r.u8().is_some() {}
            prop_assert!(r.is_empty());
        }
    }
}
