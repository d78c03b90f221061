//! The stream table of a session: ids, windows, states, and which frames
//! are legal when. Sans-io: the driver feeds every received frame to
//! [`Mux::handle`], asks before it sends, and encodes the frames itself.
//!
//! Flow control is per stream and per direction. A new stream starts with
//! [`INITIAL_WINDOW`] bytes of credit each way; a receiver configured with
//! a larger window grants the difference at once, and grants more
//! ([`Mux::consumed`]) as its application reads. A peer that sends beyond
//! its credit, opens more than `max_streams` streams, uses a stream id it
//! never opened or sends a frame a stream's state does not allow commits a
//! [`ProtocolError`], which ends the session.
//!
//! Stream ids: the client opens odd ids in increasing order (the server
//! opens none). A stream leaves the table when both FINs have passed, on a
//! RESET either way, or when an open is refused; frames that were already
//! in flight for a stream that left are ignored. A refused stream still
//! counts against `max_streams` until the driver reports its REPLY written
//! ([`Mux::reply_written`]): a peer that never lets us send cannot make
//! unsent REPLYs pile up beyond `max_streams`.

use super::destination::Destination;
use super::frame::{Frame, Status};
use std::collections::HashMap;

/// Credit each direction of a new stream starts with (protocol constant).
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Most credit a sender may hold on one stream.
pub const MAX_CREDIT: u64 = 1 << 31;

/// Which end of the session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens streams (odd ids).
    Client,
    /// Accepts streams.
    Server,
}

/// Limits of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuxConfig {
    /// Receive window per stream: the most bytes buffered for a stream the
    /// application is not reading. At least [`INITIAL_WINDOW`].
    pub window: u32,
    /// Most concurrent streams the peer may open (and we may open).
    pub max_streams: usize,
}

impl Default for MuxConfig {
    fn default() -> MuxConfig {
        MuxConfig {
            window: INITIAL_WINDOW,
            max_streams: 1024,
        }
    }
}

/// The peer broke the protocol; the session must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The peer sent more data than its credit.
    #[error("stream {0}: data beyond the window")]
    WindowExceeded(u32),
    /// The peer granted credit beyond [`MAX_CREDIT`].
    #[error("stream {0}: window overflow")]
    WindowOverflow(u32),
    /// The peer opened more streams than allowed.
    #[error("too many streams")]
    TooManyStreams,
    /// A frame for a stream id that was never opened.
    #[error("stream {0}: unknown stream")]
    UnknownStream(u32),
    /// An OPEN with a bad id (wrong parity, not increasing) or from a
    /// server.
    #[error("stream {0}: bad open")]
    BadOpen(u32),
    /// A frame the stream's state does not allow (data after FIN, a reply
    /// twice, a reply to an open we did not send).
    #[error("stream {0}: frame not allowed in this state")]
    BadState(u32),
}

/// Why we cannot open a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenLimit {
    /// Already at `max_streams`.
    #[error("too many streams")]
    TooManyStreams,
    /// The id space is used up; start a new session.
    #[error("stream ids exhausted")]
    IdsExhausted,
}

/// What a received frame means for the driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The peer opened a stream (server): accept or refuse it.
    Opened {
        /// Stream id.
        stream: u32,
        /// Destination.
        dest: Destination,
        /// First data (already counted against the window).
        first: &'a [u8],
    },
    /// Our open was answered; a non-Ok status removed the stream.
    Replied {
        /// Stream id.
        stream: u32,
        /// Status.
        status: Status,
    },
    /// Data to queue for the application.
    Data {
        /// Stream id.
        stream: u32,
        /// Bytes.
        data: &'a [u8],
    },
    /// More send credit on a stream.
    Credit {
        /// Stream id.
        stream: u32,
    },
    /// The peer finished sending on a stream.
    Fin {
        /// Stream id.
        stream: u32,
    },
    /// The peer aborted a stream (it left the table).
    Reset {
        /// Stream id.
        stream: u32,
    },
    /// Answer with a PONG of this value.
    Ping(u64),
    /// A PONG arrived.
    Pong(u64),
    /// Nothing to do (padding, a frame for a stream that already left).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// We opened it and wait for the reply.
    Opening,
    /// The peer opened it; we have not answered.
    Pending,
    /// Connected.
    Open,
}

#[derive(Debug)]
struct StreamState {
    local: bool,
    phase: Phase,
    /// Bytes we may still send.
    send_credit: u64,
    /// Bytes the peer may still send.
    recv_credit: u64,
    /// Bytes the application consumed that we have not granted back yet.
    unacked: u64,
    fin_sent: bool,
    fin_recv: bool,
}

/// The stream table of one session.
#[derive(Debug)]
pub struct Mux {
    role: Role,
    cfg: MuxConfig,
    streams: HashMap<u32, StreamState>,
    next_local: u32,
    max_remote: u32,
    local_count: usize,
    remote_count: usize,
    /// Streams we refused whose REPLY is not written yet.
    refusals: usize,
}

impl Mux {
    /// An empty table.
    pub fn new(role: Role, mut cfg: MuxConfig) -> Mux {
        cfg.window = cfg.window.max(INITIAL_WINDOW);
        cfg.max_streams = cfg.max_streams.max(1);
        Mux {
            role,
            cfg,
            streams: HashMap::new(),
            next_local: 1,
            max_remote: 0,
            local_count: 0,
            remote_count: 0,
            refusals: 0,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> MuxConfig {
        self.cfg
    }

    /// Streams in the table.
    pub fn active(&self) -> usize {
        self.streams.len()
    }

    /// Whether `stream` is in the table.
    pub fn contains(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    fn new_state(&self, local: bool) -> StreamState {
        StreamState {
            local,
            phase: if local {
                Phase::Opening
            } else {
                Phase::Pending
            },
            send_credit: INITIAL_WINDOW as u64,
            recv_credit: INITIAL_WINDOW as u64,
            unacked: (self.cfg.window - INITIAL_WINDOW) as u64,
            fin_sent: false,
            fin_recv: false,
        }
    }

    /// Allocates a stream we open, sending `first_len` bytes in the OPEN
    /// (the caller limits that to [`Mux::send_credit`] of a new stream,
    /// i.e. [`INITIAL_WINDOW`]). Then send the OPEN frame.
    pub fn open(&mut self, first_len: usize) -> Result<u32, OpenLimit> {
        if self.role != Role::Client {
            return Err(OpenLimit::IdsExhausted);
        }
        if self.local_count >= self.cfg.max_streams {
            return Err(OpenLimit::TooManyStreams);
        }
        let id = self.next_local;
        if id >= u32::MAX - 2 {
            return Err(OpenLimit::IdsExhausted);
        }
        self.next_local += 2;
        let mut s = self.new_state(true);
        s.send_credit -= (first_len as u64).min(s.send_credit);
        self.streams.insert(id, s);
        self.local_count += 1;
        Ok(id)
    }

    /// Whether `stream` was ever opened (by either side).
    fn seen(&self, stream: u32) -> bool {
        let local_parity = 1; // clients open odd ids
        match (self.role, stream % 2 == local_parity) {
            (Role::Client, true) => stream < self.next_local,
            (Role::Server, true) => stream <= self.max_remote,
            _ => false,
        }
    }

    fn remove(&mut self, stream: u32) {
        if let Some(s) = self.streams.remove(&stream) {
            if s.local {
                self.local_count -= 1;
            } else {
                self.remote_count -= 1;
            }
        }
    }

    fn maybe_retire(&mut self, stream: u32) {
        if self
            .streams
            .get(&stream)
            .is_some_and(|s| s.fin_sent && s.fin_recv)
        {
            self.remove(stream);
        }
    }

    /// Applies a received frame.
    pub fn handle<'a>(&mut self, frame: Frame<'a>) -> Result<Event<'a>, ProtocolError> {
        if let Frame::Open { stream, .. } = frame {
            return self.handle_open(frame, stream);
        }
        let stream = match &frame {
            Frame::Ping(v) => return Ok(Event::Ping(*v)),
            Frame::Pong(v) => return Ok(Event::Pong(*v)),
            Frame::Pad(_) | Frame::Open { .. } => return Ok(Event::None),
            Frame::Reply { stream, .. }
            | Frame::Data { stream, .. }
            | Frame::Window { stream, .. }
            | Frame::Fin { stream }
            | Frame::Reset { stream } => *stream,
        };
        let Some(s) = self.streams.get_mut(&stream) else {
            return if self.seen(stream) {
                Ok(Event::None)
            } else {
                Err(ProtocolError::UnknownStream(stream))
            };
        };
        match frame {
            Frame::Reply { status, .. } => {
                if !s.local || s.phase != Phase::Opening {
                    return Err(ProtocolError::BadState(stream));
                }
                if status == Status::Ok {
                    s.phase = Phase::Open;
                } else {
                    self.remove(stream);
                }
                Ok(Event::Replied { stream, status })
            }
            Frame::Data { data, .. } => {
                if s.fin_recv || (s.local && s.phase == Phase::Opening) {
                    return Err(ProtocolError::BadState(stream));
                }
                let n = data.len() as u64;
                if n > s.recv_credit {
                    return Err(ProtocolError::WindowExceeded(stream));
                }
                s.recv_credit -= n;
                Ok(Event::Data { stream, data })
            }
            Frame::Window { credit, .. } => {
                s.send_credit += credit as u64;
                if s.send_credit > MAX_CREDIT {
                    return Err(ProtocolError::WindowOverflow(stream));
                }
                Ok(Event::Credit { stream })
            }
            Frame::Fin { .. } => {
                if s.fin_recv || (s.local && s.phase == Phase::Opening) {
                    return Err(ProtocolError::BadState(stream));
                }
                s.fin_recv = true;
                self.maybe_retire(stream);
                Ok(Event::Fin { stream })
            }
            Frame::Reset { .. } => {
                self.remove(stream);
                Ok(Event::Reset { stream })
            }
            _ => unreachable!("connection-level frames returned above"),
        }
    }

    fn handle_open<'a>(
        &mut self,
        frame: Frame<'a>,
        stream: u32,
    ) -> Result<Event<'a>, ProtocolError> {
        let Frame::Open { dest, first, .. } = frame else {
            unreachable!("called for OPEN frames only")
        };
        if self.role != Role::Server || stream % 2 != 1 || stream <= self.max_remote {
            return Err(ProtocolError::BadOpen(stream));
        }
        if self.remote_count + self.refusals >= self.cfg.max_streams {
            return Err(ProtocolError::TooManyStreams);
        }
        let mut s = self.new_state(false);
        if first.len() as u64 > s.recv_credit {
            return Err(ProtocolError::WindowExceeded(stream));
        }
        s.recv_credit -= first.len() as u64;
        self.max_remote = stream;
        self.streams.insert(stream, s);
        self.remote_count += 1;
        Ok(Event::Opened {
            stream,
            dest,
            first,
        })
    }

    /// Answers a peer's open: `Ok` connects it, anything else removes it
    /// (it keeps counting against `max_streams` until
    /// [`Mux::reply_written`]). Send the REPLY frame. `false` if the stream
    /// is not pending.
    pub fn reply(&mut self, stream: u32, status: Status) -> bool {
        match self.streams.get_mut(&stream) {
            Some(s) if s.phase == Phase::Pending => {
                if status == Status::Ok {
                    s.phase = Phase::Open;
                } else {
                    self.remove(stream);
                    self.refusals += 1;
                }
                true
            }
            _ => false,
        }
    }

    /// The REPLY of a refused stream was written: it stops counting
    /// against `max_streams`.
    pub fn reply_written(&mut self) {
        self.refusals = self.refusals.saturating_sub(1);
    }

    /// Refused streams whose REPLY is not written yet.
    pub fn refusals(&self) -> usize {
        self.refusals
    }

    /// Bytes we may send on `stream` now.
    pub fn send_credit(&self, stream: u32) -> u64 {
        self.streams
            .get(&stream)
            .filter(|s| !s.fin_sent)
            .map_or(0, |s| s.send_credit)
    }

    /// We send `n` bytes of DATA (at most [`Mux::send_credit`]).
    pub fn sent(&mut self, stream: u32, n: usize) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.send_credit = s.send_credit.saturating_sub(n as u64);
        }
    }

    /// The application consumed `n` bytes of `stream`; returns the credit
    /// to grant in a WINDOW frame, if it is time (a quarter of the window
    /// consumed, or the initial top-up to a larger window).
    pub fn consumed(&mut self, stream: u32, n: usize) -> Option<u32> {
        let window = self.cfg.window as u64;
        let s = self.streams.get_mut(&stream)?;
        s.unacked += n as u64;
        if s.fin_recv || s.unacked == 0 {
            return None;
        }
        let top_up = s.recv_credit + s.unacked <= window && s.recv_credit == INITIAL_WINDOW as u64;
        if s.unacked >= (window / 4).max(1) || top_up {
            let grant = s.unacked.min(u32::MAX as u64);
            s.unacked -= grant;
            s.recv_credit += grant;
            return Some(grant as u32);
        }
        None
    }

    /// We send a FIN on `stream`. `false` if that is not allowed (unknown
    /// stream or FIN already sent).
    pub fn fin(&mut self, stream: u32) -> bool {
        match self.streams.get_mut(&stream) {
            Some(s) if !s.fin_sent => {
                s.fin_sent = true;
                self.maybe_retire(stream);
                true
            }
            _ => false,
        }
    }

    /// We abort `stream`: it leaves the table. `true` if it was there (send
    /// the RESET frame).
    pub fn reset(&mut self, stream: u32) -> bool {
        let was = self.streams.contains_key(&stream);
        self.remove(stream);
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(stream: u32) -> Frame<'static> {
        Frame::Open {
            stream,
            dest: Destination::Addr(([127, 0, 0, 1], 9).into()),
            first: &[],
        }
    }

    #[test]
    fn a_refused_stream_counts_until_its_reply_is_written() {
        let mut m = Mux::new(
            Role::Server,
            MuxConfig {
                window: INITIAL_WINDOW,
                max_streams: 2,
            },
        );
        for id in [1, 3] {
            m.handle(open(id)).unwrap();
            assert!(m.reply(id, Status::ConnectionRefused));
        }
        assert_eq!(m.active(), 0, "refused streams leave the table");
        assert_eq!(m.refusals(), 2);
        // Their REPLYs are not written: a third open is one too many.
        assert_eq!(m.handle(open(5)), Err(ProtocolError::TooManyStreams));
        m.reply_written();
        assert!(matches!(m.handle(open(7)), Ok(Event::Opened { .. })));
        assert!(m.reply(7, Status::Ok), "accepted streams count as streams");
        assert_eq!(m.refusals(), 1);
    }
}
