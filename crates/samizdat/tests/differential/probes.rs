//! The probe catalogue: what active probers were seen sending (Frolov et
//! al., NDSS 2020), what a careful one would add, and replays of real
//! clients' first flights.

use super::tls::{Session, Then};
use super::Probe;
use lab::probe::{Rng, Step, WILD_LENGTHS};
use std::time::Duration;

/// First flights of real clients, to replay.
pub struct Flights {
    /// A Telegram-style fake-TLS hello that samizdat has already accepted
    /// once (on every instance under test): sending it again is a replay.
    pub ee_hello: Vec<u8>,
    /// A fresh, authentic fake-TLS hello never sent: only its prefixes
    /// are used.
    pub fresh_hello: Vec<u8>,
    /// A fake-TLS hello with a wrong key.
    pub wrong_key_hello: Vec<u8>,
    /// With the right key, an hour old.
    pub stale_hello: Vec<u8>,
    /// With the right key, for another domain.
    pub other_sni_hello: Vec<u8>,
    /// A bare `dd` init and first packet already accepted once.
    pub dd_first: Vec<u8>,
    /// A real TLS client's ClientHello (rustls).
    pub rustls_hello: Vec<u8>,
}

fn send(b: impl AsRef<[u8]>) -> Step {
    Step::Send(b.as_ref().to_vec())
}

fn flipped(b: &[u8], at: usize) -> Vec<u8> {
    let mut b = b.to_vec();
    let at = at.min(b.len() - 1);
    b[at] ^= 0x01;
    b
}

const GET: &[u8] =
    b"GET / HTTP/1.1\r\nHost: cover.localhost\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

/// Every raw probe, plus TLS sessions when the cover speaks TLS.
pub fn catalogue(rng: &mut Rng, f: &Flights, tls_sessions: bool) -> Vec<Probe> {
    let mut p = Vec::new();
    let ms = Duration::from_millis;

    // Nothing at all, and silences.
    p.push(Probe::raw("empty, waiting", vec![]));
    p.push(Probe::raw("empty, half-closed", vec![Step::HalfClose]));
    p.push(Probe::raw(
        "1 s of silence, then GET",
        vec![Step::Pause(ms(1000)), send(GET)],
    ));
    p.push(Probe::raw(
        "1 byte, 2.5 s pause, 1 byte",
        vec![send([0x42u8 ^ 0x80]), Step::Pause(ms(2500)), send([0x00u8])],
    ));

    // Random first flights: the lengths seen in the wild, the ones around
    // our own thresholds (5-byte record header, 64-byte init, 517-byte
    // hello), and random lengths up to 1 KiB.
    let mut lengths: Vec<usize> = WILD_LENGTHS.to_vec();
    lengths.extend([1, 2, 3, 4, 5, 6, 10, 31, 47, 63, 64, 65, 100, 128, 255, 256]);
    lengths.extend([511, 512, 516, 517, 518, 700, 1000, 1023, 1024]);
    for _ in 0..12 {
        lengths.push(rng.range(1, 1024));
    }
    for n in lengths {
        p.push(Probe::raw(
            format!("random {n} bytes"),
            vec![send(rng.bytes(n))],
        ));
    }
    for n in [7, 12, 33, 48, 64, 221] {
        p.push(Probe::raw(
            format!("random {n} bytes, half-closed"),
            vec![send(rng.bytes(n)), Step::HalfClose],
        ));
    }
    // Random bytes behind a plausible TLS record header.
    for n in [5, 9, 43, 64, 221, 517] {
        let mut b = rng.bytes(n);
        b[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
        p.push(Probe::raw(
            format!("TLS header + random, {n} bytes"),
            vec![send(b)],
        ));
    }

    // Beyond one record: more than the classifier ever buffers.
    for n in [4096, 20_000] {
        p.push(Probe::raw(
            format!("random {n} bytes"),
            vec![send(rng.bytes(n))],
        ));
    }
    let mut big = vec![0x16, 0x03, 0x01, 0x40, 0x00];
    big.extend(rng.bytes(0x4000 + 100));
    p.push(Probe::raw(
        "a 16 KiB TLS record of random bytes and more",
        vec![send(big)],
    ));
    // A slow drip of a request, a byte every 300 ms.
    p.push(Probe::raw(
        "GET, a byte every 300 ms",
        GET[..8]
            .iter()
            .flat_map(|b| [send([*b]), Step::Pause(ms(300))])
            .collect(),
    ));

    // Prefixes of an authentic hello, cut at every field boundary.
    let h = &f.fresh_hello;
    let cuts = [
        1, 2, 3, 4, 5, 6, 9, 10, 11, 42, 43, 44, 76, 77, 100, 200, 300, 400, 500,
    ];
    for n in cuts.into_iter().chain([h.len() - 1]) {
        p.push(Probe::raw(
            format!("authentic hello cut at {n} of {}", h.len()),
            vec![send(&h[..n])],
        ));
    }
    for n in [5, 100, h.len() - 1] {
        p.push(Probe::raw(
            format!("authentic hello cut at {n}, half-closed"),
            vec![send(&h[..n]), Step::HalfClose],
        ));
    }
    let r = &f.rustls_hello;
    for n in [5, 100, r.len() - 1] {
        p.push(Probe::raw(
            format!("rustls hello cut at {n} of {}", r.len()),
            vec![send(&r[..n])],
        ));
    }
    p.push(Probe::raw(
        "record header, 1 s pause, rest of a wrong-key hello",
        vec![
            send(&f.wrong_key_hello[..5]),
            Step::Pause(ms(1000)),
            send(&f.wrong_key_hello[5..]),
        ],
    ));
    p.push(Probe::raw(
        "wrong-key hello in two parts 1.2 s apart",
        vec![
            send(&f.wrong_key_hello[..100]),
            Step::Pause(ms(1200)),
            send(&f.wrong_key_hello[100..]),
        ],
    ));

    // Whole hellos that fail.
    p.push(Probe::raw(
        "hello, wrong key",
        vec![send(&f.wrong_key_hello)],
    ));
    p.push(Probe::raw("hello, an hour old", vec![send(&f.stale_hello)]));
    p.push(Probe::raw(
        "hello, other SNI",
        vec![send(&f.other_sni_hello)],
    ));
    let mut trailing = f.wrong_key_hello.clone();
    trailing.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
    p.push(Probe::raw(
        "hello + CCS before the server spoke",
        vec![send(trailing)],
    ));

    // HTTP.
    p.push(Probe::raw("HTTP GET, keep-alive", vec![send(GET)]));
    p.push(Probe::raw(
        "HTTP GET, half-closed",
        vec![send(GET), Step::HalfClose],
    ));
    p.push(Probe::raw(
        "HTTP/1.0 GET",
        vec![send(&b"GET / HTTP/1.0\r\n\r\n"[..])],
    ));
    p.push(Probe::raw(
        "HTTP, request line cut",
        vec![send(&b"GET / HT"[..])],
    ));
    p.push(Probe::raw(
        "HTTP GET in two parts 1.2 s apart",
        vec![send(&GET[..10]), Step::Pause(ms(1200)), send(&GET[10..])],
    ));
    p.push(Probe::raw(
        "HTTP, two pipelined GETs",
        vec![send([GET, GET].concat())],
    ));
    p.push(Probe::raw(
        "HTTP GET, 1 s pause, GET",
        vec![send(GET), Step::Pause(ms(1000)), send(GET)],
    ));
    p.push(Probe::raw(
        "HTTP GET, 2.5 s pause, GET",
        vec![send(GET), Step::Pause(ms(2500)), send(GET)],
    ));
    let mut huge = b"GET / HTTP/1.1\r\nHost: cover.localhost\r\nCookie: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 10_000));
    huge.extend_from_slice(b"\r\n\r\n");
    p.push(Probe::raw("HTTP GET with a 10 KB header", vec![send(huge)]));
    p.push(Probe::raw(
        "not HTTP: 'HELLO WORLD'",
        vec![send(&b"HELLO WORLD\r\n\r\n"[..])],
    ));
    p.push(Probe::raw(
        "lower-case HTTP",
        vec![send(&b"get / http/1.1\r\n\r\n"[..])],
    ));

    // Replays of real clients' first flights, whole and altered.
    let e = &f.ee_hello;
    p.push(Probe::raw("replayed ee hello", vec![send(e)]));
    p.push(Probe::raw(
        "replayed ee hello, half-closed",
        vec![send(e), Step::HalfClose],
    ));
    for at in [3, 4, 5, 11, 20, 42, 44, 100, e.len() - 1] {
        p.push(Probe::raw(
            format!("replayed ee hello, byte {at} changed"),
            vec![send(flipped(e, at))],
        ));
    }
    let d = &f.dd_first;
    p.push(Probe::raw("replayed dd init + packet", vec![send(d)]));
    for at in [0, 56, 63] {
        p.push(Probe::raw(
            format!("replayed dd init, byte {at} changed"),
            vec![send(flipped(d, at))],
        ));
    }
    p.push(Probe::raw("replayed rustls hello", vec![send(r)]));
    for at in [11, 60] {
        p.push(Probe::raw(
            format!("replayed rustls hello, byte {at} changed"),
            vec![send(flipped(r, at))],
        ));
    }

    if tls_sessions {
        let tls = |name: &str, requests, then| Probe::Tls {
            name: name.into(),
            session: Session { requests, then },
        };
        p.push(tls(
            "TLS handshake, 2 keep-alive requests, close_notify",
            2,
            Then::CloseNotify,
        ));
        p.push(tls(
            "TLS handshake, 2 keep-alive requests, then idle",
            2,
            Then::Idle,
        ));
        p.push(tls("TLS handshake, then idle", 0, Then::Idle));
    }
    p
}
