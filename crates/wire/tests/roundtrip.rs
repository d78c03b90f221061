//! Property tests: every encoder's output decodes back to its input, under
//! any chunking of the byte stream.

use proptest::prelude::*;
use wire::faketls::client::{build_hello, HelloShape};
use wire::faketls::client_hello;
use wire::faketls::records::{encode_app_data, RecordDecoder};
use wire::framing::{self, Decoded};
use wire::obfuscated2::{self, Tag};
use wire::secret::{Key, Mode, Secret};
use wire::users::Users;

fn tag() -> impl Strategy<Value = Tag> {
    prop_oneof![
        Just(Tag::Abridged),
        Just(Tag::Intermediate),
        Just(Tag::Padded)
    ]
}

proptest! {
    #[test]
    fn framing_round_trips(tag in tag(), words in 0usize..3000, ack: bool, pad in proptest::collection::vec(any::<u8>(), 0..16)) {
        let payload: Vec<u8> = (0..words * 4).map(|i| (i * 7) as u8).collect();
        let pad = if tag == Tag::Padded { pad } else { Vec::new() };
        let mut out = Vec::new();
        framing::encode(tag, &payload, ack, &pad, &mut out);
        // Every strict prefix needs more bytes.
        for cut in [0, 1, out.len() / 2, out.len() - 1] {
            if cut < out.len() {
                prop_assert_eq!(framing::decode(tag, &out[..cut]).unwrap(), Decoded::NeedMore);
            }
        }
        match framing::decode(tag, &out).unwrap() {
            Decoded::Packet(p, used) => {
                prop_assert_eq!(used, out.len());
                // Padded intermediate keeps `L & !3` bytes (spec §3.3): with
                // 4+ padding bytes some padding rides along, which MTProto
                // tolerates; the payload itself always comes first, intact.
                let kept = (payload.len() + pad.len()) & !3;
                prop_assert_eq!(p.payload.len(), kept);
                prop_assert_eq!(&p.payload[..payload.len()], &payload[..]);
                prop_assert_eq!(p.quick_ack, ack);
            }
            Decoded::NeedMore => prop_assert!(false, "complete frame reported incomplete"),
        }
    }

    #[test]
    fn obfuscated2_round_trips(key: [u8; 16], random: [u8; 64], tag in tag(), dc: i16, data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let key = Key(key);
        let mut client = obfuscated2::initiate(random, tag, dc, Some(&key));
        let mut server = obfuscated2::accept(&client.wire, Some(&key)).expect("own init accepted");
        prop_assert_eq!((server.tag, server.dc), (tag, dc));
        let mut up = data.clone();
        client.ciphers.encrypt.apply(&mut up);
        server.ciphers.decrypt.apply(&mut up);
        prop_assert_eq!(&up, &data);
        let mut down = data.clone();
        server.ciphers.encrypt.apply(&mut down);
        client.ciphers.decrypt.apply(&mut down);
        prop_assert_eq!(&down, &data);
    }

    #[test]
    fn secrets_round_trip(key: [u8; 16], form in 0u8..3, domain in "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,10}){1,3}") {
        let (mode, domain) = match form {
            0 => (Mode::Plain, None),
            1 => (Mode::Padded, None),
            _ => (Mode::FakeTls, Some(domain)),
        };
        let s = Secret { key: Key(key), mode, domain };
        prop_assert_eq!(&Secret::parse(&s.to_hex()).unwrap(), &s);
        prop_assert_eq!(&Secret::parse(&s.to_base64url()).unwrap(), &s);
        prop_assert_eq!(&Secret::parse(&s.to_hex().to_uppercase()).unwrap(), &s);
    }

    #[test]
    fn records_decode_under_any_chunking(payload in proptest::collection::vec(any::<u8>(), 0..40_000), max in 1usize..16_384, cuts in proptest::collection::vec(1usize..5000, 1..20)) {
        let mut wire_bytes = wire::faketls::CCS_RECORD.to_vec();
        encode_app_data(&payload, max, &mut wire_bytes);
        let mut dec = RecordDecoder::new();
        let mut got = Vec::new();
        let mut rest = &wire_bytes[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            let mut chunk = rest[..n].to_vec();
            let m = dec.decode_in_place(&mut chunk).unwrap();
            got.extend_from_slice(&chunk[..m]);
            rest = &rest[n..];
            i += 1;
        }
        prop_assert_eq!(got, payload);
        prop_assert!(!dec.is_closed());
    }

    #[test]
    fn client_hellos_verify(key: [u8; 16], other: [u8; 16], time in 1_000_000_000u32..2_000_000_000, pq: bool, domain in "[a-z]{1,30}\\.[a-z]{2,5}") {
        let shape = if pq { HelloShape::PostQuantum } else { HelloShape::Classic517 };
        let mut seed = 0u8;
        let mut fill = |b: &mut [u8]| b.iter_mut().for_each(|x| { seed = seed.wrapping_add(97); *x = seed });
        let record = build_hello(&key, &domain, time, shape, &mut fill);
        if !pq {
            prop_assert_eq!(record.len(), 517);
        } else {
            prop_assert!(record.len() > 1500);
        }
        prop_assert_eq!(client_hello::probe(&record), client_hello::Probe::Record { len: record.len() });
        let hello = client_hello::parse(&record).unwrap();
        prop_assert_eq!(hello.sni.as_deref(), Some(domain.as_str()));
        let users = Users::new([("a".to_string(), Key(other)), ("b".to_string(), Key(key))]);
        let v = client_hello::verify(&record, &hello.random, &users, [0, 1]).unwrap();
        prop_assert_eq!((v.user, v.timestamp), (1, time));
        // Any flipped byte outside the random breaks the HMAC.
        let mut bad = record.clone();
        let at = 50 + (time as usize % (record.len() - 50));
        bad[at] ^= 1;
        if let Ok(h) = client_hello::parse(&bad) {
            prop_assert!(client_hello::verify(&bad, &h.random, &users, [0, 1]).is_none());
        }
    }

    #[test]
    fn classifier_never_panics_and_bounds_its_reads(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        use wire::classify::{classify, Policy, ReplayState, Verdict};
        use wire::replay::ReplayCache;
        let users = Users::new([("a".to_string(), Key([1; 16]))]);
        let policy = Policy::for_modes(&[Mode::Plain, Mode::Padded, Mode::FakeTls], vec!["x.example".into()]);
        let mut replay = ReplayState { tls: ReplayCache::new(0, 600, 100), obfuscated2: ReplayCache::new(0, 0, 100) };
        if let Verdict::NeedMore = classify(&data, &policy, &users, 1_700_000_000, &mut replay, None) {
            // Only a TLS record header can make it wait past 64 bytes.
            prop_assert!(data.len() < 64 || data[0] == 0x16);
        }
    }
}

#[test]
fn fake_certificates_span_the_range_of_real_ones() {
    use wire::faketls::server_flight::{
        fake_certificate, FAKE_CERTIFICATE_MIN, FAKE_CERTIFICATE_SPREAD,
    };
    let mut fill = wire::testing::seeded_fill(7);
    let lens: Vec<usize> = (0..2000)
        .map(|_| fake_certificate(&mut fill).len())
        .collect();
    let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
    assert!(*lo >= FAKE_CERTIFICATE_MIN && *hi < FAKE_CERTIFICATE_MIN + FAKE_CERTIFICATE_SPREAD);
    // 2,000 draws over 1,120 sizes reach both ends of the range.
    assert!(
        *lo < FAKE_CERTIFICATE_MIN + 50
            && *hi > FAKE_CERTIFICATE_MIN + FAKE_CERTIFICATE_SPREAD - 50
    );
}
