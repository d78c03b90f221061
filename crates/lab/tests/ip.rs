//! Technique 1: IP and prefix blocking.

mod common;

use common::*;
use lab::techniques::{collateral_damage, ip, IpBlock, LiveIpBlock};
use lab::Verdict;
use std::net::IpAddr;
use std::sync::Arc;

#[tokio::test]
async fn telegram_prefix_is_blackholed_other_destinations_pass() {
    let blocked = lab(
        vec![Arc::new(IpBlock::telegram_2018(Verdict::Drop))],
        "149.154.167.51:443",
    )
    .await;
    let mut s = connect(blocked.mb.addr).await;
    assert!(blackholed(&mut s, HTTP).await);
    assert_eq!(blocked.mb.events().get("ip-block").dropped, 1);
    // Nothing reached the server.
    assert!(blocked.received.lock().unwrap().is_empty());

    let open = lab(
        vec![Arc::new(IpBlock::april_2018(Verdict::Drop))],
        "93.184.216.34:443",
    )
    .await;
    let mut s = connect(open.mb.addr).await;
    assert!(echoes(&mut s, HTTP).await);
    assert_eq!(open.mb.events().get("ip-block").total(), 0);
}

#[tokio::test]
async fn cloud_prefix_can_reset() {
    let l = lab(
        vec![Arc::new(IpBlock::april_2018(Verdict::Reset))],
        "35.200.1.2:443",
    )
    .await;
    let mut s = connect(l.mb.addr).await;
    assert!(reset(&mut s, HTTP).await);
    assert_eq!(l.mb.events().get("ip-block").reset, 1);
}

#[test]
fn collateral_damage_counts_benign_neighbours_and_unique_addresses() {
    let blocked = IpBlock::april_2018(Verdict::Drop).ranges;
    let benign: Vec<IpAddr> = [
        "35.201.0.1",    // another Google Cloud customer
        "52.58.10.10",   // another AWS Frankfurt customer
        "8.8.8.8",       // outside
        "93.184.216.34", // outside
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let r = collateral_damage(&blocked, &benign);
    assert_eq!(r.benign_total, 4);
    assert_eq!(r.benign_blocked, 2);
    assert_eq!(r.benign_share(), 0.5);
    // Telegram: /20 + 5 × /22 + /20 = 13,312; the cloud sample: /12 + /14 +
    // 3 × /15 + /16 = 1,048,576 + 262,144 + 393,216 + 65,536.
    assert_eq!(r.blocked_addresses, 13_312 + 1_769_472);

    // Overlaps count once.
    let nested = ["10.0.0.0/8", "10.1.0.0/16"].map(|s| s.parse().unwrap());
    assert_eq!(collateral_damage(&nested, &[]).blocked_addresses, 1 << 24);
    assert_eq!(ip::TELEGRAM_2018.len(), 7);
}

#[tokio::test]
async fn a_live_block_list_cuts_established_flows_and_can_be_lifted() {
    let block = LiveIpBlock::new();
    // Two "servers" in one /24 and one outside it, sharing the list.
    let a = lab(vec![Arc::new(block.clone())], "5.9.10.20:443").await;
    let b = lab(vec![Arc::new(block.clone())], "5.9.10.21:443").await;
    let c = lab(vec![Arc::new(block.clone())], "88.198.7.7:443").await;
    let mut sa = connect(a.mb.addr).await;
    let mut sb = connect(b.mb.addr).await;
    let mut sc = connect(c.mb.addr).await;
    for s in [&mut sa, &mut sb, &mut sc] {
        assert!(echoes(s, HTTP).await, "nothing blocked yet");
    }
    // One address, blackholed: its established flow stops at the next
    // segment from the server; the others are untouched.
    block.block("5.9.10.20/32".parse().unwrap(), Verdict::Drop);
    assert!(blackholed(&mut sa, HTTP).await);
    assert!(echoes(&mut sb, HTTP).await);
    assert_eq!(a.mb.events().get("ip-block").dropped, 1);
    // The whole /24, reset: the established flow to .21 and new flows to
    // either address are reset; 88.198.7.7 still passes.
    block.block("5.9.10.0/24".parse().unwrap(), Verdict::Reset);
    assert!(reset(&mut sb, HTTP).await);
    let mut again = connect(a.mb.addr).await;
    assert!(
        reset(&mut again, HTTP).await,
        "Reset is more severe than Drop"
    );
    assert!(echoes(&mut sc, HTTP).await);
    assert_eq!(c.mb.events().get("ip-block").total(), 0);
    // Lifted: new flows pass again.
    block.unblock("5.9.10.0/24".parse().unwrap());
    let mut sb2 = connect(b.mb.addr).await;
    assert!(echoes(&mut sb2, HTTP).await);
    block.clear();
    let mut sa2 = connect(a.mb.addr).await;
    assert!(echoes(&mut sa2, HTTP).await);
}
