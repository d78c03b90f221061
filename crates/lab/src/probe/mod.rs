//! Technique 5: active probing and replay.
//!
//! A censor that suspects a server (it saw a connection it could not
//! classify) connects to it itself and sends probes, and it also knows the
//! site the server claims to be (it resolves the SNI). Here every probe goes
//! to the suspect and to that cover at the same time, and the suspect is
//! flagged as a proxy when any answer differs beyond a tolerance: the bytes
//! (normalised, see [`shape`]), the time to the first byte, the kind of
//! close (FIN, RST or none) and its time, and what a byte sent after a FIN
//! draws.
//!
//! The probes are those seen in the wild:
//! - replays of recorded first payloads, identical and with the bytes
//!   changed that Alice et al. ("How China Detects and Blocks Shadowsocks",
//!   IMC 2020, §4) saw changed ([`REPLAY_CHANGES`]), sent at once and after
//!   delays ([`ProbeOptions::replay_delays`]);
//! - random first flights of the lengths seen in the wild ([`WILD_LENGTHS`]:
//!   7–9, 11–13, 15–17, 21–23, 32–34, 40–42, 48–50 and 221 bytes);
//! - TLS probes: a ClientHello for the cover's name with a wrong HMAC (the
//!   censor has no key), one for another name, and cut records;
//! - silence, and a half-close (Frolov et al., NDSS 2020: servers that read
//!   a fixed number of bytes and then time out or reset give themselves away).
//!
//! Randomness comes from [`ProbeOptions::seed`] and the hello time from
//! [`ProbeOptions::now`], so a run can be repeated.

use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wire::faketls::client::{build_hello, HelloShape};

/// First-flight lengths of random probes seen in the wild (Alice et al.).
pub const WILD_LENGTHS: &[usize] = &[
    7, 8, 9, 11, 12, 13, 15, 16, 17, 21, 22, 23, 32, 33, 34, 40, 41, 42, 48, 49, 50, 221,
];

/// The byte positions changed in replay probes (Alice et al., IMC 2020,
/// §4: byte 0; bytes 0–7 and 62–63; byte 16; bytes 16–17), each with a name.
/// Positions past the end of a payload are skipped.
pub const REPLAY_CHANGES: &[(&str, &[usize])] = &[
    ("byte 0 changed", &[0]),
    (
        "bytes 0-7 and 62-63 changed",
        &[0, 1, 2, 3, 4, 5, 6, 7, 62, 63],
    ),
    ("byte 16 changed", &[16]),
    ("bytes 16-17 changed", &[16, 17]),
];

/// How to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// How long to watch a connection after the probe's last write: a
    /// server that has not closed by then counts as open.
    pub window: Duration,
    /// Largest difference in time to first byte or to close that is not
    /// counted (scheduling noise; the real probers' clocks are coarse too).
    pub tolerance: Duration,
    /// Delays before replays (the GFW replays from seconds to minutes
    /// after the original; tests scale them down).
    pub replay_delays: Vec<Duration>,
    /// The name the censor resolved to find the cover, used in TLS probes.
    pub sni: String,
    /// Seed of the random probes.
    pub seed: u64,
    /// Unix time put in probe hellos (default: the clock).
    pub now: Option<u32>,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            window: Duration::from_secs(5),
            tolerance: Duration::from_secs(1),
            replay_delays: vec![Duration::ZERO, Duration::from_secs(2)],
            sni: "cover.localhost".into(),
            seed: 0x5eed,
            now: None,
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// One thing a probe does on its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Do nothing for a while (the server may answer or close meanwhile).
    Pause(Duration),
    /// Send FIN (shut down our write side).
    HalfClose,
}

/// A named probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Shown in differences.
    pub name: String,
    /// What it does, in order.
    pub steps: Vec<Step>,
}

impl Probe {
    /// A probe named `name` doing `steps`.
    pub fn new(name: impl Into<String>, steps: Vec<Step>) -> Probe {
        Probe {
            name: name.into(),
            steps,
        }
    }
}

/// How the server's side of a connection ended, as the prober sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// read() returned 0.
    Fin,
    /// read() failed with a reset.
    Rst,
    /// Still open when the window ended.
    Open,
    /// Could not connect at all.
    Unreachable(ErrorKind),
    /// Another read error.
    Other(ErrorKind),
}

/// What the prober saw on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The server's bytes, normalised (see [`shape`]).
    pub data: String,
    /// What the prober's side noticed beyond the bytes: a write that
    /// failed (`step 2 failed: ConnectionReset; `), or what a protocol
    /// layer above TCP saw (a TLS session's version and responses).
    pub notes: String,
    /// From the last write to the first byte received.
    pub first_byte: Option<Duration>,
    /// How the connection ended.
    pub end: End,
    /// From the last write to the end.
    pub end_at: Option<Duration>,
    /// After a FIN: did one more byte draw a reset ("reset") or not ("quiet")?
    pub after_fin: Option<&'static str>,
}

/// One way the suspect answered a probe differently from its cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The probe's name.
    pub probe: String,
    /// What differed.
    pub detail: String,
}

/// The verdict of [`probe_server`].
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// The suspect answered at least one probe differently: a proxy.
    pub flagged: bool,
    /// Probes sent (to each side).
    pub probes: usize,
    /// Every difference found.
    pub differences: Vec<Difference>,
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} after {} probes, {} differences",
            if self.flagged {
                "flagged"
            } else {
                "not flagged"
            },
            self.probes,
            self.differences.len()
        )?;
        for d in &self.differences {
            writeln!(f, "  {}: {}", d.probe, d.detail)?;
        }
        Ok(())
    }
}

// === impl Rng ===

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.fill(&mut b);
        b
    }
    /// A number in `lo..=hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = hi.saturating_sub(lo) as u64 + 1;
        lo + (self.next_u64() % span) as usize
    }
}

mod catalogue;
pub use catalogue::{catalogue, changed};

// === observing ===

fn is_reset(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Runs `probe` against `addr` and watches for `window` after its last
/// write.
pub async fn observe(
    addr: SocketAddr,
    probe: &Probe,
    window: Duration,
    connect_timeout: Duration,
) -> Observation {
    let unreachable = |kind| Observation {
        data: "nothing".into(),
        notes: String::new(),
        first_byte: None,
        end: End::Unreachable(kind),
        end_at: None,
        after_fin: None,
    };
    let mut s = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return unreachable(e.kind()),
        Err(_) => return unreachable(ErrorKind::TimedOut),
    };
    let _ = s.set_nodelay(true);
    let started = Instant::now();
    let pauses: Duration = probe
        .steps
        .iter()
        .map(|s| match s {
            Step::Pause(d) => *d,
            _ => Duration::ZERO,
        })
        .sum();
    let deadline = started + pauses + window + Duration::from_millis(500);
    let last_write = std::sync::Mutex::new(started);
    let mut got = Vec::new();
    let mut notes = String::new();
    let mut first: Option<Instant> = None;
    let (end, ended) = {
        let (mut rd, mut wr) = s.split();
        let writer = async {
            for (i, step) in probe.steps.iter().enumerate() {
                let r = match step {
                    Step::Send(b) => wr.write_all(b).await,
                    Step::Pause(d) => {
                        tokio::time::sleep(*d).await;
                        Ok(())
                    }
                    Step::HalfClose => wr.shutdown().await,
                };
                if !matches!(step, Step::Pause(_)) {
                    *last_write.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                }
                if let Err(e) = r {
                    // Writing into a connection the server has reset.
                    notes = format!("step {i} failed: {:?}; ", simplify(e.kind()));
                    break;
                }
            }
        };
        let reader = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
                    Err(_) => return (End::Open, Instant::now()),
                    Ok(Ok(0)) => return (End::Fin, Instant::now()),
                    Ok(Ok(n)) => {
                        first.get_or_insert_with(Instant::now);
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
    let t0 = *last_write.lock().unwrap_or_else(|e| e.into_inner());
    let (end, end_at) = if end != End::Open && ended <= t0 + window {
        (end, Some(ended.saturating_duration_since(t0)))
    } else {
        (End::Open, None)
    };
    let first_byte = first
        .filter(|a| *a <= t0 + window)
        .map(|a| a.saturating_duration_since(t0));
    // Gone (a byte draws RST) or only half-closed (it keeps reading)?
    let after_fin = if end == End::Fin {
        let w = s.write_all(b"\0").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
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

/// One name for the two ways a peer's reset shows up on a write.
fn simplify(kind: ErrorKind) -> ErrorKind {
    match kind {
        ErrorKind::ConnectionAborted => ErrorKind::ConnectionReset,
        k => k,
    }
}

/// The server's bytes in a form two correct runs share: TLS records as
/// their types and lengths (contents hold fresh randoms), plaintext alerts
/// whole, HTTP with the `Date` header blanked, anything else in hex.
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
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tls_shape(mut b: &[u8]) -> String {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 5 {
            out.push(format!("partial-header({})", b.len()));
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
            0x15 if len == 2 => format!("alert({:02x}{:02x})", body[0], body[1]),
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

fn clip(s: &str) -> String {
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}… ({} chars)", &s[..i], s.len()),
        None => s.to_string(),
    }
}

/// How `got` (the suspect) differs from `want` (the cover) beyond
/// `tolerance`.
pub fn differences(want: &Observation, got: &Observation, tolerance: Duration) -> Vec<String> {
    let mut d = Vec::new();
    // Linux drops unread bytes on RST, direct or not: with RST on both
    // sides, one may have seen a prefix of what the other saw.
    let rst_prefix = want.end == End::Rst
        && got.end == End::Rst
        && (want.data == "nothing"
            || got.data == "nothing"
            || want.data.starts_with(&got.data)
            || got.data.starts_with(&want.data));
    if want.data != got.data && !rst_prefix {
        d.push(format!(
            "bytes: cover {}, suspect {}",
            clip(&want.data),
            clip(&got.data)
        ));
    }
    if want.notes != got.notes {
        d.push(format!(
            "notes: cover {:?}, suspect {:?}",
            want.notes, got.notes
        ));
    }
    if want.end != got.end {
        d.push(format!(
            "close: cover {:?} at {:?}, suspect {:?} at {:?}",
            want.end, want.end_at, got.end, got.end_at
        ));
    } else if let (Some(a), Some(b)) = (want.end_at, got.end_at) {
        if a.abs_diff(b) > tolerance {
            d.push(format!(
                "{:?} after {a:?} from the cover, {b:?} from the suspect",
                want.end
            ));
        }
    }
    match (want.first_byte, got.first_byte) {
        _ if rst_prefix && want.data != got.data => {}
        (Some(a), Some(b)) if a.abs_diff(b) > tolerance => d.push(format!(
            "first byte after {a:?} from the cover, {b:?} from the suspect"
        )),
        (Some(_), None) | (None, Some(_)) => d.push(format!(
            "first byte: cover {:?}, suspect {:?}",
            want.first_byte, got.first_byte
        )),
        _ => {}
    }
    if want.after_fin != got.after_fin {
        d.push(format!(
            "a byte after the FIN: cover {:?}, suspect {:?}",
            want.after_fin, got.after_fin
        ));
    }
    d
}

/// Sends every probe of [`catalogue`] to `server` and `cover` side by side
/// (all probes at once, so a run lasts about the longest pause plus
/// [`ProbeOptions::window`]) and flags `server` if any answer differs.
pub async fn probe_server(
    server: SocketAddr,
    cover: SocketAddr,
    recorded_first_payloads: &[Vec<u8>],
    opts: &ProbeOptions,
) -> ProbeReport {
    let probes = catalogue(recorded_first_payloads, opts);
    let mut set = tokio::task::JoinSet::new();
    for (i, probe) in probes.iter().cloned().enumerate() {
        let (window, connect) = (opts.window, opts.connect_timeout);
        set.spawn(async move {
            // Spread the connects a little; all probes still overlap.
            tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
            let (want, got) = tokio::join!(
                observe(cover, &probe, window, connect),
                observe(server, &probe, window, connect)
            );
            (i, want, got)
        });
    }
    let mut results = Vec::with_capacity(probes.len());
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            results.push(r);
        }
    }
    results.sort_by_key(|r| r.0);
    let mut report = ProbeReport {
        probes: probes.len(),
        ..ProbeReport::default()
    };
    for (i, want, got) in results {
        for detail in differences(&want, &got, opts.tolerance) {
            report.differences.push(Difference {
                probe: probes[i].name.clone(),
                detail,
            });
        }
    }
    report.flagged = !report.differences.is_empty();
    report
}

#[cfg(test)]
mod tests;
