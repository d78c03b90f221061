//! `--ws-listen`: samizdat clients inside WebSockets, behind a reverse
//! proxy or CDN that terminates TLS (`docs/fronting.md`).
//!
//! The listener speaks plain HTTP/1.1. Only `GET <ws_path>` with a valid
//! WebSocket upgrade is upgraded; anything else gets the 404 a static site
//! would give. Inside the WebSocket runs exactly the transport of the TCP
//! listener: the client's hello record, the same check, replay admission
//! and user limits ([`super::auth::tunnel`], [`super::transport::run`]), our
//! flight, then the session. A hello that fails simply closes the
//! WebSocket: the front is the cover here, there is nothing to splice to.
//!
//! Limits and logs apply to the client the front saw: the address in
//! `ws_client_header` (`X-Real-IP` by default), but only on connections
//! from `ws_trusted_proxies` (loopback by default). Anyone else could write
//! any address there, to dodge `max_ips` or to fill logs with chosen ones.

use super::ServeShared;
use crate::transport::ws::{self, HeadError};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wire::classify::{CoverReason, Verdict, MAX_FIRST_FLIGHT};
use wire::faketls::{handshake_record, HandshakeRecord};
use wire::http1::websocket::{self as upgrade, UpgradeRequest, BAD_REQUEST, NOT_FOUND};

/// Serves one connection to the WebSocket listener.
pub(super) async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServeShared>,
    path: Arc<str>,
) {
    let _ = client.set_nodelay(true);
    let snap = shared.snapshot();
    let deadline = Instant::now() + snap.config.handshake_timeout;
    let head = tokio::time::timeout_at(deadline, ws::read_head(&mut client)).await;
    let (head, rest) = match head {
        Ok(Ok(x)) => x,
        Ok(Err(HeadError::TooLong)) => {
            answer_and_close(client, BAD_REQUEST, deadline).await;
            return;
        }
        Ok(Err(HeadError::Io(_))) | Err(_) => return,
    };
    let config = &snap.config;
    let (accept, real_ip) = match upgrade::upgrade_request(&head, &path, &config.ws_client_header) {
        UpgradeRequest::Upgrade { accept, real_ip } => (accept, real_ip),
        other => {
            let answer = if other == UpgradeRequest::Bad {
                BAD_REQUEST
            } else {
                NOT_FOUND
            };
            answer_and_close(client, answer, deadline).await;
            return;
        }
    };
    let answer = upgrade::switching_protocols(&accept);
    match tokio::time::timeout_at(deadline, client.write_all(answer.as_bytes())).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    // Limits apply to the client the front saw, not to the front.
    let peer = client_address(peer, real_ip, &config.ws_trusted_proxies);
    let mut carrier = ws::carry(
        ws::Prefixed::new(rest, client),
        fastwebsockets::Role::Server,
    );
    let hello = tokio::time::timeout_at(deadline, read_record(&mut carrier)).await;
    let Ok(Some((record, leftover))) = hello else {
        tracing::debug!("WebSocket client sent no hello record in time");
        return;
    };
    let verdict = super::admit::transport_hello(&record, &shared, &snap, peer.ip()).await;
    match verdict {
        Verdict::Tunnel(acc) => {
            drop(record);
            super::transport::run(carrier, *acc, leftover, peer, &shared, &snap).await;
        }
        other => refuse(&shared, other),
    }
}

/// The address a connection is accounted to: the one the request reported,
/// if the connection comes from a trusted front; else its own.
fn client_address(
    peer: SocketAddr,
    reported: Option<IpAddr>,
    trusted: &[ipnet::IpNet],
) -> SocketAddr {
    let from = peer.ip().to_canonical();
    match reported {
        Some(ip) if trusted.iter().any(|net| net.contains(&from)) => {
            SocketAddr::new(ip, peer.port())
        }
        _ => peer,
    }
}

/// Most bytes read and dropped after a refusal, so that the close is a FIN
/// (as from a web server's lingering close) rather than a reset that
/// destroys the answer.
const LINGER_BYTES: usize = 64 * 1024;
/// Longest wait for those bytes.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends `answer`, then closes the way a web server does: FIN first, then
/// whatever the client still sends is read and dropped for a moment.
async fn answer_and_close(mut client: TcpStream, answer: &[u8], deadline: Instant) {
    let sent = tokio::time::timeout_at(deadline, async {
        client.write_all(answer).await?;
        client.shutdown().await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Counts and logs a hello that did not authenticate; the caller closes.
fn refuse(shared: &ServeShared, verdict: Verdict) {
    let reason = match verdict {
        Verdict::Cover(reason) => reason,
        _ => CoverReason::Unrecognised,
    };
    super::admit::to_cover(shared, reason);
    tracing::debug!(reason = reason.name(), "WebSocket hello refused; closing");
}

/// Reads one TLS handshake record (the client's hello) from the carrier:
/// the record and any bytes after it. `None` if the stream ends first or
/// it is not a handshake record of a plausible size.
async fn read_record<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        match handshake_record(&buf, MAX_FIRST_FLIGHT) {
            HandshakeRecord::Refused => return None,
            HandshakeRecord::Len(len) if buf.len() >= len => {
                let rest = buf.split_off(len);
                return Some((buf, rest));
            }
            HandshakeRecord::Len(_) | HandshakeRecord::NeedMore => {}
        }
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_header_is_believed_only_from_a_trusted_front() {
        let loopback: Vec<ipnet::IpNet> =
            vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        // What `upgrade_request` read from the configured header
        // (wire::http1::websocket tests which header that is).
        let forged: IpAddr = "192.0.2.7".parse().unwrap();
        let real_ip = Some(forged);
        // From an untrusted peer: accounted to the peer's own address.
        let stranger: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        assert_eq!(client_address(stranger, real_ip, &loopback), stranger);
        assert_eq!(client_address(stranger, real_ip, &[]), stranger);
        // From the front on loopback (also as a v4-mapped v6 peer): the header.
        for front in ["127.0.0.1:40000", "[::1]:40000", "[::ffff:127.0.0.1]:40000"] {
            let front: SocketAddr = front.parse().unwrap();
            assert_eq!(
                client_address(front, real_ip, &loopback).ip(),
                forged,
                "{front}"
            );
            // No header: the front's own address.
            assert_eq!(client_address(front, None, &loopback), front);
        }
        // A front on another network, once trusted.
        let cdn: Vec<ipnet::IpNet> = vec!["198.51.100.0/24".parse().unwrap()];
        let edge: SocketAddr = "198.51.100.9:443".parse().unwrap();
        assert_eq!(client_address(edge, real_ip, &cdn).ip(), forged);
        assert_eq!(client_address(edge, real_ip, &loopback), edge);
    }

    #[tokio::test]
    async fn hello_record_is_read_whole_and_bounded() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(&[0x16, 0x03, 0x01, 0x00, 0x03, 1, 2, 3, 9])
            .await
            .unwrap();
        let (record, rest) = read_record(&mut b).await.unwrap();
        assert_eq!(record.len(), 8);
        assert_eq!(rest, [9]);
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(&[0x17, 0x03, 0x03, 0x00, 0x03]).await.unwrap();
        assert!(read_record(&mut b).await.is_none());
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).await.unwrap();
        assert!(read_record(&mut b).await.is_none());
    }
}
