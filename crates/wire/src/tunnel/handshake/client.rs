//! The client's side of the handshake: the hello (Noise message 1 in a
//! browser-shaped ClientHello), then the server's flight.

use super::*;

/// Why the client could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The hello template has no slot for the handshake.
    #[error("hello template: {0}")]
    Hello(#[from] LocateError),
    /// The server public key is not usable.
    #[error("Noise handshake setup failed")]
    Noise,
    /// The hello's slots are not where its own parse finds the fields.
    #[error("hello slots do not match the record")]
    Slots,
}

/// The client half of a handshake in progress.
pub struct ClientHandshake {
    hs: Option<HandshakeState>,
    session_id: [u8; 32],
    suites: Vec<u16>,
    /// Whether the hello offered an X25519MLKEM768 share (the only case in
    /// which the server may answer in that group).
    offered_hybrid: bool,
    /// Payload 2 once the ServerHello authenticated.
    announced: Option<(usize, usize, u16)>,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake").finish_non_exhaustive()
    }
}

/// Progress of reading the server flight.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Progress {
    /// Feed more bytes (the whole buffer again, with more at its end).
    NeedMore,
    /// The flight is complete and authenticated.
    Done {
        /// Bytes of the buffer the flight took; the rest is transport.
        consumed: usize,
        /// The transport keys.
        established: Established,
        /// Send this before anything else: CCS + Finished-sized record.
        reply: Vec<u8>,
    },
}

impl ClientHandshake {
    /// Fills a hello made by [`crate::browser::Template::build`] (slots may
    /// hold anything; they are zeroed first) with Noise message 1, the
    /// hello tag and the user's HMAC. The X25519 share gets `e`, and so does
    /// the hybrid share's X25519 half when the browser repeats its key there
    /// (`hello.slots.x25519_in_hybrid`); otherwise the builder's own key
    /// stays there. Returns the handshake state and the record to send.
    pub fn start(
        hello: &BuiltHello,
        server_public: &[u8; 32],
        cred: &UserCredential,
        now_unix: u64,
        rng: Rng<'_>,
    ) -> Result<(ClientHandshake, Vec<u8>), StartError> {
        let at = locate(&hello.record)?;
        let slots = &hello.slots;
        let hybrid_ok = match slots.x25519_in_hybrid {
            None => true,
            Some(h) => at.hybrid_x25519 == Some(h),
        };
        if at.random != RANDOM_AT
            || slots.random != at.random
            || slots.session_id != at.session_id
            || slots.x25519 != at.x25519
            || !hybrid_ok
        {
            return Err(StartError::Slots);
        }
        let prologue = prologue(&hello.record, &at);
        let slot: Slot = Arc::default();
        seed(&slot, rng);
        let mut hs = builder(&slot)
            .prologue(&prologue)
            .and_then(|b| b.remote_public_key(server_public))
            .and_then(|b| b.build_initiator())
            .map_err(|_| StartError::Noise)?;
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&cred.user_id);
        payload[8..12].copy_from_slice(&(now_unix as u32).to_be_bytes());
        payload[12] = VERSION;
        let mut msg = [0u8; 64];
        let n = hs
            .write_message(&payload, &mut msg)
            .map_err(|_| StartError::Noise)?;
        debug_assert_eq!(n, 64);
        // The record as built, with the slots we own zeroed: a browser
        // that draws its own hybrid X25519 key keeps the builder's key.
        let mut record = hello.record.clone();
        record[at.random..at.random + RANDOM_LEN].fill(0);
        for x in [Some(at.x25519), slots.x25519_in_hybrid]
            .into_iter()
            .flatten()
        {
            record[x..x + 32].copy_from_slice(&msg[..32]);
        }
        record[at.session_id..at.session_id + 32].copy_from_slice(&msg[32..]);
        let tag = HelloTagKey::new(server_public).tag(&msg[32..]);
        let mac = hello_mac(&cred.auth_key, &record, at.random);
        record[at.random..at.random + MAC_BYTES].copy_from_slice(&mac[..MAC_BYTES]);
        record[at.random + MAC_BYTES..at.random + RANDOM_LEN].copy_from_slice(&tag);
        let suites = at.suites(&record).collect();
        Ok((
            ClientHandshake {
                hs: Some(hs),
                session_id: halves(&msg).1,
                suites,
                offered_hybrid: at.hybrid_x25519.is_some(),
                announced: None,
            },
            record,
        ))
    }

    /// Reads the server flight from the front of `buf` (everything received
    /// so far). Any error means we did not reach our server: close.
    pub fn read_server_flight(&mut self, buf: &[u8]) -> Result<Progress, ServerFlightError> {
        let result = self.read_inner(buf);
        if result.is_err() {
            self.hs = None;
        }
        result
    }

    fn read_inner(&mut self, buf: &[u8]) -> Result<Progress, ServerFlightError> {
        let Some(sh) = flight::parse_server_hello(buf)? else {
            return Ok(Progress::NeedMore);
        };
        let hs = self.hs.as_mut().ok_or(ServerFlightError::Finished)?;
        if sh.session_id != self.session_id
            || !self.suites.contains(&sh.suite)
            || (sh.group == GROUP_X25519_MLKEM768 && !self.offered_hybrid)
        {
            return Err(ServerFlightError::Mismatch);
        }
        let (count, total, suite) = match self.announced {
            Some(a) => a,
            None => {
                let mut msg = [0u8; 64];
                msg[..32].copy_from_slice(&sh.share);
                msg[32..].copy_from_slice(&sh.random);
                let mut payload = [0u8; 16];
                let n = hs
                    .read_message(&msg, &mut payload)
                    .map_err(|_| ServerFlightError::NotOurServer)?;
                // version, record count, total length, ten zero bytes
                let mut p = Reader::new(&payload[..n]);
                let (Some(VERSION), Some(count), Some(total), Some(zeros)) =
                    (p.u8(), p.u8(), p.u32(), p.array::<10>())
                else {
                    return Err(ServerFlightError::NotOurServer);
                };
                if zeros != [0; 10] || !p.is_empty() {
                    return Err(ServerFlightError::NotOurServer);
                }
                let a = (count as usize, total as usize, sh.suite);
                self.announced = Some(a);
                a
            }
        };
        let Some(flight_len) = flight::skip_flight(&buf[sh.len..], count, total)? else {
            return Ok(Progress::NeedMore);
        };
        let mut hs = self.hs.take().ok_or(ServerFlightError::Finished)?;
        let keys = split(&mut hs);
        let size = finished_record_len(suite);
        let mut sealer = Sealer::new(&keys.c2s, 0);
        let mut reply = CCS_RECORD.to_vec();
        sealer
            .seal_record(&confirmation(&keys.hash, size), &mut reply)
            .map_err(|_| ServerFlightError::Finished)?;
        Ok(Progress::Done {
            consumed: sh.len + flight_len,
            established: Established {
                sealer,
                opener: Opener::new(&keys.s2c, None),
            },
            reply,
        })
    }
}
