//! The measurements: bulk throughput, handshake rate, round-trip latency
//! and idle memory. Every loop is bounded in count and time.

use crate::client::{self, Command, Conn, Op, Proto, Route};
use crate::dc::Dc;
use crate::procfs;
use crate::system::Running;
use socket2::SockRef;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Hard limit on any one phase.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
/// Handshakes in flight while opening many connections.
const OPEN_CONCURRENCY: usize = 128;

/// Bytes moved (or handshakes made) with the wall and proxy CPU time spent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Work {
    /// Payload bytes or completed handshakes.
    pub count: u64,
    /// Wall time.
    pub wall: Duration,
    /// CPU time of the system under test.
    pub cpu: Duration,
    /// Connections that failed.
    pub errors: u64,
}

impl Work {
    /// Count per wall second.
    pub fn per_wall_sec(&self) -> f64 {
        self.count as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    /// Count per CPU second of the system under test.
    pub fn per_cpu_sec(&self) -> f64 {
        self.count as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

/// Which way bulk bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client → DC.
    Up,
    /// DC → client.
    Down,
}

/// Opens `n` connections with `cmd`, at most [`OPEN_CONCURRENCY`] at once.
pub async fn open_many(
    addr: SocketAddr,
    proto: &Proto,
    cmd: Command,
    n: usize,
) -> (Vec<Conn>, u64) {
    let proto = proto.clone();
    open_many_with(n, move || {
        let proto = proto.clone();
        async move { client::open(addr, &proto, cmd).await }
    })
    .await
}

/// Runs `open` `n` times, at most [`OPEN_CONCURRENCY`] at once and each
/// for at most 20 s; returns what opened and the count that failed.
async fn open_many_with<T, F, Fut>(n: usize, open: F) -> (Vec<T>, u64)
where
    T: Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let gate = gate.clone();
        let opening = open();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("open gate");
            tokio::time::timeout(Duration::from_secs(20), opening).await
        });
    }
    let mut conns = Vec::with_capacity(n);
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(Ok(c))) => conns.push(c),
            _ => errors += 1,
        }
    }
    (conns, errors)
}

/// Moves `total` payload bytes in direction `dir` over `conns` connections
/// at once, and measures from the start signal until the last byte landed.
pub async fn bulk(
    sys: &Running,
    dc: &Dc,
    proto: &Proto,
    conns: usize,
    dir: Dir,
    total: u64,
) -> Work {
    let base_fds = procfs::fd_count(sys.pid);
    let (chunk, chunk_payload) = client::bulk_chunk(proto);
    let chunk = Arc::new(chunk);
    // Whole chunks per connection, so the count is exact.
    let per_conn = (total / conns as u64).div_ceil(chunk_payload as u64) * chunk_payload as u64;
    let epoch = dc.next_epoch();
    let cmd = match dir {
        Dir::Up => Command::new(Op::Sink),
        Dir::Down => Command {
            op: Op::Source,
            arg: per_conn,
            epoch,
        },
    };
    let (opened, mut errors) = open_many(sys.addr, proto, cmd, conns).await;
    let cpu0 = procfs::cpu_time(sys.pid);
    let t0 = Instant::now();
    dc.go(epoch);
    let mut set = JoinSet::new();
    for c in opened {
        let chunk = chunk.clone();
        set.spawn(async move {
            match dir {
                Dir::Up => c.send_bulk(per_conn, &chunk, chunk_payload).await,
                Dir::Down => c.recv_bulk().await,
            }
        });
    }
    let mut moved = 0u64;
    let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(Ok(n)))) => {
                moved += n;
                if n != per_conn {
                    errors += 1;
                }
            }
            Ok(Some(_)) => errors += 1,
            Ok(None) => break,
            Err(_) => {
                errors += set.len() as u64;
                set.abort_all();
                break;
            }
        }
    }
    let wall = t0.elapsed();
    let cpu = procfs::cpu_time(sys.pid).saturating_sub(cpu0);
    settle(sys, base_fds, Duration::from_secs(10)).await;
    Work {
        count: moved,
        wall,
        cpu,
        errors,
    }
}

/// Full handshakes (connect, handshake, DC reached, encrypted ack back,
/// close) by `workers` concurrent clients for `duration` or `max` in all.
pub async fn handshakes(
    sys: &Running,
    proto: &Proto,
    workers: usize,
    duration: Duration,
    max: u64,
) -> Work {
    let base_fds = procfs::fd_count(sys.pid);
    let started = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu0 = procfs::cpu_time(sys.pid);
    let t0 = Instant::now();
    let end = t0 + duration;
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (started, done, failed) = (started.clone(), done.clone(), failed.clone());
        let (addr, proto) = (sys.addr, proto.clone());
        set.spawn(async move {
            while Instant::now() < end && started.fetch_add(1, Ordering::Relaxed) < max {
                let open = client::open(addr, &proto, Command::new(Op::Hold));
                match tokio::time::timeout(Duration::from_secs(10), open).await {
                    Ok(Ok(c)) => {
                        c.reset();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let wall = t0.elapsed();
    let cpu = procfs::cpu_time(sys.pid).saturating_sub(cpu0);
    settle(sys, base_fds, Duration::from_secs(10)).await;
    Work {
        count: done.load(Ordering::Relaxed),
        wall,
        cpu,
        errors: failed.load(Ordering::Relaxed),
    }
}

/// Round-trip times of a 64-byte message, one connection per target,
/// sorted. The targets take turns, one round trip each, so that all see
/// the same background load; the first tenth is warm-up.
pub async fn round_trips(
    targets: &[(SocketAddr, Proto)],
    n: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    let mut conns = Vec::new();
    for (addr, proto) in targets {
        conns.push(client::open(*addr, proto, Command::new(Op::Echo)).await?);
    }
    let msg = [0x5au8; 64];
    let mut scratch = vec![0u8; 4096];
    let mut rtts = vec![Vec::with_capacity(n); conns.len()];
    let end = Instant::now() + PHASE_LIMIT / 2;
    for i in 0..n + n / 10 {
        if Instant::now() > end {
            break;
        }
        for (conn, samples) in conns.iter_mut().zip(rtts.iter_mut()) {
            let t = Instant::now();
            conn.round_trip(&msg, &mut scratch).await?;
            if i >= n / 10 {
                samples.push(t.elapsed());
            }
        }
    }
    for (conn, samples) in conns.into_iter().zip(rtts.iter_mut()) {
        samples.sort();
        conn.reset();
    }
    Ok(rtts)
}

/// A percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Resident memory at start, with idle authenticated connections, and
/// after they closed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// KiB at start.
    pub start: u64,
    /// KiB with the idle connections open.
    pub idle: u64,
    /// KiB after they closed.
    pub after: u64,
    /// Anonymous KiB at start, with the connections, after.
    pub anon: [u64; 3],
    /// Idle connections that were open.
    pub conns: u64,
    /// Connections that failed to open.
    pub errors: u64,
}

impl Memory {
    /// Bytes per idle connection.
    pub fn per_conn(&self) -> f64 {
        (self.idle.saturating_sub(self.start) * 1024) as f64 / self.conns.max(1) as f64
    }
}

/// Opens `n` idle connections (handshake done, DC reached, nothing
/// moving), measures, closes them and measures again.
pub async fn idle_memory(sys: &Running, proto: &Proto, n: usize) -> Memory {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base_fds = procfs::fd_count(sys.pid);
    let start = procfs::rss_kib(sys.pid);
    let anon_start = procfs::anon_kib(sys.pid);
    let (conns, errors) = open_many(sys.addr, proto, Command::new(Op::Hold), n).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = procfs::rss_kib(sys.pid);
    let anon_idle = procfs::anon_kib(sys.pid);
    let open = conns.len() as u64;
    drop(conns);
    settle(sys, base_fds, Duration::from_secs(20)).await;
    // samizdat looks at its connection count once a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    Memory {
        start,
        idle,
        anon: [anon_start, anon_idle, procfs::anon_kib(sys.pid)],
        after: procfs::rss_kib(sys.pid),
        conns: open,
        errors,
    }
}

/// Waits until the system holds at most `fds` descriptors (its
/// connections have closed), for at most `limit`.
pub async fn settle(sys: &Running, fds: usize, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if procfs::fd_count(sys.pid) <= fds {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The longest a connection set up while others stream is waited for.
pub const SETUP_LIMIT: Duration = Duration::from_secs(5);

/// Set-up times under load: `streams` connections along `stream_route`
/// stream both ways at full speed while new connections along each of
/// `probes` are opened one at a time, `n` of each, the routes taking turns.
/// Each time runs from connect to the far end's first byte at the client
/// (the DC's acknowledgement, the greeter's greeting); one that takes
/// [`SETUP_LIMIT`] or more counts as that and as an error. Also returns the
/// bytes per second the streams received while the probes ran. The streams
/// and the far end's side of them run on their own runtime, so that the
/// load generator's load does not delay what it times.
pub async fn setup_under_load(
    stream_route: &Route,
    streams: usize,
    probes: &[Route],
    n: usize,
) -> anyhow::Result<(Vec<(Vec<Duration>, u64)>, f64)> {
    use std::sync::atomic::AtomicBool;
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Ok(mut r) = crate::dc::STREAM_RUNTIME.lock() {
        *r = Some(load.handle().clone());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let (chunk, _) = stream_route.chunk();
    let chunk = Arc::new(chunk);
    let route = stream_route.clone();
    let (conns, _errors) = load
        .spawn(async move {
            open_many_with(streams, move || {
                let route = route.clone();
                async move { route.open(true).await }
            })
            .await
        })
        .await?;
    let started = conns.len();
    let mut running = Vec::with_capacity(started);
    for c in conns {
        let (chunk, stop, received) = (chunk.clone(), stop.clone(), received.clone());
        running.push(
            load.spawn(async move { client::stream_both(c, &chunk, &stop, &received).await }),
        );
    }
    // Every stream under way (a buffer's worth each on average).
    let end = Instant::now() + Duration::from_secs(20);
    while received.load(Ordering::Relaxed) < started as u64 * 64 * 1024 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t0, bytes0) = (Instant::now(), received.load(Ordering::Relaxed));
    let mut times: Vec<(Vec<Duration>, u64)> = vec![(Vec::with_capacity(n), 0); probes.len()];
    let phase_end = Instant::now() + PHASE_LIMIT;
    'probing: for _ in 0..n {
        for (route, (samples, errors)) in probes.iter().zip(times.iter_mut()) {
            if Instant::now() > phase_end {
                break 'probing;
            }
            let t = Instant::now();
            match tokio::time::timeout(SETUP_LIMIT, route.open(false)).await {
                Ok(Ok(s)) => {
                    samples.push(t.elapsed());
                    let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
                _ => {
                    samples.push(SETUP_LIMIT.max(t.elapsed()));
                    *errors += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let rate = (received.load(Ordering::Relaxed) - bytes0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for r in running {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    if let Ok(mut r) = crate::dc::STREAM_RUNTIME.lock() {
        *r = None;
    }
    load.shutdown_background();
    for (samples, _) in &mut times {
        samples.sort();
    }
    if started < streams {
        anyhow::bail!("only {started} of {streams} streaming connections opened");
    }
    Ok((times, rate))
}
