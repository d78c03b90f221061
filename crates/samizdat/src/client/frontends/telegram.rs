//! A local MTProto proxy endpoint for Telegram apps: the app is pointed at
//! 127.0.0.1 with a local `dd` secret ([`telegram_link`]); obfuscated2
//! ends here, and the plaintext transport bytes (in the framing the app
//! chose, not re-framed) travel through the dialer as a
//! `Destination::Telegram` stream.
//!
//! An init that does not decrypt to a valid tag with the key (wrong
//! secret, not obfuscated2) is closed without dialling.

use super::accept::{self, ReadFail, HANDSHAKE_DEADLINE};
use crate::dial::{Destination, Dialer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wire::obfuscated2::{self, INIT_LEN};
use wire::secret::{self, Key, Mode, Secret};

/// Most bytes read with the init: what the app sends right behind it
/// travels with the open request.
const FIRST_MAX: usize = INIT_LEN + 16 * 1024;

/// The `tg://proxy` link that points a Telegram app on this machine at the
/// endpoint on `port` (a `dd` secret: bare obfuscated2, padded framing).
pub fn telegram_link(port: u16, key: &Key) -> String {
    let secret = Secret {
        key: key.clone(),
        mode: Mode::Padded,
        domain: None,
    };
    secret::links("127.0.0.1", port, &secret.to_hex()).tg
}

/// Serves the Telegram endpoint on `listener` until `shutdown`. Apps may
/// use the key as a plain or a `dd` secret: both are bare obfuscated2.
pub async fn serve_telegram(
    listener: TcpListener,
    dialer: Arc<dyn Dialer>,
    secret: Key,
    shutdown: CancellationToken,
) {
    let key = Arc::new(secret);
    accept::serve(listener, shutdown, "telegram", move |stream, peer| {
        let dialer = dialer.clone();
        let key = key.clone();
        async move { handle(stream, peer, dialer, key).await }
    })
    .await;
}

/// Whether the buffer holds a whole init.
fn init_ready(buf: &[u8]) -> Result<Option<((), usize)>, Infallible> {
    Ok((buf.len() >= INIT_LEN).then_some(((), 0)))
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, dialer: Arc<dyn Dialer>, key: Arc<Key>) {
    let mut buf = Vec::with_capacity(4096);
    let read = accept::read_parsed(&mut stream, &mut buf, FIRST_MAX, init_ready);
    match tokio::time::timeout(HANDSHAKE_DEADLINE, read).await {
        Ok(Ok(())) => {}
        Ok(Err(ReadFail::Invalid(never))) => match never {},
        Ok(Err(_)) | Err(_) => return,
    }
    let mut init = [0u8; INIT_LEN];
    init.copy_from_slice(&buf[..INIT_LEN]);
    let Some(accepted) = obfuscated2::accept(&init, Some(&key)) else {
        tracing::debug!(%peer, "telegram endpoint: init does not match the key; closing");
        return;
    };
    let mut first = buf.split_off(INIT_LEN);
    let obfuscated2::Ciphers {
        mut encrypt,
        mut decrypt,
    } = accepted.ciphers;
    decrypt.apply(&mut first);
    let dest = Destination::Telegram {
        dc: accepted.dc,
        tag: accepted.tag,
    };
    tracing::debug!(%peer, %dest, "telegram endpoint open");
    let upstream = match accept::open(dialer.as_ref(), dest, first).await {
        Ok(u) => u,
        Err(e) => {
            // MTProto has no way to say why; the app retries.
            tracing::debug!(%peer, error = %e, "telegram endpoint open failed");
            return;
        }
    };
    let (client_r, client_w) = stream.into_split();
    let (up_r, up_w) = tokio::io::split(upstream);
    accept::both(
        accept::pump(client_r, up_w, |b| decrypt.apply(b)),
        accept::pump(up_r, client_w, |b| encrypt.apply(b)),
        false,
    )
    .await;
}
