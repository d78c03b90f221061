//! Replays across a fleet: what one instance accepted, the others refuse
//! (fake-TLS and samizdat hellos alike), and what instances with another
//! transport key say about it.

use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_captured_at_one_instance_is_refused_by_the_other() {
    let Some(redis) = Redis::start() else { return };
    let a = instance(&redis.url(), None, &[]).await;
    let b = instance(&redis.url(), None, &[]).await;

    // Fake-TLS: B has never seen this hello, and still refuses it.
    let hello = captured_hello(a.addr).await;
    assert_eq!(
        probe(b.addr, &hello).await,
        hello,
        "B must send A's replayed hello to its cover site"
    );
    // A fresh hello still works on B.
    let mut c = connect(b.addr, &ee(KEY)).await.expect("a fresh hello on B");
    echo(&mut c, 1024).await.unwrap();

    // Bare obfuscated2: an init accepted by A, replayed to B.
    let dd = Secret::parse(&format!("dd{KEY}")).unwrap();
    let init = wire::obfuscated2::initiate(testkit::random(), Tag::Padded, 2, Some(&dd.key));
    let mut s = TcpStream::connect(a.addr).await.unwrap();
    s.write_all(&init.wire).await.unwrap();
    let key = format!("samizdat:replay:o2:{}", hex::encode(&init.wire[8..24]));
    assert!(
        eventually(Duration::from_secs(5), || redis
            .cmd(&["EXISTS", &key])
            .as_deref()
            == Some("1"))
        .await,
        "A recorded the init in Redis"
    );
    assert_eq!(
        probe(b.addr, &init.wire).await,
        init.wire.to_vec(),
        "B must send A's replayed init to its cover site"
    );
    // Fake-TLS keys expire with the timestamp window (10m + 1m + 1m here).
    let ttl: i64 = redis
        .cmd(&[
            "PTTL",
            &format!("samizdat:replay:tls:{}", hex::encode(&hello[11..27])),
        ])
        .unwrap()
        .parse()
        .unwrap();
    assert!((600_000..=720_000).contains(&ttl), "ttl {ttl} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_samizdat_hello_captured_at_one_instance_lands_at_the_others_cover() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = transport_key_file(dir.path());
    let args = ["--transport-key", &key, "--ws-listen", "127.0.0.1:0"];
    let a = instance(&redis.url(), None, &args).await;
    let b = instance(&redis.url(), None, &args).await;
    let link = a.link();
    assert_eq!(link.server_key, b.link().server_key, "one transport key");

    // Over TCP: B has never seen the hello A accepted, and still answers
    // exactly as its cover answers those bytes.
    let hello = accepted_tunnel_hello(a.addr, &link).await;
    let from_cover = probe(b.cover, &hello).await;
    assert_eq!(from_cover, hello, "the echo cover answers with the bytes");
    let from_b = probe(b.addr, &hello).await;
    assert!(
        from_b == from_cover,
        "B must send A's replayed samizdat hello to its cover site; it answered \
         {} bytes starting {:02x?}",
        from_b.len(),
        &from_b[..from_b.len().min(12)]
    );
    // A fresh hello still works on B.
    accepted_tunnel_hello(b.addr, &link).await;

    // Over B's WebSocket listener: a fresh hello gets the flight (binary
    // frames), one that A accepted is closed without one.
    let (ws, path) = b.ws();
    let (_, fresh) = tunnel_hello(&link);
    let ops = over_websocket(ws, &path, &fresh).await;
    assert_eq!(
        ops.first(),
        Some(&2),
        "a fresh hello gets the flight: {ops:?}"
    );
    let hello = accepted_tunnel_hello(a.addr, &link).await;
    let ops = over_websocket(ws, &path, &hello).await;
    assert!(
        !ops.contains(&2),
        "no flight for A's hello replayed to B's WebSocket listener: {ops:?}"
    );

    // The fleet keys expire with the timestamp window (10m + 1m + 1m).
    let keys = redis_dump(&redis)
        .into_iter()
        .filter(|k| k.starts_with("samizdat:replay:nk:"))
        .collect::<Vec<_>>();
    assert_eq!(
        keys.len(),
        4,
        "one key per accepted samizdat hello: {keys:?}"
    );
    let ttl: i64 = redis.cmd(&["PTTL", &keys[0]]).unwrap().parse().unwrap();
    assert!((600_000..=720_000).contains(&ttl), "ttl {ttl} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_another_transport_key_says_its_address_hashes_differ() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let shared = transport_key_file(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other = transport_key_file(other_dir.path());
    let log_of = |name: &str| dir.path().join(name);
    let logged = |name: &str| Some(std::fs::File::create(log_of(name)).unwrap());
    let a = instance_logging_to(
        &redis.url(),
        None,
        &["--transport-key", &shared],
        logged("a"),
    )
    .await;
    let b = instance_logging_to(
        &redis.url(),
        None,
        &["--transport-key", &shared],
        logged("b"),
    )
    .await;
    let c = instance_logging_to(
        &redis.url(),
        None,
        &["--transport-key", &other],
        logged("c"),
    )
    .await;
    const WARNING: &str = "different transport key";
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(log_of(
            "c"
        ))
        .unwrap()
        .contains(WARNING))
        .await,
        "the instance with another key did not warn"
    );
    for name in ["a", "b"] {
        let log = std::fs::read_to_string(log_of(name)).unwrap();
        assert!(
            !log.contains(WARNING),
            "{name} shares the key and warned:\n{log}"
        );
    }
    drop((a, b, c));
}
