//! Real TLS sessions for the prober (rustls, any certificate accepted), a
//! tap that records the raw bytes and the TCP close under them, and a
//! captured rustls ClientHello for replays.

use lab::probe::{shape, End, Observation};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::rustls;

/// A TLS session the prober runs.
#[derive(Debug, Clone)]
pub struct Session {
    /// HTTP/1.1 keep-alive requests, one after the other.
    pub requests: usize,
    /// What the client does after the last response.
    pub then: Then,
}

/// The end of a TLS session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// close_notify and FIN, then watch the server close.
    CloseNotify,
    /// Stay silent until the server gives up on the keep-alive connection.
    Idle,
}

use samizdat::cli::doctor::cover::verifier::AcceptAnyCertificate;

const SNI: &str = "cover.localhost";

/// A client that takes the cover's self-signed certificate and never
/// resumes (every handshake must look the same, wherever it goes).
pub fn connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn server_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from(SNI).unwrap()
}

/// The first flight of a real TLS client (rustls), captured on a listener
/// of our own.
pub async fn captured_hello() -> Vec<u8> {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let s = TcpStream::connect(addr).await.unwrap();
        let _ = connector().connect(server_name(), s).await;
    });
    let (mut s, _) = l.accept().await.unwrap();
    let mut hello = Vec::new();
    let mut buf = [0u8; 4096];
    while hello.len() < 5 || hello.len() < 5 + u16::from_be_bytes([hello[3], hello[4]]) as usize {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("rustls sent its hello")
            .unwrap();
        assert!(n > 0, "rustls closed before its hello");
        hello.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let _ = client.await;
    hello
}

#[derive(Default)]
struct TapLog {
    bytes: Vec<u8>,
    end: Option<(End, Instant)>,
}

/// A TCP stream that records what the server sent and how it ended.
struct Tap {
    inner: TcpStream,
    log: Arc<Mutex<TapLog>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let mut log = self.log.lock().unwrap();
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                log.end.get_or_insert((End::Fin, Instant::now()));
            }
            Poll::Ready(Ok(())) => log.bytes.extend_from_slice(&buf.filled()[before..]),
            Poll::Ready(Err(e)) => {
                let end = match e.kind() {
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => End::Rst,
                    k => End::Other(k),
                };
                log.end.get_or_insert((end, Instant::now()));
            }
            Poll::Pending => {}
        }
        r
    }
}

samizdat::delegate_async_write!([] Tap, inner);

fn request() -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {SNI}\r\nUser-Agent: prober/1\r\nAccept: */*\r\n\r\n")
        .into_bytes()
}

/// Reads one HTTP/1.1 response with a Content-Length.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Ok(got);
            }
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Runs a TLS session probe.
pub async fn observe(addr: SocketAddr, session: &Session, window: Duration) -> Observation {
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to 127.0.0.1");
    tcp.set_nodelay(true).unwrap();
    let log = Arc::new(Mutex::new(TapLog::default()));
    let tap = Tap {
        inner: tcp,
        log: log.clone(),
    };
    let mut notes = String::new();
    let limit = window + Duration::from_secs(2);
    let mut t0 = Instant::now();
    let tls = tokio::time::timeout(limit, connector().connect(server_name(), tap)).await;
    let mut tap = match tls {
        Ok(Ok(mut tls)) => {
            let (_, conn) = tls.get_ref();
            notes.push_str(&format!(
                "{:?} {:?}; ",
                conn.protocol_version(),
                conn.negotiated_cipher_suite().map(|c| c.suite())
            ));
            for _ in 0..session.requests {
                if let Err(e) = tls.write_all(&request()).await {
                    notes.push_str(&format!("request: {:?}; ", e.kind()));
                    break;
                }
                t0 = Instant::now();
                match tokio::time::timeout(limit, read_response(&mut tls)).await {
                    Ok(Ok(r)) => notes.push_str(&format!("response: {}; ", shape(&r))),
                    Ok(Err(e)) => {
                        notes.push_str(&format!("response: {:?}; ", e.kind()));
                        break;
                    }
                    Err(_) => {
                        notes.push_str("response: none in time; ");
                        break;
                    }
                }
            }
            if session.then == Then::CloseNotify {
                let _ = tls.shutdown().await;
                t0 = Instant::now();
            }
            // How the TLS layer saw the end: close_notify or a bare TCP close.
            let mut sink = [0u8; 4096];
            let end = tokio::time::timeout_at(t0 + limit, async {
                loop {
                    match tls.read(&mut sink).await {
                        Ok(0) => return "close_notify".to_string(),
                        Ok(_) => continue,
                        Err(e) => return format!("{:?}", e.kind()),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| "open".into());
            notes.push_str(&format!("tls end: {end}"));
            Some(tls.into_inner().0)
        }
        Ok(Err(e)) => {
            notes.push_str(&format!("handshake failed: {e}"));
            None
        }
        Err(_) => {
            notes.push_str("handshake: no answer in time");
            None
        }
    };
    // The TCP close under it (after a close_notify the TLS layer stops
    // reading before the FIN).
    if let Some(tap) = tap.as_mut() {
        let mut sink = [0u8; 4096];
        while log.lock().unwrap().end.is_none() {
            match tokio::time::timeout_at(t0 + limit, tap.read(&mut sink)).await {
                Ok(Ok(_)) | Ok(Err(_)) => {}
                Err(_) => break,
            }
        }
    }
    let (data, end) = {
        let log = log.lock().unwrap();
        (shape(&log.bytes), log.end)
    };
    let (end, end_at) = match end {
        Some((e, at)) if at <= t0 + window => (e, Some(at.saturating_duration_since(t0))),
        _ => (End::Open, None),
    };
    let after_fin = match (end, tap.as_mut()) {
        (End::Fin, Some(tap)) => {
            let w = tap.inner.write_all(b"\0").await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Some(match (w, tap.inner.take_error()) {
                (Err(_), _) | (_, Ok(Some(_))) => "reset",
                _ => "quiet",
            })
        }
        _ => None,
    };
    Observation {
        data,
        notes,
        first_byte: None,
        end,
        end_at,
        after_fin,
    }
}
