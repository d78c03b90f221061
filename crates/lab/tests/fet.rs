//! Technique 3: fully-encrypted-traffic detection and the residual block
//! of the (client IP, server IP, server port) triple.

mod common;

use common::*;
use lab::techniques::Fet;
use std::sync::Arc;
use std::time::Duration;
use wire::faketls::client::HelloShape;

const PERIOD: Duration = Duration::from_millis(1000);

#[tokio::test]
async fn obfuscated2_is_dropped_then_its_triple_until_the_period_ends() {
    let l = lab(vec![Arc::new(Fet::new(PERIOD))], "198.51.100.7:443").await;
    let start = tokio::time::Instant::now();

    // An MTProto client's first 64 bytes look fully encrypted.
    let mut s = connect(l.mb.addr).await;
    assert!(blackholed(&mut s, &obfuscated2_init()).await);
    assert_eq!(l.mb.events().get("fet").dropped, 1);

    // Within the period even an HTTP request on the same triple is dropped
    // (at connect: the server never hears of it)...
    let mut s = connect(l.mb.addr).await;
    assert!(blackholed(&mut s, HTTP).await);
    assert_eq!(l.mb.events().get("fet").dropped, 2);
    assert_eq!(l.received.lock().unwrap().len(), 1);
    // ...while another client address is not affected.
    let mut other = connect_from(l.mb.addr, "127.0.0.2").await;
    assert!(echoes(&mut other, HTTP).await);

    // After the period the triple is free again.
    tokio::time::sleep_until(start + PERIOD + Duration::from_millis(100)).await;
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, HTTP).await);
    assert_eq!(l.mb.events().get("fet").dropped, 2);
}

#[tokio::test]
async fn exempt_first_payloads_pass() {
    let l = lab(vec![Arc::new(Fet::new(PERIOD))], "198.51.100.7:443").await;
    for sample in [HTTP.to_vec(), hello("example.com", HelloShape::Classic517)] {
        let mut s = connect(l.mb.addr).await;
        assert!(echoes(&mut s, &sample).await);
    }
    // Only the first payload is judged: random bytes later pass.
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, HTTP).await);
    assert!(echoes(&mut s, &obfuscated2_init()).await);
    assert_eq!(l.mb.events().get("fet").total(), 0);
}

#[tokio::test]
async fn untargeted_destinations_are_not_watched() {
    let fet = Fet::new(PERIOD).targets(vec!["45.32.0.0/16".parse().unwrap()]);
    let l = lab(vec![Arc::new(fet)], "198.51.100.7:443").await;
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, &obfuscated2_init()).await);
}
