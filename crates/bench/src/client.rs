//! The load generator's side of a connection: the real client handshakes
//! (bare obfuscated2 with or without a key, fake-TLS), then one command
//! to the bench DC ([`crate::dc`]) and its encrypted acknowledgement, which
//! proves the whole path, crypto included. Bulk bytes afterwards are sent
//! and counted without crypto, so the load generator spends its CPU on
//! syscalls only: the proxy decrypts and re-encrypts noise just as well.

use socket2::SockRef;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::cipher::Ctr;
use wire::faketls::client::{build_hello, flight_len, verify_flight, HelloShape};
use wire::faketls::records::{encode_app_data, RecordDecoder};
use wire::faketls::CCS_RECORD;
use wire::obfuscated2::{self, Tag};
use wire::secret::Key;

/// Largest record payload Telegram apps send toward the proxy.
pub const CLIENT_RECORD: usize = 2878;
/// The acknowledgement the DC sends after a command.
pub const ACK: [u8; 8] = *b"SZBN-ACK";
const MAGIC: [u8; 4] = *b"SZBN";

/// How a client speaks to the system under test.
#[derive(Clone, Debug)]
pub enum Proto {
    /// Obfuscated2 without a key: what a DC expects (through a plain relay).
    Raw,
    /// `dd` secret: obfuscated2 with the key, padded intermediate.
    Dd(Key),
    /// `ee` secret: fake-TLS, then `dd` inside ApplicationData records.
    Ee(Key, String),
}

/// What the DC should do with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// Read and count until EOF, then answer the count.
    Sink = 1,
    /// After the go signal, send `arg` bytes, then FIN.
    Source = 2,
    /// Echo bytes as they come.
    Echo = 3,
    /// Read until EOF (idle connections, handshakes).
    Hold = 4,
    /// Send noise without end while reading and dropping what comes, until
    /// EOF (connections streaming both ways).
    Stream = 5,
}

/// A command to the DC: 24 bytes inside the encrypted stream.
#[derive(Clone, Copy, Debug)]
pub struct Command {
    /// What to do.
    pub op: Op,
    /// Byte count for [`Op::Source`].
    pub arg: u64,
    /// Go-signal epoch for [`Op::Source`].
    pub epoch: u64,
}

impl Command {
    /// A command without argument.
    pub fn new(op: Op) -> Command {
        Command {
            op,
            arg: 0,
            epoch: 0,
        }
    }

    /// The 24 plaintext bytes.
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&(self.op as u32).to_le_bytes());
        b[8..16].copy_from_slice(&self.arg.to_le_bytes());
        b[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        b
    }

    /// Parses 24 plaintext bytes.
    pub fn decode(b: &[u8; 24]) -> Option<Command> {
        if b[..4] != MAGIC {
            return None;
        }
        let op = match u32::from_le_bytes(b[4..8].try_into().ok()?) {
            1 => Op::Sink,
            2 => Op::Source,
            3 => Op::Echo,
            4 => Op::Hold,
            5 => Op::Stream,
            _ => return None,
        };
        Some(Command {
            op,
            arg: u64::from_le_bytes(b[8..16].try_into().ok()?),
            epoch: u64::from_le_bytes(b[16..24].try_into().ok()?),
        })
    }
}

/// An established connection whose command was acknowledged.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    tls: bool,
    decrypt: Ctr,
    records: RecordDecoder,
    inbox: Vec<u8>,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("OS randomness");
    b
}

fn safe_random() -> [u8; 64] {
    loop {
        let r = random::<64>();
        if obfuscated2::is_safe_bare_prefix(&r) {
            return r;
        }
    }
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Connects, performs the handshake for `proto`, sends `cmd` and waits for
/// the DC's acknowledgement.
pub async fn open(addr: SocketAddr, proto: &Proto, cmd: Command) -> io::Result<Conn> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let command = cmd.encode();
    let (tls, decrypt) = match proto {
        Proto::Raw | Proto::Dd(_) => {
            let key = match proto {
                Proto::Dd(k) => Some(k),
                _ => None,
            };
            let init = obfuscated2::initiate(safe_random(), Tag::Padded, 2, key);
            let mut enc = init.ciphers.encrypt;
            let mut out = init.wire.to_vec();
            let mut c = command;
            enc.apply(&mut c);
            out.extend_from_slice(&c);
            stream.write_all(&out).await?;
            (false, init.ciphers.decrypt)
        }
        Proto::Ee(key, domain) => {
            let hello = build_hello(
                &key.0,
                domain,
                unix_now(),
                HelloShape::Classic517,
                &mut |b| getrandom::fill(b).expect("OS randomness"),
            );
            stream.write_all(&hello).await?;
            let mut flight = Vec::with_capacity(8192);
            let mut chunk = [0u8; 8192];
            let total = loop {
                match flight_len(&flight) {
                    Ok(Some(n)) => break n,
                    Ok(None) => {}
                    Err(e) => return Err(invalid(e)),
                }
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(invalid("proxy closed during the TLS handshake"));
                }
                flight.extend_from_slice(&chunk[..n]);
            };
            let client_random: [u8; 32] = hello[11..43].try_into().expect("hello has a random");
            if flight.len() != total || !verify_flight(&key.0, &client_random, &flight) {
                return Err(invalid("server flight HMAC is wrong (reached the cover?)"));
            }
            let init = obfuscated2::initiate(random(), Tag::Padded, 2, Some(key));
            let mut enc = init.ciphers.encrypt;
            let mut payload = init.wire.to_vec();
            let mut c = command;
            enc.apply(&mut c);
            payload.extend_from_slice(&c);
            let mut out = CCS_RECORD.to_vec();
            encode_app_data(&payload, CLIENT_RECORD, &mut out);
            stream.write_all(&out).await?;
            (true, init.ciphers.decrypt)
        }
    };
    let mut conn = Conn {
        stream,
        tls,
        decrypt,
        records: RecordDecoder::new(),
        inbox: Vec::new(),
    };
    let ack = conn.read_payload(ACK.len()).await?;
    if ack != ACK {
        return Err(invalid("the DC's acknowledgement did not decrypt"));
    }
    Ok(conn)
}

impl Conn {
    /// Reads and decrypts exactly `n` payload bytes.
    pub async fn read_payload(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = [0u8; 4096];
        while self.inbox.len() < n {
            let got = self.stream.read(&mut buf).await?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let m = if self.tls {
                self.records
                    .decode_in_place(&mut buf[..got])
                    .map_err(|e| invalid(&e.to_string()))?
            } else {
                got
            };
            self.decrypt.apply(&mut buf[..m]);
            self.inbox.extend_from_slice(&buf[..m]);
        }
        let rest = self.inbox.split_off(n);
        Ok(std::mem::replace(&mut self.inbox, rest))
    }

    /// Sends `total` payload bytes of noise (in `chunk`, which carries
    /// `chunk_payload` payload bytes), half-closes, and returns the count
    /// the DC reports.
    pub async fn send_bulk(
        mut self,
        total: u64,
        chunk: &[u8],
        chunk_payload: usize,
    ) -> io::Result<u64> {
        let mut sent = 0u64;
        while sent < total {
            self.stream.write_all(chunk).await?;
            sent += chunk_payload as u64;
        }
        self.stream.shutdown().await?;
        let count = self.read_payload(8).await?;
        Ok(u64::from_le_bytes(count.try_into().expect("8 bytes")))
    }

    /// Reads until EOF and returns the payload bytes received.
    pub async fn recv_bulk(mut self) -> io::Result<u64> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut counter = RecordCounter::default();
        let mut total = 0u64;
        loop {
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(total);
            }
            total += if self.tls {
                counter.feed(&buf[..n])
            } else {
                n as u64
            };
        }
    }

    /// Sends `msg` (noise) and waits until as many payload bytes came back.
    pub async fn round_trip(&mut self, msg: &[u8], scratch: &mut [u8]) -> io::Result<()> {
        let mut counter = RecordCounter::default();
        if self.tls {
            let mut out = Vec::with_capacity(msg.len() + 5);
            encode_app_data(msg, CLIENT_RECORD, &mut out);
            self.stream.write_all(&out).await?;
        } else {
            self.stream.write_all(msg).await?;
        }
        let mut got = 0usize;
        while got < msg.len() {
            let n = self.stream.read(scratch).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += if self.tls {
                counter.feed(&scratch[..n]) as usize
            } else {
                n
            };
        }
        Ok(())
    }

    /// Closes with RST, so no TIME_WAIT is left behind on either hop.
    pub fn reset(self) {
        let _ = SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }
}

/// Writes `chunk` (noise, framed for the protocol) without end while
/// reading and dropping what comes, until `stop` or an error; adds the
/// bytes received to `received`, and closes with RST. Yields after each
/// chunk, so that many streams share the load generator's threads.
pub async fn stream_both(
    stream: TcpStream,
    chunk: &[u8],
    stop: &std::sync::atomic::AtomicBool,
    received: &std::sync::atomic::AtomicU64,
) {
    use std::sync::atomic::Ordering;
    let (mut rd, mut wr) = stream.into_split();
    let reading = async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            received.fetch_add(n as u64, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    let writing = async {
        while !stop.load(Ordering::Relaxed) && wr.write_all(chunk).await.is_ok() {
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        _ = reading => {}
        _ = writing => {}
    }
    if let Ok(s) = rd.reunite(wr) {
        let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
    }
}

/// Connects to the SOCKS5 proxy at `proxy` and asks it (no
/// authentication) to CONNECT to `dest`, an IPv4 address; returns the
/// socket once the proxy answered success.
pub async fn socks_connect(proxy: SocketAddr, dest: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(dest) = dest else {
        return Err(invalid("SOCKS5 destinations here are IPv4"));
    };
    let mut s = TcpStream::connect(proxy).await?;
    s.set_nodelay(true)?;
    // Greeting and request at once: the proxy reads them in turn.
    let mut hello = vec![5, 1, 0, 5, 1, 0, 1];
    hello.extend_from_slice(&dest.ip().octets());
    hello.extend_from_slice(&dest.port().to_be_bytes());
    s.write_all(&hello).await?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method).await?;
    if method != [5, 0] {
        return Err(invalid("the SOCKS5 proxy refused no-authentication"));
    }
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[0] != 5 || head[1] != 0 {
        return Err(io::Error::other(format!(
            "SOCKS5 CONNECT failed with reply {}",
            head[1]
        )));
    }
    // The bound address: IPv4, a name or IPv6, then the port.
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            len[0] as usize + 2
        }
        _ => return Err(invalid("bad SOCKS5 address type")),
    };
    let mut skip = [0u8; 258];
    s.read_exact(&mut skip[..rest]).await?;
    Ok(s)
}

/// Where a connection of the load generator goes.
#[derive(Clone, Debug)]
pub enum Route {
    /// As a Telegram app to the bench DC through the proxy at this address.
    Mtproto(SocketAddr, Proto),
    /// Through the SOCKS5 proxy at `.0` (a `samizdat client`) to the
    /// bench's greeter at `.1` ([`crate::dc::greeter`]).
    Socks(SocketAddr, SocketAddr),
}

impl Route {
    /// Opens a connection and waits for the far end's first byte (the DC's
    /// acknowledgement or the greeter's greeting). With `stream` the far
    /// end then streams noise both ways; otherwise it holds.
    pub async fn open(&self, stream: bool) -> io::Result<TcpStream> {
        match self {
            Route::Mtproto(addr, proto) => {
                let op = if stream { Op::Stream } else { Op::Hold };
                Ok(open(*addr, proto, Command::new(op)).await?.stream)
            }
            Route::Socks(proxy, dest) => {
                let mut s = socks_connect(*proxy, *dest).await?;
                let mut greeting = [0u8; 1];
                s.read_exact(&mut greeting).await?;
                if greeting != GREETING {
                    return Err(invalid("the greeter's first byte is wrong"));
                }
                s.write_all(if stream { &STREAM } else { &HOLD }).await?;
                Ok(s)
            }
        }
    }

    /// The noise chunk its streams write ([`bulk_chunk`]).
    pub fn chunk(&self) -> (Vec<u8>, usize) {
        match self {
            Route::Mtproto(_, proto) => bulk_chunk(proto),
            Route::Socks(..) => bulk_chunk(&Proto::Raw),
        }
    }
}

/// The greeter's first byte, sent at once on accept.
pub const GREETING: [u8; 1] = *b"G";
/// Asks the greeter to stream both ways.
pub const STREAM: [u8; 1] = *b"S";
/// Asks the greeter to hold until EOF.
pub const HOLD: [u8; 1] = *b"H";

/// Counts ApplicationData payload bytes in a record stream without copying.
#[derive(Default)]
pub struct RecordCounter {
    header: usize,
    len_hi: u8,
    remaining: usize,
}

impl RecordCounter {
    /// Feeds raw bytes; returns the payload bytes among them.
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut payload = 0u64;
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(data.len());
                payload += take as u64;
                self.remaining -= take;
                data = &data[take..];
                continue;
            }
            match self.header {
                3 => self.len_hi = data[0],
                4 => self.remaining = u16::from_be_bytes([self.len_hi, data[0]]) as usize,
                _ => {}
            }
            self.header = (self.header + 1) % 5;
            data = &data[1..];
        }
        payload
    }
}

/// A write chunk of noise for `proto` and how many payload bytes it holds:
/// 64 KiB raw, or 2,878-byte ApplicationData records for fake-TLS.
pub fn bulk_chunk(proto: &Proto) -> (Vec<u8>, usize) {
    let mut noise = vec![0u8; 64 * 1024];
    getrandom::fill(&mut noise).expect("OS randomness");
    match proto {
        Proto::Ee(..) => {
            let records = noise.len() / (CLIENT_RECORD + 5);
            let payload = records * CLIENT_RECORD;
            let mut out = Vec::with_capacity(noise.len());
            encode_app_data(&noise[..payload], CLIENT_RECORD, &mut out);
            (out, payload)
        }
        _ => {
            let n = noise.len();
            (noise, n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counter_counts_payload_across_splits() {
        let payload = vec![7u8; 40_000];
        let mut wire = Vec::new();
        encode_app_data(&payload, 16_384, &mut wire);
        for split in [1, 3, 5, 6, 4096, 16_389, 40_000] {
            let mut c = RecordCounter::default();
            let n: u64 = wire.chunks(split).map(|ch| c.feed(ch)).sum();
            assert_eq!(n, 40_000, "split {split}");
        }
    }

    #[test]
    fn commands_round_trip() {
        let c = Command {
            op: Op::Source,
            arg: 123,
            epoch: 9,
        };
        let d = Command::decode(&c.encode()).unwrap();
        assert_eq!((d.op, d.arg, d.epoch), (Op::Source, 123, 9));
        assert!(Command::decode(&[0u8; 24]).is_none());
    }
}
