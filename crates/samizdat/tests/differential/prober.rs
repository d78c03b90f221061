//! The prober's core: run one probe against one address and write down
//! what an active prober can see of the server (bytes, time to first
//! byte, how and when it closed, what happens to bytes sent after its
//! FIN), then compare two such observations.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The tolerance the issue asks for on times to first byte and to close.
pub const TOLERANCE: Duration = Duration::from_secs(1);

/// One thing the prober does on a connection.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Do nothing for a while (the server may answer or close meanwhile).
    Pause(Duration),
    /// Send FIN (shutdown of our write side).
    HalfClose,
}

/// What a probe does.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Raw TCP steps, then wait for the server.
    Raw(Vec<Step>),
    /// A real TLS session (rustls) with HTTP/1.1 keep-alive requests.
    Tls(super::tls::Session),
}

/// A named probe.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Shown in failures.
    pub name: String,
    /// What it does.
    pub plan: Plan,
}

impl Probe {
    /// A raw probe.
    pub fn raw(name: impl Into<String>, steps: Vec<Step>) -> Probe {
        Probe {
            name: name.into(),
            plan: Plan::Raw(steps),
        }
    }
}

/// How the server's side of the connection ended, as the prober sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// read() returned 0.
    Fin,
    /// read() failed with ECONNRESET.
    Rst,
    /// Still open when the observation window ended.
    Open,
    /// Some other read error (shown with its kind).
    Other(ErrorKind),
}

/// Everything the prober saw on one connection.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The server's bytes, normalised (see [`shape`]).
    pub data: String,
    /// Protocol-level things worth comparing (TLS plaintext, write errors).
    pub notes: String,
    /// From the probe's last write to the server's first byte.
    pub first_byte: Option<Duration>,
    /// How it ended.
    pub end: End,
    /// From the probe's last write to the end.
    pub end_at: Option<Duration>,
    /// After a FIN: did one more byte from us draw a reset?
    pub after_fin: Option<&'static str>,
}

fn is_reset(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// Runs one probe against `addr`, watching for at most `window` after the
/// probe's last write.
pub async fn observe(addr: SocketAddr, probe: &Probe, window: Duration) -> Observation {
    match &probe.plan {
        Plan::Raw(steps) => observe_raw(addr, steps, window).await,
        Plan::Tls(session) => super::tls::observe(addr, session, window).await,
    }
}

async fn observe_raw(addr: SocketAddr, steps: &[Step], window: Duration) -> Observation {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to 127.0.0.1");
    s.set_nodelay(true).unwrap();
    let started = Instant::now();
    let pauses: Duration = steps
        .iter()
        .map(|s| match s {
            Step::Pause(d) => *d,
            _ => Duration::ZERO,
        })
        .sum();
    let deadline = started + pauses + window + Duration::from_secs(2);
    let last_write = std::sync::Mutex::new(started);
    let mut notes = String::new();
    let mut got = Vec::new();
    let mut arrivals: Vec<Instant> = Vec::new();
    let (end, ended) = {
        let (mut rd, mut wr) = s.split();
        let writer = async {
            for (i, step) in steps.iter().enumerate() {
                let r = match step {
                    Step::Send(b) => wr.write_all(b).await,
                    Step::Pause(d) => {
                        tokio::time::sleep(*d).await;
                        Ok(())
                    }
                    Step::HalfClose => wr.shutdown().await,
                };
                if !matches!(step, Step::Pause(_)) {
                    *last_write.lock().unwrap() = Instant::now();
                }
                if let Err(e) = r {
                    // Writing into a connection the server has reset.
                    let _ = write!(notes, "step {i} failed: {:?}; ", simplify(e.kind()));
                    break;
                }
            }
        };
        // Reads until the server closes or the deadline; the window, which
        // counts from the last write, is applied afterwards.
        let reader = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
                    Err(_) => return (End::Open, Instant::now()),
                    Ok(Ok(0)) => return (End::Fin, Instant::now()),
                    Ok(Ok(n)) => {
                        arrivals.push(Instant::now());
                        got.extend_from_slice(&buf[..n]);
                    }
                    Ok(Err(e)) if is_reset(e.kind()) => return (End::Rst, Instant::now()),
                    Ok(Err(e)) => return (End::Other(e.kind()), Instant::now()),
                }
            }
        };
        let ((), r) = tokio::join!(writer, reader);
        r
    };
    let t0 = *last_write.lock().unwrap();
    let (end, end_at) = if end != End::Open && ended <= t0 + window {
        (end, Some(ended.saturating_duration_since(t0)))
    } else {
        (End::Open, None)
    };
    let first_byte = arrivals
        .first()
        .filter(|a| **a <= t0 + window)
        .map(|a| a.saturating_duration_since(t0));
    // A server that closed its side: is it gone (a byte draws RST) or only
    // half-closed (it keeps reading)?
    let after_fin = if end == End::Fin {
        let w = s.write_all(b"\0").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some(match (w, s.take_error()) {
            (Err(_), _) | (_, Ok(Some(_))) => "reset",
            _ => "quiet",
        })
    } else {
        None
    };
    Observation {
        data: shape(&got),
        notes,
        first_byte,
        end,
        end_at,
        after_fin,
    }
}

fn simplify(kind: ErrorKind) -> ErrorKind {
    match kind {
        ErrorKind::ConnectionAborted => ErrorKind::ConnectionReset,
        k => k,
    }
}

/// The server's bytes in a form that two correct runs share: TLS records
/// as their types and lengths (the contents hold fresh randoms and keys),
/// plaintext alerts byte for byte, HTTP with the `Date` header blanked,
/// anything else in hex.
pub fn shape(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing".into();
    }
    if bytes.len() >= 3 && (0x14..=0x17).contains(&bytes[0]) && bytes[1] == 3 {
        return tls_shape(bytes);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        if text.starts_with("HTTP/") {
            return text
                .split("\r\n")
                .map(|l| {
                    if l.to_ascii_lowercase().starts_with("date:") {
                        "Date: *"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\r\n");
        }
    }
    hex::encode(bytes)
}

fn tls_shape(mut b: &[u8]) -> String {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 5 {
            out.push(format!("partial-header({})", hex::encode(b)));
            break;
        }
        let len = u16::from_be_bytes([b[3], b[4]]) as usize;
        let name = match b[0] {
            0x14 => "ccs",
            0x15 => "alert",
            0x16 => "handshake",
            0x17 => "appdata",
            _ => "?",
        };
        if b.len() < 5 + len {
            out.push(format!("{name}-partial({}/{len})", b.len() - 5));
            break;
        }
        let body = &b[5..5 + len];
        out.push(match b[0] {
            // Plaintext alerts are deterministic: keep them whole.
            0x15 if len == 2 => format!("alert({})", hex::encode(body)),
            // The handshake message types, not their random contents.
            0x16 => format!(
                "handshake({len}, type {})",
                body.first().copied().unwrap_or(0)
            ),
            _ => format!("{name}({len})"),
        });
        b = &b[5 + len..];
    }
    out.join(" ")
}

/// Lists how `got` differs from `want` beyond the tolerance.
pub fn differences(want: &Observation, got: &Observation) -> Vec<String> {
    let mut d = Vec::new();
    // Bytes that arrive just before a reset may be thrown away by the
    // receiving kernel before the prober reads them (Linux drops unread
    // data on RST), direct or not: with RST on both sides, one side may
    // have seen a prefix of what the other saw.
    let rst_prefix = want.end == End::Rst
        && got.end == End::Rst
        && (want.data == "nothing"
            || got.data == "nothing"
            || want.data.starts_with(&got.data)
            || got.data.starts_with(&want.data));
    if want.data != got.data && !rst_prefix {
        d.push(format!(
            "bytes differ:\n      cover:    {}\n      samizdat: {}",
            clip(&want.data),
            clip(&got.data)
        ));
    }
    if want.notes != got.notes {
        d.push(format!(
            "notes differ: cover {:?}, samizdat {:?}",
            want.notes, got.notes
        ));
    }
    if want.end != got.end {
        d.push(format!(
            "close differs: cover {:?} at {:?}, samizdat {:?} at {:?}",
            want.end, want.end_at, got.end, got.end_at
        ));
    } else if let (Some(a), Some(b)) = (want.end_at, got.end_at) {
        if a.abs_diff(b) > TOLERANCE {
            d.push(format!(
                "{:?} at {a:?} from the cover, {b:?} from samizdat",
                want.end
            ));
        }
    }
    match (want.first_byte, got.first_byte) {
        _ if rst_prefix && want.data != got.data => {}
        (Some(a), Some(b)) if a.abs_diff(b) > TOLERANCE => d.push(format!(
            "first byte after {a:?} from the cover, {b:?} from samizdat"
        )),
        (Some(_), None) | (None, Some(_)) => d.push(format!(
            "first byte: cover {:?}, samizdat {:?}",
            want.first_byte, got.first_byte
        )),
        _ => {}
    }
    if want.after_fin != got.after_fin {
        d.push(format!(
            "a byte sent after the FIN: cover {:?}, samizdat {:?}",
            want.after_fin, got.after_fin
        ));
    }
    d
}

fn clip(s: &str) -> String {
    if s.len() > 300 {
        format!("{}… ({} chars)", &s[..300], s.len())
    } else {
        s.to_string()
    }
}

/// A small deterministic generator (xorshift64*), so a failing run can be
/// repeated with `SAMIZDAT_PROBE_SEED`.
pub struct Rng(u64);

impl Rng {
    /// From the environment or the clock; prints the seed.
    pub fn from_env(label: &str) -> Rng {
        let seed = std::env::var("SAMIZDAT_PROBE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{label}: SAMIZDAT_PROBE_SEED={seed}");
        Rng(seed | 1)
    }
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
