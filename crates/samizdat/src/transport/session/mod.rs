//! Session state, the reader and writer tasks, and the session handles.

use super::braid::BraidIo;
use super::records::{Open, Seal};
use super::stream::Stream;
use super::SessionConfig;
use crate::sync::Locked;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use wire::tunnel::frame::{Frame, Status, FRAME_HEADER};
use wire::tunnel::mux::{Mux, MuxConfig, OpenLimit, Role, INITIAL_WINDOW};
use wire::tunnel::{Destination, Established};

/// Bytes a stream may have waiting to be sent (besides its credit limit).
pub(crate) const SEND_BUFFER: usize = 64 * 1024;
/// Largest record plaintext the session writes: a little under TLS's
/// limit, so that a whole record of the session fits in one record of the
/// lane carrying it (`wire::tunnel::lanes`) with its framing (under a
/// throttle, a record split across two lane records would wait for both).
/// The same on a connection of its own, so both kinds pad alike.
pub(crate) const RECORD_LIMIT: usize = wire::tunnel::lanes::INNER_PLAINTEXT;
/// Control frames queued beyond which the server's reader stops taking the
/// client's frames until the writer sent some (a client that never lets us
/// send must not grow the queue by sending more: RESETs of streams that
/// ended, say). REPLYs are bounded by the stream limit besides (a refused
/// stream counts until its REPLY is written) and WINDOWs by one per stream.
/// The client's reader never pauses, so the two ends cannot wait for each
/// other.
pub(crate) const CONTROL_BOUND: usize = 256;
/// Shortest keepalive and dead-peer timer honoured.
const MIN_TIMER: std::time::Duration = std::time::Duration::from_millis(50);

/// Why an open failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamOpenError {
    /// The server answered with this status.
    #[error("open refused: {0:?}")]
    Refused(Status),
    /// Already at `max_streams`, or the stream ids are used up.
    #[error("too many streams on this session")]
    TooManyStreams,
    /// The session is closed.
    #[error("session closed")]
    Closed,
}

impl StreamOpenError {
    /// The status code the server sent (7, general failure, for local
    /// errors).
    pub fn status(&self) -> Status {
        match self {
            StreamOpenError::Refused(s) => *s,
            _ => Status::GeneralFailure,
        }
    }
}

/// A control frame waiting for the writer.
#[derive(Debug)]
pub(crate) enum Control {
    Open {
        stream: u32,
        dest: Destination,
        first: Vec<u8>,
    },
    Reply {
        stream: u32,
        status: Status,
    },
    /// The credit is in [`State::windows`] (one pending WINDOW per stream).
    Window {
        stream: u32,
    },
    Reset {
        stream: u32,
    },
    Ping(u64),
}

impl Control {
    /// The frame this queued control becomes; a WINDOW's credit is kept
    /// apart (in [`State::windows`]) and given here.
    fn frame(&self, credit: u32) -> Frame<'_> {
        match self {
            Control::Open {
                stream,
                dest,
                first,
            } => Frame::Open {
                stream: *stream,
                dest: dest.clone(),
                first,
            },
            Control::Reply { stream, status } => Frame::Reply {
                stream: *stream,
                status: *status,
            },
            Control::Window { stream } => Frame::Window {
                stream: *stream,
                credit,
            },
            Control::Reset { stream } => Frame::Reset { stream: *stream },
            Control::Ping(v) => Frame::Ping(*v),
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.frame(0).encoded_len()
    }

    /// Appends the frame, with `credit` for a WINDOW.
    pub(crate) fn encode(&self, credit: u32, out: &mut Vec<u8>) {
        self.frame(credit).encode(out)
    }
}

/// The bytes and wakers of one stream (the protocol state is in the mux).
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Received, not yet read; at most the window.
    pub(crate) recv: VecDeque<u8>,
    pub(crate) recv_fin: bool,
    pub(crate) reset: bool,
    /// Credited bytes not yet sent; at most [`SEND_BUFFER`].
    pub(crate) send: VecDeque<u8>,
    pub(crate) fin_requested: bool,
    pub(crate) fin_sent: bool,
    pub(crate) in_ready: bool,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    pub(crate) reply: Option<oneshot::Sender<Status>>,
}

impl Slot {
    pub(crate) fn wake(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

/// A stream the peer opened, before the application looked at it.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) stream: u32,
    pub(crate) dest: Destination,
    pub(crate) first: Vec<u8>,
}

pub(crate) struct State {
    pub(crate) mux: Mux,
    pub(crate) slots: HashMap<u32, Slot>,
    pub(crate) control: VecDeque<Control>,
    /// Credit of the WINDOW queued for each stream.
    pub(crate) windows: HashMap<u32, u32>,
    pub(crate) data_ready: VecDeque<u32>,
    pub(crate) pong: Option<u64>,
    pub(crate) incoming: Option<mpsc::Sender<Offer>>,
    pub(crate) closed: bool,
}

impl State {
    /// Queues `stream` for the writer if it has data or a FIN to send.
    pub(crate) fn mark_ready(&mut self, stream: u32) {
        if let Some(slot) = self.slots.get_mut(&stream) {
            let has_work = !slot.send.is_empty() || (slot.fin_requested && !slot.fin_sent);
            if has_work && !slot.in_ready {
                slot.in_ready = true;
                self.data_ready.push_back(stream);
            }
        }
    }

    pub(crate) fn push_control(&mut self, c: Control) {
        self.control.push_back(c);
    }

    /// The application read `n` bytes of `stream`: maybe grant credit.
    pub(crate) fn consumed(&mut self, stream: u32, n: usize) -> bool {
        let Some(credit) = self.mux.consumed(stream, n) else {
            return false;
        };
        match self.windows.get_mut(&stream) {
            // A WINDOW for the stream is queued already: it carries both.
            Some(queued) => {
                *queued = queued.saturating_add(credit);
                false
            }
            None => {
                self.windows.insert(stream, credit);
                self.control.push_back(Control::Window { stream });
                true
            }
        }
    }

    /// Takes the next control frame for the writer (with a WINDOW's
    /// credit), accounting for what it frees.
    pub(crate) fn pop_control(&mut self) -> Option<(Control, u32)> {
        let c = self.control.pop_front()?;
        let credit = match &c {
            Control::Window { stream } => self.windows.remove(stream).unwrap_or(0),
            Control::Reply { status, .. } if *status != Status::Ok => {
                self.mux.reply_written();
                0
            }
            _ => 0,
        };
        Some((c, credit))
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) writer: Notify,
    /// Wakes the reader paused on a full control queue.
    pub(crate) reader: Notify,
    /// Whether the reader pauses on a full control queue (the server: the
    /// client always reads, so both ends never wait for each other).
    pub(crate) backpressure: bool,
    pub(crate) cancel: CancellationToken,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    /// Ends the session: wakes every stream, fails pending opens, stops
    /// both tasks.
    pub(crate) fn close(&self, why: &str) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        tracing::debug!(reason = why, "tunnel session closed");
        for slot in st.slots.values_mut() {
            slot.reply = None;
            slot.wake();
        }
        st.incoming = None;
        st.control.clear();
        st.windows.clear();
        st.data_ready.clear();
        drop(st);
        self.cancel.cancel();
    }
}

/// Held by every application handle; the last one to go ends the session.
pub(crate) struct Lifeline(pub(crate) Arc<Shared>);

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.0.close("all handles dropped");
    }
}

/// One multiplexed session over a connection. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    life: Arc<Lifeline>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("closed", &self.is_closed())
            .field("streams", &self.active_streams())
            .finish()
    }
}

/// Streams the client opens on a server session.
pub struct Incoming {
    rx: mpsc::Receiver<Offer>,
    life: Arc<Lifeline>,
}

/// A stream the client opened: accept or refuse it.
pub struct IncomingStream {
    stream: u32,
    dest: Destination,
    first: Vec<u8>,
    life: Option<Arc<Lifeline>>,
}

impl std::fmt::Debug for IncomingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingStream")
            .field("stream", &self.stream)
            .field("destination", &self.dest)
            .finish_non_exhaustive()
    }
}

fn start<T>(
    io: T,
    leftover: Vec<u8>,
    (seal, open): (Seal, Open),
    cfg: SessionConfig,
    role: Role,
) -> (Session, Option<Incoming>)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mux = Mux::new(
        role,
        MuxConfig {
            window: cfg.window,
            max_streams: cfg.max_streams,
        },
    );
    let (tx, rx) = mpsc::channel(cfg.max_streams.max(1));
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            mux,
            slots: HashMap::new(),
            control: VecDeque::new(),
            windows: HashMap::new(),
            data_ready: VecDeque::new(),
            pong: None,
            incoming: (role == Role::Server).then_some(tx),
            closed: false,
        }),
        writer: Notify::new(),
        reader: Notify::new(),
        backpressure: role == Role::Server,
        cancel: CancellationToken::new(),
    });
    // Zero timers would spin or kill the session at once.
    let cfg = SessionConfig {
        keepalive: cfg.keepalive.max(MIN_TIMER),
        dead_after: cfg.dead_after.max(MIN_TIMER),
        ..cfg
    };
    let (rd, wr) = tokio::io::split(io);
    tokio::spawn(super::reader::run(shared.clone(), rd, open, leftover, cfg));
    tokio::spawn(super::writer::run(shared.clone(), wr, seal, cfg));
    let life = Arc::new(Lifeline(shared));
    let incoming = (role == Role::Server).then(|| Incoming {
        rx,
        life: life.clone(),
    });
    (Session { life }, incoming)
}

impl Session {
    /// Runs the client end over `io` after the handshake; `leftover` are
    /// bytes already read past the server flight. Its records are sealed
    /// with `est`'s keys.
    pub fn client<T>(io: T, leftover: Vec<u8>, est: Established, cfg: SessionConfig) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        start(io, leftover, sealed(est), cfg, Role::Client).0
    }

    /// Runs the client end over a braid. Its records are not sealed
    /// again: the lanes seal everything they carry.
    pub fn client_on_braid(io: BraidIo, cfg: SessionConfig) -> Session {
        start(io, Vec::new(), on_braid(), cfg, Role::Client).0
    }

    /// Runs the server end over a braid (see
    /// [`Session::client_on_braid`]).
    pub fn server_on_braid(io: BraidIo, cfg: SessionConfig) -> (Session, Incoming) {
        let (session, incoming) = start(io, Vec::new(), on_braid(), cfg, Role::Server);
        (session, incoming.expect("server sessions have an Incoming"))
    }

    /// Runs the server end over `io` after the server flight was written;
    /// `leftover` are bytes already read past the ClientHello.
    pub fn server<T>(
        io: T,
        leftover: Vec<u8>,
        est: Established,
        cfg: SessionConfig,
    ) -> (Session, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (session, incoming) = start(io, leftover, sealed(est), cfg, Role::Server);
        (session, incoming.expect("server sessions have an Incoming"))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.life.0
    }

    /// Opens a stream to `dest` with `first` data and waits for the
    /// server's REPLY.
    ///
    /// The part of `first` that fits in the OPEN frame (up to about
    /// 16 KiB) travels with it; the rest is written once the stream is
    /// connected.
    pub async fn open(&self, dest: Destination, first: Vec<u8>) -> Result<Stream, StreamOpenError> {
        let shared = self.shared();
        let (tx, rx) = oneshot::channel();
        let mut first = first;
        let tail;
        let stream = {
            let mut st = shared.lock();
            if st.closed {
                return Err(StreamOpenError::Closed);
            }
            let in_open = first
                .len()
                .min(RECORD_LIMIT - FRAME_HEADER - dest.encoded_len())
                .min(INITIAL_WINDOW as usize);
            // Both limits (streams, ids) mean: use another session.
            let stream = st
                .mux
                .open(in_open)
                .map_err(|_: OpenLimit| StreamOpenError::TooManyStreams)?;
            let mut head = first;
            tail = head.split_off(in_open);
            first = head;
            let slot = Slot {
                reply: Some(tx),
                ..Slot::default()
            };
            st.slots.insert(stream, slot);
            st.push_control(Control::Open {
                stream,
                dest,
                first,
            });
            st.consumed(stream, 0);
            st.mark_ready(stream);
            stream
        };
        shared.writer.notify_one();
        let mut stream_handle = Stream::new(self.life.clone(), stream);
        match rx.await {
            Ok(Status::Ok) => {
                if !tail.is_empty() {
                    use tokio::io::AsyncWriteExt;
                    stream_handle
                        .write_all(&tail)
                        .await
                        .map_err(|_| StreamOpenError::Closed)?;
                }
                Ok(stream_handle)
            }
            Ok(status) => Err(StreamOpenError::Refused(status)),
            Err(_) => {
                let closed = shared.lock().closed;
                Err(if closed {
                    StreamOpenError::Closed
                } else {
                    StreamOpenError::Refused(Status::GeneralFailure)
                })
            }
        }
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.shared().cancel.is_cancelled()
    }

    /// Waits until the session ends.
    pub async fn closed(&self) {
        self.shared().cancel.cancelled().await
    }

    /// Streams open on the session.
    pub fn active_streams(&self) -> usize {
        self.shared().lock().mux.active()
    }

    /// Bytes queued in the session's stream buffers (received and not yet
    /// read, written and not yet sent).
    pub fn buffered(&self) -> usize {
        let st = self.shared().lock();
        st.slots.values().map(|s| s.recv.len() + s.send.len()).sum()
    }

    /// Ends the session now.
    pub fn close(&self) {
        self.shared().close("closed by the application");
    }
}

/// The record layer of a session on a connection of its own.
fn sealed(est: Established) -> (Seal, Open) {
    let (sealer, opener) = est.into_split();
    (Seal::Aead(sealer), Open::Aead(opener))
}

/// The record layer of a session over a braid: lengths only.
fn on_braid() -> (Seal, Open) {
    (Seal::Braid, Open::Braid(Box::default()))
}

/// For [`Stream`]: the shared state behind a lifeline.
pub(crate) fn shared_of(life: &Lifeline) -> &Arc<Shared> {
    &life.0
}

mod incoming;

#[cfg(test)]
mod tests;
