use super::*;
use crate::browser::{Browser, Template};
use crate::faketls::client::{build_hello, HelloShape};

const NOW: u64 = 1_790_000_000;

fn fill(seed: u64) -> impl FnMut(&mut [u8]) {
    crate::testing::seeded_fill(seed)
}

fn dh_attempts() -> usize {
    DH_ATTEMPTS.with(|n| n.get())
}

fn transport_hello(browser: Browser, key: &ServerKey, cred: &UserCredential) -> Vec<u8> {
    let built = Template::builtin(browser).build("cover.example", &mut fill(3));
    ClientHandshake::start(&built, &key.public(), cred, NOW, &mut fill(4))
        .unwrap()
        .1
}

/// What every MTProto `ee` client sends, and a browser's own hello: the
/// precheck turns both away before any Diffie-Hellman.
#[test]
fn a_hello_that_is_not_a_transport_hello_costs_no_dh() {
    let key = ServerKey::from_secret([0x42; 32]);
    let cred = UserCredential::from_secret(&[9; 16]);
    let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
    let ee = build_hello(
        &[7; 16],
        "cover.example",
        NOW as u32,
        HelloShape::Classic517,
        &mut fill(1),
    );
    let mut chrome = Template::builtin(Browser::Chrome)
        .build("cover.example", &mut fill(2))
        .record;
    fill(5)(&mut chrome[RANDOM_AT..SESSION_ID_AT + SESSION_ID_LEN]);
    chrome[SESSION_ID_AT - 1] = 32;
    for (what, hello) in [("ee", &ee), ("chrome", &chrome)] {
        assert!(locate(hello).is_ok(), "{what}: a usable hello shape");
        assert!(!precheck(hello, &key), "{what}");
        let before = dh_attempts();
        assert_eq!(
            accept(hello, &key, lookup, NOW, 60).unwrap_err(),
            Reject::Untagged,
            "{what}"
        );
        assert_eq!(dh_attempts(), before, "{what}: no DH");
    }
    // Short, empty and non-TLS input.
    for junk in [&[][..], &[0x16; 75][..], &[0u8; 2000][..]] {
        assert!(!precheck(junk, &key));
    }
    // A real transport hello does reach the DH, and is accepted.
    let good = transport_hello(Browser::Chrome, &key, &cred);
    assert!(precheck(&good, &key));
    let before = dh_attempts();
    assert!(accept(&good, &key, lookup, NOW, 60).is_ok());
    assert_eq!(dh_attempts(), before + 1);
}

/// A samizdat client's hello with a wrong tag (any bit of it, or one
/// meant for another server) is turned away by the precheck, without
/// a DH: a prober's tampered replay gets the same answer as random bytes.
#[test]
fn a_wrong_tag_is_rejected_before_the_dh() {
    let key = ServerKey::from_secret([0x42; 32]);
    let other = ServerKey::from_secret([0x43; 32]);
    let cred = UserCredential::from_secret(&[9; 16]);
    let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
    for browser in Browser::ALL {
        let good = transport_hello(browser, &key, &cred);
        assert!(accept(&good, &key, lookup, NOW, 60).is_ok());
        let before = dh_attempts();
        assert_eq!(
            accept(&good, &other, lookup, NOW, 60).unwrap_err(),
            Reject::Untagged
        );
        for bit in 0..TAG_BYTES * 8 {
            let mut bad = good.clone();
            bad[RANDOM_AT + MAC_BYTES + bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                accept(&bad, &key, lookup, NOW, 60).unwrap_err(),
                Reject::Untagged
            );
        }
        // The tag covers the session id: change it and the tag is wrong.
        let mut bad = good.clone();
        bad[SESSION_ID_AT + 5] ^= 0x20;
        assert_eq!(
            accept(&bad, &key, lookup, NOW, 60).unwrap_err(),
            Reject::Untagged
        );
        assert_eq!(dh_attempts(), before, "{browser:?}: no DH");
    }
}

/// The hybrid share's X25519 half on the wire: Chrome's own key, not
/// `e`; Firefox's `e`. The server accepts both.
#[test]
fn the_hybrid_x25519_half_follows_the_browser_and_both_are_accepted() {
    let key = ServerKey::from_secret([0x42; 32]);
    let cred = UserCredential::from_secret(&[9; 16]);
    let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
    for browser in Browser::ALL {
        let hello = transport_hello(browser, &key, &cred);
        let at = locate(&hello).unwrap();
        let tail = at.hybrid_x25519.unwrap();
        let same = hello[tail..tail + 32] == hello[at.x25519..at.x25519 + 32];
        assert_eq!(same, browser == Browser::Firefox, "{browser:?}");
        let acc = accept(&hello, &key, lookup, NOW, 60).unwrap();
        assert_eq!(acc.replay_key[..], hello[at.x25519..at.x25519 + 32]);
        // The hello HMAC covers the hybrid half.
        let mut bad = hello.clone();
        bad[tail + 7] ^= 1;
        assert_eq!(
            accept(&bad, &key, lookup, NOW, 60).unwrap_err(),
            Reject::BadMac
        );
    }
}

#[test]
fn slots_that_disagree_with_the_record_are_refused() {
    let key = ServerKey::from_secret([0x42; 32]);
    let cred = UserCredential::from_secret(&[9; 16]);
    let mut built = Template::builtin(Browser::Firefox).build("a.example", &mut fill(3));
    built.slots.x25519_in_hybrid = Some(built.slots.x25519_in_hybrid.unwrap() - 1);
    assert_eq!(
        ClientHandshake::start(&built, &key.public(), &cred, NOW, &mut fill(4)).unwrap_err(),
        StartError::Slots
    );
}
