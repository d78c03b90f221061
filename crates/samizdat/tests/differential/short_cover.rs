//! A cover site with short timers and the reactions active probers look
//! for, so that idle and timeout behaviour is compared in seconds:
//!
//! | input | reaction |
//! |---|---|
//! | nothing for [`IDLE`] | FIN |
//! | a TLS record (`16 …`), complete | a handshake_failure alert, FIN |
//! | a TLS record header announcing more than 18 KiB | a record_overflow alert, FIN |
//! | a TLS record still incomplete [`PARTIAL`] after its first byte | RST |
//! | an HTTP request (`A`–`Z` first) | 200 with a small page, keep-alive for [`IDLE`] (FIN), or FIN at once for HTTP/1.0 or `Connection: close` |
//! | an HTTP method with a byte that is not `A`–`Z` | 400, then RST |
//! | a request head still incomplete [`PARTIAL`] after its first byte | 408, FIN |
//! | a request head over 1 KiB | 431, FIN |
//! | other bytes: fewer than [`BINARY_RESET_AT`] | FIN after [`IDLE`] without a byte |
//! | other bytes: [`BINARY_RESET_AT`] or more | RST at once |
//! | the client's FIN | FIN |
//!
//! It also writes down, per connection, what it received and how the
//! client's side ended, so that the client→cover direction is compared too.

use socket2::SockRef;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Idle timer: before the first byte, between bytes of binary input, and
/// on a keep-alive connection.
pub const IDLE: Duration = Duration::from_millis(2000);
/// Time to complete a request head or a TLS record once it has begun.
pub const PARTIAL: Duration = Duration::from_millis(1500);
/// Binary input of this many bytes is reset at once.
pub const BINARY_RESET_AT: usize = 33;

/// How the client's side of a cover connection ended, as the cover saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEnd {
    /// The client sent FIN.
    Fin,
    /// The client reset.
    Rst,
    /// The cover closed first and stopped looking.
    NotSeen,
}

/// One cover connection.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Every byte received.
    pub bytes: Vec<u8>,
    /// How the client's side ended.
    pub end: Option<ClientEnd>,
}

/// All connections, in accept order.
pub type Log = Arc<Mutex<Vec<Seen>>>;

/// Starts the cover on 127.0.0.1; returns its address and log.
pub async fn start() -> (std::net::SocketAddr, Log) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let conns = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let slot = {
                let mut log = conns.lock().unwrap();
                log.push(Seen {
                    bytes: Vec::new(),
                    end: None,
                });
                log.len() - 1
            };
            tokio::spawn(serve(s, conns.clone(), slot));
        }
    });
    (addr, log)
}

enum State {
    Start,
    Tls,
    Http,
    Binary,
    KeepAlive,
}

enum Close {
    Fin,
    Rst,
}

const PAGE: &str = "<html><body>short-timer cover</body></html>\n";

fn answer(status: &str, keep_alive: bool) -> Vec<u8> {
    let body = if status.starts_with("200") {
        PAGE.to_string()
    } else {
        format!("{status}\n")
    };
    format!(
        "HTTP/1.1 {status}\r\nServer: shortcover\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes()
}

async fn serve(mut s: TcpStream, log: Log, slot: usize) {
    let _ = s.set_nodelay(true);
    let mut state = State::Start;
    let mut buf: Vec<u8> = Vec::new();
    let mut deadline = Instant::now() + IDLE;
    let mut chunk = vec![0u8; 64 * 1024];
    let close = loop {
        let r = tokio::select! {
            r = s.read(&mut chunk) => r,
            _ = tokio::time::sleep_until(deadline) => {
                break match state {
                    State::Start | State::Binary | State::KeepAlive => Close::Fin,
                    State::Tls => Close::Rst,
                    State::Http => {
                        let _ = s.write_all(&answer("408 Request Timeout", false)).await;
                        Close::Fin
                    }
                };
            }
        };
        let n = match r {
            Ok(0) => {
                log.lock().unwrap()[slot].end = Some(ClientEnd::Fin);
                break Close::Fin;
            }
            Ok(n) => n,
            Err(_) => {
                log.lock().unwrap()[slot].end = Some(ClientEnd::Rst);
                return;
            }
        };
        log.lock().unwrap()[slot]
            .bytes
            .extend_from_slice(&chunk[..n]);
        let began = matches!(state, State::Start | State::KeepAlive);
        buf.extend_from_slice(&chunk[..n]);
        if began {
            deadline = Instant::now() + PARTIAL;
            state = match buf[0] {
                0x16 => State::Tls,
                b'A'..=b'Z' => State::Http,
                _ => State::Binary,
            };
        }
        match state {
            State::Start | State::KeepAlive => unreachable!(),
            State::Tls => {
                if buf.len() >= 5 {
                    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
                    if len > 18 * 1024 {
                        let _ = s.write_all(&[0x15, 3, 3, 0, 2, 2, 22]).await;
                        break Close::Fin;
                    }
                    if buf.len() >= 5 + len {
                        let _ = s.write_all(&[0x15, 3, 3, 0, 2, 2, 40]).await;
                        break Close::Fin;
                    }
                }
            }
            State::Binary => {
                deadline = Instant::now() + IDLE;
                if buf.len() >= BINARY_RESET_AT {
                    break Close::Rst;
                }
            }
            State::Http => {
                let method_ok = buf
                    .iter()
                    .take_while(|&&b| b != b' ')
                    .all(|b| b.is_ascii_uppercase());
                if !method_ok {
                    let _ = s.write_all(&answer("400 Bad Request", false)).await;
                    break Close::Rst;
                }
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    if buf.len() > 1024 {
                        let _ = s
                            .write_all(&answer("431 Request Header Fields Too Large", false))
                            .await;
                        break Close::Fin;
                    }
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let keep = !head.lines().next().unwrap_or("").ends_with("http/1.0")
                    && !head.contains("connection: close");
                if s.write_all(&answer("200 OK", keep)).await.is_err() || !keep {
                    break Close::Fin;
                }
                buf.drain(..end + 4);
                state = State::KeepAlive;
                deadline = Instant::now() + IDLE;
                if !buf.is_empty() {
                    // Pipelined: the next request has begun.
                    state = State::Http;
                    deadline = Instant::now() + PARTIAL;
                }
            }
        }
    };
    {
        let mut log = log.lock().unwrap();
        log[slot].end.get_or_insert(ClientEnd::NotSeen);
    }
    if let Close::Rst = close {
        let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
    }
    drop(s);
}
