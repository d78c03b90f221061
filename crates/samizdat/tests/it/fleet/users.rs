//! Users shared through Redis: limits, quotas and users added at runtime
//! hold on every instance, and client addresses never reach Redis.

use super::harness::*;
use std::net::IpAddr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_never_reach_redis_and_max_ips_holds_across_the_fleet() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = transport_key_file(dir.path());
    let config = config_file(
        dir.path(),
        &format!("[users.carol]\nsecret = \"{CAROL}\"\nmax_ips = 1\n"),
    );
    let a = instance(&redis.url(), Some(&config), &["--transport-key", &key]).await;
    let b = instance(&redis.url(), Some(&config), &["--transport-key", &key]).await;
    let mut held = connect_from(a.addr, "127.0.0.1", &ee(CAROL))
        .await
        .expect("carol on A");
    echo(&mut held, 1024).await.unwrap();
    // B knows A's lease: a second address is refused, the same one is not
    // (both instances hash an address alike).
    assert!(
        connect_from(b.addr, "127.0.0.2", &ee(CAROL)).await.is_err(),
        "B admits a second address while A holds carol's only one"
    );
    let mut c = connect_from(b.addr, "127.0.0.1", &ee(CAROL))
        .await
        .expect("carol's own address on B");
    echo(&mut c, 1024).await.unwrap();

    let dump = redis_dump(&redis);
    assert!(
        dump.iter().any(|k| k == "samizdat:ips:carol"),
        "the address leases are in Redis: {dump:?}"
    );
    for text in &dump {
        assert!(
            !text.contains("127.0.0."),
            "a client address in Redis: {text}"
        );
        for part in text.split(['|', ':']) {
            assert!(
                part.parse::<IpAddr>().is_err(),
                "a client address in Redis: {text}"
            );
        }
    }
    echo(&mut held, 1024).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_holds_across_the_fleet() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    // 1 MB, counted both ways: 300 KB echoed through each instance is
    // 600 KB each, under the quota alone and over it together.
    let config = config_file(
        dir.path(),
        &format!("[users.alice]\nsecret = \"{ALICE}\"\nquota = \"1MB\"\n"),
    );
    let a = instance(&redis.url(), Some(&config), &[]).await;
    let b = instance(&redis.url(), Some(&config), &[]).await;

    let mut c = connect(a.addr, &ee(ALICE)).await.expect("alice on A");
    echo(&mut c, 300_000).await.unwrap();
    drop(c);
    assert!(
        eventually(Duration::from_secs(5), || {
            redis
                .cmd(&["GET", "samizdat:usage:alice"])
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n >= 600_000)
        })
        .await,
        "A pushed alice's usage to Redis"
    );
    // B has not relayed a byte of alice's yet, but knows the fleet's total.
    let mut c = connect(b.addr, &ee(ALICE)).await.expect("alice on B");
    // The quota runs out during this transfer: the relay may end early.
    let _ = echo(&mut c, 300_000).await;
    drop(c);
    for (name, at) in [("A", a.addr), ("B", b.addr)] {
        let started = Instant::now();
        let mut refused = false;
        while started.elapsed() < Duration::from_secs(8) {
            match connect(at, &ee(ALICE)).await {
                Err(_) => {
                    refused = true;
                    break;
                }
                Ok(c) => drop(c),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            refused,
            "instance {name} still admits alice past the fleet-wide quota"
        );
    }
    let used: u64 = redis
        .cmd(&["GET", "samizdat:usage:alice"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(used >= 1_000_000, "fleet usage {used}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_to_the_shared_table_works_on_every_instance() {
    let Some(redis) = Redis::start() else { return };
    let a = instance(&redis.url(), None, &[]).await;
    let b = instance(&redis.url(), None, &[]).await;
    assert!(
        connect(a.addr, &ee(BOB)).await.is_err(),
        "bob is unknown yet"
    );

    let out = Command::new(bin())
        .args(["users", "add", "bob", "--key", BOB, "--redis", &redis.url()])
        .args(["--domain", DOMAIN, "--public-host", "127.0.0.1"])
        .args(["--listen", "127.0.0.1:8443"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&ee(BOB).to_hex()) && text.contains("tg://proxy?server=127.0.0.1&port=8443"),
        "users add prints bob's links: {text}"
    );

    let started = Instant::now();
    let mut held = Vec::new();
    for at in [a.addr, b.addr] {
        let mut ok = None;
        while started.elapsed() < Duration::from_secs(8) {
            if let Ok(c) = connect(at, &ee(BOB)).await {
                ok = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut c = ok.expect("bob connects to every instance within seconds");
        echo(&mut c, 4096).await.unwrap();
        held.push(c);
    }
    let list = Command::new(bin())
        .args(["users", "list", "--redis", &redis.url()])
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.starts_with("bob\t"), "{list}");
    assert!(!list.contains(BOB), "users list must not show keys");

    // Removed: refused everywhere within seconds, open relays end.
    let out = Command::new(bin())
        .args(["users", "remove", "bob", "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(out.status.success());
    for c in &mut held {
        let ended = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                if echo(c, 16).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        assert!(ended.is_ok(), "a removed user's relay goes on");
    }
    assert!(connect(a.addr, &ee(BOB)).await.is_err());
    assert!(connect(b.addr, &ee(BOB)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_hold_across_the_fleet() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!("[users.carol]\nsecret = \"{CAROL}\"\nmax_connections = 1\n"),
    );
    let a = instance(&redis.url(), Some(&config), &[]).await;
    let b = instance(&redis.url(), Some(&config), &[]).await;
    let mut held = connect(a.addr, &ee(CAROL)).await.expect("carol on A");
    echo(&mut held, 1024).await.unwrap();
    assert!(
        connect(b.addr, &ee(CAROL)).await.is_err(),
        "B admits a second connection while A holds carol's only one"
    );
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || redis
            .cmd(&["ZCARD", "samizdat:conns:carol"])
            .as_deref()
            == Some("0"))
        .await,
        "A released the lease"
    );
    let mut c = connect(b.addr, &ee(CAROL))
        .await
        .expect("carol on B after A closed");
    echo(&mut c, 1024).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_reload_keeps_the_shared_users() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!("[users.alice]\nsecret = \"{ALICE}\"\n"),
    );
    let a = instance(&redis.url(), Some(&config), &[]).await;
    let out = Command::new(bin())
        .args(["users", "add", "bob", "--key", BOB, "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        connects_soon(a.addr, &ee(BOB)).await,
        "bob from the shared table"
    );
    // The file gains carol: file users and shared users both serve.
    std::fs::write(
        &config,
        format!("[users.alice]\nsecret = \"{ALICE}\"\n[users.carol]\nsecret = \"{CAROL}\"\n"),
    )
    .unwrap();
    assert!(
        connects_soon(a.addr, &ee(CAROL)).await,
        "carol from the reloaded file"
    );
    assert!(
        connect(a.addr, &ee(BOB)).await.is_ok(),
        "the reload dropped bob"
    );
    assert!(connect(a.addr, &ee(ALICE)).await.is_ok());
}
