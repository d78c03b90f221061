//! The SOCKS5 front-end: method negotiation (no auth, or RFC 1929
//! username/password when configured), CONNECT through the dialer, relay.
//! Errors are answered with the SOCKS reply code and the connection is
//! closed.

use super::accept::{self, ReadFail, HANDSHAKE_DEADLINE};
use crate::dial::Dialer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wire::socks5::{self, reply, Command, MAX_MESSAGE};

/// Serves SOCKS5 on `listener` until `shutdown`. With `auth`, clients must
/// log in with that user name and password; without, no auth is offered.
pub async fn serve_socks5(
    listener: TcpListener,
    dialer: Arc<dyn Dialer>,
    auth: Option<(String, String)>,
    shutdown: CancellationToken,
) {
    let auth = Arc::new(auth);
    accept::serve(listener, shutdown, "socks5", move |stream, peer| {
        let dialer = dialer.clone();
        let auth = auth.clone();
        async move { handle(stream, peer, dialer, auth).await }
    })
    .await;
}

/// What the handshake ended with.
enum Outcome {
    /// Close without another word (not SOCKS5, or the client left).
    Close,
    /// Send these bytes, then close.
    Answer(Vec<u8>),
    /// Connect: the destination and the bytes the client sent after the
    /// request.
    Connect(crate::dial::Destination, Vec<u8>),
}

/// A reply with an unspecified bound address.
fn reply_bytes(code: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    socks5::encode_reply(code, SocketAddr::from(([0, 0, 0, 0], 0)), &mut out);
    out
}

async fn handshake(
    stream: &mut TcpStream,
    auth: &Option<(String, String)>,
) -> std::io::Result<Outcome> {
    let mut buf = Vec::with_capacity(512);
    let greeting =
        match accept::read_parsed(stream, &mut buf, MAX_MESSAGE, socks5::parse_greeting).await {
            Ok(g) => g,
            Err(ReadFail::Invalid(socks5::Socks5Error::NoMethods)) => {
                return Ok(Outcome::Answer(
                    socks5::encode_method(socks5::METHOD_NONE_ACCEPTABLE).to_vec(),
                ))
            }
            Err(_) => return Ok(Outcome::Close),
        };
    let Some(method) = greeting.choose(auth.is_some()) else {
        return Ok(Outcome::Answer(
            socks5::encode_method(socks5::METHOD_NONE_ACCEPTABLE).to_vec(),
        ));
    };
    stream.write_all(&socks5::encode_method(method)).await?;
    if let Some((user, pass)) = auth {
        let creds =
            match accept::read_parsed(stream, &mut buf, MAX_MESSAGE, socks5::parse_auth).await {
                Ok(c) => c,
                Err(ReadFail::Invalid(_)) => {
                    return Ok(Outcome::Answer(socks5::encode_auth_reply(false).to_vec()))
                }
                Err(_) => return Ok(Outcome::Close),
            };
        if !creds.matches(user.as_bytes(), pass.as_bytes()) {
            tracing::debug!("socks5 login refused");
            return Ok(Outcome::Answer(socks5::encode_auth_reply(false).to_vec()));
        }
        stream.write_all(&socks5::encode_auth_reply(true)).await?;
    }
    let request =
        match accept::read_parsed(stream, &mut buf, MAX_MESSAGE, socks5::parse_request).await {
            Ok(r) => r,
            Err(ReadFail::Invalid(e)) => {
                tracing::debug!(error = %e, "socks5 request refused");
                return Ok(Outcome::Answer(reply_bytes(e.reply_code())));
            }
            Err(_) => return Ok(Outcome::Close),
        };
    if request.command != Command::Connect {
        return Ok(Outcome::Answer(reply_bytes(reply::COMMAND_NOT_SUPPORTED)));
    }
    Ok(Outcome::Connect(request.destination, buf))
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    dialer: Arc<dyn Dialer>,
    auth: Arc<Option<(String, String)>>,
) {
    let outcome =
        match tokio::time::timeout(HANDSHAKE_DEADLINE, handshake(&mut stream, &auth)).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(%peer, "socks5 handshake deadline passed");
                return;
            }
        };
    let (dest, first) = match outcome {
        Outcome::Close => return,
        Outcome::Answer(bytes) => return accept::answer_and_close(&mut stream, &bytes).await,
        Outcome::Connect(dest, first) => (dest, first),
    };
    tracing::debug!(%peer, %dest, "socks5 connect");
    match accept::open(dialer.as_ref(), dest, first).await {
        Ok(upstream) => {
            if stream
                .write_all(&reply_bytes(reply::SUCCEEDED))
                .await
                .is_ok()
            {
                accept::relay(stream, upstream).await;
            }
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "socks5 open failed");
            accept::answer_and_close(&mut stream, &reply_bytes(e.socks5_reply())).await;
        }
    }
}
