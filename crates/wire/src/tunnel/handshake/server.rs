//! The server's side of the handshake: authenticating a hello (tag, one
//! DH, MAC, user lookup), then the flight that answers it.

use super::*;

/// Why a hello is not an authenticated samizdat hello. The caller splices
/// the connection to the cover for every variant; none carries secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// No hello tag for this server (see [`precheck`]): every hello
    /// that is not a samizdat client's. No Diffie-Hellman was done.
    #[error("no hello tag")]
    Untagged,
    /// Not a ClientHello with the slots we need.
    #[error("not a usable ClientHello: {0}")]
    Malformed(LocateError),
    /// Noise message 1 did not decrypt: not a samizdat client (or not
    /// for this server key).
    #[error("not a samizdat hello")]
    NotOurs,
    /// Decrypted, but the user id is unknown.
    #[error("unknown user")]
    UnknownUser,
    /// The user's HMAC over the hello does not match.
    #[error("hello MAC mismatch")]
    BadMac,
    /// The timestamp is outside the window.
    #[error("hello timestamp outside the window")]
    Stale,
}

/// An authenticated hello, ready for the server flight.
pub struct Accepted {
    /// The user index the lookup returned.
    pub user: usize,
    /// The client's ephemeral key: check it in the replay cache.
    pub replay_key: [u8; 32],
    /// The unix time the client wrote.
    pub client_time: u64,
    /// Bytes of the hello record: what follows it in the connection's
    /// first read already belongs to the session.
    pub record_len: usize,
    hs: HandshakeState,
    slot: Slot,
    session_id: [u8; 32],
    suites: Vec<u16>,
    /// The client's ML-KEM-768 encapsulation key, if it offered the hybrid
    /// group: the server answers in that group when the cover does.
    mlkem_key: Option<Vec<u8>>,
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted")
            .field("user", &self.user)
            .field("client_time", &self.client_time)
            .finish_non_exhaustive()
    }
}

/// Authenticates a ClientHello record: the hello tag ([`precheck`], no
/// DH), then one DH, one HMAC and one lookup by user id (`lookup` returns
/// the user index and auth key). The hybrid share's X25519 half may repeat
/// the X25519 share (Firefox) or hold another key (Chrome).
pub fn accept(
    record: &[u8],
    key: &ServerKey,
    lookup: impl Fn(&[u8; 8]) -> Option<(usize, [u8; 32])>,
    now_unix: u64,
    window_secs: u64,
) -> Result<Accepted, Reject> {
    if !precheck(record, key) {
        return Err(Reject::Untagged);
    }
    let at = locate(record).map_err(Reject::Malformed)?;
    // locate() checked that the share is 32 bytes inside the record.
    let e: [u8; 32] = Reader::new(&record[at.x25519..])
        .array()
        .ok_or(Reject::NotOurs)?;
    #[cfg(test)]
    DH_ATTEMPTS.with(|n| n.set(n.get() + 1));
    let prologue = prologue(record, &at);
    let slot: Slot = Arc::default();
    let mut hs = builder(&slot)
        .prologue(&prologue)
        .and_then(|b| b.local_private_key(&key.secret[..]))
        .and_then(|b| b.build_responder())
        .map_err(|_| Reject::NotOurs)?;
    let mut msg = [0u8; 64];
    msg[..32].copy_from_slice(&e);
    msg[32..].copy_from_slice(&record[at.session_id..at.session_id + 32]);
    let mut payload = Zeroizing::new([0u8; 16]);
    let n = hs
        .read_message(&msg, &mut payload[..])
        .map_err(|_| Reject::NotOurs)?;
    // user id, client time, version, three zero bytes
    let mut p = Reader::new(&payload[..n]);
    let (Some(user_id), Some(client_time), Some(VERSION), Some([0, 0, 0])) =
        (p.array::<8>(), p.u32(), p.u8(), p.array::<3>())
    else {
        return Err(Reject::NotOurs);
    };
    if !p.is_empty() {
        return Err(Reject::NotOurs);
    }
    let (user, auth_key) = lookup(&user_id).ok_or(Reject::UnknownUser)?;
    let auth_key = Zeroizing::new(auth_key);
    let mac = hello_mac(&auth_key, record, at.random);
    if !bool::from(mac[..MAC_BYTES].ct_eq(&record[at.random..at.random + MAC_BYTES])) {
        return Err(Reject::BadMac);
    }
    let client_time = u64::from(client_time);
    if client_time.abs_diff(now_unix) > window_secs {
        return Err(Reject::Stale);
    }
    Ok(Accepted {
        user,
        replay_key: e,
        client_time,
        record_len: record.len(),
        hs,
        slot,
        session_id: halves(&msg).1,
        suites: at.suites(record).collect(),
        mlkem_key: at
            .hybrid_x25519
            .and_then(|h| record.get(h.checked_sub(MLKEM768_KEY_LEN)?..h))
            .map(<[u8]>::to_vec),
    })
}

impl Accepted {
    /// The cipher suite the server flight will name for `shape`.
    pub fn suite(&self, shape: &FlightShape) -> u16 {
        flight::choose_suite(shape.cipher_suite, &self.suites)
    }

    /// Writes the server flight (ServerHello with Noise message 2, CCS,
    /// the shape's application-data records) and returns it with the
    /// transport keys. The returned opener first expects the client's
    /// key-confirmation record.
    pub fn respond(mut self, shape: &FlightShape, rng: Rng<'_>) -> (Vec<u8>, Established) {
        let suite = self.suite(shape);
        let sizes: Vec<usize> = shape.sizes().collect();
        let total: usize = sizes.iter().map(|n| 5 + n).sum();
        let mut payload = [0u8; 16];
        payload[0] = VERSION;
        payload[1] = sizes.len() as u8;
        payload[2..6].copy_from_slice(&(total as u32).to_be_bytes());
        seed(&self.slot, rng);
        let mut msg = [0u8; 64];
        // The slot was just filled with 32 bytes, the only thing that can
        // fail in an NK responder's second message.
        self.hs
            .write_message(&payload, &mut msg)
            .expect("Noise NK message 2 with a seeded ephemeral");
        let (share, random) = halves(&msg);
        // Answer in the cover's group: a hybrid cover's ServerHello is
        // about 1.2 KB, an X25519 one 122 bytes, and an observer sees which.
        let pq = match (shape.group, &self.mlkem_key) {
            (GROUP_X25519_MLKEM768, Some(ek)) => flight::mlkem768_encapsulate(ek),
            _ => None,
        };
        let server_share = match &pq {
            Some((ciphertext, _)) => ServerShare::Hybrid {
                ciphertext,
                x25519: &share,
            },
            None => ServerShare::X25519(&share),
        };
        let mut out = Vec::with_capacity(128 + 1120 + 6 + total);
        flight::server_hello(
            &mut out,
            &random,
            &self.session_id,
            suite,
            shape.ext_order,
            server_share,
        );
        out.extend_from_slice(&CCS_RECORD);
        let keys = split(&mut self.hs);
        // The fake flight is AEAD output (zeros sealed under a key only
        // the two ends can derive), so it looks like the real ciphertext.
        let flight_key = Zeroizing::new(hmac_sha256(&keys.hash[..], &[b"samizdat/v1 flight"]));
        let mut fake = Sealer::new(&flight_key, 0);
        for n in sizes {
            let start = out.len();
            fake.seal_record(&vec![0u8; n - TAG_LEN], &mut out)
                .expect("flight record sizes are clamped");
            out[start] = APPLICATION_DATA;
        }
        let size = finished_record_len(suite);
        let established = Established {
            sealer: Sealer::new(&keys.s2c, 0),
            opener: Opener::new(&keys.c2s, Some((confirmation(&keys.hash, size), size))),
        };
        (out, established)
    }
}
