//! Redis going away and coming back: the chosen fallbacks, fast, and an
//! instance started before Redis.

use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_the_chosen_fallback_fast_and_its_return_is_picked_up() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    // A: fail-open; B: the default (fail-closed).
    // A deadline short enough that a hung Redis costs a handshake little.
    let a = instance(
        &redis.url(),
        None,
        &["--redis-timeout", "300ms", "--redis-down-replay", "open"],
    )
    .await;
    let b = instance(&redis.url(), None, &["--redis-timeout", "300ms"]).await;
    for at in [a.addr, b.addr] {
        let mut c = connect(at, &ee(KEY))
            .await
            .expect("both serve with Redis up");
        echo(&mut c, 1024).await.unwrap();
    }

    // Hung (SIGSTOP: connections stay open, nothing answers): every call
    // runs into the deadline (100 ms), none hangs a handshake.
    redis.signal("-STOP");
    fallbacks_hold(a.addr, b.addr).await;
    redis.signal("-CONT");
    // Dead (SIGKILL: connections refused).
    redis.stop();
    fallbacks_hold(a.addr, b.addr).await;
    // The local replay cache still works meanwhile.
    let hello = captured_hello(a.addr).await;
    assert_eq!(probe(a.addr, &hello).await, hello);
    // Usage keeps counting locally while Redis is down.
    let mut c = connect(a.addr, &ee(KEY)).await.unwrap();
    echo(&mut c, 200_000).await.unwrap();
    drop(c);

    // Back: B accepts again, and replays are shared again.
    redis.restart();
    let started = Instant::now();
    let mut back = false;
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(mut c) = connect(b.addr, &ee(KEY)).await {
            back = echo(&mut c, 1024).await.is_ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "B did not pick Redis up again within 10 s");
    // A pushes what it counted while Redis was down (this Redis restarted
    // empty, so those bytes are all its counter holds).
    assert!(
        eventually(Duration::from_secs(5), || {
            redis
                .cmd(&["GET", "samizdat:usage:default"])
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n >= 400_000)
        })
        .await,
        "usage counted while Redis was down was not pushed when it came back"
    );
    let hello = captured_hello(a.addr).await;
    assert_eq!(
        probe(b.addr, &hello).await,
        hello,
        "after Redis came back, A's hello replayed to B must be refused"
    );
}

/// With Redis unavailable: A (fail-open) accepts, B (fail-closed) sends to
/// the cover, and neither takes long about it.
async fn fallbacks_hold(a: SocketAddr, b: SocketAddr) {
    for _ in 0..3 {
        let started = Instant::now();
        let mut c = connect(a, &ee(KEY))
            .await
            .expect("fail-open accepts with Redis down");
        echo(&mut c, 1024).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert!(
            connect(b, &ee(KEY)).await.is_err(),
            "fail-closed refuses with Redis down"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_before_redis_serves_and_then_picks_it_up() {
    let Some(mut redis) = Redis::reserve(|_| Vec::new()) else {
        return;
    };
    // Nothing listens there yet: start-up is not delayed, handshakes pass
    // (fail-open) without waiting.
    let started = Instant::now();
    let a = instance(&redis.url(), None, &["--redis-down-replay", "open"]).await;
    let mut c = connect(a.addr, &ee(KEY))
        .await
        .expect("serves without Redis");
    echo(&mut c, 1024).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    redis.restart();
    let out = Command::new(bin())
        .args(["users", "add", "bob", "--key", BOB, "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    let mut ok = false;
    while !ok && started.elapsed() < Duration::from_secs(10) {
        ok = connect(a.addr, &ee(BOB)).await.is_ok();
        if !ok {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        ok,
        "the instance did not read the shared table once Redis was up"
    );
    // And the replay cache is shared from then on.
    let hello = captured_hello(a.addr).await;
    let key = format!("samizdat:replay:tls:{}", hex::encode(&hello[11..27]));
    assert_eq!(redis.cmd(&["EXISTS", &key]).as_deref(), Some("1"));
}

/// `GET path` on the metrics listener: (status line, body), or `None` if
/// nothing answers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_when_down_refuse_refuses_only_users_with_fleet_limits() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            "[users.carol]\nsecret = \"{CAROL}\"\nmax_connections = 5\n[users.alice]\nsecret = \"{ALICE}\"\n"
        ),
    );
    let a = instance(
        &redis.url(),
        Some(&config),
        &[
            "--redis-down-limits",
            "refuse",
            "--redis-timeout",
            "300ms",
            "--redis-down-replay",
            "open",
        ],
    )
    .await;
    let mut c = connect(a.addr, &ee(CAROL))
        .await
        .expect("carol with Redis up");
    echo(&mut c, 1024).await.unwrap();
    redis.stop();
    assert!(
        connect(a.addr, &ee(CAROL)).await.is_err(),
        "carol's fleet-wide limit cannot be checked: refused"
    );
    let mut c = connect(a.addr, &ee(ALICE))
        .await
        .expect("alice has no fleet-wide limit: served");
    echo(&mut c, 1024).await.unwrap();
    // Back: carol again.
    redis.restart();
    let started = Instant::now();
    let mut ok = false;
    while !ok && started.elapsed() < Duration::from_secs(10) {
        ok = connect(a.addr, &ee(CAROL)).await.is_ok();
        if !ok {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(ok, "carol still refused after Redis came back");
}
