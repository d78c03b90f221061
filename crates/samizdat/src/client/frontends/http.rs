//! The HTTP proxy front-end: `CONNECT host:port` tunnels, and plain
//! `http://` requests in absolute form, rewritten to origin form and sent
//! with `Connection: close` (one request per upstream connection; clients
//! open a new connection for the next one). Errors are answered with an
//! HTTP status and a one-line text body.

use super::accept::{self, ReadFail, HANDSHAKE_DEADLINE};
use crate::dial::Dialer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wire::http_proxy::{self, ProxyRequest, MAX_HEAD};

/// Serves an HTTP proxy on `listener` until `shutdown`.
pub async fn serve_http(
    listener: TcpListener,
    dialer: Arc<dyn Dialer>,
    shutdown: CancellationToken,
) {
    accept::serve(listener, shutdown, "http", move |stream, peer| {
        let dialer = dialer.clone();
        async move { handle(stream, peer, dialer).await }
    })
    .await;
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, dialer: Arc<dyn Dialer>) {
    let mut buf = Vec::with_capacity(4096);
    let read = accept::read_parsed(&mut stream, &mut buf, MAX_HEAD, http_proxy::parse_request);
    let request = match tokio::time::timeout(HANDSHAKE_DEADLINE, read).await {
        Ok(Ok(r)) => r,
        Ok(Err(ReadFail::Invalid(e))) => {
            tracing::debug!(%peer, error = %e, "http proxy request refused");
            let answer = http_proxy::error_response(e.status(), &e.to_string());
            return accept::answer_and_close(&mut stream, &answer).await;
        }
        Ok(Err(ReadFail::TooLong)) => {
            let answer = http_proxy::error_response(431, "request head larger than 16 KiB");
            return accept::answer_and_close(&mut stream, &answer).await;
        }
        Ok(Err(ReadFail::Eof | ReadFail::Io)) => return,
        Err(_) => {
            let answer =
                http_proxy::error_response(408, "no complete request head within 10 seconds");
            return accept::answer_and_close(&mut stream, &answer).await;
        }
    };
    let (dest, first, connect) = match request {
        ProxyRequest::Connect { destination } => (destination, buf, true),
        ProxyRequest::Forward {
            destination,
            mut head,
        } => {
            head.extend_from_slice(&buf);
            (destination, head, false)
        }
    };
    tracing::debug!(%peer, %dest, connect, "http proxy request");
    match accept::open(dialer.as_ref(), dest, first).await {
        Ok(upstream) if connect => {
            if stream.write_all(http_proxy::CONNECT_OK).await.is_ok() {
                accept::relay(stream, upstream).await;
            }
        }
        Ok(upstream) => {
            // The request said `Connection: close`: once the origin's
            // answer has ended, so has this connection, even if the client
            // would keep it open for another request.
            let (client_r, client_w) = stream.into_split();
            let (up_r, up_w) = tokio::io::split(upstream);
            accept::both(
                accept::pump(client_r, up_w, |_| {}),
                accept::pump(up_r, client_w, |_| {}),
                true,
            )
            .await;
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "http proxy open failed");
            let answer = http_proxy::error_response(e.http_status(), &e.to_string());
            accept::answer_and_close(&mut stream, &answer).await;
        }
    }
}
