//! Signed server lists end to end, on 127.0.0.1 only: `samizdat list
//! keygen/sign/verify` through the real binary, and the real `samizdat
//! client` learning a server that is not in its link from a file, a local
//! HTTPS server (test CA) and a local DNS server (TXT), then carrying curl
//! through it, across restarts, and refusing stale lists.

use crate::common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::apps::{
    curl_within, free_port, printed_link, read_request, web_server_with, ClientProc,
};
use common::{bin, start, Proxy};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};
use wire::link::{Endpoint, Link};
use wire::server_list::{self, Listed, ServerList};

const SECRET: [u8; 32] = [0x77; 32];

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run samizdat")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// === the operator's commands ===

#[test]
fn keygen_sign_and_verify_round_trip_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("list.key");
    let key_s = key.to_str().unwrap();
    let out = run(&["list", "keygen", "--out", key_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("prints the public key")
        .to_string();
    assert!(text.contains(&format!("&lk={public}")), "{text}");
    let file = std::fs::read_to_string(&key).unwrap();
    assert!(!text.contains(file.lines().find(|l| l.starts_with("secret")).unwrap()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is owner-only");
    }
    // Never overwrite a key that links may trust.
    let again = run(&["list", "keygen", "--out", key_s]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("is not overwritten"),
        "{}",
        stderr(&again)
    );

    let from = dir.path().join("endpoints.txt");
    std::fs::write(
        &from,
        "# spare servers\n198.51.100.7:8443\n\nwss://cdn.example.net/s\n",
    )
    .unwrap();
    let list = dir.path().join("servers.list");
    let signed = run(&[
        "list",
        "sign",
        "--key",
        key_s,
        "--serial",
        "5",
        "--expires",
        "7d",
        "--endpoint",
        "203.0.113.5:443",
        "--from",
        from.to_str().unwrap(),
        "--out",
        list.to_str().unwrap(),
        "--dns-name",
        "_s.example.org",
    ]);
    assert!(signed.status.success(), "{}", stderr(&signed));
    let printed = stdout(&signed);
    let text = printed.lines().next().unwrap();
    assert!(text.starts_with("SZL1."), "{printed}");
    assert_eq!(std::fs::read_to_string(&list).unwrap().trim(), text);
    // The TXT record: quoted strings of at most 255 bytes that join back
    // into the list.
    let txt = printed
        .lines()
        .find_map(|l| l.strip_prefix("_s.example.org. 3600 IN TXT "))
        .expect("a zone-file TXT line");
    let strings: Vec<&str> = txt.split(' ').map(|s| s.trim_matches('"')).collect();
    assert!(strings.len() >= 2, "a list this size needs several strings");
    assert!(strings.iter().all(|s| s.len() <= 255));
    assert_eq!(strings.concat(), text);

    let list_s = list.to_str().unwrap();
    let ok = run(&["list", "verify", "--key", &public, list_s]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let shown = stdout(&ok);
    assert!(shown.starts_with("valid: serial 5,"), "{shown}");
    let endpoints: Vec<&str> = shown.lines().skip(1).collect();
    assert_eq!(
        endpoints,
        [
            "203.0.113.5:443",
            "198.51.100.7:8443",
            "wss://cdn.example.net/s"
        ]
    );
    // The key can come from a link's lk=.
    let link = format!(
        "samizdat://BwcHBwcHBwcHBwcHBwcHBw@h.example:443?pk={}&sni=a.example&lk={public}",
        URL_SAFE_NO_PAD.encode([9u8; 32])
    );
    let by_link = run(&["list", "verify", "--key", &link, list_s]);
    assert!(by_link.status.success(), "{}", stderr(&by_link));
    // The whole output of `sign` works as a file too.
    let whole = dir.path().join("whole.txt");
    std::fs::write(&whole, &printed).unwrap();
    assert!(
        run(&["list", "verify", "--key", &public, whole.to_str().unwrap()])
            .status
            .success()
    );
}

#[test]
fn tampered_foreign_and_stale_lists_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let other = dir.path().join("other");
    let mut publics = Vec::new();
    for k in [&key, &other] {
        let out = run(&["list", "keygen", "--out", k.to_str().unwrap()]);
        assert!(out.status.success());
        publics.push(
            stdout(&out)
                .lines()
                .find_map(|l| l.strip_prefix("public key: "))
                .unwrap()
                .to_string(),
        );
    }
    let sign = |key: &Path, serial: &str, name: &str| {
        let path = dir.path().join(name);
        let out = run(&[
            "list",
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--serial",
            serial,
            "--endpoint",
            "203.0.113.9:443",
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        path
    };
    let good = sign(&key, "5", "good");
    let foreign = sign(&other, "6", "foreign");
    // One byte of the body changed (the middle of its base64).
    let text = std::fs::read_to_string(&good).unwrap();
    let body_end = text.rfind('.').unwrap();
    let mid = body_end / 2;
    let mut bytes = text.clone().into_bytes();
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = dir.path().join("tampered");
    std::fs::write(&tampered, bytes).unwrap();

    let verify = |path: &Path, extra: &[&str]| {
        let mut args = vec!["list", "verify", "--key", &publics[0]];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        run(&args)
    };
    assert!(verify(&good, &[]).status.success());
    let out = verify(&tampered, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused: bad signature: the list was altered"),
        "{}",
        stderr(&out)
    );
    let out = verify(&foreign, &[]);
    assert!(!out.status.success());
    let other_id = server_list::key_id(&key_bytes(&publics[1]));
    let our_id = server_list::key_id(&key_bytes(&publics[0]));
    assert!(
        stderr(&out).contains(&format!(
            "refused: the list is signed by key {other_id}, not by this link's list key {our_id}"
        )),
        "{}",
        stderr(&out)
    );
    let out = verify(&good, &["--newer-than", "10"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "refused: stale list: serial 5 is not newer than the serial 10 already known"
        ),
        "{}",
        stderr(&out)
    );
}

fn key_bytes(b64: &str) -> [u8; 32] {
    URL_SAFE_NO_PAD.decode(b64).unwrap().try_into().unwrap()
}

// === the client ===

/// The server's link with only a dead server in it, our list key, and
/// `sources`.
fn client_link(proxy: &Proxy, sources: &[String]) -> Link {
    let mut link = printed_link(proxy);
    link.servers = vec![Endpoint::direct("127.0.0.1", free_port())];
    link.list_key = Some(server_list::public_key(&SECRET));
    link.list_sources = sources.to_vec();
    link
}

/// A list with `endpoints`, signed with [`SECRET`].
fn signed(serial: u64, endpoints: &[SocketAddr]) -> String {
    let list = ServerList {
        serial,
        issued: now() - 5,
        expires: now() + 86_400,
        endpoints: endpoints
            .iter()
            .map(|a| Listed {
                endpoint: Endpoint::direct("127.0.0.1", a.port()),
                server_key: None,
            })
            .collect(),
    };
    server_list::sign(&list, &SECRET).unwrap()
}

/// `samizdat client LINK` with SOCKS5 only, state in `state`, `env` and
/// `extra` arguments, logging at info.
fn start_client(link: &Link, state: &Path, env: &[(&str, &str)], extra: &[&str]) -> ClientProc {
    let mut env = env.to_vec();
    env.extend([("NO_COLOR", "1"), ("SAMIZDAT_LOG", "info")]);
    let mut client = common::apps::client(link).state_dir(state).args(extra);
    for (k, v) in env {
        client = client.env(k, v);
    }
    client.start().unwrap()
}

/// curl through the client until the page arrives (the list may still be
/// on its way) or 40 s pass.
async fn fetch(client: &ClientProc, web: SocketAddr) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(40) {
        let args = [
            "--socks5-hostname".to_string(),
            client.socks.to_string(),
            format!("http://{web}/"),
        ];
        let (code, out, err) = curl_within(10, &args).await;
        if code == 0 && out == PAGE {
            return Ok(());
        }
        last = err;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last)
}

const PAGE: &[u8] = b"through a server from a signed list";

/// A web server answering every request with [`PAGE`].
async fn web_server() -> SocketAddr {
    web_server_with(|_| PAGE.to_vec()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_learns_a_server_from_a_file_keeps_it_across_restarts_and_refuses_a_stale_list() {
    let web = web_server().await;
    let proxy = start(&["--egress-allow", "127.0.0.0/8"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("servers.list");
    std::fs::write(&file, signed(100, &[proxy.addr])).unwrap();
    let link = client_link(&proxy, &[format!("file:{}", file.display())]);
    let state = dir.path().join("state");

    let client = start_client(&link, &state, &[], &[]);
    fetch(&client, web)
        .await
        .unwrap_or_else(|e| panic!("no page through the learned server: {e}"));
    assert!(client.logged("serial 100 with 1 endpoint(s)"));
    let saved = state.join("lists").join(format!(
        "{}.list",
        server_list::key_id(&server_list::public_key(&SECRET))
    ));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the saved list is owner-only");
    }
    drop(client);

    // Restart without the source: the saved list still names the server.
    std::fs::remove_file(&file).unwrap();
    let client = start_client(&link, &state, &[], &[]);
    fetch(&client, web)
        .await
        .unwrap_or_else(|e| panic!("the learned server was forgotten on restart: {e}"));
    assert!(client.logged("saved server list: serial 100, 1 server(s) beyond the link's"));
    drop(client);

    // A lower serial (an old list replayed) naming another server is
    // refused, and the newer list's server stays in use.
    std::fs::write(
        &file,
        signed(50, &[SocketAddr::from(([127, 0, 0, 1], free_port()))]),
    )
    .unwrap();
    let client = start_client(&link, &state, &[], &[]);
    fetch(&client, web).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.logged("stale list") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        client.logged(
            "refused: stale list: serial 50 is not newer than the serial 100 already known"
        ),
        "{:#?}",
        client.log()
    );
    let still = server_list::verify_signature(
        &std::fs::read_to_string(&saved).unwrap(),
        &server_list::public_key(&SECRET),
    )
    .unwrap();
    assert_eq!(
        still.serial, 100,
        "the stale list did not replace the saved one"
    );
}

/// A fresh CA and a `localhost` leaf it signed (testkit); the CA as PEM.
fn test_pki() -> (String, rustls::ServerConfig) {
    let pki = testkit::pki::localhost_ca();
    (pki.ca_pem(), pki.server_config())
}

/// An HTTPS server answering `GET /servers.list` with `body`; counts the
/// requests it answered.
async fn https_server(config: rustls::ServerConfig, body: String) -> (SocketAddr, Arc<Mutex<u32>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let served = Arc::new(Mutex::new(0));
    let count = served.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, body, count) = (acceptor.clone(), body.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let Some(head) = read_request(&mut tls).await else {
                    return;
                };
                let reply = if head.starts_with(b"GET /servers.list ") {
                    *count.lock().unwrap() += 1;
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
                };
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_learns_a_server_over_https_with_a_test_ca() {
    let web = web_server().await;
    let proxy = start(&["--egress-allow", "127.0.0.0/8"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (pem, config) = test_pki();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let (https, served) = https_server(config, format!("{}\n", signed(7, &[proxy.addr]))).await;
    // A missing path first: its 404 is logged and the next source is tried.
    let link = client_link(
        &proxy,
        &[
            format!("https://localhost:{}/missing.list", https.port()),
            format!("https://localhost:{}/servers.list", https.port()),
        ],
    );
    let client = start_client(
        &link,
        &dir.path().join("state"),
        &[("SAMIZDAT_TEST_CA", ca.to_str().unwrap())],
        &[],
    );
    fetch(&client, web)
        .await
        .unwrap_or_else(|e| panic!("no page through the server learned over HTTPS: {e}"));
    assert_eq!(*served.lock().unwrap(), 1);
    assert!(client.logged("/missing.list: unreachable: HTTP 404 Not Found"));
    assert!(client.logged("/servers.list (direct): serial 7 with 1 endpoint(s)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_source_with_an_untrusted_certificate_is_not_used() {
    let proxy = start(&["--egress-allow", "127.0.0.0/8"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (_pem, config) = test_pki();
    let (https, served) = https_server(config, signed(7, &[proxy.addr])).await;
    let link = client_link(
        &proxy,
        &[format!("https://localhost:{}/servers.list", https.port())],
    );
    // No SAMIZDAT_TEST_CA: the certificate chains to nothing trusted.
    let client = start_client(&link, &dir.path().join("state"), &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.logged("no server list source worked") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        client.logged("unreachable: direct: TLS: invalid peer certificate"),
        "{:#?}",
        client.log()
    );
    assert_eq!(*served.lock().unwrap(), 0);
}

/// A DNS server on UDP answering TXT queries for `name` with `text` split
/// into strings of at most 255 bytes (NXDOMAIN for anything else); counts
/// the answers.
async fn dns_server(name: &'static str, text: String) -> (SocketAddr, Arc<Mutex<u32>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let answered = Arc::new(Mutex::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let q = &buf[..n];
            if q.len() < 12 {
                continue;
            }
            // The question: labels, then type and class.
            let mut at = 12;
            let mut labels = Vec::new();
            while at < q.len() && q[at] != 0 {
                let len = q[at] as usize;
                labels.push(String::from_utf8_lossy(&q[at + 1..at + 1 + len]).to_lowercase());
                at += 1 + len;
            }
            let question_end = at + 5;
            if question_end > q.len() {
                continue;
            }
            let qtype = u16::from_be_bytes([q[at + 1], q[at + 2]]);
            let hit = labels.join(".") == name && qtype == 16;
            let mut r = Vec::new();
            r.extend_from_slice(&q[..2]);
            r.extend_from_slice(&[0x81, if hit { 0x80 } else { 0x83 }]);
            r.extend_from_slice(&[0, 1, 0, u8::from(hit), 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..question_end]);
            if hit {
                let mut rdata = Vec::new();
                for chunk in text.as_bytes().chunks(255) {
                    rdata.push(chunk.len() as u8);
                    rdata.extend_from_slice(chunk);
                }
                r.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60]);
                r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                r.extend_from_slice(&rdata);
                *count.lock().unwrap() += 1;
            }
            let _ = socket.send_to(&r, from).await;
        }
    });
    (addr, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_learns_a_server_from_a_dns_txt_record() {
    let web = web_server().await;
    let proxy = start(&["--egress-allow", "127.0.0.0/8"]).await;
    let dir = tempfile::tempdir().unwrap();
    // A dead endpoint first, so the record needs two strings and the
    // client fails over within the list.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = signed(3, &[dead, proxy.addr]);
    assert!(text.len() > 255, "the record needs more than one string");
    let (dns, answered) = dns_server("_lists.samizdat.test", text).await;
    let link = client_link(&proxy, &["dns:_lists.samizdat.test".to_string()]);
    let client = start_client(
        &link,
        &dir.path().join("state"),
        &[],
        &["--list-dns", &dns.to_string()],
    );
    fetch(&client, web)
        .await
        .unwrap_or_else(|e| panic!("no page through the server learned over DNS: {e}"));
    assert!(*answered.lock().unwrap() >= 1);
    assert!(client.logged("dns:_lists.samizdat.test (DNS): serial 3 with 2 endpoint(s)"));
}
