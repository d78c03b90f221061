//! The fake-TLS answer to an authenticated `ee` ClientHello: the server
//! flight (ServerHello with the HMAC random, a real key share, CCS, one
//! ApplicationData of certificate-like size), then the obfuscated2 init read
//! from inside the client's records; the connection then goes to its DC.

use super::relay;
use super::users::{Admission, Snapshot};
use super::ServeShared;
use std::io::ErrorKind;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::time::Instant;
use wire::classify;
use wire::faketls::records::RecordDecoder;
use wire::faketls::server_flight::{self, ExtensionOrder, FlightParams};
use wire::obfuscated2::INIT_LEN;

/// The ServerHello's X25519 key share: a real public key of a fresh
/// private key, as a TLS server sends (a random string would be off the
/// curve half the time, which a prober can test). No one ever uses the
/// private key. aws-lc-rs's fixed-base multiplication costs about 91,000
/// instructions under callgrind, half of x25519-dalek's: this was the
/// `ee` handshake's largest single cost (BENCHMARKS.md, issue 14 item 9).
/// Its generator is seeded once, at start ([`super::Server::bind`]).
pub(super) fn fresh_key_share() -> [u8; 32] {
    use aws_lc_rs::agreement::{PrivateKey, X25519};
    let public = PrivateKey::generate(&X25519)
        .and_then(|key| key.compute_public_key())
        // Only a failing system random generator gets here; a key share
        // from a broken generator must not be sent (as random::fill).
        .expect("aws-lc-rs could not make an X25519 key: the system's random generator failed");
    let mut out = [0u8; 32];
    out.copy_from_slice(public.as_ref());
    out
}

/// After an authenticated ClientHello: answer with the server flight, then
/// read the obfuscated2 init from inside the records.
pub(super) async fn serve(
    client: TcpStream,
    acc: classify::TlsAccepted,
    deadline: Instant,
    shared: &Arc<ServeShared>,
    snap: &Snapshot,
    admission: Admission,
) {
    let key_share = fresh_key_share();
    let cert = server_flight::fake_certificate(&mut crate::random::fill);
    let flight = server_flight::build(
        &snap.users,
        acc.user,
        &FlightParams {
            client_random: &acc.hello.random,
            session_id: &acc.hello.session_id,
            cipher_suite: acc.hello.cipher_suite,
            key_share: &key_share,
            fake_certificate: &cert,
            order: ExtensionOrder::VersionsFirst,
        },
    );
    if relay::write_all(&client, &flight).await.is_err() {
        return;
    }
    drop((flight, cert));
    let mut records = RecordDecoder::new();
    let mut payload = Vec::with_capacity(INIT_LEN);
    let mut chunk = vec![0u8; 4096];
    while payload.len() < INIT_LEN {
        let read = tokio::time::timeout_at(deadline, async {
            loop {
                client.readable().await?;
                match client.try_read(&mut chunk) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        })
        .await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            _ => {
                tracing::debug!("authenticated fake-TLS client left or stalled before its init");
                return;
            }
        };
        match records.decode_in_place(&mut chunk[..n]) {
            Ok(m) => payload.extend_from_slice(&chunk[..m]),
            Err(e) => {
                tracing::debug!(error = %e, "authenticated fake-TLS client broke the record layer");
                return;
            }
        }
        if records.is_closed() && payload.len() < INIT_LEN {
            return;
        }
    }
    drop(chunk);
    let init: [u8; INIT_LEN] = payload[..INIT_LEN].try_into().expect("length checked");
    let Some(accepted) = classify::accept_inner_init(&init, &snap.users, acc.user) else {
        tracing::debug!("authenticated fake-TLS client sent an init that is not dd under its key");
        return;
    };
    let leftover = payload.split_off(INIT_LEN);
    super::dc::serve(
        client,
        admission,
        accepted,
        Some(records),
        leftover,
        shared,
        snap,
    )
    .await;
}
