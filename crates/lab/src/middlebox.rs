//! The listener and the per-flow driver: accept, judge the flow at connect
//! and on the client's first payload, then pump bytes while downstream
//! hooks run (see `pump`). All sockets are loopback; the destination the
//! techniques judge is only a label ([`crate::Policy::destination`]).

use crate::pump::{self, arm_reset, read_some, write_all, End};
use crate::{Events, Flow, Policy, Verdict};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::faketls::client_hello::{self, Probe};

/// Largest first payload buffered for [`crate::Technique::on_first_payload`]:
/// one full TLS record (16 KiB of plaintext and its 5-byte header).
pub const FIRST_PAYLOAD_MAX: usize = 16 * 1024 + 5;
/// How long after the client's first byte the rest of a TLS record is
/// waited for before the hooks see what arrived.
pub const FIRST_PAYLOAD_WAIT: Duration = Duration::from_secs(1);
/// Server → client bytes are judged in segments of at most this size (a
/// TCP segment at a 1500-byte MTU), so a freeze or a cut lands within one
/// segment of its threshold, as on a packet-level middlebox.
pub const SEGMENT: usize = 1448;

/// A running middlebox. Stops (and ends every flow) when dropped or when
/// its [`CancellationToken`] is cancelled.
pub struct Middlebox {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// What the techniques did.
    events: Events,
    /// Ends the listener and every flow.
    stop: CancellationToken,
}

impl Middlebox {
    /// The counters of this middlebox (a cheap clone stays readable after
    /// the middlebox is dropped).
    pub fn events(&self) -> &Events {
        &self.events
    }
    /// The token that stops the middlebox.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

impl Drop for Middlebox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Shared by the listener and its flows.
struct Ctx {
    /// The techniques and the destination label.
    policy: Policy,
    /// The real server (loopback).
    upstream: SocketAddr,
    /// Counters.
    events: Events,
    /// Flow ids.
    next_id: AtomicU64,
}

/// Listens on `listen` (use port 0 for any) and forwards every accepted
/// connection to `upstream` under `policy`. Must run inside a tokio
/// runtime.
pub async fn start(
    listen: SocketAddr,
    upstream: SocketAddr,
    policy: Policy,
) -> io::Result<Middlebox> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let events = Events::default();
    let ctx = Arc::new(Ctx {
        policy,
        upstream,
        events: events.clone(),
        next_id: AtomicU64::new(0),
    });
    tokio::spawn(accept_loop(listener, ctx, stop.clone()));
    Ok(Middlebox { addr, events, stop })
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((client, peer)) => {
                let (ctx, stop) = (ctx.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = run_flow(&ctx, client, peer) => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
            // Out of descriptors and the like: back off, keep listening.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// What a judged flow does next.
enum Next {
    Go,
    Blackhole,
    Reset,
}

/// Applies a connect or first-payload verdict to the flow's plan.
fn plan(
    events: &Events,
    flow: &Flow,
    (verdict, who): (Verdict, Option<&'static str>),
    rate: &mut Option<u64>,
    frozen: &mut bool,
) -> Next {
    if let Some(who) = who {
        events.record(who, verdict, flow);
    }
    match verdict {
        Verdict::Pass => Next::Go,
        Verdict::Throttle { bytes_per_sec } => {
            *rate = Some(rate.map_or(bytes_per_sec, |r| r.min(bytes_per_sec)));
            Next::Go
        }
        Verdict::Freeze => {
            *frozen = true;
            Next::Go
        }
        Verdict::Drop => Next::Blackhole,
        Verdict::Reset => Next::Reset,
    }
}

async fn run_flow(ctx: &Ctx, client: TcpStream, peer: SocketAddr) {
    let _ = client.set_nodelay(true);
    ctx.events.flow_opened();
    let mut flow = Flow {
        id: ctx.next_id.fetch_add(1, Ordering::Relaxed),
        client: peer,
        server: ctx.policy.destination.unwrap_or(ctx.upstream),
        sni: None,
        tls: false,
    };
    let (mut rate, mut frozen) = (None, false);
    let judged = ctx.policy.judge(|t| t.on_connect(&flow));
    match plan(&ctx.events, &flow, judged, &mut rate, &mut frozen) {
        Next::Go => {}
        // Nothing reaches the server: the SYN was eaten.
        Next::Blackhole => return blackhole(&client, None).await,
        Next::Reset => return arm_reset(&client),
    }
    let Ok(server) = TcpStream::connect(ctx.upstream).await else {
        // The server refused: the client gets the reset it would get.
        return arm_reset(&client);
    };
    let _ = server.set_nodelay(true);

    let Ok(first) = read_first(&client).await else {
        return arm_reset(&server);
    };
    if !first.is_empty() {
        if let Probe::Record { len } = client_hello::probe(&first) {
            flow.tls = true;
            flow.sni = first
                .get(..len)
                .and_then(|r| client_hello::parse(r).ok())
                .and_then(|h| h.sni);
        }
        let judged = ctx.policy.judge(|t| t.on_first_payload(&flow, &first));
        match plan(&ctx.events, &flow, judged, &mut rate, &mut frozen) {
            Next::Go => {}
            Next::Blackhole => return blackhole(&client, Some(&server)).await,
            Next::Reset => {
                arm_reset(&server);
                return arm_reset(&client);
            }
        }
        if write_all(&server, &first).await.is_err() {
            return arm_reset(&client);
        }
    }
    let state = pump::State::new(&ctx.policy, &ctx.events, &flow, rate, frozen);
    match pump::relay(&client, &server, &state).await {
        End::Closed | End::Reset => {}
        End::Verdict(Verdict::Reset) => {
            arm_reset(&server);
            arm_reset(&client);
        }
        End::Verdict(_) => blackhole(&client, Some(&server)).await,
    }
}

/// Reads the client's first payload: a whole TLS record if the bytes start
/// one (bounded by [`FIRST_PAYLOAD_MAX`] and [`FIRST_PAYLOAD_WAIT`]), else
/// the first read. Empty if the client closed without sending.
async fn read_first(client: &TcpStream) -> io::Result<Vec<u8>> {
    let mut chunk = vec![0u8; FIRST_PAYLOAD_MAX];
    let n = read_some(client, &mut chunk).await?;
    let mut buf = chunk[..n].to_vec();
    let deadline = Instant::now() + FIRST_PAYLOAD_WAIT;
    while !buf.is_empty() && buf.len() < FIRST_PAYLOAD_MAX {
        let want = match client_hello::probe(&buf) {
            Probe::NotTls => break,
            Probe::Record { len } => len,
            Probe::NeedMore => FIRST_PAYLOAD_MAX,
        };
        if buf.len() >= want {
            break;
        }
        let room = FIRST_PAYLOAD_MAX - buf.len();
        match tokio::time::timeout_at(deadline, read_some(client, &mut chunk[..room])).await {
            Err(_) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
    Ok(buf)
}

/// Keeps the sockets open and forwards nothing, discarding what arrives,
/// until the client closes or resets (or the middlebox stops).
async fn blackhole(client: &TcpStream, server: Option<&TcpStream>) {
    let mut a = [0u8; 4096];
    let mut b = [0u8; 4096];
    let mut server_open = server.is_some();
    loop {
        tokio::select! {
            r = read_some(client, &mut a) => if !matches!(r, Ok(n) if n > 0) { return },
            r = async { read_some(server.expect("guarded"), &mut b).await }, if server_open => {
                server_open = matches!(r, Ok(n) if n > 0);
            }
        }
    }
}
