//! The writer task: packs control frames and stream data round-robin
//! into padded records, seals them outside the lock (or, over a braid,
//! only fills in their length), writes them; sends keepalive PINGs when
//! idle.

use super::records::Seal;
use super::session::{Control, Shared, State, CONTROL_BOUND, RECORD_LIMIT, SEND_BUFFER};
use super::SessionConfig;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};
use wire::faketls::MAX_PLAINTEXT;
use wire::tunnel::frame::{self, Frame, FRAME_HEADER};

/// Plaintext bytes the writer packs before writing to the socket.
const BATCH: usize = 128 * 1024;

pub(crate) async fn run<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut wr: W,
    mut sealer: Seal,
    cfg: SessionConfig,
) {
    let mut seed = [0u8; 8];
    crate::random::fill(&mut seed);
    let mut rng = u64::from_le_bytes(seed) | 1;
    let mut out = Vec::with_capacity(BATCH + MAX_PLAINTEXT + 64);
    let mut records: Vec<std::ops::Range<usize>> = Vec::with_capacity(BATCH / 256 + 2);
    let mut last_write = Instant::now();
    let mut pings = 0u64;
    let why = loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break "cancelled",
            _ = shared.writer.notified() => {}
            _ = sleep_until(last_write + cfg.keepalive) => {
                pings += 1;
                let mut st = shared.lock();
                // A peer that lets nothing through gets no pile of PINGs.
                if st.control.len() < CONTROL_BOUND {
                    st.push_control(Control::Ping(pings));
                }
            }
        }
        let mut failed = None;
        loop {
            out.clear();
            records.clear();
            let layout = (sealer.header(), sealer.trailer());
            if let Err(why) = build_batch(&shared, &mut out, &mut records, &mut rng, layout) {
                failed = Some(why);
                break;
            }
            if out.is_empty() {
                break;
            }
            // Seal outside the lock, so streams can keep writing meanwhile.
            if let Some(why) = records
                .iter()
                .find_map(|r| sealer.seal(&mut out[r.clone()]).err())
            {
                failed = Some(why);
                break;
            }
            let written = tokio::select! {
                _ = shared.cancel.cancelled() => Err("cancelled"),
                r = wr.write_all(&out) => r.map_err(|_| "write error"),
            };
            if let Err(why) = written {
                failed = Some(why);
                break;
            }
            last_write = Instant::now();
        }
        if let Some(why) = failed {
            break why;
        }
    };
    shared.close(why);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wr.shutdown()).await;
}

fn next_random(rng: &mut u64) -> u32 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng >> 32) as u32
}

/// Packs pending frames into padded records appended to `out` (up to
/// [`BATCH`] plaintext bytes), each laid out with `layout`'s header and
/// trailer room for [`Seal::seal`]; `records` gets each record's range.
fn build_batch(
    shared: &Shared,
    out: &mut Vec<u8>,
    records: &mut Vec<std::ops::Range<usize>>,
    rng: &mut u64,
    (header, trailer): (usize, usize),
) -> Result<(), &'static str> {
    let mut st = shared.lock();
    if st.closed {
        return Err("closed");
    }
    while out.len() < BATCH {
        let start = out.len();
        out.resize(start + header, 0);
        let body = start + header;
        let limit = body + RECORD_LIMIT;
        // Control frames first, so an OPEN precedes its data.
        let queued = st.control.len();
        while let Some(c) = st.control.front() {
            if out.len() + c.encoded_len() > limit {
                break;
            }
            let (c, credit) = st.pop_control().expect("front exists");
            if !matches!(c, Control::Window { .. }) || credit > 0 {
                c.encode(credit, out);
            }
        }
        if queued > CONTROL_BOUND && st.control.len() <= CONTROL_BOUND {
            shared.reader.notify_one();
        }
        if let Some(v) = st.pong.take() {
            if out.len() + FRAME_HEADER + 8 <= limit {
                Frame::Pong(v).encode(out);
            } else {
                st.pong = Some(v);
            }
        }
        // Stream data round-robin, one record's worth at a time.
        let mut rounds = st.data_ready.len();
        while rounds > 0 && out.len() + FRAME_HEADER < limit {
            rounds -= 1;
            let Some(id) = st.data_ready.pop_front() else {
                break;
            };
            let State { slots, mux, .. } = &mut *st;
            let Some(slot) = slots.get_mut(&id) else {
                continue;
            };
            slot.in_ready = false;
            let room = limit - out.len() - FRAME_HEADER;
            let n = slot.send.len().min(room);
            if n > 0 {
                let was_full = slot.send.len() >= SEND_BUFFER;
                frame::encode_data_header(id, n, out);
                let (a, b) = slot.send.as_slices();
                let from_a = a.len().min(n);
                out.extend_from_slice(&a[..from_a]);
                out.extend_from_slice(&b[..n - from_a]);
                slot.send.drain(..n);
                if was_full || slot.send.is_empty() {
                    if let Some(w) = slot.write_waker.take() {
                        w.wake();
                    }
                }
            }
            if slot.send.is_empty()
                && slot.fin_requested
                && !slot.fin_sent
                && out.len() + FRAME_HEADER <= limit
            {
                slot.fin_sent = true;
                if mux.fin(id) {
                    Frame::Fin { stream: id }.encode(out);
                }
                if let Some(w) = slot.write_waker.take() {
                    w.wake();
                }
            }
            st.mark_ready(id);
        }
        if out.len() == body {
            out.truncate(start);
            break;
        }
        frame::pad_within(out, body, next_random(rng), RECORD_LIMIT);
        out.resize(out.len() + trailer, 0);
        records.push(start..out.len());
        if st.control.is_empty() && st.data_ready.is_empty() && st.pong.is_none() {
            break;
        }
    }
    Ok(())
}
