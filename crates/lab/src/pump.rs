//! The byte pump of a judged flow: client → server with an optional rate
//! cap, server → client in segments that the downstream hooks judge
//! (throttle, freeze, drop, reset). A FIN is mirrored as a FIN and a reset
//! as a reset, as in `samizdat serve`'s relay; a frozen downstream
//! forwards nothing, its FIN included.

use crate::middlebox::SEGMENT;
use crate::{Events, Flow, Policy, Verdict};
use socket2::SockRef;
use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// Bytes read at once when unthrottled.
const BUF: usize = 16 * 1024;
/// Smallest read under a throttle (so a slow rate still moves whole
/// segments).
const MIN_THROTTLED_READ: usize = 512;

/// Reads what is there, waiting for readiness; the stream stays shared.
pub(crate) async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// Writes all of `data` using readiness, so the stream can be shared.
pub(crate) async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends FIN (errors ignored: the peer may be gone already).
pub(crate) fn shutdown_write(stream: &TcpStream) {
    let _ = SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

/// Makes the next close of `stream` send RST instead of FIN.
pub(crate) fn arm_reset(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Both directions closed (FIN).
    Closed,
    /// A side reset; the other was reset too.
    Reset,
    /// A downstream hook said [`Verdict::Drop`] or [`Verdict::Reset`].
    Verdict(Verdict),
}

/// The flow's judged state, shared by both directions of one task.
pub(crate) struct State<'a> {
    policy: &'a Policy,
    events: &'a Events,
    flow: &'a Flow,
    /// Bytes per second both ways; 0: no cap.
    rate: AtomicU64,
    /// Server → client bytes are discarded.
    frozen: AtomicBool,
}

impl<'a> State<'a> {
    pub(crate) fn new(
        policy: &'a Policy,
        events: &'a Events,
        flow: &'a Flow,
        rate: Option<u64>,
        frozen: bool,
    ) -> State<'a> {
        State {
            policy,
            events,
            flow,
            // A zero rate would mean "no cap" below: take it as 1 byte/s.
            rate: AtomicU64::new(rate.map_or(0, |r| r.max(1))),
            frozen: AtomicBool::new(frozen),
        }
    }

    fn read_cap(&self) -> usize {
        match self.rate.load(Ordering::Relaxed) {
            0 => BUF,
            r => ((r / 10) as usize).clamp(MIN_THROTTLED_READ, BUF),
        }
    }

    /// Waits as long as `n` bytes take at the rate cap.
    async fn pace(&self, n: usize) {
        let r = self.rate.load(Ordering::Relaxed);
        if r > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / r as f64)).await;
        }
    }
}

enum PumpEnd {
    Eof,
    Reset,
    Verdict(Verdict),
}

enum Read {
    Data(usize),
    End(PumpEnd),
}

/// One read from `src`, mirroring EOF (when `fin`) and resets onto `dst`.
async fn read(src: &TcpStream, dst: &TcpStream, buf: &mut [u8], fin: bool) -> Read {
    match read_some(src, buf).await {
        Ok(0) => {
            if fin {
                shutdown_write(dst);
            }
            Read::End(PumpEnd::Eof)
        }
        Ok(n) => Read::Data(n),
        Err(e) => {
            if is_reset(&e) {
                arm_reset(dst);
            }
            Read::End(PumpEnd::Reset)
        }
    }
}

async fn upstream(client: &TcpStream, server: &TcpStream, st: &State<'_>) -> PumpEnd {
    let mut buf = vec![0u8; BUF];
    loop {
        let cap = st.read_cap();
        let n = match read(client, server, &mut buf[..cap], true).await {
            Read::Data(n) => n,
            Read::End(e) => return e,
        };
        if write_all(server, &buf[..n]).await.is_err() {
            arm_reset(client);
            return PumpEnd::Reset;
        }
        st.pace(n).await;
    }
}

async fn downstream(server: &TcpStream, client: &TcpStream, st: &State<'_>) -> PumpEnd {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let cap = st.read_cap();
        let frozen = st.frozen.load(Ordering::Relaxed);
        let n = match read(server, client, &mut buf[..cap], !frozen).await {
            Read::Data(n) => n,
            Read::End(e) => return e,
        };
        if frozen {
            continue;
        }
        for seg in buf[..n].chunks(SEGMENT) {
            total += seg.len() as u64;
            let (verdict, who) = st.policy.judge(|t| t.on_downstream(st.flow, total));
            match verdict {
                Verdict::Pass => {}
                Verdict::Throttle { bytes_per_sec } => {
                    let old = st.rate.load(Ordering::Relaxed);
                    if old == 0 || bytes_per_sec < old {
                        st.rate.store(bytes_per_sec.max(1), Ordering::Relaxed);
                        st.events.record(who.expect("non-pass"), verdict, st.flow);
                    }
                }
                Verdict::Freeze => {
                    st.frozen.store(true, Ordering::Relaxed);
                    st.events.record(who.expect("non-pass"), verdict, st.flow);
                    break;
                }
                Verdict::Drop | Verdict::Reset => {
                    st.events.record(who.expect("non-pass"), verdict, st.flow);
                    return PumpEnd::Verdict(verdict);
                }
            }
            if write_all(client, seg).await.is_err() {
                arm_reset(server);
                return PumpEnd::Reset;
            }
            st.pace(seg.len()).await;
        }
    }
}

/// Relays until both directions closed, a side reset, or a downstream hook
/// ended the flow.
pub(crate) async fn relay(client: &TcpStream, server: &TcpStream, st: &State<'_>) -> End {
    let up = upstream(client, server, st);
    let down = downstream(server, client, st);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        let r = tokio::select! {
            r = &mut up, if !up_done => { up_done = true; r }
            r = &mut down, if !down_done => { down_done = true; r }
        };
        match r {
            PumpEnd::Eof if up_done && down_done => return End::Closed,
            PumpEnd::Eof => {}
            PumpEnd::Reset => return End::Reset,
            PumpEnd::Verdict(v) => return End::Verdict(v),
        }
    }
}
