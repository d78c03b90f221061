//! Running a fleet: Redis over TLS with a password, health endpoints, and
//! `samizdat doctor` on the fleet's Redis.

use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_password_is_verified_and_the_password_stays_out_of_logs() {
    const PASSWORD: &str = "pw-7f3a9c1e5b";
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(redis) = Redis::start_with(|dir| {
        testkit::pki::localhost_ca().write_to(dir).unwrap();
        let p = |f: &str| dir.join(f).display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            p("cert.pem"),
            "--tls-key-file".into(),
            p("key.pem"),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
            "--requirepass".into(),
            PASSWORD.into(),
        ]
    }) else {
        return;
    };
    let ca = redis.dir.path().join("ca.pem");
    let url = format!("rediss://:{PASSWORD}@localhost:{tls_port}");
    let users = |url: &str, with_ca: bool, args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(["users"]).args(args).args(["--redis", url]);
        if with_ca {
            cmd.env("SSL_CERT_FILE", &ca);
        }
        cmd.output().unwrap()
    };
    // The server's certificate is checked: unknown CA, refused.
    let out = users(&url, false, &["list"]);
    assert!(
        !out.status.success(),
        "a certificate from an unknown CA was accepted"
    );
    // A wrong password is refused too.
    let wrong = format!("rediss://:wrong@localhost:{tls_port}");
    assert!(!users(&wrong, true, &["list"]).status.success());
    let out = users(
        &url,
        true,
        &["add", "bob", "--key", BOB, "--domain", DOMAIN],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains(PASSWORD), "{printed}");

    // An instance over TLS picks bob up; its log never shows the password.
    let (dc, _) = fake_dc().await;
    let (cover, _) = fake_cover(CoverKind::Echo).await;
    let state = tempfile::tempdir().unwrap();
    let log_path = state.path().join("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = serve()
        .domain(DOMAIN)
        .cover(cover)
        .dc(dc)
        .state_dir(state.path())
        .args(["--redis-timeout", "1s"])
        .env("SAMIZDAT_REDIS", &url)
        .env("SSL_CERT_FILE", &ca)
        .env("RUST_LOG", "debug")
        .log_to(log)
        .spawn()
        .await
        .unwrap();
    let (addr, stdout) = (server.addr, server.stdout.clone());
    let mut c = None;
    let started = Instant::now();
    while c.is_none() && started.elapsed() < Duration::from_secs(8) {
        c = connect(addr, &ee(BOB)).await.ok();
        if c.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut c = c.expect("bob, added over TLS, connects");
    echo(&mut c, 4096).await.unwrap();
    drop(c);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("sharing replay cache"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the Redis password reached the log"
    );
    assert!(!stdout.join("\n").contains(PASSWORD));
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&back).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_report_liveness_readiness_and_redis() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics_arg = metrics.to_string();
    let args = ["--metrics", &metrics_arg, "--redis-down-replay", "open"];
    let mut a = instance(&redis.url(), None, &args).await;
    let (status, body) = http_get(metrics, "/healthz").await.expect("/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let (status, body) = http_get(metrics, "/readyz").await.expect("/readyz");
    assert!(
        status.contains("200") && body.contains("redis up"),
        "{status} {body}"
    );

    // Redis down: still ready (the fallbacks serve), and it says why.
    redis.stop();
    let mut said = false;
    let started = Instant::now();
    while !said && started.elapsed() < Duration::from_secs(8) {
        let (status, body) = http_get(metrics, "/readyz").await.expect("/readyz");
        assert!(status.contains("200"), "{status}");
        said = body.contains("redis down");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(said, "/readyz never reported Redis down");

    // SIGTERM: no longer ready (503, or the listener is gone), while an
    // open connection drains.
    let mut c = connect(a.addr, &ee(KEY)).await.unwrap();
    echo(&mut c, 1024).await.unwrap();
    let pid = a.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut not_ready = false;
    let started = Instant::now();
    while !not_ready && started.elapsed() < Duration::from_secs(5) {
        not_ready = match http_get(metrics, "/readyz").await {
            None => true,
            Some((status, _)) => status.contains("503"),
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(not_ready, "still ready after SIGTERM");
    echo(&mut c, 1024)
        .await
        .expect("the open connection drains");
    drop(c);
    let _ = a.child.wait();
}

/// `samizdat doctor --json` against local fakes; the findings of `check`.
async fn doctor_findings(redis: &str, check: &str) -> Vec<serde_json::Value> {
    let (dc, _) = fake_dc().await;
    let (cover, _) = fake_cover(CoverKind::Echo).await;
    let out = tokio::process::Command::new(bin())
        // localhost and 127.0.0.1: the DNS check stays in /etc/hosts.
        .args([
            "doctor",
            "--json",
            "--timeout",
            "2s",
            "--domain",
            "localhost",
        ])
        .args(["--public-host", "127.0.0.1"])
        .args([
            "--cover",
            &cover.to_string(),
            "--dc-override",
            &dc.to_string(),
        ])
        .args(["--secret", KEY, "--listen", "127.0.0.1:0", "--redis", redis])
        .output()
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_fleet_redis() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let found = doctor_findings(&redis.url(), "redis").await;
    assert!(!found.is_empty(), "no redis finding");
    assert!(found.iter().all(|f| f["level"] != "fail"), "{found:?}");
    assert!(
        found[0]["found"]
            .as_str()
            .unwrap()
            .starts_with("answers in"),
        "{found:?}"
    );
    redis.stop();
    let found = doctor_findings(&redis.url(), "redis").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["level"], "fail", "{found:?}");
    // Without --redis there is no such check.
    let (dc, _) = fake_dc().await;
    let out = Command::new(bin())
        // localhost and 127.0.0.1: the DNS check stays in /etc/hosts.
        .args([
            "doctor",
            "--json",
            "--timeout",
            "2s",
            "--domain",
            "localhost",
        ])
        .args(["--public-host", "127.0.0.1"])
        .args(["--cover", "127.0.0.1:1", "--dc-override", &dc.to_string()])
        .args(["--secret", KEY, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"redis\""));
}
