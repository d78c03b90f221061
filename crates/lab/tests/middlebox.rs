//! The middlebox itself: a clean pass-through, verdicts combined, the
//! first payload gathered across reads, FIN and RST mirrored, and the stop.

mod common;

use common::*;
use lab::techniques::{SniFilter, SniRule};
use lab::{Flow, Policy, Technique, Verdict};
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wire::faketls::client::HelloShape;

#[tokio::test]
async fn empty_policy_passes_bytes_and_fin_and_counts_flows() {
    let l = lab(Vec::new(), "192.0.2.1:443").await;
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, HTTP).await);
    assert!(echoes(&mut s, &[9u8; 100_000]).await);
    // Our FIN reaches the echo server, which closes: its FIN comes back.
    s.shutdown().await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(l.mb.events().flows(), 1);
    assert!(l.mb.events().all().is_empty());
}

/// A technique that returns fixed verdicts.
struct Fixed(&'static str, Verdict);

impl Technique for Fixed {
    fn name(&self) -> &'static str {
        self.0
    }
    fn on_first_payload(&self, _flow: &Flow, _data: &[u8]) -> Verdict {
        self.1
    }
}

#[tokio::test]
async fn the_most_severe_verdict_wins() {
    let l = lab(
        vec![
            Arc::new(Fixed(
                "slow",
                Verdict::Throttle {
                    bytes_per_sec: 1000,
                },
            )),
            Arc::new(Fixed("cut", Verdict::Reset)),
            Arc::new(Fixed("hole", Verdict::Drop)),
        ],
        "192.0.2.1:443",
    )
    .await;
    let mut s = connect(l.mb.addr).await;
    assert!(reset(&mut s, HTTP).await);
    let all = l.mb.events().all();
    assert_eq!(all.len(), 1);
    assert_eq!(all["cut"].reset, 1);
}

#[tokio::test]
async fn a_hello_split_over_writes_is_judged_whole() {
    let filter = SniFilter::block(vec![SniRule::domain("blocked.example")], Verdict::Reset);
    let l = lab(vec![Arc::new(filter)], "192.0.2.1:443").await;
    let h = hello("blocked.example", HelloShape::PostQuantum);
    let mut s = connect(l.mb.addr).await;
    s.write_all(&h[..3]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(&h[3..200]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(reset(&mut s, &h[200..]).await);
    assert_eq!(l.mb.events().get("sni").reset, 1);
}

#[tokio::test]
async fn a_refused_upstream_resets_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    drop(listener);
    let mb = lab::start("127.0.0.1:0".parse().unwrap(), upstream, Policy::default())
        .await
        .unwrap();
    let mut s = connect(mb.addr).await;
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn dropping_the_middlebox_ends_its_flows() {
    let l = lab(Vec::new(), "192.0.2.1:443").await;
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, HTTP).await);
    let addr = l.mb.addr;
    drop(l);
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0)), "{r:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
