//! Two tunnel sessions after a real handshake: over a loopback TCP pair,
//! or over testkit's in-memory pair on virtual time, where a test freezes
//! or forges the bytes between them and deadlines pass exactly.

use samizdat::transport::{Session, SessionConfig, Status, Stream, StreamOpenError};
use std::hash::{DefaultHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::duplex::{Direction, Tamper};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wire::faketls::client::{build_hello, HelloShape};
use wire::tunnel::handshake::{accept, ClientHandshake, Progress, ServerKey, UserCredential};
use wire::tunnel::{locate, Destination, FlightShape};

const SECRET: [u8; 16] = *b"session-test-key";

fn fill(buf: &mut [u8]) {
    samizdat::random::fill(buf);
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Client side of the handshake over `tcp`; returns the leftover bytes.
async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    tcp: &mut S,
    server: [u8; 32],
) -> (Vec<u8>, wire::tunnel::Established) {
    let mut hello = build_hello(
        &[0; 16],
        "cover.test",
        0,
        HelloShape::PostQuantum,
        &mut fill,
    );
    let at = locate(&hello).unwrap();
    for slot in at.slots() {
        hello[slot].fill(0);
    }
    let cred = UserCredential::from_secret(&SECRET);
    let hello = wire::browser::BuiltHello::from_record(hello).unwrap();
    let (mut hs, record) =
        ClientHandshake::start(&hello, &server, &cred, now(), &mut fill).unwrap();
    tcp.write_all(&record).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "server closed during handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let Progress::Done {
            consumed,
            established,
            reply,
        } = hs.read_server_flight(&buf).unwrap()
        {
            tcp.write_all(&reply).await.unwrap();
            return (buf[consumed..].to_vec(), established);
        }
    }
}

/// Server side: read the hello record, accept, write the flight.
async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    tcp: &mut S,
    key: &ServerKey,
) -> wire::tunnel::Established {
    let mut header = [0u8; 5];
    tcp.read_exact(&mut header).await.unwrap();
    let mut record = header.to_vec();
    record.resize(5 + u16::from_be_bytes([header[3], header[4]]) as usize, 0);
    tcp.read_exact(&mut record[5..]).await.unwrap();
    let cred = UserCredential::from_secret(&SECRET);
    let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
    let acc = accept(&record, key, lookup, now(), 60).unwrap();
    let (flight, est) = acc.respond(&FlightShape::default(), &mut fill);
    tcp.write_all(&flight).await.unwrap();
    est
}

/// A connected TCP pair on loopback.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

/// Forwards bytes both ways between `a` and `b` until `stall` is set; then
/// holds both connections open and silent.
fn relay(a: TcpStream, b: TcpStream, stall: Arc<AtomicBool>) {
    let (ra, wa) = a.into_split();
    let (rb, wb) = b.into_split();
    for (mut r, mut w) in [(ra, wb), (rb, wa)] {
        let stall = stall.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16384];
            loop {
                let Ok(n) = r.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                if stall.load(Ordering::SeqCst) {
                    // Keep the sockets, drop the bytes, never answer.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                if w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// What the test server does with each stream, by destination port.
const ECHO: u16 = 1;
const REFUSE: u16 = 2;
/// Sends `SOURCE_BYTES` and never reads.
const SOURCE: u16 = 3;
const SOURCE_BYTES: usize = 8 << 20;
/// Reads to the end, then answers with the byte count (u64 BE).
const SINK: u16 = 4;

fn dest(port: u16) -> Destination {
    Destination::Host {
        name: "target.test".into(),
        port,
    }
}

/// A client and a server session over loopback (through a stallable relay
/// if `stall` is given); the server runs the test services.
async fn sessions(cfg: SessionConfig, stall: Option<Arc<AtomicBool>>) -> (Session, Session) {
    let key = ServerKey::from_secret([0x11; 32]);
    let (mut c, mut s) = tcp_pair().await;
    if let Some(stall) = stall {
        let (c2, s2) = tcp_pair().await;
        relay(s, c2, stall);
        s = s2;
    }
    let public = key.public();
    let ((leftover, c_est), s_est) = tokio::join!(
        client_handshake(&mut c, public),
        server_handshake(&mut s, &key)
    );
    let client = Session::client(c, leftover, c_est, cfg);
    let (server, incoming) = Session::server(s, Vec::new(), s_est, cfg);
    serve_test_services(incoming);
    (client, server)
}

/// A client and a server session over testkit's in-memory pair, and the
/// middlebox between them; the server runs the test services. For
/// `#[tokio::test(start_paused = true)]`: no socket, only virtual time.
async fn sessions_in_memory(cfg: SessionConfig) -> (Session, Session, Tamper) {
    let key = ServerKey::from_secret([0x11; 32]);
    let (mut c, mut s, tamper) = testkit::duplex::pair(256 * 1024);
    let ((leftover, c_est), s_est) = tokio::join!(
        client_handshake(&mut c, key.public()),
        server_handshake(&mut s, &key)
    );
    let client = Session::client(c, leftover, c_est, cfg);
    let (server, incoming) = Session::server(s, Vec::new(), s_est, cfg);
    serve_test_services(incoming);
    (client, server, tamper)
}

/// The server's side of the test streams, by destination port.
fn serve_test_services(mut incoming: samizdat::transport::Incoming) {
    tokio::spawn(async move {
        while let Some(mut inc) = incoming.next().await {
            let Destination::Host { port, .. } = inc.destination().clone() else {
                inc.refuse(Status::NotAllowed);
                continue;
            };
            match port {
                ECHO => {
                    let first = inc.take_first();
                    let stream = inc.accept();
                    tokio::spawn(async move {
                        let (mut r, mut w) = tokio::io::split(stream);
                        if w.write_all(&first).await.is_err() {
                            return;
                        }
                        if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                            let _ = w.shutdown().await;
                        }
                        // Hold the halves until both directions finished.
                        let _ = r.read(&mut [0u8; 1]).await;
                    });
                }
                SOURCE => {
                    let mut stream = inc.accept();
                    tokio::spawn(async move {
                        let chunk = vec![0x5a; 65536];
                        for _ in 0..SOURCE_BYTES / chunk.len() {
                            if stream.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                        let _ = stream.shutdown().await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    });
                }
                SINK => {
                    let mut stream = inc.accept();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        let mut total = 0u64;
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            total += n as u64;
                        }
                        let _ = stream.write_all(&total.to_be_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                }
                REFUSE => inc.refuse(Status::ConnectionRefused),
                _ => inc.refuse(Status::GeneralFailure),
            }
        }
    });
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn hash(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(data);
    h.finish()
}

/// Sends `len` bytes through an echo stream and checks they come back.
async fn echo_roundtrip(session: Session, seed: u64, len: usize) {
    let data = pattern(seed, len);
    let first = data[..1000].to_vec();
    let stream = session.open(dest(ECHO), first).await.unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    let expect = hash(&data);
    let send = async {
        w.write_all(&data[1000..]).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let recv = async {
        let mut got = Vec::with_capacity(len);
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(send, recv);
    assert_eq!(got.len(), len, "stream {seed}: length");
    assert_eq!(hash(&got), expect, "stream {seed}: content");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_streams_move_a_mebibyte_each_way() {
    let (client, _server) = sessions(SessionConfig::default(), None).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|i| tokio::spawn(echo_roundtrip(client.clone(), i, 1 << 20)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("100 x 1 MiB echoed in {:?}", started.elapsed());
    assert_eq!(client.active_streams(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_slow_the_others() {
    let cfg = SessionConfig::default();
    let (client, _server) = sessions(cfg, None).await;
    // Its server side tries to send 8 MiB; we never read.
    let stalled = client.open(dest(SOURCE), Vec::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|i| tokio::spawn(echo_roundtrip(client.clone(), 1000 + i, 1 << 20)))
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("other streams stalled")
            .unwrap();
    }
    eprintln!(
        "10 x 1 MiB beside a stalled stream in {:?}",
        started.elapsed()
    );
    // The stalled stream holds at most its window on our side.
    let buffered = client.buffered();
    assert!(buffered <= cfg.window as usize, "buffered {buffered}");
    assert!(buffered > 0, "the source should have filled its window");
    drop(stalled);
}

#[tokio::test]
async fn refuse_reaches_open_with_the_status() {
    let (client, _server) = sessions(SessionConfig::default(), None).await;
    let err = client.open(dest(REFUSE), b"hi".to_vec()).await.unwrap_err();
    assert_eq!(err, StreamOpenError::Refused(Status::ConnectionRefused));
    assert_eq!(err.status(), Status::ConnectionRefused);
    // The session is still fine.
    echo_roundtrip(client.clone(), 7, 10_000).await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_declared_dead_and_streams_fail() {
    let cfg = SessionConfig {
        keepalive: Duration::from_millis(200),
        dead_after: Duration::from_millis(800),
        ..SessionConfig::default()
    };
    let (client, _server, tamper) = sessions_in_memory(cfg).await;
    let mut stream: Stream = client.open(dest(ECHO), b"x".to_vec()).await.unwrap();
    let mut one = [0u8; 1];
    stream.read_exact(&mut one).await.unwrap();
    // Keepalives keep an idle session up well past dead_after (virtual
    // time: this takes no wall time, and no keepalive is ever late).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!client.is_closed());
    assert!(
        tamper.passed(Direction::BToA) > 0,
        "the server's keepalives came through"
    );
    tamper.freeze();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), client.closed())
        .await
        .expect("session not declared dead");
    // On virtual time the deadline is exact: dead_after since the last
    // byte it heard, which came at most one keepalive before the freeze.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800 - 200) && waited <= Duration::from_millis(800),
        "declared dead after {waited:?}"
    );
    assert!(stream.read(&mut one).await.is_err());
    assert!(stream.write_all(b"more").await.is_err());
    assert_eq!(
        client.open(dest(ECHO), Vec::new()).await.unwrap_err(),
        StreamOpenError::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tasks_outlive_their_sessions() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    {
        let (client, server) = sessions(SessionConfig::default(), None).await;
        echo_roundtrip(client.clone(), 3, 100_000).await;
        let stream = client.open(dest(ECHO), b"held".to_vec()).await.unwrap();
        drop(client);
        drop(server);
        // A stream keeps the session alive; dropping it ends everything.
        drop(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.num_alive_tasks() > before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metrics.num_alive_tasks(), before, "leaked tasks");
}

#[tokio::test]
async fn first_data_larger_than_a_frame_and_the_window_arrives() {
    let (client, _server) = sessions(SessionConfig::default(), None).await;
    let data = pattern(99, 300_000);
    let stream = client.open(dest(ECHO), data.clone()).await.unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    w.shutdown().await.unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, data);
}

/// Throughput of one stream against a plain loopback TCP copy, and the
/// cost of a handshake. Run optimised:
/// `CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo test -p samizdat --test tunnel_session -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_throughput_and_handshake() {
    const TOTAL: usize = 512 << 20;
    let chunk = vec![0xa5u8; 65536];
    // Plain TCP.
    let (mut c, mut s) = tcp_pair().await;
    let started = Instant::now();
    let sink = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    for _ in 0..TOTAL / chunk.len() {
        c.write_all(&chunk).await.unwrap();
    }
    c.shutdown().await.unwrap();
    assert_eq!(sink.await.unwrap(), TOTAL);
    let plain = started.elapsed();
    // One tunnel stream.
    let (client, _server) = sessions(SessionConfig::default(), None).await;
    let mut stream = client.open(dest(SINK), Vec::new()).await.unwrap();
    let started = Instant::now();
    for _ in 0..TOTAL / chunk.len() {
        stream.write_all(&chunk).await.unwrap();
    }
    stream.shutdown().await.unwrap();
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).await.unwrap();
    assert_eq!(u64::from_be_bytes(count), TOTAL as u64);
    let tunnel = started.elapsed();
    let mbps = |d: Duration| TOTAL as f64 / d.as_secs_f64() / 1e6;
    eprintln!(
        "512 MiB one way: plain TCP {:.0} MB/s, tunnel stream {:.0} MB/s",
        mbps(plain),
        mbps(tunnel)
    );
    // Handshake cost, each side.
    let key = ServerKey::from_secret([0x11; 32]);
    let cred = UserCredential::from_secret(&SECRET);
    let mut hello = build_hello(
        &[0; 16],
        "cover.test",
        0,
        HelloShape::PostQuantum,
        &mut fill,
    );
    let at = locate(&hello).unwrap();
    for slot in at.slots() {
        hello[slot].fill(0);
    }
    let hello = wire::browser::BuiltHello::from_record(hello).unwrap();
    let n = 500u32;
    let (mut t_start, mut t_accept, mut t_respond, mut t_read) = Default::default();
    for _ in 0..n {
        let t = Instant::now();
        let (mut hs, record) =
            ClientHandshake::start(&hello, &key.public(), &cred, now(), &mut fill).unwrap();
        t_start += t.elapsed();
        let t = Instant::now();
        let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
        let acc = accept(&record, &key, lookup, now(), 60).unwrap();
        t_accept += t.elapsed();
        let t = Instant::now();
        let (flight, _) = acc.respond(&FlightShape::default(), &mut fill);
        t_respond += t.elapsed();
        let t = Instant::now();
        assert!(matches!(
            hs.read_server_flight(&flight).unwrap(),
            Progress::Done { .. }
        ));
        t_read += t.elapsed();
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    eprintln!(
        "handshake per connection: client start {:.0} us, server accept {:.0} us, server respond {:.0} us, client read flight {:.0} us",
        us(t_start),
        us(t_accept),
        us(t_respond),
        us(t_read)
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_a_stream_resets_it_on_both_ends() {
    let (client, server, _tamper) = sessions_in_memory(SessionConfig::default()).await;
    let mut stream = client.open(dest(SOURCE), Vec::new()).await.unwrap();
    let mut some = [0u8; 1000];
    stream.read_exact(&mut some).await.unwrap();
    assert_eq!(server.active_streams(), 1);
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (server.active_streams() > 0 || client.active_streams() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.active_streams(), 0, "server kept the stream");
    assert_eq!(client.active_streams(), 0);
    assert!(!client.is_closed() && !server.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_forged_record_closes_the_session() {
    let (client, _server, tamper) = sessions_in_memory(SessionConfig::default()).await;
    // An on-path attacker's well-formed record header with bytes no key
    // produced, between the server's records.
    let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    forged.extend_from_slice(&[0x33; 0x40]);
    tamper.inject(Direction::BToA, forged);
    tokio::time::timeout(Duration::from_secs(5), client.closed())
        .await
        .expect("session survived a forged record");
    assert_eq!(
        client.open(dest(ECHO), Vec::new()).await.unwrap_err(),
        StreamOpenError::Closed
    );
}
