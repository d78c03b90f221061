//! The reader task: reads into the record layer's bounded buffer, takes
//! complete records out and applies their frames to the stream table.

use super::records::Open;
use super::session::{Control, Offer, Shared, Slot, State, CONTROL_BOUND};
use super::SessionConfig;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::timeout;
use wire::tunnel::frame::{self, Status};
use wire::tunnel::mux::Event;

pub(crate) async fn run<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut rd: R,
    mut opener: Open,
    leftover: Vec<u8>,
    cfg: SessionConfig,
) {
    let why = read_loop(&shared, &mut rd, &mut opener, leftover, cfg).await;
    shared.close(why);
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Shared,
    rd: &mut R,
    opener: &mut Open,
    leftover: Vec<u8>,
    cfg: SessionConfig,
) -> &'static str {
    let mut pending = &leftover[..];
    loop {
        while !pending.is_empty() {
            let n = opener.feed(pending);
            pending = &pending[n..];
            if let Err(why) = drain_all(shared, opener).await {
                return why;
            }
        }
        if opener.spare().is_empty() {
            // Cannot happen (the buffer holds two largest records and is
            // drained after every read), but never mistake it for EOF.
            return "record buffer full";
        }
        let read = tokio::select! {
            _ = shared.cancel.cancelled() => return "cancelled",
            r = timeout(cfg.dead_after, rd.read(opener.spare())) => r,
        };
        match read {
            Err(_) => return "peer silent for dead_after",
            Ok(Ok(0)) => return "peer closed the connection",
            Ok(Err(_)) => return "read error",
            Ok(Ok(n)) => opener.advance(n),
        }
        if let Err(why) = drain_all(shared, opener).await {
            return why;
        }
    }
}

/// Opens every complete record and dispatches its frames, pausing while
/// the control queue is over [`CONTROL_BOUND`] (the peer's frames then wait
/// in the connection, and so in the peer's send window).
async fn drain_all(shared: &Shared, opener: &mut Open) -> Result<(), &'static str> {
    while drain(shared, opener)? {
        loop {
            if shared.lock().control.len() <= CONTROL_BOUND {
                break;
            }
            tokio::select! {
                _ = shared.cancel.cancelled() => return Err("cancelled"),
                _ = shared.reader.notified() => {}
            }
        }
    }
    Ok(())
}

/// Opens complete records and dispatches their frames; `Ok(true)` if it
/// stopped because the control queue is over [`CONTROL_BOUND`] (records
/// may be left).
fn drain(shared: &Shared, opener: &mut Open) -> Result<bool, &'static str> {
    let mut wake_writer = false;
    let mut full = false;
    loop {
        if shared.backpressure && shared.lock().control.len() > CONTROL_BOUND {
            full = true;
            break;
        }
        let Some(plaintext) = opener.next()? else {
            break;
        };
        let mut st = shared.lock();
        if st.closed {
            return Err("closed");
        }
        for frame in frame::frames(plaintext) {
            let frame = frame.map_err(|_| "malformed frame")?;
            let event = st.mux.handle(frame).map_err(|_| "protocol error")?;
            wake_writer |= dispatch(&mut st, event);
        }
    }
    if wake_writer || full {
        shared.writer.notify_one();
    }
    Ok(full)
}

/// Applies one event; `true` if the writer has something new to send.
fn dispatch(st: &mut State, event: Event<'_>) -> bool {
    match event {
        Event::Opened {
            stream,
            dest,
            first,
        } => {
            st.slots.insert(stream, Slot::default());
            let offer = Offer {
                stream,
                dest,
                first: first.to_vec(),
            };
            let sent = st.incoming.as_ref().map(|tx| tx.try_send(offer));
            if !matches!(sent, Some(Ok(()))) {
                st.slots.remove(&stream);
                if st.mux.reply(stream, Status::GeneralFailure) {
                    st.push_control(Control::Reply {
                        stream,
                        status: Status::GeneralFailure,
                    });
                }
                return true;
            }
            // Top up to a configured window larger than the initial one.
            st.consumed(stream, 0)
        }
        Event::Replied { stream, status } => {
            if let Some(slot) = st.slots.get_mut(&stream) {
                if let Some(tx) = slot.reply.take() {
                    let _ = tx.send(status);
                }
                if status != Status::Ok {
                    slot.reset = true;
                    slot.send.clear();
                    slot.wake();
                }
            }
            true
        }
        Event::Data { stream, data } => {
            if let Some(slot) = st.slots.get_mut(&stream) {
                slot.recv.extend(data);
                if let Some(w) = slot.read_waker.take() {
                    w.wake();
                }
            }
            false
        }
        Event::Credit { stream } => {
            if let Some(slot) = st.slots.get_mut(&stream) {
                if let Some(w) = slot.write_waker.take() {
                    w.wake();
                }
            }
            st.mark_ready(stream);
            true
        }
        Event::Fin { stream } => {
            if let Some(slot) = st.slots.get_mut(&stream) {
                slot.recv_fin = true;
                if let Some(w) = slot.read_waker.take() {
                    w.wake();
                }
            }
            false
        }
        Event::Reset { stream } => {
            if let Some(slot) = st.slots.get_mut(&stream) {
                slot.reset = true;
                slot.reply = None;
                slot.send.clear();
                slot.wake();
            }
            false
        }
        Event::Ping(v) => {
            st.pong = Some(v);
            true
        }
        Event::Pong(_) | Event::None => false,
    }
}
