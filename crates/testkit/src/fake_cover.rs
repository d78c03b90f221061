//! Fake cover sites on loopback.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the cover answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoverKind {
    /// Echoes every byte back; closes when the client closes.
    Echo,
    /// After the first bytes, answers an HTTP 400 and closes.
    Http,
}

/// Bytes each cover connection received, in connection order.
pub type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// The HTTP answer of [`CoverKind::Http`].
pub const HTTP_ANSWER: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad request";

/// Runs a cover site forever.
pub async fn serve(listener: TcpListener, kind: CoverKind, received: Received) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let received = received.clone();
        tokio::spawn(async move {
            let slot = {
                let mut r = received.lock().unwrap();
                r.push(Vec::new());
                r.len() - 1
            };
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                received.lock().unwrap()[slot].extend_from_slice(&buf[..n]);
                match kind {
                    CoverKind::Echo => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    CoverKind::Http => {
                        let _ = s.write_all(HTTP_ANSWER).await;
                        break;
                    }
                }
            }
            let _ = s.shutdown().await;
        });
    }
}
