//! Browser hello templates against the captures they come from
//! (`crates/wire/templates/*.hellos`): every generated hello must fingerprint
//! like every capture, vary where the browser varies and stay fixed where it
//! does not, carry real keys, and put the caller's slots where an independent
//! parse finds the fields.

use lab::censor::ja::{ja3, ja3n, ja4};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use wire::browser::{Browser, BuiltHello, Template, TemplateError};
use wire::faketls::{client_hello, is_grease};
use wire::tunnel::handshake::{accept, ClientHandshake, ServerKey, UserCredential};

/// splitmix64: a deterministic filler, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

fn captures(browser: Browser) -> Vec<Vec<u8>> {
    browser
        .captures()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| hex::decode(l.trim()).unwrap())
        .collect()
}

/// Server names from 1 to 253 bytes.
fn sni(i: usize) -> String {
    let names = [
        "www.example.com",
        "a.b",
        "x",
        "cdn.static-assets.example.net",
        "login.accounts.example-identity-provider.com",
    ];
    match i % 7 {
        5 => format!("{}.example.org", "a".repeat(i % 60 + 1)),
        6 => "l".repeat(63) + "." + &"m".repeat(63) + "." + &"n".repeat(63) + "." + &"o".repeat(61),
        k => names[k % names.len()].to_string(),
    }
}

fn generate(browser: Browser, n: usize, seed: u64) -> Vec<(String, BuiltHello)> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let name = sni(i);
            let hello = Template::builtin(browser).build(&name, &mut |b| rng.fill(b));
            (name, hello)
        })
        .collect()
}

/// An independent parse: extensions as (type, offset of data, data).
struct Parsed<'a> {
    session_id_at: usize,
    ciphers: Vec<u16>,
    exts: Vec<(u16, usize, &'a [u8])>,
}

fn be16(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

fn dissect(rec: &[u8]) -> Parsed<'_> {
    assert_eq!(be16(rec, 3) + 5, rec.len(), "record length");
    assert_eq!(
        u32::from_be_bytes([0, rec[6], rec[7], rec[8]]) as usize + 9,
        rec.len()
    );
    let mut p = 9 + 2 + 32;
    assert_eq!(rec[p], 32);
    let session_id_at = p + 1;
    p += 33;
    let n = be16(rec, p);
    let ciphers = (0..n / 2)
        .map(|i| be16(rec, p + 2 + 2 * i) as u16)
        .collect();
    p += 2 + n;
    p += 1 + rec[p] as usize;
    let end = p + 2 + be16(rec, p);
    assert_eq!(end, rec.len(), "extensions block length");
    p += 2;
    let mut exts = Vec::new();
    while p < end {
        let (kind, len) = (be16(rec, p) as u16, be16(rec, p + 2));
        exts.push((kind, p + 4, &rec[p + 4..p + 4 + len]));
        p += 4 + len;
    }
    assert_eq!(p, end);
    Parsed {
        session_id_at,
        ciphers,
        exts,
    }
}

fn ext<'a>(p: &Parsed<'a>, kind: u16) -> Option<(usize, &'a [u8])> {
    p.exts
        .iter()
        .find(|e| e.0 == kind)
        .map(|&(_, at, data)| (at, data))
}

/// Key share entries: (group, offset of key in the record, key).
fn shares<'a>(p: &Parsed<'a>) -> Vec<(u16, usize, &'a [u8])> {
    let (at, data) = ext(p, 0x0033).unwrap();
    assert_eq!(be16(data, 0) + 2, data.len());
    let mut i = 2;
    let mut out = Vec::new();
    while i < data.len() {
        let (group, len) = (be16(data, i) as u16, be16(data, i + 2));
        out.push((group, at + i + 4, &data[i + 4..i + 4 + len]));
        i += 4 + len;
    }
    out
}

fn share<'a>(p: &Parsed<'a>, group: u16) -> (usize, &'a [u8]) {
    shares(p)
        .into_iter()
        .find(|s| s.0 == group)
        .map(|s| (s.1, s.2))
        .unwrap()
}

/// Extension types in order, GREASE written as 0x0a0a.
fn order(rec: &[u8]) -> Vec<u16> {
    dissect(rec)
        .exts
        .iter()
        .map(|e| if is_grease(e.0) { 0x0a0a } else { e.0 })
        .collect()
}

/// FIPS 203 §7.2 modulus check: every 12-bit coefficient of the 1152-byte
/// polynomial part is below q = 3329, and a real ML-KEM library accepts it.
fn valid_mlkem768(ek: &[u8]) -> bool {
    if ek.len() != 1184 {
        return false;
    }
    let coefficients_ok = ek[..1152].chunks_exact(3).all(|c| {
        let a = u16::from(c[0]) | (u16::from(c[1] & 0x0f) << 8);
        let b = u16::from(c[1] >> 4) | (u16::from(c[2]) << 4);
        a < 3329 && b < 3329
    });
    let key = ml_kem::Key::<ml_kem::EncapsulationKey<ml_kem::MlKem768>>::try_from(ek).unwrap();
    coefficients_ok && ml_kem::EncapsulationKey::<ml_kem::MlKem768>::new(&key).is_ok()
}

#[test]
fn browser_names_round_trip() {
    for b in Browser::ALL {
        assert_eq!(Browser::parse(b.name()), Some(b));
    }
    assert_eq!(Browser::parse("Chrome"), Some(Browser::Chrome));
    assert_eq!(Browser::parse("safari"), None);
}

#[test]
fn every_capture_is_a_usable_template_and_the_captures_agree() {
    for b in Browser::ALL {
        let caps = captures(b);
        assert!(caps.len() >= 20, "{b:?}: {} captures", caps.len());
        let header = b.captures().lines().next().unwrap();
        assert!(header.starts_with("# "), "{header}");
        let ja4s: BTreeSet<_> = caps.iter().map(|c| ja4(c).unwrap()).collect();
        let ja3ns: BTreeSet<_> = caps.iter().map(|c| ja3n(c).unwrap()).collect();
        assert_eq!(
            (ja4s.len(), ja3ns.len()),
            (1, 1),
            "{b:?}: {ja4s:?} {ja3ns:?}"
        );
        for c in &caps {
            let t = Template::parse(c).unwrap();
            assert_eq!(t.permutes_extensions(), b == Browser::Chrome);
        }
    }
}

#[test]
fn generated_hellos_parse_and_fingerprint_like_the_captures() {
    for b in Browser::ALL {
        let caps = captures(b);
        let (want_ja4, want_ja3n) = (ja4(&caps[0]).unwrap(), ja3n(&caps[0]).unwrap());
        for (name, h) in generate(b, 240, 1) {
            let parsed = client_hello::parse(&h.record).unwrap();
            assert_eq!(parsed.sni.as_deref(), Some(name.as_str()));
            assert_eq!(
                client_hello::probe(&h.record),
                client_hello::Probe::Record {
                    len: h.record.len()
                }
            );
            assert_eq!(ja4(&h.record).unwrap(), want_ja4, "{b:?} {name}");
            assert_eq!(ja3n(&h.record).unwrap(), want_ja3n, "{b:?} {name}");
        }
    }
}

#[test]
fn chrome_permutes_like_the_captures_and_firefox_does_not() {
    for b in Browser::ALL {
        let caps: Vec<_> = captures(b).iter().map(|c| order(c)).collect();
        let ours: Vec<_> = generate(b, 20, 2)
            .iter()
            .map(|(_, h)| order(&h.record))
            .collect();
        let distinct = |o: &[Vec<u16>]| o.iter().collect::<HashSet<_>>().len();
        let ja3s: HashSet<_> = generate(b, 20, 3)
            .iter()
            .map(|(_, h)| ja3(&h.record))
            .collect();
        match b {
            Browser::Chrome => {
                assert!(distinct(&caps) >= 15, "captures: {}", distinct(&caps));
                assert!(distinct(&ours) >= 15, "ours: {}", distinct(&ours));
                assert!(ja3s.len() >= 15);
                // GREASE stays first and last, everything else moves.
                for o in caps.iter().chain(&ours) {
                    assert_eq!((o[0], o[o.len() - 1]), (0x0a0a, 0x0a0a));
                }
                let first_real: BTreeSet<_> = ours.iter().map(|o| o[1]).collect();
                assert!(first_real.len() >= 8, "{first_real:x?}");
            }
            Browser::Firefox => {
                assert_eq!(distinct(&caps), 1);
                assert_eq!(ours[0], caps[0]);
                assert_eq!(distinct(&ours), 1);
                assert_eq!(ja3s.len(), 1);
                assert_eq!(ja3s.into_iter().next().unwrap(), ja3(&captures(b)[0]));
            }
        }
    }
}

/// Every extension's bytes (GREASE by position), the cipher list, the
/// random and the session id of each hello, as sets of values per field.
fn profile(hellos: &[Vec<u8>]) -> BTreeMap<String, BTreeSet<Vec<u8>>> {
    let mut m: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for rec in hellos {
        let p = dissect(rec);
        let mut greases = 0;
        for &(kind, _, data) in &p.exts {
            let key = match kind {
                0x0000 => continue,
                k if is_grease(k) => {
                    greases += 1;
                    format!("grease-ext-{greases}")
                }
                k => format!("{k:04x}"),
            };
            m.entry(key).or_default().insert(data.to_vec());
        }
        let ciphers: Vec<u8> = p.ciphers.iter().flat_map(|c| c.to_be_bytes()).collect();
        m.entry("ciphers".into()).or_default().insert(ciphers);
        m.entry("random".into())
            .or_default()
            .insert(rec[11..43].to_vec());
        m.entry("session_id".into())
            .or_default()
            .insert(rec[p.session_id_at..p.session_id_at + 32].to_vec());
    }
    m
}

/// The rule behind the test above: an extension whose bytes vary across
/// the captures (same SNI or not) varies across generated hellos for one
/// SNI, and one that is fixed stays fixed, byte for byte. This is what
/// catches a per-connection field nobody anticipated.
#[test]
fn per_connection_fields_vary_exactly_where_the_browser_varies() {
    for b in Browser::ALL {
        let caps = profile(&captures(b));
        let ours: Vec<_> = (0..20)
            .map(|i| {
                let mut rng = Rng(100 + i);
                Template::builtin(b)
                    .build("www.example.com", &mut |x| rng.fill(x))
                    .record
            })
            .collect();
        let ours = profile(&ours);
        assert_eq!(
            caps.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{b:?}: extension set"
        );
        for (field, values) in &caps {
            // random, session_id and the x25519 key are the caller's
            // (zero here); everything else must match in variability.
            if ["random", "session_id"].contains(&field.as_str()) {
                assert_eq!(values.len(), 20, "{b:?} capture {field}");
                continue;
            }
            let (theirs, mine) = (values.len() > 1, ours[field].len() > 1);
            assert_eq!(
                theirs, mine,
                "{b:?} {field}: captures vary {theirs}, ours {mine}"
            );
            if !theirs {
                assert_eq!(values, &ours[field], "{b:?} {field}: fixed bytes differ");
            }
        }
    }
}

#[test]
fn grease_is_fresh_and_tied_as_boringssl_ties_it() {
    let hellos = generate(Browser::Chrome, 300, 4);
    let caps = captures(Browser::Chrome);
    let mut seen: [BTreeSet<u16>; 6] = Default::default();
    for rec in caps.iter().chain(hellos.iter().map(|(_, h)| &h.record)) {
        let p = dissect(rec);
        let (e1, e2) = (p.exts[0].0, p.exts[p.exts.len() - 1].0);
        assert!(is_grease(e1) && is_grease(e2) && e1 != e2);
        let groups = ext(&p, 0x000a).unwrap().1;
        let shares = shares(&p);
        assert!(is_grease(shares[0].0));
        // supported_groups and key_share share one GREASE value.
        assert_eq!(be16(groups, 2) as u16, shares[0].0);
        let versions = ext(&p, 0x002b).unwrap().1;
        let sigs = ext(&p, 0x000d).unwrap().1;
        let values = [
            p.ciphers[0],
            shares[0].0,
            e1,
            e2,
            be16(versions, 1) as u16,
            be16(sigs, 2) as u16,
        ];
        for (set, v) in seen.iter_mut().zip(values) {
            assert!(is_grease(v));
            set.insert(v);
        }
    }
    for set in &seen {
        assert_eq!(set.len(), 16, "every GREASE value shows up: {set:x?}");
    }
    for rec in captures(Browser::Firefox).iter().chain(
        generate(Browser::Firefox, 50, 5)
            .iter()
            .map(|(_, h)| &h.record),
    ) {
        let p = dissect(rec);
        assert!(!p.exts.iter().any(|e| is_grease(e.0)));
        assert!(!p.ciphers.iter().any(|&c| is_grease(c)));
    }
}

#[test]
fn key_shares_are_real_keys() {
    // The checker itself: captures pass, random bytes fail.
    let mut rng = Rng(6);
    let mut noise = vec![0u8; 1184];
    rng.fill(&mut noise);
    assert!(!valid_mlkem768(&noise));
    for b in Browser::ALL {
        let caps = captures(b);
        let ours = generate(b, 200, 7);
        for rec in caps.iter().chain(ours.iter().map(|(_, h)| &h.record)) {
            let p = dissect(rec);
            let (_, hybrid) = share(&p, 0x11ec);
            assert!(valid_mlkem768(&hybrid[..1184]), "{b:?}");
            // X25519 keys (real ones have the top bit clear).
            assert_eq!(hybrid[1215] >> 7, 0);
            if b == Browser::Firefox {
                let (_, p256) = share(&p, 0x0017);
                assert!(p256::PublicKey::from_sec1_bytes(p256).is_ok());
            }
        }
        for (_, h) in &ours {
            let p = dissect(&h.record);
            let (_, hybrid) = share(&p, 0x11ec);
            let (_, x) = share(&p, 0x001d);
            match b {
                // Chrome's hybrid has its own X25519 key, nonzero.
                Browser::Chrome => assert!(hybrid[1184..] != [0; 32] && hybrid[1184..] != *x),
                Browser::Firefox => assert_eq!(&hybrid[1184..], x),
            }
        }
    }
    // As captured: Chrome draws a separate X25519 key for the hybrid share,
    // Firefox repeats its x25519 share there.
    for b in Browser::ALL {
        for rec in captures(b) {
            let p = dissect(&rec);
            let reused = share(&p, 0x11ec).1[1184..] == *share(&p, 0x001d).1;
            assert_eq!(reused, b == Browser::Firefox);
        }
        assert_eq!(
            Template::builtin(b).hybrid_reuses_x25519(),
            b == Browser::Firefox
        );
    }
}

#[test]
fn no_two_hellos_share_fresh_bytes() {
    for b in Browser::ALL {
        let mut seen = HashSet::new();
        for (_, h) in generate(b, 200, 8) {
            let p = dissect(&h.record);
            let (_, ech) = ext(&p, 0xfe0d).unwrap();
            let enc = &ech[8..40];
            let payload = &ech[42..];
            let (_, hybrid) = share(&p, 0x11ec);
            let mut fresh = vec![enc.to_vec(), payload.to_vec(), hybrid[..1184].to_vec()];
            if b == Browser::Chrome {
                fresh.push(hybrid[1184..].to_vec());
            } else {
                fresh.push(share(&p, 0x0017).1.to_vec());
            }
            for f in fresh {
                assert!(seen.insert(f), "{b:?}: repeated per-connection bytes");
            }
        }
    }
}

/// GREASE ECH shape: type/KDF/AEAD bytes, enc length, payload length, top
/// bit of the enc's last byte.
type EchShape = (Vec<u8>, usize, usize, u8);

#[test]
fn ech_grease_follows_each_browser() {
    for b in Browser::ALL {
        let shape = |rec: &[u8]| -> EchShape {
            let p = dissect(rec);
            let ech = ext(&p, 0xfe0d).unwrap().1.to_vec();
            (
                ech[..5].to_vec(),
                be16(&ech, 6),
                be16(&ech, 40),
                ech[39] >> 7,
            )
        };
        let caps: Vec<_> = captures(b).iter().map(|c| shape(c)).collect();
        let ours: Vec<_> = generate(b, 200, 9)
            .iter()
            .map(|(_, h)| shape(&h.record))
            .collect();
        let set =
            |v: &[EchShape], f: fn(&EchShape) -> String| v.iter().map(f).collect::<BTreeSet<_>>();
        // type/KDF/AEAD, enc length, payload length: the same sets of values.
        assert_eq!(
            set(&caps, |s| hex::encode(&s.0)),
            set(&ours, |s| hex::encode(&s.0)),
            "{b:?}"
        );
        assert_eq!(
            set(&caps, |s| s.1.to_string()),
            set(&ours, |s| s.1.to_string())
        );
        assert_eq!(
            set(&caps, |s| s.2.to_string()),
            set(&ours, |s| s.2.to_string()),
            "{b:?}"
        );
        // Chrome's enc is a real X25519 key (top bit always clear); Firefox's
        // is random bytes (top bit set about half the time).
        let tops = set(&ours, |s| s.3.to_string());
        let want: BTreeSet<String> = match b {
            Browser::Chrome => ["0".into()].into(),
            Browser::Firefox => ["0".into(), "1".into()].into(),
        };
        assert_eq!(tops, want, "{b:?}");
        assert_eq!(set(&caps, |s| s.3.to_string()), want, "{b:?} captures");
    }
}

#[test]
fn slots_point_at_zeroed_fields_the_parser_finds() {
    for b in Browser::ALL {
        for (i, (_, h)) in generate(b, 200, 10).into_iter().enumerate() {
            let s = h.slots;
            let p = dissect(&h.record);
            assert_eq!(s.random, 11);
            assert_eq!(s.session_id, p.session_id_at);
            assert_eq!(s.x25519, share(&p, 0x001d).0);
            let hybrid_x = share(&p, 0x11ec).0 + 1184;
            assert_eq!(
                s.x25519_in_hybrid,
                (b == Browser::Firefox).then_some(hybrid_x)
            );
            let mut slots = vec![s.random, s.session_id, s.x25519];
            slots.extend(s.x25519_in_hybrid);
            for &at in &slots {
                assert_eq!(h.record[at..at + 32], [0; 32]);
            }
            // Fill them and read them back through the proxy's parser.
            let mut rec = h.record.clone();
            for (k, &at) in slots.iter().enumerate() {
                rec[at..at + 32].fill((0x40 + k + i) as u8);
            }
            let parsed = client_hello::parse(&rec).unwrap();
            assert_eq!(parsed.random, [(0x40 + i) as u8; 32]);
            assert_eq!(parsed.session_id, vec![(0x41 + i) as u8; 32]);
            assert_eq!(ja4(&rec), ja4(&h.record));
        }
    }
}

#[test]
fn length_distribution_matches_the_captures() {
    // Total length less the server name: the part the browser decides.
    let base = |rec: &[u8]| {
        let p = dissect(rec);
        rec.len() - ext(&p, 0x0000).unwrap().1.len()
    };
    for b in Browser::ALL {
        let caps: BTreeSet<_> = captures(b).iter().map(|c| base(c)).collect();
        let hellos = generate(b, 400, 11);
        let ours: BTreeSet<_> = hellos.iter().map(|(_, h)| base(&h.record)).collect();
        assert_eq!(caps, ours, "{b:?}");
        match b {
            Browser::Chrome => {
                assert_eq!(caps.len(), 4);
                // ECH payload sizes drawn evenly.
                let mut counts = BTreeMap::new();
                for (_, h) in &hellos {
                    *counts.entry(base(&h.record)).or_insert(0) += 1;
                }
                assert!(
                    counts.values().all(|&n| (60..=140).contains(&n)),
                    "{counts:?}"
                );
            }
            Browser::Firefox => assert_eq!(caps.len(), 1),
        }
    }
}

#[test]
fn same_filler_same_hello_and_bad_input_is_rejected() {
    for b in Browser::ALL {
        let t = Template::builtin(b);
        let one = t.build("example.com", &mut |x| Rng(12).fill(x));
        let two = t.build("example.com", &mut |x| Rng(12).fill(x));
        assert_eq!(one, two);
        // An all-zero filler still gives valid keys and a parseable hello.
        let zero = t.build("example.com", &mut |x| x.fill(0));
        assert!(client_hello::parse(&zero.record).is_ok());
        assert!(valid_mlkem768(
            &share(&dissect(&zero.record), 0x11ec).1[..1184]
        ));
        let mut rng = Rng(13);
        let mut fill = |x: &mut [u8]| rng.fill(x);
        assert_eq!(
            t.try_build("", &mut fill),
            Err(TemplateError::BadServerName)
        );
        assert_eq!(
            t.try_build(&"a".repeat(254), &mut fill),
            Err(TemplateError::BadServerName)
        );
        assert!(t.try_build(&"a".repeat(253), &mut fill).is_ok());
        for bad in ["192.0.2.1", "::1", "a b.example", "bücher.example", "tab\t"] {
            assert_eq!(
                t.try_build(bad, &mut fill),
                Err(TemplateError::BadServerName)
            );
        }
        let upper = t.build("WWW.Example.COM", &mut fill);
        let parsed = client_hello::parse(&upper.record).unwrap();
        assert_eq!(parsed.sni.as_deref(), Some("www.example.com"));
        assert!(upper.record.windows(15).any(|w| w == b"www.example.com"));
        let rec = &captures(b)[0];
        assert_eq!(
            Template::parse(&rec[..rec.len() - 1]),
            Err(TemplateError::Malformed("record"))
        );
        assert_eq!(
            Template::parse(b"GET / HTTP/1.1\r\n\r\n"),
            Err(TemplateError::NotClientHello)
        );
    }
}

/// The captures against published fingerprints, so a bad capture (a
/// headless quirk, a retry hello) cannot become the template unnoticed:
/// Chrome's cipher-list hash `8daaf6152771` is the one in every published
/// Chrome JA4 since TLS 1.3 (FoxIO's mapping lists
/// `t13d1516h2_8daaf6152771_…`); Firefox 152's JA4
/// `t13d1617h2_86a278354501_3cbfd9057e0d`, JA3
/// `6447ab086255d194909d4013b1a89e87` and 281-byte GREASE ECH extension are
/// published in browser-impersonation profiles, and ESR 153 sends the same
/// hello. Chrome 156's extension part is new (trust anchor
/// ids 0xca34, ML-DSA signature algorithms), so it is pinned from the
/// captures.
#[test]
fn captures_match_published_and_pinned_fingerprints() {
    let chrome = &captures(Browser::Chrome)[0];
    let firefox = &captures(Browser::Firefox)[0];
    assert_eq!(ja4(chrome).unwrap(), "t13d1517h2_8daaf6152771_cb7bf5808d99");
    assert_eq!(
        ja4(firefox).unwrap(),
        "t13d1617h2_86a278354501_3cbfd9057e0d"
    );
    assert_eq!(ext(&dissect(firefox), 0xfe0d).unwrap().1.len(), 281);
    assert_eq!(ja3n(chrome).unwrap(), "bd4930bd9b000ee684830e44bab76fdf");
    assert_eq!(ja3n(firefox).unwrap(), "8099457c290ccfe8c6d958826c26b023");
    assert_eq!(ja3(firefox).unwrap(), "6447ab086255d194909d4013b1a89e87");
}

/// Neither browser sends a padding extension today, but a template that has
/// one (the classic 517-byte Telegram hello) gets it sized per hello by
/// BoringSSL's rule: a 256..=511-byte message is padded to 512, at least one
/// byte of padding data; otherwise the extension is left out.
#[test]
fn padding_extension_follows_the_boringssl_rule() {
    let classic = wire::faketls::client::build_hello(
        &[7; 16],
        "example.com",
        1_700_000_000,
        wire::faketls::client::HelloShape::Classic517,
        &mut |b| Rng(14).fill(b),
    );
    assert_eq!(classic.len(), 517);
    let t = Template::parse(&classic).unwrap();
    let mut rng = Rng(15);
    let (mut padded, mut unpadded_seen) = (0, 0);
    for n in 1..=300 {
        let name = format!("{}.com", "a".repeat(n.min(240)));
        let h = t.build(&name, &mut |b| rng.fill(b));
        let p = dissect(&h.record);
        let pad = ext(&p, 0x0015).map(|(_, d)| d.len());
        let message = h.record.len() - 5;
        let unpadded = message - pad.map_or(0, |n| n + 4);
        if (256..512).contains(&unpadded) {
            let pad = pad.expect("padding in the 256..512 range");
            assert!(pad >= 1);
            assert_eq!(message, 512.max(unpadded + 5), "{n}");
            padded += 1;
        } else {
            assert_eq!(pad, None, "{n}: {unpadded}");
            unpadded_seen += 1;
        }
        assert!(client_hello::parse(&h.record).is_ok());
    }
    assert!(
        padded > 50 && unpadded_seen > 50,
        "{padded} {unpadded_seen}"
    );
}

/// Whether every capture of `b` repeats its X25519 key as the X25519 half of
/// the X25519MLKEM768 share (`None` if the captures disagree).
fn captures_reuse_x25519(b: Browser) -> Option<bool> {
    let seen: BTreeSet<bool> = captures(b)
        .iter()
        .map(|rec| {
            let p = dissect(rec);
            share(&p, 0x11ec).1[1184..] == *share(&p, 0x001d).1
        })
        .collect();
    (seen.len() == 1).then(|| seen.into_iter().next().unwrap())
}

/// `n` hellos as the transport sends them: built from the template, then
/// filled by `ClientHandshake::start` (Noise `e`, session id, tag, HMAC).
/// The template test above is about the builder; this is the record on
/// the wire.
fn on_the_wire(b: Browser, n: usize, seed: u64, key: &ServerKey) -> Vec<(String, Vec<u8>)> {
    let cred = UserCredential::from_secret(&[0x5a; 16]);
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let name = sni(i);
            let built = Template::builtin(b).build(&name, &mut |x| rng.fill(x));
            let (_, record) =
                ClientHandshake::start(&built, &key.public(), &cred, 1_790_000_000, &mut |x| {
                    rng.fill(x)
                })
                .unwrap();
            (name, record)
        })
        .collect()
}

#[test]
fn the_final_hello_on_the_wire_is_the_browsers() {
    let key = ServerKey::from_secret([0x42; 32]);
    let cred = UserCredential::from_secret(&[0x5a; 16]);
    let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
    for b in Browser::ALL {
        let caps = captures(b);
        let reuse = captures_reuse_x25519(b).expect("the captures agree");
        let (want_ja4, want_ja3n) = (ja4(&caps[0]).unwrap(), ja3n(&caps[0]).unwrap());
        let wire = on_the_wire(b, 120, 40, &key);
        let mut fresh = HashSet::new();
        for (name, rec) in &wire {
            // Fingerprints and parse, as the template tests check them.
            let parsed = client_hello::parse(rec).unwrap();
            assert_eq!(parsed.sni.as_deref(), Some(name.as_str()));
            assert_eq!(
                client_hello::probe(rec),
                client_hello::Probe::Record { len: rec.len() }
            );
            assert_eq!(ja4(rec).unwrap(), want_ja4, "{b:?} {name}");
            assert_eq!(ja3n(rec).unwrap(), want_ja3n, "{b:?} {name}");
            // The hybrid share's X25519 half repeats the X25519 share
            // exactly when the browser's own hellos do.
            let p = dissect(rec);
            let (_, x) = share(&p, 0x001d);
            let (_, hybrid) = share(&p, 0x11ec);
            assert_eq!(hybrid[1184..] == *x, reuse, "{b:?}: hybrid X25519 half");
            // Real keys.
            assert!(valid_mlkem768(&hybrid[..1184]), "{b:?}");
            assert_eq!((x[31] >> 7, hybrid[1215] >> 7), (0, 0), "{b:?}");
            if b == Browser::Firefox {
                assert!(p256::PublicKey::from_sec1_bytes(share(&p, 0x0017).1).is_ok());
            }
            // Every key and random field new on every connection (and the
            // two X25519 keys of a Chrome hello different from each other).
            let (_, ech) = ext(&p, 0xfe0d).unwrap();
            let mut fields = vec![
                rec[11..43].to_vec(),
                rec[p.session_id_at..p.session_id_at + 32].to_vec(),
                x.to_vec(),
                hybrid[..1184].to_vec(),
                ech[8..40].to_vec(),
                ech[42..].to_vec(),
            ];
            if !reuse {
                fields.push(hybrid[1184..].to_vec());
            }
            if b == Browser::Firefox {
                fields.push(share(&p, 0x0017).1.to_vec());
            }
            for f in fields {
                assert!(f != vec![0; f.len()], "{b:?}: a zero field");
                assert!(fresh.insert(f), "{b:?}: bytes repeated across hellos");
            }
            // And the server takes it.
            assert!(
                accept(rec, &key, lookup, 1_790_000_000, 60).is_ok(),
                "{b:?}"
            );
        }
        // Extension order and per-connection variability as captured.
        let orders: HashSet<_> = wire.iter().map(|(_, r)| order(r)).collect();
        assert_eq!(orders.len() > 1, b == Browser::Chrome, "{b:?} order");
        let same_name: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                let built =
                    Template::builtin(b).build("www.example.com", &mut |x| Rng(300 + i).fill(x));
                ClientHandshake::start(&built, &key.public(), &cred, 1_790_000_000, &mut |x| {
                    Rng(400 + i).fill(x)
                })
                .unwrap()
                .1
            })
            .collect();
        let (theirs, ours) = (profile(&caps), profile(&same_name));
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{b:?}: fields"
        );
        for (field, values) in &theirs {
            let (vary, mine) = (values.len() > 1, ours[field].len() > 1);
            assert_eq!(
                vary, mine,
                "{b:?} {field}: captures vary {vary}, ours {mine}"
            );
            if !vary {
                assert_eq!(values, &ours[field], "{b:?} {field}: fixed bytes differ");
            }
        }
    }
}
