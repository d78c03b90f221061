//! Memory one link holder controls: attacks by a real authenticated
//! client (built here from `wire`'s sans-io pieces and the client's
//! handshake) against the real `samizdat serve`, whose resident memory
//! must stay within the documented per-user budget (`docs/transport.md`,
//! "Limits per user") while another user keeps fetching through it.
//!
//! - (a) a client that never acknowledges and keeps opening refused
//!   streams;
//! - (b) many streams to a loopback sink that accepts and never reads;
//! - (c) one-byte pieces filling the reorder window;
//! - (d) many sessions for one user.
//!
//! Everything is on 127.0.0.1; every loop is bounded in count and time.

mod common;

use common::apps::{self, ClientOptions, ClientProc};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use wire::link::{Endpoint, Link};
use wire::tunnel::frame::Frame;
use wire::tunnel::lanes::{self, LaneFrame, Opening, SessionSecret, WINDOW};
use wire::tunnel::{Destination, Opener, Sealer};

/// The documented per-user budget (`docs/transport.md`).
const BUDGET: u64 = 64 << 20;
/// The second user's key (the first is `common::KEY`).
const OTHER_KEY: &str = "5f3a9c0e7b21d4486ac2e91f03b7d655";

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// The server with two users, loopback egress allowed, and extra flags.
async fn server(extra: &[&str]) -> (common::Proxy, Link, Link) {
    let mut args = vec!["--egress-allow", "127.0.0.0/8", "--secret", OTHER_KEY];
    args.extend_from_slice(extra);
    let proxy = common::start(&args).await;
    let endpoint = Endpoint::direct("127.0.0.1".to_string(), proxy.addr.port());
    let mut links: Vec<Link> = Vec::new();
    for line in proxy.stdout.iter().map(|l| l.trim()) {
        if line.starts_with("samizdat://") {
            let mut link = Link::parse(line).expect("the printed link parses");
            link.servers = vec![endpoint.clone()];
            if !links.iter().any(|l| l.secret.0 == link.secret.0) {
                links.push(link);
            }
        }
    }
    let key = |hex: &str| -> [u8; 16] { hex::decode(hex).unwrap().try_into().unwrap() };
    let find = |k: [u8; 16]| {
        links
            .iter()
            .find(|l| l.secret.0 == k)
            .cloned()
            .unwrap_or_else(|| panic!("no link printed for a user: {:#?}", proxy.stdout))
    };
    let (attacker, other) = (find(key(common::KEY)), find(key(OTHER_KEY)));
    (proxy, attacker, other)
}

/// The other user: a real `samizdat client` fetching through the server.
struct Bystander {
    client: ClientProc,
    web: SocketAddr,
}

impl Bystander {
    async fn start(link: &Link) -> Bystander {
        let web = apps::web_server().await;
        let client = ClientProc::start(link, ClientOptions::default());
        let b = Bystander { client, web };
        b.fetch().await;
        b
    }

    /// 256 KiB through the server, within 20 s.
    async fn fetch(&self) {
        let n = 256 * 1024;
        let got = tokio::time::timeout(Duration::from_secs(20), async {
            let (code, s) =
                apps::socks_connect(self.client.socks, "127.0.0.1", self.web.port()).await;
            assert_eq!(code, 0, "the other user's stream was refused");
            apps::get(s, n).await
        })
        .await
        .expect("the other user fetches within 20 s");
        assert!(got == apps::body(n), "the other user's body arrived intact");
    }
}

/// The default `transport_limits.streams_per_user`.
const STREAMS_PER_USER: u64 = 112;
/// The default `transport_limits.sessions_per_user`.
const SESSIONS_PER_USER: usize = 4;

/// A loopback server that accepts and never reads; keeps the sockets and
/// counts them.
async fn sink() -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            n.fetch_add(1, Ordering::Relaxed);
            held.push(s);
        }
    });
    (addr, count)
}

/// One attacking session: the real handshake, a NEW lane opening, then
/// whatever lane and session frames the attack wants. It reads the
/// server's records (so TCP keeps flowing) but never acknowledges them.
struct Attacker {
    wr: WriteHalf<samizdat::dial::BoxIo>,
    lane: Sealer,
    /// Next braid offset to send.
    next: u64,
    /// What the server reports consumed (from its ACKs).
    consumed: Arc<AtomicU64>,
    /// The server closed the lane.
    ended: Arc<AtomicBool>,
    /// The last PONG value seen.
    pong: Arc<AtomicU64>,
    pings: u64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Attacker {
    async fn connect(link: &Link) -> Attacker {
        let template = wire::browser::Template::builtin(wire::browser::Browser::Chrome);
        let conn = samizdat::client::connect::connect(
            &link.servers[0],
            link,
            template,
            Duration::from_secs(10),
        )
        .await
        .expect("the attacker's handshake");
        let (mut lane, opener) = conn.established.into_split();
        let mut bytes = [0u8; 32];
        samizdat::random::fill(&mut bytes);
        let secret = SessionSecret::new(bytes);
        let (rd, mut wr) = tokio::io::split(conn.io);
        let consumed = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(AtomicBool::new(false));
        let pong = Arc::new(AtomicU64::new(0));
        let reader = tokio::spawn(read_acks(
            rd,
            opener,
            conn.leftover,
            consumed.clone(),
            ended.clone(),
            pong.clone(),
        ));
        let mut pt = Vec::new();
        lanes::encode_opening(
            &Opening::New {
                secret,
                lane: 0,
                budget: None,
            },
            &mut pt,
        );
        let mut out = Vec::new();
        lane.seal_record(&pt, &mut out).unwrap();
        wr.write_all(&out).await.unwrap();
        Attacker {
            wr,
            lane,
            next: 0,
            consumed,
            ended,
            pong,
            pings: 0,
            reader,
        }
    }

    /// Waits (20 s at most) until the server handled every lane frame sent
    /// so far: a PING's PONG comes back after them.
    async fn sync(&mut self) {
        self.pings += 1;
        let v = self.pings;
        let mut f = Vec::new();
        LaneFrame::Ping(v).encode(&mut f);
        if !self.send_lane_frames(&[f]).await {
            return;
        }
        let until = Instant::now() + Duration::from_secs(20);
        while self.pong.load(Ordering::Relaxed) < v && !self.ended() {
            assert!(Instant::now() < until, "no PONG from the server in 20 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Sends lane records made of `frames` (each a whole lane frame).
    async fn send_lane_frames(&mut self, frames: &[Vec<u8>]) -> bool {
        let mut out = Vec::new();
        let mut pt = Vec::new();
        for f in frames {
            if pt.len() + f.len() > wire::faketls::MAX_PLAINTEXT {
                self.lane.seal_record(&pt, &mut out).unwrap();
                pt.clear();
            }
            pt.extend_from_slice(f);
        }
        if !pt.is_empty() {
            self.lane.seal_record(&pt, &mut out).unwrap();
        }
        self.wr.write_all(&out).await.is_ok()
    }

    /// Sends session frames (`plaintext`, at most one session record's
    /// worth) as one session record in the braid stream, waiting for the
    /// server's ACKs to open the window first (for at most `patience`).
    /// `false` if the window stayed shut or the lane ended.
    async fn send_session(&mut self, plaintext: &[u8], patience: Duration) -> bool {
        let mut record = Vec::new();
        lanes::encode_inner(plaintext, &mut record).unwrap();
        let end = self.next + record.len() as u64;
        let until = Instant::now() + patience;
        while end > self.consumed.load(Ordering::Relaxed) + WINDOW as u64 {
            if self.ended() || Instant::now() > until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut frames = Vec::new();
        for piece in record.chunks(8 * 1024) {
            let mut f = Vec::new();
            LaneFrame::Seg {
                offset: self.next,
                data: piece,
            }
            .encode(&mut f);
            self.next += piece.len() as u64;
            frames.push(f);
        }
        self.send_lane_frames(&frames).await
    }
}

/// Reads the server's lane records; notes its ACKs; never answers.
async fn read_acks(
    mut rd: ReadHalf<samizdat::dial::BoxIo>,
    mut opener: Opener,
    leftover: Vec<u8>,
    consumed: Arc<AtomicU64>,
    ended: Arc<AtomicBool>,
    pong: Arc<AtomicU64>,
) {
    let mut pending = &leftover[..];
    'outer: loop {
        while !pending.is_empty() {
            let n = opener.feed(pending);
            pending = &pending[n..];
            if n == 0 {
                break;
            }
        }
        loop {
            match opener.open_next() {
                Ok(Some(pt)) => {
                    for f in lanes::lane_frames(pt).flatten() {
                        match f {
                            LaneFrame::Ack { consumed: c, .. } => {
                                consumed.fetch_max(c, Ordering::Relaxed);
                            }
                            LaneFrame::Pong(v) => {
                                pong.fetch_max(v, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
        if !pending.is_empty() {
            continue;
        }
        match rd.read(opener.spare()).await {
            Ok(0) | Err(_) => break,
            Ok(n) => opener.advance(n),
        }
    }
    ended.store(true, Ordering::Relaxed);
}

fn open_frame(stream: u32, dest: SocketAddr, first: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    Frame::Open {
        stream,
        dest: Destination::Addr(dest),
        first,
    }
    .encode(&mut f);
    f
}

fn data_frame(stream: u32, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    Frame::Data { stream, data }.encode(&mut f);
    f
}

/// Opens `streams` streams (ids from `first_id`) to `dest` and sends each
/// its whole initial window; stops early when the server stops taking
/// bytes (`false` then).
async fn fill_streams(a: &mut Attacker, first_id: u32, streams: u32, dest: SocketAddr) -> bool {
    let chunk = vec![0x5au8; 8 * 1024];
    let per_stream = wire::tunnel::mux::INITIAL_WINDOW as usize;
    for i in 0..streams {
        let id = first_id + 2 * i;
        let mut pt = open_frame(id, dest, &chunk);
        let mut sent = chunk.len();
        while sent < per_stream {
            let f = data_frame(id, &chunk);
            if pt.len() + f.len() > lanes::INNER_PLAINTEXT {
                if !a.send_session(&pt, Duration::from_secs(3)).await {
                    return false;
                }
                pt.clear();
            }
            pt.extend_from_slice(&f);
            sent += chunk.len();
        }
        if !a.send_session(&pt, Duration::from_secs(3)).await {
            return false;
        }
    }
    true
}

fn assert_within_budget(what: &str, base: u64, peak: u64) {
    let grew = peak.saturating_sub(base);
    eprintln!(
        "{what}: server RSS {} MiB -> peak {} MiB (+{} MiB)",
        base >> 20,
        peak >> 20,
        grew >> 20
    );
    assert!(
        grew <= BUDGET,
        "{what}: the server's memory grew by {} MiB, over the {} MiB per-user budget",
        grew >> 20,
        BUDGET >> 20
    );
}

/// OPENs per session record in attack (a).
const OPENS_PER_RECORD: usize = 200;
/// OPENs attack (a) tries at most.
const MAX_OPENS: u64 = 450_000;

/// (a) Never acknowledge, and open refused streams without end: the
/// REPLYs can never be sent, and used to pile up without limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_refused_opens_stay_within_budget() {
    let (proxy, link, other) = server(&[]).await;
    let pid = proxy.child.id();
    let bystander = Bystander::start(&other).await;
    let base = rss(pid);
    // The egress policy refuses 0.0.0.0/8 at once, without a packet.
    let refused: SocketAddr = ([0, 0, 0, 0], 9).into();
    let mut a = Attacker::connect(&link).await;
    let mut id = 1u32;
    let mut opens = 0u64;
    let mut peak = base;
    let started = Instant::now();
    // Up to 450,000 OPENs (6 MB; ~30 MiB of queued REPLYs on a server that
    // does not bound them), in small batches, each taken before the next
    // goes (the server's answers must not fall more than the stream limit
    // behind). Stops when the server stops taking bytes.
    'attack: while opens < MAX_OPENS && started.elapsed() < Duration::from_secs(20) {
        let mut pt = Vec::with_capacity(OPENS_PER_RECORD * 14);
        for _ in 0..OPENS_PER_RECORD {
            pt.extend_from_slice(&open_frame(id, refused, &[]));
            id += 2;
            opens += 1;
        }
        if !a.send_session(&pt, Duration::from_secs(3)).await {
            break;
        }
        let until = Instant::now() + Duration::from_secs(3);
        while a.next > a.consumed.load(Ordering::Relaxed) + 16 * 1024 && !a.ended() {
            if Instant::now() > until {
                break 'attack;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        if opens % 50_000 < OPENS_PER_RECORD as u64 {
            peak = peak.max(rss(pid));
        }
    }
    a.sync().await;
    peak = peak.max(rss(pid));
    eprintln!(
        "sent {opens} OPENs in {:?}; lane ended: {}",
        started.elapsed(),
        a.ended()
    );
    bystander.fetch().await;
    assert_within_budget("never-acknowledged refused opens", base, peak);
    // Its send window full, the server answers nothing more; it must stop
    // taking OPENs soon after (1 MiB of REPLYs, its receive window and a
    // small queue: some 220,000), not hold REPLYs for every one.
    assert!(
        opens < MAX_OPENS,
        "the server took all {opens} OPENs it could not answer"
    );
}

/// (b) Many streams to a loopback sink that never reads, each sent its
/// whole window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_to_a_sink_that_never_reads_stay_within_budget() {
    let (proxy, link, other) = server(&[]).await;
    let pid = proxy.child.id();
    let bystander = Bystander::start(&other).await;
    let (sink, sockets) = sink().await;
    let base = rss(pid);
    let mut a = Attacker::connect(&link).await;
    // 320 streams × 256 KiB: 80 MiB held for a sink that never reads.
    let all = fill_streams(&mut a, 1, 320, sink).await;
    a.sync().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peak = rss(pid);
    let sockets = sockets.load(Ordering::Relaxed);
    eprintln!("all 320 streams filled: {all}; egress sockets: {sockets}");
    bystander.fetch().await;
    assert_within_budget("streams to a sink that never reads", base, peak);
    assert!(
        sockets <= STREAMS_PER_USER,
        "one user has {sockets} egress sockets open, over the {STREAMS_PER_USER} per user"
    );
}

/// (c) One-byte pieces at every other offset, then large pieces into the
/// gaps: a reorder window of 1 MiB of data in a million pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_pieces_in_the_reorder_window_stay_within_budget() {
    let (proxy, link, other) = server(&[]).await;
    let pid = proxy.child.id();
    let bystander = Bystander::start(&other).await;
    let base = rss(pid);
    let mut a = Attacker::connect(&link).await;
    let window = WINDOW as u64;
    let mut frames = Vec::new();
    // Byte 0 never comes, so nothing is ever in order.
    let mut offset = 1u64;
    let mut alive = true;
    while offset < window && alive {
        let mut f = Vec::new();
        LaneFrame::Seg {
            offset,
            data: &[0x17],
        }
        .encode(&mut f);
        frames.push(f);
        offset += 2;
        if frames.len() == 16 * 1024 {
            alive = a.send_lane_frames(&frames).await && !a.ended();
            frames.clear();
        }
    }
    alive = alive && a.send_lane_frames(&frames).await;
    frames.clear();
    // Large pieces over the gaps (one-byte gaps between stored bytes).
    let big = vec![0x17u8; 8 * 1024];
    let mut offset = 2u64;
    while offset + big.len() as u64 <= window && alive {
        let mut f = Vec::new();
        LaneFrame::Seg { offset, data: &big }.encode(&mut f);
        frames.push(f);
        offset += big.len() as u64;
        if frames.len() == 16 {
            alive = a.send_lane_frames(&frames).await && !a.ended();
            frames.clear();
        }
    }
    let _ = a.send_lane_frames(&frames).await;
    a.sync().await;
    let peak = rss(pid);
    eprintln!("the lane took every piece: {}", alive && !a.ended());
    bystander.fetch().await;
    assert_within_budget("one-byte reorder pieces", base, peak);
}

/// (d) Many sessions for one user, each holding a few full streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_of_one_user_stay_within_budget() {
    let (proxy, link, other) = server(&[]).await;
    let pid = proxy.child.id();
    let bystander = Bystander::start(&other).await;
    let (sink, _) = sink().await;
    let base = rss(pid);
    let mut sessions = Vec::new();
    let mut peak = base;
    // 24 sessions × 16 streams × 256 KiB: 96 MiB.
    for _ in 0..24 {
        let mut a = Attacker::connect(&link).await;
        fill_streams(&mut a, 1, 16, sink).await;
        a.sync().await;
        sessions.push(a);
        peak = peak.max(rss(pid));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak = peak.max(rss(pid));
    let alive = sessions.iter().filter(|a| !a.ended()).count();
    eprintln!("attacker sessions still open: {alive} of 24");
    bystander.fetch().await;
    assert_within_budget("many sessions of one user", base, peak);
    assert!(
        alive <= SESSIONS_PER_USER,
        "{alive} sessions of one user still open, over the {SESSIONS_PER_USER} per user"
    );
}

/// A session whose client acknowledges nothing while the server has data
/// in flight is closed after the ack deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_acknowledges_nothing_is_closed() {
    let (_proxy, link, _) = server(&["--transport-ack-deadline", "2s"]).await;
    let mut a = Attacker::connect(&link).await;
    // Each PING is answered with a PONG the client never acknowledges.
    let mut pt = Vec::new();
    Frame::Ping(1).encode(&mut pt);
    assert!(a.send_session(&pt, Duration::from_secs(3)).await);
    let started = Instant::now();
    while !a.ended() && started.elapsed() < Duration::from_secs(15) {
        // The lane stays busy: the server hears from the client all along.
        a.sync().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        a.ended(),
        "the session that acknowledged nothing for 15 s is still open"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed after {took:?}, before the deadline"
    );
}

/// An egress stream on which nothing moves either way is closed after
/// the idle timeout: the destination sees the connection end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_egress_stream_is_closed() {
    let (_proxy, _, other) = server(&["--transport-stream-idle-timeout", "1s"]).await;
    let client = ClientProc::start(&other, ClientOptions::default());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (code, _app) = apps::socks_connect(client.socks, "127.0.0.1", port).await;
    assert_eq!(code, 0);
    let (mut egress, _) = tokio::time::timeout(Duration::from_secs(10), l.accept())
        .await
        .expect("the server connects")
        .unwrap();
    let started = Instant::now();
    let mut b = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(10), egress.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the idle egress socket is still open after 10 s: {r:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
}
