//! Technique 4: JA3/JA4 blocklists.

mod common;

use common::*;
use lab::censor::ja::ja3;
use lab::techniques::{fingerprint::TELEGRAM_APPS_JA4, Fingerprint};
use lab::Verdict;
use std::sync::Arc;
use wire::faketls::client::HelloShape;

#[tokio::test]
async fn telegram_apps_ja4_is_blocked_and_so_is_chrome() {
    let l = lab(
        vec![Arc::new(Fingerprint::telegram_apps(Verdict::Reset))],
        "149.154.167.51:443",
    )
    .await;
    // TDLib's hello and Chrome 143's share this JA4: the rule catches both.
    let chrome = chrome_143_hello();
    assert_eq!(lab::censor::ja::ja4(&chrome).unwrap(), TELEGRAM_APPS_JA4);
    let mut s = connect(l.mb.addr).await;
    assert!(reset(&mut s, &chrome).await);

    // samizdat's own hellos have another JA4 and pass.
    for shape in [HelloShape::Classic517, HelloShape::PostQuantum] {
        let mut s = connect(l.mb.addr).await;
        assert!(
            echoes(&mut s, &hello("example.com", shape)).await,
            "{shape:?}"
        );
    }
    assert_eq!(l.mb.events().get("fingerprint").reset, 1);
}

#[tokio::test]
async fn ja3_rule_blackholes_the_classic_hello_only() {
    let classic = ja3(&hello("a.example", HelloShape::Classic517)).unwrap();
    let l = lab(
        vec![Arc::new(Fingerprint::new(
            vec![classic],
            Vec::new(),
            Verdict::Drop,
        ))],
        "203.0.113.9:443",
    )
    .await;
    // GREASE values are random per hello and JA3 drops them: still caught.
    let mut s = connect(l.mb.addr).await;
    assert!(blackholed(&mut s, &hello("b.example", HelloShape::Classic517)).await);
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, &hello("b.example", HelloShape::PostQuantum)).await);
    // Not TLS at all: nothing to fingerprint.
    let mut s = connect(l.mb.addr).await;
    assert!(echoes(&mut s, HTTP).await);
    assert_eq!(l.mb.events().get("fingerprint").dropped, 1);
}
