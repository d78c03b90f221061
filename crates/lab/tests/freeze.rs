//! Technique 6: the 16–20 KB freeze of TLS flows to foreign hosting.

mod common;

use common::*;
use lab::middlebox::SEGMENT;
use lab::techniques::Freeze;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire::faketls::client::HelloShape;

/// Sends a hello and `n` more bytes; returns what came back before the
/// downstream went quiet.
async fn download(addr: std::net::SocketAddr, n: usize) -> (usize, usize) {
    let mut s = connect(addr).await;
    let h = hello("example.com", HelloShape::PostQuantum);
    s.write_all(&h).await.unwrap();
    s.write_all(&vec![0x17; n]).await.unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Ok(k)) = tokio::time::timeout(QUIET, s.read(&mut buf)).await {
        if k == 0 {
            break;
        }
        got += k;
    }
    (h.len() + n, got)
}

#[tokio::test]
async fn downstream_freezes_after_16_kib_upstream_still_flows() {
    let foreign = vec!["5.9.0.0/16".parse().unwrap()];
    let l = lab(vec![Arc::new(Freeze::new(foreign))], "5.9.10.11:443").await;
    let (sent, got) = download(l.mb.addr, 64 * 1024).await;
    let threshold = lab::techniques::freeze::THRESHOLD as usize;
    assert!(got <= threshold && got > threshold - SEGMENT, "got {got}");
    assert_eq!(l.mb.events().get("freeze").frozen, 1);
    // Every byte the client sent reached the server.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(l.received.lock().unwrap()[0].len(), sent);
}

#[tokio::test]
async fn domestic_destinations_and_plain_tcp_are_not_frozen() {
    let foreign = vec!["5.9.0.0/16".parse().unwrap()];
    let l = lab(
        vec![Arc::new(Freeze::new(foreign.clone()))],
        "77.88.55.88:443",
    )
    .await;
    let (sent, got) = download(l.mb.addr, 64 * 1024).await;
    assert_eq!(got, sent);

    // Not TLS: the freeze looks at TLS flows only.
    let l = lab(vec![Arc::new(Freeze::new(foreign))], "5.9.10.11:443").await;
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, &[b'a'; 40 * 1024]).await);
    assert_eq!(l.mb.events().get("freeze").total(), 0);
}
