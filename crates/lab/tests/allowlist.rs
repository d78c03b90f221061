//! Technique 7: Iran's protocol allowlist and the whitelist mode.

mod common;

use common::*;
use lab::techniques::{ProtocolAllowlist, SniRule, Whitelist};
use std::sync::Arc;
use std::time::Duration;
use wire::faketls::client::HelloShape;

const PERIOD: Duration = Duration::from_millis(800);

#[tokio::test]
async fn unknown_protocol_is_dropped_and_its_triple_for_the_period() {
    let l = lab(
        vec![Arc::new(ProtocolAllowlist::new(PERIOD))],
        "185.1.2.3:443",
    )
    .await;
    let start = tokio::time::Instant::now();
    let mut s = connect(l.mb.addr).await;
    assert!(blackholed(&mut s, &obfuscated2_init()).await);
    let mut s = connect(l.mb.addr).await;
    assert!(blackholed(&mut s, HTTP).await);
    assert_eq!(l.mb.events().get("protocol-allowlist").dropped, 2);
    tokio::time::sleep_until(start + PERIOD + Duration::from_millis(100)).await;
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, HTTP).await);
}

#[tokio::test]
async fn dns_http_tls_pass_and_unwatched_ports_pass_anything() {
    let l = lab(
        vec![Arc::new(ProtocolAllowlist::new(PERIOD))],
        "185.1.2.3:53",
    )
    .await;
    // A DNS-over-TCP query for example.com A.
    let mut dns = vec![0, 29, 0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    for sample in [
        dns,
        HTTP.to_vec(),
        hello("example.com", HelloShape::Classic517),
    ] {
        let mut s = connect(l.mb.addr).await;
        assert!(echoes(&mut s, &sample).await);
    }
    let l = lab(
        vec![Arc::new(ProtocolAllowlist::new(PERIOD))],
        "185.1.2.3:8443",
    )
    .await;
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, &obfuscated2_init()).await);
    assert_eq!(l.mb.events().get("protocol-allowlist").total(), 0);
}

#[tokio::test]
async fn whitelist_lets_listed_addresses_and_names_through_only() {
    let by_addr = || Whitelist::new(vec!["185.0.0.0/8".parse().unwrap()], Vec::new());
    let l = lab(vec![Arc::new(by_addr())], "185.1.2.3:443").await;
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, &obfuscated2_init()).await);
    let l = lab(vec![Arc::new(by_addr())], "8.8.8.8:443").await;
    let mut s = connect(l.mb.addr).await;
    assert!(blackholed(&mut s, HTTP).await);
    assert!(l.received.lock().unwrap().is_empty());

    let by_name = Whitelist::new(Vec::new(), vec![SniRule::domain("example.com")]);
    let l = lab(vec![Arc::new(by_name)], "8.8.8.8:443").await;
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, &hello("www.example.com", HelloShape::PostQuantum)).await);
    let mut s = connect(l.mb.addr).await;
    assert!(blackholed(&mut s, &hello("telegram.org", HelloShape::PostQuantum)).await);
    let mut s = connect(l.mb.addr).await;
    assert!(blackholed(&mut s, HTTP).await);
    assert_eq!(l.mb.events().get("whitelist").dropped, 2);
}
