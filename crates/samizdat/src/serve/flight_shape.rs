//! Learns the cover site's TLS 1.3 answer, so that samizdat's answer to its
//! own clients (the transport of `docs/transport.md`) has the same shape:
//! cipher suite, ServerHello extension order and the sizes of the encrypted
//! handshake records. Measured when the first samizdat client arrives (so
//! a server that only Telegram apps use never contacts its cover on its
//! own; that client waits for the measurement, at most [`TIMEOUT`]), then
//! every [`REFRESH`]. Whenever the cover cannot be measured, the last good
//! shape (or a typical nginx flight) stays in use.

use super::cover::CoverTarget;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use wire::browser::{Browser, Template};
use wire::faketls::server_shape::{self, ServerShape, KEY_SHARE, SUPPORTED_VERSIONS};
use wire::faketls::HANDSHAKE;
use wire::tunnel::flight::{ExtOrder, FlightShape};
use wire::tunnel::hello::{GROUP_X25519, GROUP_X25519_MLKEM768};

/// How often the cover is measured again.
pub const REFRESH: Duration = Duration::from_secs(30 * 60);
/// Longest wait for the cover's whole flight.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The flight is over when the cover has been quiet this long after its
/// first encrypted record (it waits for our Finished, which never comes).
const QUIET: Duration = Duration::from_millis(300);
/// Most bytes read from the cover.
const MAX_READ: usize = 64 * 1024;

/// The shape in use, shared by every connection.
#[derive(Debug)]
pub struct LearnedShape {
    current: ArcSwap<FlightShape>,
    /// Wakes the measuring task for its first measurement.
    wanted: tokio::sync::Notify,
    /// True once the first measurement ended (well or not).
    first_done: tokio::sync::watch::Sender<bool>,
}

impl Default for LearnedShape {
    fn default() -> Self {
        LearnedShape {
            current: ArcSwap::from_pointee(FlightShape::default()),
            wanted: tokio::sync::Notify::new(),
            first_done: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl LearnedShape {
    /// The shape, once the first measurement has ended (it starts it if
    /// need be); waits at most a little longer than one measurement.
    pub async fn ready(&self) -> Arc<FlightShape> {
        let mut done = self.first_done.subscribe();
        if !*done.borrow() {
            self.wanted.notify_one();
            let _ =
                tokio::time::timeout(TIMEOUT + Duration::from_secs(1), done.wait_for(|d| *d)).await;
        }
        self.get()
    }

    /// The shape to answer with now.
    pub fn get(&self) -> Arc<FlightShape> {
        self.current.load_full()
    }

    fn set(&self, shape: FlightShape) {
        self.current.store(Arc::new(shape));
    }
}

/// What a measured server flight means for ours. Errors say why it cannot
/// be copied.
pub fn flight_shape(s: &ServerShape) -> Result<FlightShape, String> {
    if s.hello_retry {
        return Err("the cover asked for another key share (HelloRetryRequest)".into());
    }
    if !wire::tunnel::flight::is_tls13_suite(s.cipher_suite) {
        return Err(format!(
            "the cover chose cipher suite 0x{:04x}, not a TLS 1.3 one",
            s.cipher_suite
        ));
    }
    let versions = s.extensions.iter().position(|&t| t == SUPPORTED_VERSIONS);
    let key_share = s.extensions.iter().position(|&t| t == KEY_SHARE);
    let ext_order = match (versions, key_share) {
        (Some(v), Some(k)) if k < v => ExtOrder::KeyShareFirst,
        (Some(_), Some(_)) => ExtOrder::VersionsFirst,
        _ => {
            return Err(
                "the cover's ServerHello is not TLS 1.3 (no key_share or supported_versions)"
                    .into(),
            )
        }
    };
    if s.encrypted.is_empty() || s.encrypted.len() > 255 {
        return Err(format!(
            "the cover sent {} encrypted handshake records",
            s.encrypted.len()
        ));
    }
    let records = s
        .encrypted
        .iter()
        .map(|&n| u16::try_from(n).unwrap_or(u16::MAX))
        .collect();
    Ok(FlightShape {
        cipher_suite: s.cipher_suite,
        ext_order,
        // Answer in the group the cover picks for Chrome: X25519MLKEM768
        // (with a real ML-KEM encapsulation) or X25519. Any other group
        // (P-256 with a Chrome hello is unheard of) falls back to X25519
        // and is reported by `run`.
        group: match s.group {
            Some(GROUP_X25519_MLKEM768) => GROUP_X25519_MLKEM768,
            _ => GROUP_X25519,
        },
        records,
    })
}

/// Sends the cover a Chrome ClientHello for `sni` and reads its flight.
pub async fn measure(cover: &CoverTarget, sni: &str) -> Result<(FlightShape, ServerShape), String> {
    let mut fill = |b: &mut [u8]| {
        crate::random::fill(b);
    };
    let mut hello = Template::builtin(Browser::Chrome)
        .try_build(sni, &mut fill)
        .map_err(|e| format!("cannot make a hello for {sni:?}: {e}"))?;
    // The transport's slots are zero in a built hello; a probe fills them
    // with random bytes (any 32 bytes are an X25519 public key).
    let slots = hello.slots;
    for at in [
        Some(slots.random),
        Some(slots.session_id),
        Some(slots.x25519),
        slots.x25519_in_hybrid,
    ]
    .into_iter()
    .flatten()
    {
        fill(&mut hello.record[at..at + 32]);
    }
    let work = async {
        let mut s = cover
            .connect(TIMEOUT)
            .await
            .map_err(|e| format!("cannot connect to the cover: {e}"))?;
        s.write_all(&hello.record)
            .await
            .map_err(|e| format!("cannot send the hello: {e}"))?;
        let mut read = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let encrypted_seen = server_shape::server_shape(&read)
                .is_some_and(|s| !s.encrypted.is_empty() && complete(&read));
            let n = if encrypted_seen {
                match tokio::time::timeout(QUIET, s.read(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => break,
                }
            } else {
                s.read(&mut buf).await
            }
            .map_err(|e| format!("reading the cover's answer: {e}"))?;
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
            if read.len() >= MAX_READ {
                break;
            }
            // A cover that does not answer with a ServerHello record will
            // not become TLS later: stop now instead of at the deadline.
            if read[0] != HANDSHAKE
                || (server_shape::first_record_complete(&read)
                    && server_shape::server_shape(&read).is_none())
            {
                return Err("the cover did not answer with a TLS ServerHello".to_string());
            }
        }
        Ok::<_, String>(read)
    };
    let read = tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| "the cover did not finish its answer in 5 s".to_string())??;
    let shape = server_shape::server_shape(&read)
        .ok_or_else(|| "the cover did not answer with a TLS ServerHello".to_string())?;
    Ok((flight_shape(&shape)?, shape))
}

/// Whether `read` ends on a record boundary.
fn complete(mut read: &[u8]) -> bool {
    while read.len() >= 5 {
        let len = 5 + usize::from(u16::from_be_bytes([read[3], read[4]]));
        if read.len() < len {
            return false;
        }
        read = &read[len..];
    }
    read.is_empty()
}

/// Measures the cover once a samizdat client has arrived, then every
/// [`REFRESH`] until `stop`, keeping the
/// last good shape. `target` gives the current cover and name (they may
/// change on reload).
pub async fn run(
    learned: Arc<LearnedShape>,
    target: impl Fn() -> (CoverTarget, String) + Send,
    stop: CancellationToken,
) {
    let mut last: Option<FlightShape> = None;
    tokio::select! {
        _ = learned.wanted.notified() => {}
        _ = stop.cancelled() => return,
    }
    loop {
        let (cover, sni) = target();
        match measure(&cover, &sni).await {
            Ok((shape, seen)) => {
                if seen.group.is_some_and(|g| g != shape.group) {
                    tracing::warn!(
                        group = format!("0x{:04x}", seen.group.unwrap_or(0)),
                        "the cover site answers Chrome with a key-share group samizdat does not send (it answers X25519); an observer could see the difference: pick a cover that chooses X25519 or X25519MLKEM768"
                    );
                }
                if last.as_ref() != Some(&shape) {
                    tracing::info!(
                        suite = format!("0x{:04x}", shape.cipher_suite),
                        order = ?shape.ext_order,
                        records = ?shape.records,
                        "learned the cover site's TLS answer"
                    );
                }
                learned.set(shape.clone());
                last = Some(shape);
            }
            Err(e) => {
                tracing::warn!(
                "cannot measure the cover site's TLS answer ({e}); samizdat clients get {} shape",
                if last.is_some() { "the last measured" } else { "a typical nginx" }
            )
            }
        }
        learned.first_done.send_replace(true);
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IP address as the server name is an error from `measure`, before
    /// anything is sent (it used to panic in the hello builder).
    #[tokio::test]
    async fn measuring_with_an_ip_server_name_is_an_error() {
        let cover = CoverTarget::Addr("127.0.0.1:9".parse().unwrap());
        let err = measure(&cover, "10.0.0.1").await.unwrap_err();
        assert!(err.contains("10.0.0.1"), "{err}");
    }

    fn seen(extensions: Vec<u16>, encrypted: Vec<usize>) -> ServerShape {
        ServerShape {
            hello_retry: false,
            session_id: vec![1; 32],
            cipher_suite: 0x1302,
            extensions,
            group: Some(0x001d),
            hello_len: 127,
            change_cipher_spec: true,
            encrypted,
        }
    }

    #[test]
    fn copies_suite_order_and_record_sizes() {
        let s = flight_shape(&seen(
            vec![KEY_SHARE, SUPPORTED_VERSIONS],
            vec![32, 2615, 281, 69],
        ))
        .unwrap();
        assert_eq!(s.cipher_suite, 0x1302);
        assert_eq!(s.ext_order, ExtOrder::KeyShareFirst);
        assert_eq!(s.records, vec![32, 2615, 281, 69]);
        let s = flight_shape(&seen(vec![SUPPORTED_VERSIONS, KEY_SHARE], vec![4000])).unwrap();
        assert_eq!(s.ext_order, ExtOrder::VersionsFirst);
    }

    #[test]
    fn answers_in_the_covers_group() {
        let mut pq = seen(vec![SUPPORTED_VERSIONS, KEY_SHARE], vec![32, 100]);
        pq.group = Some(GROUP_X25519_MLKEM768);
        assert_eq!(flight_shape(&pq).unwrap().group, GROUP_X25519_MLKEM768);
        pq.group = Some(0x0017);
        assert_eq!(flight_shape(&pq).unwrap().group, GROUP_X25519);
        pq.group = Some(GROUP_X25519);
        assert_eq!(flight_shape(&pq).unwrap().group, GROUP_X25519);
    }

    #[test]
    fn refuses_what_cannot_be_copied() {
        let mut hrr = seen(vec![SUPPORTED_VERSIONS, KEY_SHARE], vec![10]);
        hrr.hello_retry = true;
        assert!(flight_shape(&hrr)
            .unwrap_err()
            .contains("HelloRetryRequest"));
        assert!(flight_shape(&seen(vec![KEY_SHARE], vec![10])).is_err());
        assert!(flight_shape(&seen(vec![SUPPORTED_VERSIONS, KEY_SHARE], vec![])).is_err());
        let mut tls12 = seen(vec![SUPPORTED_VERSIONS, KEY_SHARE], vec![10]);
        tls12.cipher_suite = 0xc02f;
        assert!(flight_shape(&tls12).unwrap_err().contains("0xc02f"));
    }

    #[tokio::test]
    async fn a_cover_that_is_not_tls_fails_at_once() {
        // An echo server sends our hello back: not a ServerHello.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = vec![0u8; 4096];
            while let Ok(n) = s.read(&mut b).await {
                if n == 0 || s.write_all(&b[..n]).await.is_err() {
                    break;
                }
            }
        });
        let started = crate::clock::real_now();
        let err = measure(&CoverTarget::Addr(addr), "cover.localhost")
            .await
            .unwrap_err();
        assert!(err.contains("ServerHello"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn knows_a_record_boundary() {
        assert!(complete(&[]));
        assert!(complete(&[0x17, 3, 3, 0, 2, 9, 9]));
        assert!(!complete(&[0x17, 3, 3, 0, 2, 9]));
        assert!(!complete(&[0x17, 3]));
    }
}
