use super::*;

#[test]
fn every_cover_reason_is_an_outcome() {
    use wire::classify::CoverReason;
    for r in [
        CoverReason::Unrecognised,
        CoverReason::UnknownSni,
        CoverReason::BadHmac,
        CoverReason::BadTimestamp { skew: 0 },
        CoverReason::Replay,
        CoverReason::TrailingData,
        CoverReason::BadInit,
    ] {
        assert!(OUTCOMES.contains(&r.name()), "{}", r.name());
    }
}

#[test]
fn routes() {
    let body = || "x".to_string();
    let up = || (true, "ready".to_string());
    let draining = || (false, "shutting down".to_string());
    assert_eq!(
        route(b"GET /healthz HTTP/1.1\r\n\r\n", &body, &up).0,
        "200 OK"
    );
    assert_eq!(
        route(b"GET /readyz HTTP/1.1\r\n\r\n", &body, &up).0,
        "200 OK"
    );
    assert_eq!(
        route(b"GET /readyz HTTP/1.1\r\n\r\n", &body, &draining).0,
        "503 Service Unavailable"
    );
    let route = |head: &[u8], _: &dyn Fn() -> String| route(head, &body, &up);
    assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n", &body).0, "200 OK");
    assert_eq!(
        route(b"GET /metrics?a=1 HTTP/1.0\r\n\r\n", &body).0,
        "200 OK"
    );
    assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n", &body).0, "404 Not Found");
    assert_eq!(
        route(b"POST /metrics HTTP/1.1\r\n\r\n", &body).0,
        "405 Method Not Allowed"
    );
    assert_eq!(route(b"junk\r\n\r\n", &body).0, "400 Bad Request");
}

#[test]
fn dc_labels_are_the_known_dcs_and_other() {
    let m = Metrics::new([]);
    for dc in (i16::MIN..=i16::MAX).step_by(7).chain([2, -2, 203, 10002]) {
        m.dc_connected(dc, Duration::from_millis(1));
        m.dc_connect_failed(dc);
    }
    let text = m.encode();
    let mut ids = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(rest) = line.split("dc_id=\"").nth(1) {
            ids.insert(rest.split('"').next().unwrap().to_string());
        }
    }
    let allowed: Vec<&str> = DC_LABELS.iter().map(|(_, n)| *n).chain(["other"]).collect();
    assert!(ids.iter().all(|i| allowed.contains(&i.as_str())), "{ids:?}");
    assert!(ids.contains("other") && ids.contains("2") && ids.contains("203"));
    assert!(ids.len() <= allowed.len());
}

#[test]
fn users_are_resolved_and_encoded() {
    let m = Metrics::new(["alice", "bob"]);
    m.user("bob").from_client.inc_by(5);
    m.handshake("ok_tls");
    m.dc_connected(-2, Duration::from_millis(3));
    m.set_replay_entries(7, 0);
    let text = m.encode();
    assert!(text.contains("samizdat_user_bytes_total{user=\"bob\",direction=\"from_client\"} 5"));
    assert!(text.contains("samizdat_handshakes_total{outcome=\"ok_tls\"} 1"));
    assert!(text.contains("samizdat_dc_connect_seconds_count{dc_id=\"2\"} 1"));
    assert!(text.contains("samizdat_replay_cache_entries{kind=\"tls\"} 7"));
    assert!(text.ends_with("# EOF\n"));
}
