//! The transport's ServerHello answers in the cover's key-share group: a
//! cover that picks X25519MLKEM768 for Chrome gets a samizdat answer of the
//! same group and size, with a real ML-KEM-768 encapsulation.

use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, ML_KEM_768};
use wire::browser::{Browser, BuiltHello, Template};
use wire::faketls::client::{build_hello, HelloShape};
use wire::faketls::server_shape::server_shape;
use wire::tunnel::flight::{mlkem768_encapsulate, MLKEM768_CIPHERTEXT_LEN};
use wire::tunnel::handshake::{accept, ClientHandshake, Progress, ServerKey, UserCredential};
use wire::tunnel::hello::{GROUP_X25519, GROUP_X25519_MLKEM768};
use wire::tunnel::{locate, FlightShape};

const NOW: u64 = 1_790_000_000;
const SECRET: [u8; 16] = *b"hybrid-user-key!";

fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
    wire::testing::seeded_fill(seed)
}

/// Runs the handshake over `hello` and returns the server's flight, after
/// checking that the client accepts it.
fn flight_for(hello: &[u8], shape: &FlightShape) -> Vec<u8> {
    let key = ServerKey::from_secret([0x42; 32]);
    let cred = UserCredential::from_secret(&SECRET);
    let hello = BuiltHello::from_record(hello.to_vec()).expect("a hello the transport can use");
    let (mut client, record) =
        ClientHandshake::start(&hello, &key.public(), &cred, NOW, &mut rng(3)).unwrap();
    let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
    let acc = accept(&record, &key, lookup, NOW, 60).unwrap();
    let (flight, _) = acc.respond(shape, &mut rng(4));
    assert!(
        matches!(
            client.read_server_flight(&flight),
            Ok(Progress::Done { .. })
        ),
        "the client must accept the answer"
    );
    flight
}

fn browser_hello(browser: Browser) -> Vec<u8> {
    Template::builtin(browser)
        .build("cover.example", &mut rng(9))
        .record
}

fn hybrid_shape() -> FlightShape {
    FlightShape {
        group: GROUP_X25519_MLKEM768,
        ..FlightShape::default()
    }
}

#[test]
fn a_hybrid_cover_gets_a_hybrid_answer_of_the_hybrid_size() {
    for browser in [Browser::Chrome, Browser::Firefox] {
        let hello = browser_hello(browser);
        let classic = server_shape(&flight_for(&hello, &FlightShape::default())).unwrap();
        let flight = flight_for(&hello, &hybrid_shape());
        let hybrid = server_shape(&flight).unwrap();
        assert_eq!(classic.group, Some(GROUP_X25519), "{browser:?}");
        assert_eq!(hybrid.group, Some(GROUP_X25519_MLKEM768), "{browser:?}");
        // The hybrid share is the ML-KEM ciphertext before the X25519 key.
        assert_eq!(
            hybrid.hello_len,
            classic.hello_len + MLKEM768_CIPHERTEXT_LEN,
            "{browser:?}"
        );
        // Everything else about the flight is the same.
        assert_eq!(hybrid.encrypted, classic.encrypted);
        assert_eq!(hybrid.extensions, classic.extensions);
    }
}

#[test]
fn a_hello_without_a_hybrid_share_gets_x25519_whatever_the_cover() {
    let mut hello = build_hello(
        &[0; 16],
        "cover.example",
        0,
        HelloShape::Classic517,
        &mut rng(5),
    );
    let at = locate(&hello).unwrap();
    assert!(at.hybrid_x25519.is_none());
    for slot in at.slots() {
        hello[slot].fill(0);
    }
    let shape = server_shape(&flight_for(&hello, &hybrid_shape())).unwrap();
    assert_eq!(shape.group, Some(GROUP_X25519));
}

#[test]
fn the_encapsulation_is_real() {
    let dk = DecapsulationKey::generate(&ML_KEM_768).unwrap();
    let ek = dk.encapsulation_key().unwrap().key_bytes().unwrap();
    let (ct, ss) = mlkem768_encapsulate(ek.as_ref()).unwrap();
    let back = dk.decapsulate(Ciphertext::from(&ct[..])).unwrap();
    assert_eq!(back.as_ref(), &ss[..]);
    // Fresh each time, as a real server's is.
    assert_ne!(mlkem768_encapsulate(ek.as_ref()).unwrap().0, ct);
    // Not a key: no answer, so the caller falls back to X25519.
    assert!(mlkem768_encapsulate(&[0xff; 1184]).is_none());
}
