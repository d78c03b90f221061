//! A `wss://` endpoint: TLS to the front (a reverse proxy or CDN), then
//! the WebSocket upgrade with the headers of the browser the link imitates;
//! the transport's hello then rides the carrier (`transport::ws`).

use super::connect::ConnectError;
use crate::transport::ws::{carry, read_head, Carrier, HeadError, Prefixed};
use base64::Engine;
use fastwebsockets::Role;
use std::io;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig};
use wire::http1::websocket::{self, UpgradeRefused};
use wire::link::{Endpoint, Link};

/// Environment variable naming one extra PEM CA certificate that `wss://`
/// servers may chain to. For tests only (a local nginx with a self-signed
/// certificate); real fronts have certificates from public CAs.
pub use super::tls::TEST_CA_ENV;

/// The `User-Agent` of the browser the link's hello imitates.
fn user_agent(fingerprint: &str) -> &'static str {
    if fingerprint.eq_ignore_ascii_case("firefox") {
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:153.0) Gecko/20100101 Firefox/153.0"
    } else {
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
    }
}

/// The TLS configuration for fronts: the web's roots, plus the CA in
/// [`TEST_CA_ENV`] if set. Built once.
fn tls_config() -> Result<Arc<ClientConfig>, ConnectError> {
    // A WebSocket upgrade is HTTP/1.1: offer nothing else.
    crate::client::tls::client_config(&[b"http/1.1"]).map_err(ConnectError::Tls)
}

/// Names a TLS failure the way a user can act on it.
fn tls_error(e: io::Error) -> ConnectError {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned();
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => ConnectError::Tls(format!(
            "TLS certificate not trusted ({c:?}): the front's certificate must be valid for the link's host"
        )),
        Some(other) => ConnectError::Tls(other.to_string()),
        None => ConnectError::Closed(format!("during the TLS handshake: {e}")),
    }
}

/// The upgrade request for `endpoint`, with the headers of the browser
/// the link's hello imitates.
fn request(endpoint: &Endpoint, path: &str, fingerprint: &str, key: &str) -> String {
    let host = if endpoint.port == 443 {
        endpoint.host.clone()
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    };
    websocket::client_request(&host, path, user_agent(fingerprint), key)
}

/// TLS to the front, then the WebSocket upgrade to `path`. Returns the
/// carrier's byte stream, ready for the transport's hello.
pub(crate) async fn open(
    socket: TcpStream,
    endpoint: &Endpoint,
    path: &str,
    link: &Link,
) -> Result<Carrier, ConnectError> {
    let config = tls_config()?;
    let name = ServerName::try_from(endpoint.host.clone())
        .map_err(|_| ConnectError::Tls(format!("{:?} is not a valid TLS name", endpoint.host)))?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, socket)
        .await
        .map_err(tls_error)?;
    let mut nonce = [0u8; 16];
    crate::random::fill(&mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let req = request(endpoint, path, &link.fingerprint, &key);
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| ConnectError::Closed(e.to_string()))?;
    tls.flush()
        .await
        .map_err(|e| ConnectError::Closed(e.to_string()))?;
    let (head, rest) = read_head(&mut tls).await.map_err(|e| match e {
        HeadError::Io(e) => ConnectError::Closed(format!(
            "the front closed before answering the upgrade: {e}"
        )),
        HeadError::TooLong => ConnectError::Front("an HTTP answer head over 8 KiB".into()),
    })?;
    websocket::check_upgrade_response(&head, &key).map_err(|e| {
        ConnectError::Front(match e {
            UpgradeRefused::NotHttp(_) => "the answer is not HTTP/1.1".into(),
            UpgradeRefused::Status { code: 404, .. } => format!(
                "the front answered HTTP 404 for {path}: wrong path? (the link's wss:// path must match the server's --ws-path and the proxy's location)"
            ),
            UpgradeRefused::Status { code, reason } => format!(
                "the front answered HTTP {code} {reason} instead of upgrading to a WebSocket (does the proxy pass Upgrade/Connection headers?)"
            ),
            other => other.to_string(),
        })
    })?;
    Ok(carry(Prefixed::new(rest, tls), Role::Client))
}
