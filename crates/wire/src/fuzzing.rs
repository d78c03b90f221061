//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay
//! test, so both exercise exactly the same code. Each must return without
//! panicking for any input.

use crate::classify::{self, Policy, ReplayState};
use crate::faketls::{client_hello, records::RecordDecoder};
use crate::framing;
use crate::obfuscated2::{self, Tag};
use crate::replay::ReplayCache;
use crate::secret::{Key, Mode, Secret};
use crate::users::Users;

/// The key the fuzz corpus's valid inputs are made with.
pub const FUZZ_KEY: [u8; 16] = *b"samizdat-fuzzkey";

/// ClientHello record probe, parse and verify.
pub fn client_hello(data: &[u8]) {
    if let client_hello::Probe::Record { len } = client_hello::probe(data) {
        if data.len() >= len {
            if let Ok(h) = client_hello::parse(&data[..len]) {
                let users = Users::new([("f".to_string(), Key(FUZZ_KEY))]);
                let _ = client_hello::verify(&data[..len], &h.random, &users, [0]);
            }
        }
    }
}

/// Obfuscated2 accept with and without a key.
pub fn obfuscated2_init(data: &[u8]) {
    if let Ok(init) = <[u8; 64]>::try_from(data.get(..64).unwrap_or(&[])) {
        let _ = obfuscated2::accept(&init, None);
        let _ = obfuscated2::accept(&init, Some(&Key(FUZZ_KEY)));
    }
}

/// Every framing, decoding packets until the bytes run out.
pub fn framing(data: &[u8]) {
    for tag in [Tag::Abridged, Tag::Intermediate, Tag::Padded] {
        let mut rest = data;
        while let Ok(framing::Decoded::Packet(_, used)) = framing::decode(tag, rest) {
            rest = &rest[used..];
        }
    }
}

/// The record decoder, fed in chunks whose sizes the first byte picks.
pub fn records(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let mut dec = RecordDecoder::new();
    for chunk in rest.chunks(usize::from(step).max(1)) {
        let mut c = chunk.to_vec();
        match dec.decode_in_place(&mut c) {
            Ok(n) => assert!(n <= c.len()),
            Err(_) => return,
        }
    }
}

/// The whole classifier with every mode on.
pub fn classify(data: &[u8]) {
    let users = Users::new([("f".to_string(), Key(FUZZ_KEY))]);
    let policy = Policy::for_modes(
        &[Mode::Plain, Mode::Padded, Mode::FakeTls],
        vec!["example.com".into()],
    );
    let mut replay = ReplayState {
        tls: ReplayCache::new(0, 660, 1000),
        obfuscated2: ReplayCache::new(0, 0, 1000),
    };
    let _ = classify::classify(data, &policy, &users, 1_700_000_000, &mut replay, None);
}

/// Secret text parsing.
pub fn secret(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(s) = Secret::parse(text) {
            assert_eq!(Secret::parse(&s.to_hex()).as_ref(), Ok(&s));
        }
    }
}
