//! The session's record layer, either of two: AEAD-sealed records over a
//! connection of its own, or unsealed `len`-headed records over a braid,
//! whose lanes seal every record they carry (`wire::tunnel::lanes`).
//! The reader and writer tasks see one interface; which one a session
//! uses is fixed when it starts ([`super::Session::client_on_braid`]).

use wire::tunnel::lanes::{finish_inner, InnerReader, INNER_HEADER};
use wire::tunnel::record::{RecordError, HEADER_LEN, TAG_LEN};
use wire::tunnel::{Opener, Sealer};

/// What the writer does to a record it laid out.
pub(crate) enum Seal {
    /// AES-256-GCM under the session's own keys (`[5][plaintext][16]`).
    Aead(Sealer),
    /// Its length only (`[2][plaintext]`): the lane sealing it is the
    /// one and only seal.
    Braid,
}

impl Seal {
    /// Bytes to reserve before a record's plaintext.
    pub(crate) fn header(&self) -> usize {
        match self {
            Seal::Aead(_) => HEADER_LEN,
            Seal::Braid => INNER_HEADER,
        }
    }

    /// Bytes to reserve after it.
    pub(crate) fn trailer(&self) -> usize {
        match self {
            Seal::Aead(_) => TAG_LEN,
            Seal::Braid => 0,
        }
    }

    /// Finishes a record laid out with [`Seal::header`] and
    /// [`Seal::trailer`] around its plaintext.
    pub(crate) fn seal(&mut self, record: &mut [u8]) -> Result<(), &'static str> {
        match self {
            Seal::Aead(s) => s.seal_in_place(record).map_err(|e| match e {
                RecordError::Exhausted => "record counter exhausted",
                _ => "record sealing failed",
            }),
            Seal::Braid => finish_inner(record).map_err(|_| "session record too long"),
        }
    }
}

/// Where the reader cuts records out of what it read.
pub(crate) enum Open {
    /// Opens sealed records.
    Aead(Opener),
    /// Cuts the braid's stream at its length headers.
    Braid(Box<InnerReader>),
}

impl Open {
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        match self {
            Open::Aead(o) => o.spare(),
            Open::Braid(r) => r.spare(),
        }
    }

    pub(crate) fn advance(&mut self, n: usize) {
        match self {
            Open::Aead(o) => o.advance(n),
            Open::Braid(r) => r.advance(n),
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) -> usize {
        match self {
            Open::Aead(o) => o.feed(data),
            Open::Braid(r) => r.feed(data),
        }
    }

    /// The next complete record's plaintext, or `None` if more bytes are
    /// needed.
    pub(crate) fn next(&mut self) -> Result<Option<&[u8]>, &'static str> {
        match self {
            Open::Aead(o) => o.open_next().map_err(|_| "bad record"),
            Open::Braid(r) => r.next_record().map_err(|_| "bad session record"),
        }
    }
}
