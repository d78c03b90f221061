//! The pumped classifier (`wire::classify::Classifier`) against the one-call
//! `classify`, and its order: transport check first, then the key search,
//! the local replay cache, the fleet's.

use proptest::prelude::*;
use wire::browser::BuiltHello;
use wire::classify::{
    classify, Classifier, CoverReason, Policy, ReplayKind, ReplayState, Step, TransportCheck,
    Verdict,
};
use wire::faketls::client::{build_hello, HelloShape};
use wire::obfuscated2::{self, Tag};
use wire::replay::ReplayCache;
use wire::secret::{Key, Mode};
use wire::tunnel::handshake::{ClientHandshake, ServerKey, UserCredential};
use wire::tunnel::locate;
use wire::users::Users;

const NOW: u64 = 1_790_000_000;
const DOMAIN: &str = "x.example";

fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
    wire::testing::seeded_fill(seed)
}

fn key(i: usize) -> Key {
    let mut k = [7u8; 16];
    k[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Key(k)
}

fn users(n: usize) -> Users {
    Users::new((0..n).map(|i| (format!("u{i}"), key(i))))
}

fn policy() -> Policy {
    Policy::for_modes(
        &[Mode::Plain, Mode::Padded, Mode::FakeTls],
        vec![DOMAIN.into()],
    )
}

fn replay() -> ReplayState {
    ReplayState {
        tls: ReplayCache::new(0, 600, 1000),
        obfuscated2: ReplayCache::new(0, 0, 1000),
    }
}

fn hello_of(user: usize, seed: u64) -> Vec<u8> {
    build_hello(
        &key(user).0,
        DOMAIN,
        NOW as u32,
        HelloShape::Classic517,
        &mut rng(seed),
    )
}

fn init_of(user: usize, seed: u64) -> Vec<u8> {
    let mut random = [0u8; 64];
    rng(seed)(&mut random);
    obfuscated2::initiate(random, Tag::Padded, 2, Some(&key(user)))
        .wire
        .to_vec()
}

/// What the driver does, with the search cut in `chunk`-sized pieces and
/// the fleet answering `fleet`; also the steps seen, in order.
fn pump(
    buf: &[u8],
    users: &Users,
    replay: &mut ReplayState,
    chunk: usize,
    fleet: Option<bool>,
    transport: Option<TransportCheck<'_>>,
) -> (Verdict, Vec<&'static str>) {
    let policy = policy();
    let mut c = Classifier::new(buf, &policy, users, NOW, transport);
    if fleet.is_some() {
        c = c.with_fleet();
    }
    let mut seen = Vec::new();
    loop {
        match c.step() {
            Step::NeedMore => return (Verdict::NeedMore, seen),
            Step::Search => {
                seen.push("search");
                let all: Vec<usize> = (0..users.len()).collect();
                if !all.chunks(chunk.max(1)).any(|ch| c.search(ch)) {
                    c.searched_all();
                }
            }
            Step::Admit => {
                seen.push("admit");
                c.admit(replay);
            }
            Step::FleetReplay { .. } => {
                seen.push("fleet");
                c.fleet_answer(fleet.unwrap_or(true));
            }
            Step::Done(v) => return (v, seen),
        }
    }
}

fn name(v: &Verdict) -> String {
    match v {
        Verdict::NeedMore => "need-more".into(),
        Verdict::Cover(r) => format!("cover:{}", r.name()),
        Verdict::FakeTls(a) => format!("tls:{}", a.user),
        Verdict::Obfuscated2(a) => format!("o2:{}", a.user),
        Verdict::Tunnel(a) => format!("tunnel:{}", a.user),
    }
}

#[test]
fn a_hello_is_searched_admitted_then_asked_of_the_fleet() {
    let users = users(300);
    let hello = hello_of(217, 1);
    let mut cache = replay();
    let (v, seen) = pump(&hello, &users, &mut cache, 64, Some(true), None);
    assert_eq!(name(&v), "tls:217");
    assert_eq!(seen, ["search", "admit", "fleet"]);
    // The same hello again: the local cache catches it before the fleet.
    let (v, seen) = pump(&hello, &users, &mut cache, 64, Some(true), None);
    assert_eq!(name(&v), "cover:replay");
    assert_eq!(seen, ["search", "admit"]);
    // A fresh hello another instance already saw: the fleet catches it.
    let (v, _) = pump(&hello_of(3, 2), &users, &mut cache, 64, Some(false), None);
    assert_eq!(name(&v), "cover:replay");
}

#[test]
fn the_fleet_is_asked_the_replay_key_of_each_kind() {
    let users = users(4);
    let init = init_of(2, 9);
    let pol = policy();
    let mut c = Classifier::new(&init, &pol, &users, NOW, None).with_fleet();
    assert!(matches!(c.step(), Step::Search));
    assert!(c.is_init() && c.sni().is_none());
    assert!(c.search(&[0, 1, 2, 3]));
    assert!(matches!(c.step(), Step::Admit));
    c.admit(&mut replay());
    let (kind, key, ttl_secs) = fleet_step(&mut c);
    assert_eq!(kind, ReplayKind::Obfuscated2);
    assert_eq!(key[..], init[8..24]);
    assert_eq!(ttl_secs, wire::classify::BARE_REPLAY_TTL_SECS);
    let hello = hello_of(1, 4);
    let mut c = Classifier::new(&hello, &pol, &users, NOW, None).with_fleet();
    assert_eq!(c.sni(), Some(DOMAIN));
    assert!(c.search(&[1]));
    let _ = c.step();
    c.admit(&mut replay());
    let (kind, key, ttl_secs) = fleet_step(&mut c);
    assert_eq!(kind, ReplayKind::Tls);
    assert_eq!(key[..], hello[11..27], "the hello's random");
    assert_eq!(ttl_secs, 600 + 60 + 60);
}

fn fleet_step(c: &mut Classifier<'_>) -> (ReplayKind, [u8; 16], u64) {
    match c.step() {
        Step::FleetReplay {
            kind,
            key,
            ttl_secs,
        } => (kind, key, ttl_secs),
        other => panic!("expected the fleet step, got {other:?}"),
    }
}

#[test]
fn wrong_keys_and_no_fleet_end_without_the_fleet_step() {
    let users = users(8);
    let (v, seen) = pump(&hello_of(50, 1), &users, &mut replay(), 3, None, None);
    assert_eq!(name(&v), "cover:bad_hmac");
    assert_eq!(seen, ["search"]);
    let (v, _) = pump(&init_of(50, 1), &users, &mut replay(), 3, None, None);
    assert_eq!(name(&v), "cover:bad_init");
    let (v, seen) = pump(&hello_of(5, 1), &users, &mut replay(), 3, None, None);
    assert_eq!(name(&v), "tls:5");
    assert_eq!(
        seen,
        ["search", "admit"],
        "no fleet configured, no fleet step"
    );
    let (v, seen) = pump(&hello_of(5, 1)[..100], &users, &mut replay(), 3, None, None);
    assert!(matches!(v, Verdict::NeedMore));
    assert!(seen.is_empty());
}

fn transport_hello(cred: &UserCredential, key: &ServerKey, seed: u64) -> Vec<u8> {
    let mut template = build_hello(&[0; 16], DOMAIN, 0, HelloShape::PostQuantum, &mut rng(5));
    let at = locate(&template).unwrap();
    for slot in at.slots() {
        template[slot].fill(0);
    }
    ClientHandshake::start(
        &BuiltHello::from_record(template).unwrap(),
        &key.public(),
        cred,
        NOW,
        &mut rng(seed),
    )
    .unwrap()
    .1
}

#[test]
fn a_transport_hello_skips_the_key_search_and_still_meets_both_replay_caches() {
    let users = users(2);
    let key = ServerKey::from_secret([0x42; 32]);
    let cred = UserCredential::from_secret(b"tunnel-user-key!");
    let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (1, cred.auth_key()));
    let check = || TransportCheck {
        key: &key,
        lookup: &lookup,
    };
    let hello = transport_hello(&cred, &key, 1);
    let mut cache = replay();
    let (v, seen) = pump(&hello, &users, &mut cache, 64, Some(true), Some(check()));
    assert_eq!(name(&v), "tunnel:1");
    assert_eq!(seen, ["admit", "fleet"], "no MTProto key search");
    let (v, _) = pump(&hello, &users, &mut cache, 64, Some(true), Some(check()));
    assert_eq!(name(&v), "cover:replay", "the local cache");
    let other = transport_hello(&cred, &key, 2);
    let (v, _) = pump(&other, &users, &mut cache, 64, Some(false), Some(check()));
    assert_eq!(name(&v), "cover:replay", "the fleet's cache");
    // A transport hello of an unknown user: the cover at once, no search.
    let nobody = |_: &[u8; 8]| None;
    let unknown = TransportCheck {
        key: &key,
        lookup: &nobody,
    };
    let (v, seen) = pump(&other, &users, &mut replay(), 64, None, Some(unknown));
    assert_eq!(name(&v), "cover:bad_hmac");
    assert!(seen.is_empty());
    // Without the transport check, the same bytes are just a TLS hello.
    let (v, seen) = pump(&other, &users, &mut replay(), 64, None, None);
    assert_eq!(name(&v), "cover:bad_hmac");
    assert_eq!(seen, ["search"]);
}

#[test]
fn the_verdict_is_taken_once() {
    let users = users(1);
    let hello = hello_of(0, 1);
    let pol = policy();
    let mut c = Classifier::new(&hello, &pol, &users, NOW, None);
    assert!(c.search(&[0]));
    let _ = c.step();
    c.admit(&mut replay());
    assert!(matches!(c.step(), Step::Done(Verdict::FakeTls(_))));
    assert!(matches!(
        c.step(),
        Step::Done(Verdict::Cover(CoverReason::Unrecognised))
    ));
}

proptest! {
    /// Pumped in any chunking, the classifier decides what the one-call
    /// `classify` decides, for real hellos and inits, cut or altered.
    #[test]
    fn pumped_equals_one_call(kind in 0u8..3, user in 0usize..20, seed: u64, cut in 0usize..600, flip in proptest::option::of(0usize..600), chunk in 1usize..30) {
        let users = users(12);
        let mut data = match kind {
            0 => hello_of(user, seed),
            1 => init_of(user, seed),
            _ => { let mut d = vec![0u8; cut]; rng(seed)(&mut d); d }
        };
        data.truncate(cut.max(1).min(data.len()).max(if kind == 2 { 0 } else { 1 }));
        if let Some(at) = flip {
            if at < data.len() {
                data[at] ^= 0x20;
            }
        }
        let one = classify(&data, &policy(), &users, NOW, &mut replay(), None);
        let (pumped, _) = pump(&data, &users, &mut replay(), chunk, None, None);
        prop_assert_eq!(name(&one), name(&pumped));
    }
}
