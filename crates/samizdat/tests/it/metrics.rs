//! `--metrics`: the endpoint scraped over plain TCP after real traffic and
//! parsed as Prometheus text; the Grafana dashboard checked against the
//! names the endpoint exports.

use crate::common;

use common::*;
use prometheus_parse::{LineInfo, Scrape, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use testkit::client::{Client, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::faketls::client::HelloShape;

/// A loopback address with a port free right now.
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Starts the proxy with `--metrics` on a free loopback port.
async fn start_with_metrics() -> (Proxy, SocketAddr) {
    let metrics = free_addr();
    let proxy = start(&["--metrics", &metrics.to_string()]).await;
    (proxy, metrics)
}

/// `GET path` over plain TCP: status line, headers, body.
async fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("metrics answered in time")
        .unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "Content-Length matches the body");
    (status.to_string(), headers.to_string(), body.to_string())
}

/// Scrapes `/metrics` and parses it; every line must be one the parser
/// understands (OpenMetrics adds only the final `# EOF`).
async fn scrape(addr: SocketAddr) -> (String, Scrape) {
    let (status, headers, body) = get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{headers}"
    );
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    for line in body.lines().filter(|l| *l != "# EOF") {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored | LineInfo::Empty),
            "line the Prometheus parser does not understand: {line:?}"
        );
    }
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    (body, parsed)
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        other => panic!("not a plain number: {other:?}"),
    }
}

/// The sum of every sample of `name` whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| number(&x.value))
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

async fn probe(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_counts_a_session_and_probes() {
    let (proxy, metrics) = start_with_metrics().await;

    // One authenticated ee client with a bulk transfer.
    let mut c = Client::connect(proxy.addr, &secret("ee"), &Options::default())
        .await
        .unwrap();
    let chunk = vec![0x5au8; 256 * 1024];
    let mut sent = 0u64;
    for _ in 0..8 {
        c.send(&chunk).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(20), c.recv())
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(back.len(), chunk.len());
        sent += chunk.len() as u64;
    }
    drop(c);

    // Probes, each spliced to the cover.
    let wrong_key = wire::faketls::client::build_hello(
        &[0xff; 16],
        DOMAIN,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32,
        HelloShape::Classic517,
        &mut testkit::fill,
    );
    let probes: Vec<Vec<u8>> = vec![
        testkit::random::<200>().to_vec(),
        b"GET / HTTP/1.1\r\nHost: cover.localhost\r\n\r\n".to_vec(),
        wrong_key,
    ];
    for p in &probes {
        probe(proxy.addr, p).await;
    }
    let n = probes.len() as f64;

    // Relay bytes are added when the relay ends: wait for it.
    let mut last = None;
    for _ in 0..100 {
        let (body, s) = scrape(metrics).await;
        let done = value(
            &s,
            "samizdat_user_bytes_total",
            &[("user", "default"), ("direction", "from_client")],
        )
        .unwrap_or(0.0)
            >= sent as f64
            && value(&s, "samizdat_cover_splices_total", &[]).unwrap_or(0.0) >= n;
        last = Some((body, s));
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (body, s) = last.unwrap();
    let get = |name: &str, labels: &[(&str, &str)]| {
        value(&s, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{body}"))
    };

    assert!(get("samizdat_handshakes_total", &[("outcome", "ok_tls")]) >= 1.0);
    let covered: f64 = s
        .samples
        .iter()
        .filter(|x| {
            x.metric == "samizdat_handshakes_total"
                && !x.labels.get("outcome").unwrap_or("ok").starts_with("ok_")
        })
        .map(|x| number(&x.value))
        .sum();
    assert!(covered >= n, "sent to cover: {covered} < {n}\n{body}");
    assert!(get("samizdat_handshakes_total", &[("outcome", "bad_hmac")]) >= 1.0);
    assert!(get("samizdat_cover_splices_total", &[]) >= n);
    assert!(
        get(
            "samizdat_user_bytes_total",
            &[("user", "default"), ("direction", "from_client")]
        ) >= sent as f64,
        "{body}"
    );
    assert!(
        get(
            "samizdat_user_bytes_total",
            &[("user", "default"), ("direction", "to_client")]
        ) >= sent as f64
    );
    assert!(get("samizdat_user_connections_total", &[("user", "default")]) >= 1.0);
    assert!(get("samizdat_connections_total", &[]) >= 1.0 + n);
    assert_eq!(get("samizdat_connections_refused_total", &[]), 0.0);
    assert!(get("samizdat_dc_connect_seconds_count", &[("dc_id", "2")]) >= 1.0);
    assert!(get("samizdat_dc_connect_seconds_sum", &[]) > 0.0);
    assert!(get("samizdat_replay_cache_entries", &[("kind", "tls")]) >= 1.0);
    assert!(get("samizdat_replay_cache_entries", &[("kind", "obfuscated2")]) >= 0.0);
    // The scrape's own connection is not a proxy connection; the client and
    // the probes have ended (or are ending).
    assert!(get("samizdat_connections_active", &[]) >= 0.0);
    assert!(get("samizdat_relays_active", &[]) >= 0.0);
    let histogram = s
        .samples
        .iter()
        .find(|x| x.metric == "samizdat_dc_connect_seconds")
        .expect("dc_connect_seconds buckets");
    assert!(matches!(&histogram.value, Value::Histogram(b) if b.len() > 5));

    // Users are names only: no key, in any case, anywhere.
    assert!(!body.to_ascii_lowercase().contains(KEY), "key in metrics");

    // Anything but GET /metrics is refused.
    assert!(get_status(metrics, "/").await.starts_with("HTTP/1.1 404"));
}

async fn get_status(addr: SocketAddr, path: &str) -> String {
    get(addr, path).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_ids_outside_telegrams_are_one_label() {
    // --dc-override routes every id, so a client picks the label.
    let (proxy, metrics) = start_with_metrics().await;
    for dc in [2, 7, 99, -1234, 31_000] {
        let opts = Options {
            dc,
            ..Default::default()
        };
        let mut c = Client::connect(proxy.addr, &secret("ee"), &opts)
            .await
            .unwrap();
        c.send(&[1u8; 16]).await.unwrap();
        assert_eq!(c.recv().await.unwrap(), vec![1u8; 16]);
    }
    let (body, _) = scrape(metrics).await;
    let mut ids = BTreeSet::new();
    for line in body
        .lines()
        .filter(|l| l.starts_with("samizdat_dc_connect"))
    {
        if let Some(rest) = line.split("dc_id=\"").nth(1) {
            ids.insert(rest.split('"').next().unwrap().to_string());
        }
    }
    let want: BTreeSet<String> = ["2", "other"].iter().map(|s| s.to_string()).collect();
    assert_eq!(ids, want, "dc_id labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_from_one_address_do_not_starve_healthz() {
    let (_proxy, metrics) = start_with_metrics().await;
    // 40 connections from 127.0.0.2 that start a request and never end it.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = s.connect(metrics).await.unwrap();
        let _ = s.write_all(b"GET /metr").await;
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The liveness probe, from 127.0.0.1, is answered at once.
    let t = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(2), get_status(metrics, "/healthz"))
        .await
        .expect("/healthz answered within 2 s beside 40 slow connections");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    drop(slow);
}

/// Every metric name the endpoint exports, as PromQL sees them, and every
/// label name.
fn exported(body: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut labels: BTreeSet<String> = ["le".to_string()].into();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "gauge" => {
                    names.insert(name.to_string());
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                other => panic!("unexpected type {other}"),
            }
        } else if let Some((_, rest)) = line.split_once('{') {
            for pair in rest.split("\",") {
                if let Some((k, _)) = pair.split_once("=\"") {
                    labels.insert(k.to_string());
                }
            }
        }
    }
    (names, labels)
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Identifiers in a PromQL expression.
fn identifiers(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        .collect()
}

#[test]
fn the_dashboard_uses_only_exported_names() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../dashboards/samizdat.json"
    );
    let text = std::fs::read_to_string(path).expect("dashboards/samizdat.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(
        dashboard["schemaVersion"].as_u64().unwrap() >= 38,
        "Grafana 10+"
    );
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    for p in panels {
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {}",
            p["title"]
        );
    }

    // Every family with a sample (an empty family is not encoded at all).
    let m = samizdat::metrics::Metrics::new(["alice"]);
    for outcome in samizdat::metrics::OUTCOMES {
        m.handshake(outcome);
    }
    m.dc_connected(2, Duration::from_millis(5));
    m.dc_connect_failed(2);
    m.set_replay_entries(1, 1);
    m.connections.inc();
    m.connections_refused.inc();
    m.cover_splices.inc();
    let body = m.encode();
    let (names, labels) = exported(&body);
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 6, "{exprs:?}");
    for expr in &exprs {
        let used: Vec<&str> = identifiers(expr)
            .into_iter()
            .filter(|w| w.starts_with("samizdat"))
            .collect();
        assert!(!used.is_empty(), "{expr}: uses no samizdat metric");
        for name in used {
            assert!(
                names.contains(name),
                "{expr}: {name} is not exported ({names:?})"
            );
        }
        // Labels in `by (...)` exist too.
        for part in expr.split("by (").skip(1) {
            let list = part.split(')').next().unwrap();
            for label in list.split(',').map(str::trim) {
                assert!(labels.contains(label), "{expr}: no label {label}");
            }
        }
    }
}
