//! Technique 2: SNI blocking and throttling.

mod common;

use common::*;
use lab::techniques::{SniFilter, SniRule};
use lab::Verdict;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use wire::faketls::client::HelloShape;

#[tokio::test]
async fn blocked_name_is_reset_other_names_pass() {
    let filter = SniFilter::block(vec![SniRule::domain("twitter.com")], Verdict::Reset);
    let l = lab(vec![Arc::new(filter)], "104.244.42.1:443").await;

    let mut s = connect(l.mb.addr).await;
    assert!(reset(&mut s, &hello("api.twitter.com", HelloShape::Classic517)).await);

    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, &hello("nottwitter.com", HelloShape::Classic517)).await);
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, &hello("example.com", HelloShape::PostQuantum)).await);
    assert_eq!(l.mb.events().get("sni").reset, 1);
    let r = &l.mb.events().records()[0];
    assert_eq!(r.sni.as_deref(), Some("api.twitter.com"));
}

#[test]
fn the_t_co_substring_rule_hits_bystanders() {
    let rule = SniRule::substring("t.co");
    for name in ["t.co", "microsoft.com", "reddit.com", "rt.com"] {
        assert!(rule.matches(name), "{name}");
    }
    assert!(!rule.matches("example.org"));
    let fixed = SniRule::domain("t.co");
    assert!(fixed.matches("t.co") && !fixed.matches("microsoft.com"));
}

/// Sends `n` bytes after a hello naming `sni` and reads them back; returns
/// how long the echo took.
async fn transfer(addr: std::net::SocketAddr, sni: &str, n: usize) -> Duration {
    let mut s = connect(addr).await;
    let h = hello(sni, HelloShape::Classic517);
    assert!(echoes(&mut s, &h).await);
    let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
    let t = Instant::now();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move { w.write_all(&data).await.map(|_| w) });
    let mut buf = vec![0u8; n];
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read_exact(&mut r, &mut buf),
    )
    .await
    .expect("transfer finished")
    .unwrap();
    let _w = writer.await.unwrap().unwrap();
    t.elapsed()
}

#[tokio::test]
async fn substring_throttle_slows_reddit_to_the_configured_rate() {
    // 1 Mbit/s, so the test stays short; the shipped rule uses 130 kbit/s.
    let rate_bits = 1_000_000u64;
    let filter = SniFilter::throttle(vec![SniRule::substring("t.co")], rate_bits);
    let l = lab(vec![Arc::new(filter)], "151.101.1.140:443").await;

    let n = 100_000;
    let slow = transfer(l.mb.addr, "www.reddit.com", n).await;
    // Each direction is paced after every write, so all but the last read
    // (at most rate/10) waits at the rate.
    let bytes_per_sec = rate_bits / 8;
    let floor =
        Duration::from_secs_f64((n as u64 - bytes_per_sec / 10) as f64 / bytes_per_sec as f64);
    assert!(slow >= floor, "{slow:?} < {floor:?}");
    assert_eq!(l.mb.events().get("sni").throttled, 1);

    let fast = transfer(l.mb.addr, "example.org", n).await;
    assert!(fast < floor / 2, "unthrottled took {fast:?}");
    assert_eq!(l.mb.events().get("sni").throttled, 1);
}

#[tokio::test]
async fn twitter_2021_rule_throttles_microsoft_at_130_kbit() {
    let l = lab(
        vec![Arc::new(SniFilter::twitter_2021())],
        "20.70.246.20:443",
    )
    .await;
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, &hello("www.microsoft.com", HelloShape::Classic517)).await);
    let r = &l.mb.events().records()[0];
    assert_eq!(
        r.verdict,
        Verdict::Throttle {
            bytes_per_sec: 130_000 / 8
        }
    );
}
