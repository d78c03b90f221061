//! The session's records inside the braid's byte stream: `len u16 BE |
//! frames[len]`, with no seal of their own.
//!
//! Every lane record that carries braid bytes is sealed with that lane's
//! keys (`Sealer::seal_record`), and the braid delivers the stream whole
//! and in order or not at all, so a second AEAD layer here would only
//! encrypt every byte twice. What the session still needs from a record
//! layer is the frame boundaries: its frames never span records, and a
//! record is handed to the stream table only once complete. The length
//! header gives that; [`InnerReader`] cuts the stream back into records
//! from a bounded buffer, like [`Opener`](crate::tunnel::Opener) does for
//! sealed ones.
//!
//! The session pads these records as it pads sealed ones
//! ([`pad_within`](crate::tunnel::frame::pad_within)), and the lane that
//! carries them pads again; a full record with its header is exactly as
//! long as a full sealed one was ([`INNER_PLAINTEXT`]), so bulk lane
//! records keep their size.

use super::{INNER_HEADER, INNER_PLAINTEXT};
use crate::tunnel::read_buffer::ReadBuffer;
use std::fmt;

// A full record, with its SEG header, an ACK and a PONG, fits one lane
// record (so pieces need not split records when nothing forces them to).
const _: () = assert!(
    super::SEG_HEADER + INNER_HEADER + INNER_PLAINTEXT + super::ACK_LEN + super::PONG_LEN
        <= crate::faketls::MAX_PLAINTEXT
);

/// Bytes [`InnerReader`] buffers at most: four largest records (one read
/// can take about 64 KiB).
pub const INNER_BUFFER: usize = 4 * (INNER_HEADER + INNER_PLAINTEXT);

/// Why the session's record stream inside a braid is malformed. The
/// braid's peer authenticated, so this is a bug or an attack: the
/// session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InnerError {
    /// A record longer than [`INNER_PLAINTEXT`] (announced or laid out).
    #[error("session record of {0} bytes exceeds {INNER_PLAINTEXT}")]
    TooLong(usize),
    /// A record laid out without room for its header.
    #[error("session record shorter than its header")]
    NoHeader,
}

/// Fills in the header of a record laid out as `[INNER_HEADER bytes]
/// [plaintext]` (what the session's writer reserves while it encodes
/// frames, as it does for sealed records).
pub fn finish_inner(record: &mut [u8]) -> Result<(), InnerError> {
    let len = record
        .len()
        .checked_sub(INNER_HEADER)
        .ok_or(InnerError::NoHeader)?;
    if len > INNER_PLAINTEXT {
        return Err(InnerError::TooLong(len));
    }
    record[..INNER_HEADER].copy_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}

/// Appends one record carrying `plaintext` to `out`.
pub fn encode_inner(plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), InnerError> {
    if plaintext.len() > INNER_PLAINTEXT {
        return Err(InnerError::TooLong(plaintext.len()));
    }
    out.extend_from_slice(&(plaintext.len() as u16).to_be_bytes());
    out.extend_from_slice(plaintext);
    Ok(())
}

/// Cuts the braid's in-order bytes back into the session's records, from
/// a bounded buffer the driver reads into (the same interface as
/// [`Opener`](crate::tunnel::Opener): [`spare`](InnerReader::spare),
/// [`advance`](InnerReader::advance), [`next_record`](InnerReader::next_record)).
pub struct InnerReader {
    input: ReadBuffer,
}

impl fmt::Debug for InnerReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InnerReader")
            .field("buffered", &self.buffered())
            .finish()
    }
}

impl Default for InnerReader {
    fn default() -> InnerReader {
        InnerReader::new()
    }
}

impl InnerReader {
    /// An empty reader holding at most [`INNER_BUFFER`] bytes.
    pub fn new() -> InnerReader {
        InnerReader {
            input: ReadBuffer::new(INNER_BUFFER),
        }
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.input.buffered()
    }

    /// Free space to read into; call [`InnerReader::advance`] with the bytes
    /// written. Empty only while a complete record waits to be taken.
    pub fn spare(&mut self) -> &mut [u8] {
        self.input.spare()
    }

    /// Marks `n` bytes of [`InnerReader::spare`] as filled.
    pub fn advance(&mut self, n: usize) {
        self.input.advance(n)
    }

    /// Copies as much of `data` as fits; returns the bytes taken.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        self.input.feed(data)
    }

    /// The next complete record's plaintext (its frames), or `None` if
    /// more bytes are needed.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, InnerError> {
        let have = self.input.filled();
        let Some(header) = have.get(..INNER_HEADER) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len > INNER_PLAINTEXT {
            return Err(InnerError::TooLong(len));
        }
        if have.len() < INNER_HEADER + len {
            return Ok(None);
        }
        let body = self.input.start + INNER_HEADER..self.input.start + INNER_HEADER + len;
        self.input.start = body.end;
        Ok(Some(&self.input.buf[body]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::tunnel::frame::{frames, pad_within, Frame};
    use crate::tunnel::handshake::Established;
    use crate::tunnel::mux::Role;
    use crate::tunnel::record::{Opener, Sealer};

    /// A session record as the session's writer lays it out: DATA frames
    /// of stream `stream` with `chunks` bodies, then padding.
    fn session_record(stream: u32, chunks: &[&[u8]], random: u32) -> Vec<u8> {
        let mut out = vec![0; INNER_HEADER];
        for c in chunks {
            Frame::Data { stream, data: c }.encode(&mut out);
        }
        pad_within(&mut out, INNER_HEADER, random, INNER_PLAINTEXT);
        finish_inner(&mut out).unwrap();
        out
    }

    /// Bytes that cannot show up by chance: a counter pattern per record.
    fn marked(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (j * 7 + i * 13 + 1) as u8).collect()
    }

    /// Every session frame (DATA stream, body), in order, from `reader`.
    fn drain_frames(reader: &mut InnerReader, into: &mut Vec<(u32, Vec<u8>)>) {
        while let Some(pt) = reader.next_record().unwrap() {
            for f in frames(pt) {
                match f.unwrap() {
                    Frame::Data { stream, data } => into.push((stream, data.to_vec())),
                    Frame::Pad(_) => {}
                    other => panic!("unexpected frame {other:?}"),
                }
            }
        }
    }

    /// One lane with real record keys: (client sealer, server opener).
    fn lane_keys(n: u8) -> (Sealer, Opener) {
        let (c, s) = Established::pair_for_tests(&[n; 32]);
        (c.into_split().0, s.into_split().1)
    }

    #[test]
    fn session_bytes_are_sealed_once_by_their_lane() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        c.add_lane(0, None);
        s.add_lane(0, None);
        let (mut sealer, mut opener) = lane_keys(1);
        let bodies: Vec<Vec<u8>> = (0..6).map(|i| marked(i, 3000 + 997 * i)).collect();
        let mut stream = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            stream.extend(session_record(1, &[b], i as u32 * 77));
        }
        assert_eq!(c.write(&stream), stream.len());
        let mut wire = Vec::new();
        let mut lane_plaintexts = Vec::new();
        loop {
            let start = sealer.begin(&mut wire);
            if !c.next_record_into(0, true, 5, &mut wire) {
                wire.truncate(start);
                break;
            }
            lane_plaintexts.extend_from_slice(&wire[start + 5..]);
            sealer.finish(&mut wire, start).unwrap();
        }
        // Sealed on the wire: no session byte shows through.
        let needle = &bodies[3][..64];
        assert!(!wire.windows(64).any(|w| w == needle), "sealed on the wire");
        // Inside the lane's plaintext the session frames are in the clear:
        // one open of the lane record is all that stands between the wire
        // and the mux frames (a second seal would hide them here).
        let mut data_frame = Vec::new();
        Frame::Data {
            stream: 1,
            data: &bodies[3],
        }
        .encode(&mut data_frame);
        assert!(
            lane_plaintexts
                .windows(data_frame.len())
                .any(|w| w == &data_frame[..]),
            "the session's DATA frame is in the lane plaintext verbatim"
        );
        // And the lane seals no more bytes than the session wrote plus the
        // lane's own framing: nothing grows by a second tag per record.
        let records = sealer.records() as usize;
        assert_eq!(
            wire.len(),
            lane_plaintexts.len() + records * RECORD_OVERHEAD
        );
        assert!(lane_plaintexts.len() <= stream.len() + records * (SEG_HEADER + ACK_LEN) + 16_384);

        // The server opens each lane record once and reads the frames back.
        assert_eq!(opener.feed(&wire), wire.len());
        while let Some(pt) = opener.open_next().unwrap() {
            s.receive(0, pt).unwrap();
        }
        let mut reader = InnerReader::new();
        let mut got = Vec::new();
        while s.readable() > 0 {
            let n = s.read(reader.spare());
            reader.advance(n);
            drain_frames(&mut reader, &mut got);
        }
        let want: Vec<_> = bodies.iter().map(|b| (1u32, b.clone())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn session_records_cut_across_lanes_and_reordered_come_back_whole() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        // Tiny budgets: every session record is cut over several lanes.
        for id in 0..MAX_LANES as u32 {
            c.add_lane(id, None);
            s.add_lane(id, Some(MIN_BUDGET));
        }
        let bodies: Vec<Vec<u8>> = (0..3).map(|i| marked(i, 5000 + 1500 * i)).collect();
        let mut stream = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            let (x, y) = b.split_at(b.len() / 3);
            stream.extend(session_record(2 * i as u32 + 1, &[x, y], i as u32));
        }
        s.write(&stream);
        // Each lane's records, gathered lane by lane, then delivered in
        // reverse: later pieces of each session record arrive first.
        let mut sent: Vec<(u32, Vec<u8>)> = Vec::new();
        for id in 0..MAX_LANES as u32 {
            while let Some(pt) = s.next_record(id, false, 3) {
                sent.push((id, pt));
            }
        }
        assert!(
            sent.iter()
                .filter(|(_, pt)| lane_frames(pt).any(|f| matches!(f, Ok(LaneFrame::Seg { .. }))))
                .count()
                >= 8,
            "the records were cut into many pieces"
        );
        let mut reader = InnerReader::new();
        let mut got = Vec::new();
        for (i, (lane, pt)) in sent.iter().rev().enumerate() {
            c.receive(*lane, pt).unwrap();
            let n = c.read(reader.spare());
            reader.advance(n);
            drain_frames(&mut reader, &mut got);
            if i + 1 < sent.len() {
                // Until the first piece comes, nothing is handed on.
                assert!(got.is_empty(), "a record handed on before it was whole");
            }
        }
        let mut want = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            let (x, y) = b.split_at(b.len() / 3);
            want.push((2 * i as u32 + 1, x.to_vec()));
            want.push((2 * i as u32 + 1, y.to_vec()));
        }
        assert_eq!(got, want, "every frame once, whole, in order");
    }

    #[test]
    fn the_reader_cuts_records_at_their_headers_whatever_the_reads() {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (i, len) in [0usize, 1, 300, INNER_PLAINTEXT, 7, INNER_PLAINTEXT - 1]
            .into_iter()
            .enumerate()
        {
            let body = marked(i, len);
            encode_inner(&body, &mut stream).unwrap();
            want.push(body);
        }
        for step in [1, 2, 3, 1000, 70_000] {
            let mut r = InnerReader::new();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() || r.buffered() > 0 {
                let n = r.feed(&rest[..step.min(rest.len())]);
                rest = &rest[n..];
                let before = got.len();
                while let Some(pt) = r.next_record().unwrap() {
                    got.push(pt.to_vec());
                }
                if n == 0 && got.len() == before {
                    break;
                }
            }
            assert_eq!(got, want, "read {step} bytes at a time");
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn records_too_long_are_refused() {
        let mut r = InnerReader::new();
        let len = (INNER_PLAINTEXT + 1) as u16;
        r.feed(&len.to_be_bytes());
        assert_eq!(
            r.next_record(),
            Err(InnerError::TooLong(INNER_PLAINTEXT + 1))
        );
        let mut out = Vec::new();
        assert_eq!(
            encode_inner(&vec![0; INNER_PLAINTEXT + 1], &mut out),
            Err(InnerError::TooLong(INNER_PLAINTEXT + 1))
        );
        assert!(out.is_empty());
        assert_eq!(finish_inner(&mut [0]), Err(InnerError::NoHeader));
        let mut big = vec![0; INNER_HEADER + INNER_PLAINTEXT + 1];
        assert_eq!(
            finish_inner(&mut big),
            Err(InnerError::TooLong(INNER_PLAINTEXT + 1))
        );
    }

    #[test]
    fn a_full_session_record_fills_a_lane_record_as_a_sealed_one_did() {
        // 16,320 bytes of plaintext, a 5-byte header and a 16-byte tag.
        assert_eq!(INNER_HEADER + INNER_PLAINTEXT, 16_320 + RECORD_OVERHEAD);
    }
}
