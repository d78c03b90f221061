//! `samizdat doctor` against a local cover site and a local fake DC: the
//! real binary, everything on 127.0.0.1, no public DNS (`localhost` and IP
//! literals only).

use samizdat::cli::doctor::clock::format_http_date;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testkit::fake_cover::{self, CoverKind, Received};
use testkit::fake_dc::{self, Events};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, pki_types};

const KEY: &str = "b53714b6bbbe90582f59732f40858926";

/// A local HTTPS cover: a self-signed certificate for `localhost`, the
/// given TLS versions, and an answer to `GET /` whose `Date:` is off by
/// `skew` seconds.
async fn tls_cover(
    versions: &[&'static rustls::SupportedProtocolVersion],
    skew: i64,
) -> SocketAddr {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let date = format_http_date((now as i64 + skew) as u64);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nDate: {date}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

async fn fake_dc() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(fake_dc::serve(l, events, false));
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

struct Report {
    code: i32,
    lines: Vec<String>,
    stdout: String,
}

impl Report {
    fn line(&self, level: &str, subject: &str) -> &str {
        let prefix = format!("{level:<4}  {subject}");
        self.lines
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{}", self.stdout))
    }
}

/// Runs `samizdat doctor` with the usual local options; an option in
/// `extra` replaces the usual one of that name, and `--no-secret` drops
/// `--secret` (zero-config).
async fn doctor(cover: SocketAddr, dc: SocketAddr, extra: &[&str]) -> Report {
    let state = tempfile::tempdir().unwrap();
    let (cover, dc, state_dir) = (
        cover.to_string(),
        dc.to_string(),
        state.path().display().to_string(),
    );
    let usual = [
        ("--listen", "127.0.0.1:0"),
        ("--domain", "localhost"),
        ("--public-host", "127.0.0.1"),
        ("--cover", &cover),
        ("--dc-override", &dc),
        ("--state-dir", &state_dir),
        ("--timeout", "2s"),
        ("--secret", KEY),
    ];
    let mut args = vec!["doctor".to_string()];
    for (name, value) in usual {
        let dropped = name == "--secret" && extra.contains(&"--no-secret");
        if !dropped && !extra.contains(&name) {
            args.extend([name.to_string(), value.to_string()]);
        }
    }
    args.extend(
        extra
            .iter()
            .filter(|a| **a != "--no-secret")
            .map(|s| s.to_string()),
    );
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_samizdat"))
        .args(&args)
        .env_remove("SAMIZDAT_CONFIG")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("doctor must never hang")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    Report {
        code: out.status.code().unwrap_or(-1),
        lines: stdout.lines().map(str::to_string).collect(),
        stdout,
    }
}

#[tokio::test]
async fn all_ok_against_a_local_cover_and_dc() {
    let cover = tls_cover(&[&rustls::version::TLS13], 0).await;
    let dc = fake_dc().await;
    let r = doctor(cover, dc, &[]).await;
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.lines.iter().all(|l| l.starts_with("ok ")),
        "every check ok:\n{}",
        r.stdout
    );
    r.line("ok", "config: valid: 1 user, modes ee, domain localhost");
    r.line("ok", "listen 127.0.0.1:0");
    r.line("ok", "clock: within");
    assert!(r.line("ok", "dns localhost").contains("127.0.0.1"));
    let c = r.line("ok", &format!("cover {cover}"));
    assert!(c.contains("TLS 1.3") && c.contains("key_share"), "{c}");
    assert!(c.contains("GET / answered HTTP 200"), "{c}");
    assert!(r.line("ok", "dc 1,2,3,4,5,203").contains(&dc.to_string()));
}

#[tokio::test]
async fn json_report() {
    let cover = tls_cover(&[&rustls::version::TLS13], 0).await;
    let r = doctor(cover, closed_port().await, &["--json"]).await;
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let findings = v["findings"].as_array().unwrap();
    let cover = findings.iter().find(|f| f["check"] == "cover").unwrap();
    assert_eq!(cover["level"], "ok");
    let dc = findings.iter().find(|f| f["check"] == "dc").unwrap();
    assert_eq!(dc["level"], "fail");
    assert!(dc["fix"].as_str().unwrap().contains("--dc-override"));
}

#[tokio::test]
async fn cover_down_fails_naming_the_cover_and_the_fix() {
    let cover = closed_port().await;
    let r = doctor(cover, fake_dc().await, &[]).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(
        r.line("fail", &format!("cover {cover}")),
        format!(
            "fail  cover {cover}: connection refused — start your cover web server or fix --cover"
        )
    );
    // Without the cover there is no Date header to compare with.
    assert!(r.line("warn", "clock").contains("not checked"));
}

#[tokio::test]
async fn cover_that_is_not_tls_fails() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cover = l.local_addr().unwrap();
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(fake_cover::serve(l, CoverKind::Http, received));
    let r = doctor(cover, fake_dc().await, &[]).await;
    assert_eq!(r.code, 1);
    let line = r.line("fail", &format!("cover {cover}"));
    assert!(
        line.contains("not with TLS") && line.contains("HTTP/1.1 400"),
        "{line}"
    );
    assert!(line.contains("--cover"), "{line}");
}

#[tokio::test]
async fn tls12_only_cover_fails() {
    let cover = tls_cover(&[&rustls::version::TLS12], 0).await;
    let r = doctor(cover, fake_dc().await, &[]).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    let line = r.line("fail", &format!("cover {cover}"));
    assert!(
        line.contains("TLS 1.2") && line.contains("enable TLS 1.3"),
        "{line}"
    );
}

#[tokio::test]
async fn silent_cover_times_out_instead_of_hanging() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cover = l.local_addr().unwrap();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    let start = std::time::Instant::now();
    let r = doctor(cover, fake_dc().await, &["--timeout", "1s"]).await;
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(r.code, 1);
    assert!(r
        .line("fail", &format!("cover {cover}"))
        .contains("no answer to the TLS hello within 1s"));
}

#[tokio::test]
async fn dc_down_fails() {
    let cover = tls_cover(&[&rustls::version::TLS13], 0).await;
    let dc = closed_port().await;
    let r = doctor(cover, dc, &[]).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    let line = r.line("fail", "dc 1,2,3,4,5,203");
    assert!(
        line.contains(&format!("{dc}: connection refused")),
        "{line}"
    );
    assert!(line.contains("--dc-override"), "{line}");
}

#[tokio::test]
async fn domain_resolving_elsewhere_warns() {
    let cover = tls_cover(&[&rustls::version::TLS13], 0).await;
    let r = doctor(cover, fake_dc().await, &["--public-host", "127.0.0.2"]).await;
    assert_eq!(r.code, 0, "a warning is not a failure:\n{}", r.stdout);
    let line = r.line("warn", "dns localhost");
    assert!(
        line.contains("not to this server (--public-host 127.0.0.2"),
        "{line}"
    );
    assert!(line.contains("censor"), "{line}");
}

#[tokio::test]
async fn clock_an_hour_off_fails() {
    let cover = tls_cover(&[&rustls::version::TLS13], -3600).await;
    let r = doctor(cover, fake_dc().await, &[]).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    let line = r.line("fail", "clock");
    assert!(line.contains("ahead of the Date header"), "{line}");
    assert!(line.contains("NTP") || line.contains("set-ntp"), "{line}");
}

#[tokio::test]
async fn bad_config_is_the_only_finding() {
    let cover = closed_port().await;
    let r = doctor(cover, closed_port().await, &["--modes", "ee,bogus"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.lines.len(), 1, "{}", r.stdout);
    assert!(r.line("fail", "config").contains("--modes"));
}

#[tokio::test]
async fn zero_config_writes_no_state() {
    let cover = tls_cover(&[&rustls::version::TLS13], 0).await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("samizdat");
    let dir_arg = dir.display().to_string();
    let r = doctor(
        cover,
        fake_dc().await,
        &["--no-secret", "--state-dir", &dir_arg],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.line("ok", "state").contains("no secret saved yet"));
    assert!(!dir.exists(), "doctor must not create the state directory");
}
