//! A client that speaks to an MTProto proxy the way Telegram apps do: bare
//! obfuscated2 (plain and `dd` secrets) or fake-TLS (`ee`), then framed
//! packets.

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::cipher::Ctr;
use wire::faketls::client::{build_hello, flight_len, verify_flight, HelloShape};
use wire::faketls::records::{encode_app_data, RecordDecoder};
use wire::framing::{self, Decoded};
use wire::obfuscated2::{self, Tag};
use wire::secret::{Mode, Secret};

/// Largest record payload Telegram apps send (spec §4.5).
pub const CLIENT_RECORD: usize = 2878;

/// How to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// Framing tag (ee secrets always use `dd`).
    pub tag: Tag,
    /// DC id to ask for.
    pub dc: i16,
    /// ClientHello shape for `ee`.
    pub shape: HelloShape,
    /// Unix time to put in the hello (default: now).
    pub time: Option<u32>,
    /// Builds the hello instead of `shape` (e.g. another client's exact
    /// hello): `(key, domain, unix time)` → a signed ClientHello record.
    pub hello: Option<HelloBuilder>,
}

/// Builds a signed ClientHello record from `(key, domain, unix time)`.
pub type HelloBuilder = fn(&[u8; 16], &str, u32) -> Vec<u8>;

impl Default for Options {
    fn default() -> Self {
        Options {
            tag: Tag::Padded,
            dc: 2,
            shape: HelloShape::Classic517,
            time: None,
            hello: None,
        }
    }
}

/// An established client connection.
pub struct Client {
    /// The socket.
    pub stream: TcpStream,
    tag: Tag,
    tls: bool,
    encrypt: Ctr,
    decrypt: Ctr,
    records: RecordDecoder,
    inbox: Vec<u8>,
    /// The ClientHello sent (for replay tests).
    pub hello: Option<Vec<u8>>,
    /// The server's fake-TLS flight as received (ServerHello, CCS and the
    /// fake certificate record), for tests of what a censor sees.
    pub flight: Option<Vec<u8>>,
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

impl Client {
    /// Connects to `addr` and performs the handshake for `secret`.
    pub async fn connect(
        addr: std::net::SocketAddr,
        secret: &Secret,
        opts: &Options,
    ) -> io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Client::handshake(stream, secret, opts).await
    }

    /// Performs the handshake on an open stream.
    pub async fn handshake(
        mut stream: TcpStream,
        secret: &Secret,
        opts: &Options,
    ) -> io::Result<Client> {
        let key = Some(&secret.key);
        match secret.mode {
            Mode::Plain | Mode::Padded => {
                let tag = if secret.mode == Mode::Padded {
                    Tag::Padded
                } else {
                    opts.tag
                };
                let init = obfuscated2::initiate(
                    obfuscated2::safe_init_random(&mut crate::fill),
                    tag,
                    opts.dc,
                    key,
                );
                stream.write_all(&init.wire).await?;
                Ok(Client {
                    stream,
                    tag,
                    tls: false,
                    encrypt: init.ciphers.encrypt,
                    decrypt: init.ciphers.decrypt,
                    records: RecordDecoder::new(),
                    inbox: Vec::new(),
                    hello: None,
                    flight: None,
                })
            }
            Mode::FakeTls => {
                let domain = secret.domain.as_deref().unwrap_or("");
                let time = opts.time.unwrap_or_else(now);
                let hello = match opts.hello {
                    Some(build) => build(&secret.key.0, domain, time),
                    None => build_hello(&secret.key.0, domain, time, opts.shape, &mut crate::fill),
                };
                stream.write_all(&hello).await?;
                let mut flight = Vec::new();
                let total = loop {
                    match flight_len(&flight) {
                        Ok(Some(n)) => break n,
                        Ok(None) => {}
                        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                    }
                    let mut b = [0u8; 4096];
                    let n = stream.read(&mut b).await?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "proxy closed during the TLS handshake",
                        ));
                    }
                    flight.extend_from_slice(&b[..n]);
                };
                let random: [u8; 32] = hello[11..43].try_into().unwrap();
                if !verify_flight(&secret.key.0, &random, &flight[..total]) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "server flight HMAC is wrong (reached the cover?)",
                    ));
                }
                let init = obfuscated2::initiate(crate::random(), Tag::Padded, opts.dc, key);
                let mut out = wire::faketls::CCS_RECORD.to_vec();
                encode_app_data(&init.wire, CLIENT_RECORD, &mut out);
                stream.write_all(&out).await?;
                let mut records = RecordDecoder::new();
                let mut inbox = flight.split_off(total);
                let server_flight = flight;
                let n = records
                    .decode_in_place(&mut inbox)
                    .map_err(io::Error::other)?;
                inbox.truncate(n);
                let mut decrypt = init.ciphers.decrypt;
                decrypt.apply(&mut inbox);
                Ok(Client {
                    stream,
                    tag: Tag::Padded,
                    tls: true,
                    encrypt: init.ciphers.encrypt,
                    decrypt,
                    records,
                    inbox,
                    hello: Some(hello),
                    flight: Some(server_flight),
                })
            }
        }
    }

    /// Sends one packet (payload length must be a multiple of 4).
    pub async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 8);
        let pad: [u8; 3] = crate::random();
        framing::encode(
            self.tag,
            payload,
            false,
            &pad[..(pad[0] % 4) as usize],
            &mut frame,
        );
        self.send_raw(frame).await
    }

    /// Encrypts and sends bytes as they are (already framed).
    pub async fn send_raw(&mut self, mut frame: Vec<u8>) -> io::Result<()> {
        self.encrypt.apply(&mut frame);
        if self.tls {
            let mut out = Vec::with_capacity(frame.len() + 64);
            encode_app_data(&frame, CLIENT_RECORD, &mut out);
            self.stream.write_all(&out).await
        } else {
            self.stream.write_all(&frame).await
        }
    }

    /// Receives one packet.
    pub async fn recv(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match framing::decode(self.tag, &self.inbox).map_err(io::Error::other)? {
                Decoded::Packet(p, used) => {
                    self.inbox.drain(..used);
                    return Ok(p.payload);
                }
                Decoded::NeedMore => {}
            }
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let m = if self.tls {
                self.records
                    .decode_in_place(&mut buf[..n])
                    .map_err(io::Error::other)?
            } else {
                n
            };
            self.decrypt.apply(&mut buf[..m]);
            self.inbox.extend_from_slice(&buf[..m]);
        }
    }
}
