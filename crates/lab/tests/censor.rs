//! The censor detectors of `lab::censor`: samples each must catch and
//! samples each must let through, the exact rule boundaries of the GFW's
//! fully-encrypted-traffic exemptions, and published JA3/JA4 vectors.

use lab::censor::fet::{classify_first_payload, Exemption, FetVerdict};
use lab::censor::ja::{ja3, ja3_string, ja4, ja4_r};
use lab::censor::protocol::{looks_like, Looks};
use wire::faketls::client::{build_hello, HelloShape};
use wire::obfuscated2::{initiate, Tag};

// === helpers ===

/// splitmix64: a fixed, seedable byte source so every test is deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// A ClientHello record with the given legacy version, cipher suites and
/// extensions (type, data), in that order.
fn hello(version: u16, ciphers: &[u16], exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0);
    body.extend_from_slice(&((ciphers.len() * 2) as u16).to_be_bytes());
    for c in ciphers {
        body.extend_from_slice(&c.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    if !exts.is_empty() {
        let mut e = Vec::new();
        for (kind, data) in exts {
            e.extend_from_slice(&kind.to_be_bytes());
            e.extend_from_slice(&(data.len() as u16).to_be_bytes());
            e.extend_from_slice(data);
        }
        body.extend_from_slice(&(e.len() as u16).to_be_bytes());
        body.extend_from_slice(&e);
    }
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn u16_list(width: usize, values: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = values.len() * 2;
    if width == 1 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    for v in values {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

fn sni(host: &str) -> Vec<u8> {
    let mut out = ((host.len() + 3) as u16).to_be_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(&(host.len() as u16).to_be_bytes());
    out.extend_from_slice(host.as_bytes());
    out
}

fn alpn(protocols: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for p in protocols {
        list.push(p.len() as u8);
        list.extend_from_slice(p);
    }
    let mut out = (list.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&list);
    out
}

/// The data an extension of this type carries in the sample hellos.
fn ext_data(kind: u16, groups: &[u16], sig_algs: &[u16]) -> Vec<u8> {
    match kind {
        0x0000 => sni("example.com"),
        0x000a => u16_list(2, groups),
        0x000b => vec![1, 0],
        0x000d => u16_list(2, sig_algs),
        0x0010 => alpn(&[b"h2", b"http/1.1"]),
        0x002b => u16_list(1, &[0x2a2a, 0x0304, 0x0303]),
        0x002d => vec![1, 1],
        0xff01 => vec![0],
        _ => Vec::new(),
    }
}

/// The 15 cipher suites of Chrome and TDLib's modern hello (JA4.md example).
const CHROME_CIPHERS: [u16; 15] = [
    0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c,
    0x009d, 0x002f, 0x0035,
];
const CHROME_SIG_ALGS: [u16; 8] = [
    0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
];
/// The JA4 of the official Telegram apps (TDLib's modern hello).
const TELEGRAM_JA4: &str = "t13d1516h2_8daaf6152771_d8a2da3f94cd";

/// A hello with GREASE first in ciphers and extensions, Chrome's ciphers
/// and signature algorithms, and these extensions in this order.
fn chrome_like(order: &[u16], groups: &[u16], sig_algs: &[u16]) -> Vec<u8> {
    let mut ciphers = vec![0x3a3a];
    ciphers.extend_from_slice(&CHROME_CIPHERS);
    let mut exts = vec![(0x1a1a, Vec::new())];
    exts.extend(order.iter().map(|&k| (k, ext_data(k, groups, sig_algs))));
    exts.push((0x4a4a, vec![0]));
    hello(0x0303, &ciphers, &exts)
}

fn pq_hello(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    build_hello(
        &[7; 16],
        "www.example.com",
        1_700_000_000,
        HelloShape::PostQuantum,
        &mut |b| rng.fill(b),
    )
}

// === FET (Wu et al., USENIX Security 2023, §4) ===

/// `n` copies of each (byte, count) pair, concatenated.
fn bytes(parts: &[(u8, usize)]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|&(b, n)| std::iter::repeat_n(b, n))
        .collect()
}

// Non-printable fillers by popcount: 0x83 = 3 ones, 0x87 = 4, 0x8f = 5.

#[test]
fn fet_ex1_low_boundary_is_inclusive() {
    // 4×4 + 6×3 = 34 ones in 10 bytes: exactly 3.4.
    let at = bytes(&[(0x87, 4), (0x83, 6)]);
    assert_eq!(
        classify_first_payload(&at),
        FetVerdict::Exempt(Exemption::Ex1PopcountLow)
    );
    // 5×4 + 5×3 = 35: 3.5, inside the band.
    let above = bytes(&[(0x87, 5), (0x83, 5)]);
    assert_eq!(classify_first_payload(&above), FetVerdict::Block);
}

#[test]
fn fet_ex1_high_boundary_is_inclusive() {
    // 6×5 + 4×4 = 46 ones in 10 bytes: exactly 4.6.
    let at = bytes(&[(0x8f, 6), (0x87, 4)]);
    assert_eq!(
        classify_first_payload(&at),
        FetVerdict::Exempt(Exemption::Ex1PopcountHigh)
    );
    // 4.5: inside the band.
    let below = bytes(&[(0x8f, 5), (0x87, 5)]);
    assert_eq!(classify_first_payload(&below), FetVerdict::Block);
    assert_eq!(
        classify_first_payload(&[0u8; 64]),
        FetVerdict::Exempt(Exemption::Ex1PopcountLow)
    );
    assert_eq!(
        classify_first_payload(&[0xff; 64]),
        FetVerdict::Exempt(Exemption::Ex1PopcountHigh)
    );
}

#[test]
fn fet_ex2_six_printable_then_one_not() {
    let mut six = b"abcdef".to_vec();
    six.extend(bytes(&[(0x87, 50)]));
    assert_eq!(
        classify_first_payload(&six),
        FetVerdict::Exempt(Exemption::Ex2FirstSixPrintable)
    );
    let mut five = b"abcde".to_vec();
    five.extend(bytes(&[(0x87, 51)]));
    assert_eq!(classify_first_payload(&five), FetVerdict::Block);
}

#[test]
fn fet_ex3_more_than_half_printable() {
    // 'c' (0x63) and 0x87 both have 4 ones; alternating keeps runs at 1.
    let exactly_half: Vec<u8> = [b'c', 0x87].repeat(20);
    assert_eq!(classify_first_payload(&exactly_half), FetVerdict::Block);
    let mut just_over = exactly_half.clone();
    just_over.push(b'c');
    assert_eq!(
        classify_first_payload(&just_over),
        FetVerdict::Exempt(Exemption::Ex3HalfPrintable)
    );
}

#[test]
fn fet_ex4_more_than_twenty_contiguous() {
    let run = |n| bytes(&[(0x87, 30), (b'c', n), (0x87, 30)]);
    assert_eq!(classify_first_payload(&run(20)), FetVerdict::Block);
    assert_eq!(
        classify_first_payload(&run(21)),
        FetVerdict::Exempt(Exemption::Ex4TwentyContiguousPrintable)
    );
}

#[test]
fn fet_ex5_tls_and_http_prefixes() {
    let with = |head: &[u8]| {
        let mut p = head.to_vec();
        p.extend(bytes(&[(0x87, 60)]));
        classify_first_payload(&p)
    };
    for head in [[0x16, 0x03, 0x01], [0x16, 0x03, 0x03], [0x17, 0x03, 0x00]] {
        assert_eq!(with(&head), FetVerdict::Exempt(Exemption::Ex5Tls));
    }
    for head in [[0x16, 0x03, 0x04], [0x15, 0x03, 0x03], [0x16, 0x02, 0x01]] {
        assert_eq!(with(&head), FetVerdict::Block, "{head:02x?}");
    }
    // A method then non-printable bytes: only Ex5 saves it.
    assert_eq!(with(b"GET "), FetVerdict::Exempt(Exemption::Ex5Http));
    assert_eq!(with(b"POST "), FetVerdict::Exempt(Exemption::Ex5Http));
    assert_eq!(with(b"GOT "), FetVerdict::Block);
}

#[test]
fn fet_lets_http_through() {
    let req = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    assert!(matches!(classify_first_payload(req), FetVerdict::Exempt(_)));
}

#[test]
fn fet_blocks_random_64_bytes_and_obfuscated2_inits() {
    for seed in 1..=16u64 {
        let mut random = [0u8; 64];
        Rng(seed).fill(&mut random);
        assert_eq!(
            classify_first_payload(&random),
            FetVerdict::Block,
            "seed {seed}"
        );
        let init = initiate(random, Tag::Padded, 2, None);
        assert_eq!(
            classify_first_payload(&init.wire),
            FetVerdict::Block,
            "obfuscated2 init, seed {seed}"
        );
    }
}

#[test]
fn fet_lets_our_fake_tls_hello_through() {
    for seed in 1..=8 {
        assert_eq!(
            classify_first_payload(&pq_hello(seed)),
            FetVerdict::Exempt(Exemption::Ex5Tls),
            "seed {seed}"
        );
    }
    // The classic hello is padded with zeros to 517 bytes: Ex1 fires first.
    let mut rng = Rng(1);
    let classic = build_hello(
        &[7; 16],
        "www.example.com",
        1_700_000_000,
        HelloShape::Classic517,
        &mut |b| rng.fill(b),
    );
    assert_eq!(
        classify_first_payload(&classic),
        FetVerdict::Exempt(Exemption::Ex1PopcountLow)
    );
}

// === JA3 (salesforce/ja3 README) ===

#[test]
fn ja3_readme_examples() {
    let rec = hello(
        769,
        &[47, 53, 5, 10, 49161, 49162, 49171, 49172, 50, 56, 19, 4],
        &[
            (0, sni("example.com")),
            (10, u16_list(2, &[23, 24, 25])),
            (11, vec![1, 0]),
        ],
    );
    assert_eq!(
        ja3_string(&rec).unwrap(),
        "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0"
    );
    assert_eq!(ja3(&rec).unwrap(), "ada70206e40642a3e4461f35503241d5");

    let bare = hello(769, &[4, 5, 10, 9, 100, 98, 3, 6, 19, 18, 99], &[]);
    assert_eq!(
        ja3_string(&bare).unwrap(),
        "769,4-5-10-9-100-98-3-6-19-18-99,,,"
    );
    assert_eq!(ja3(&bare).unwrap(), "de350869b8c85de67a350c8d186f11e6");
}

// === JA4 (FoxIO-LLC/ja4, technical_details/JA4.md) ===

/// JA4.md's example hello, extensions in its JA4_ro order.
const SPEC_ORDER: [u16; 16] = [
    0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012, 0x002b,
    0xff01, 0x000b, 0x000a, 0x0015,
];

#[test]
fn ja4_spec_example() {
    let rec = chrome_like(&SPEC_ORDER, &[0x001d, 0x0017, 0x0018], &CHROME_SIG_ALGS);
    assert_eq!(ja4(&rec).unwrap(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    assert_eq!(
        ja4_r(&rec).unwrap(),
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_\
         0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_\
         0403,0804,0401,0503,0805,0501,0806,0601"
    );
    // "If there are no signature algorithms … the string ends without an
    // underscore": 0005,…,ff01 = 6d807ffa2a79.
    let no_sig = chrome_like(&SPEC_ORDER, &[0x001d], &[]);
    assert_eq!(
        ja4(&no_sig).unwrap(),
        "t13d1516h2_8daaf6152771_6d807ffa2a79"
    );
}

#[test]
fn ja4_alpn_and_empty_rules() {
    let a = |protocols: &[&[u8]]| {
        let rec = hello(0x0303, &[0x1301], &[(0x0010, alpn(protocols))]);
        ja4(&rec).unwrap()[..10].to_string()
    };
    assert_eq!(a(&[b"http/1.1"]), "t12i0101h1");
    assert_eq!(a(&[&[0xab]]), "t12i0101ab");
    assert_eq!(a(&[&[0xab, 0xcd]]), "t12i0101ad");
    assert_eq!(a(&[&[0x30, 0xab]]), "t12i01013b");
    assert_eq!(a(&[&[0x30, 0x31, 0xab, 0xcd]]), "t12i01013d");
    assert_eq!(a(&[&[0x30, 0xab, 0xcd, 0x31]]), "t12i010101");
    assert_eq!(a(&[b"x"]), "t12i0101xx");
    // No extensions at all: `00` ALPN and a zeroed extension hash.
    let bare = hello(0x0301, &[0x002f], &[]);
    assert!(ja4(&bare).unwrap().starts_with("t10i010000_"));
    assert!(ja4(&bare).unwrap().ends_with("_000000000000"));
}

/// Chrome 143's hello as recorded by browserleaks (ja4_ro / ja3_text of
/// that capture): same ciphers and signature algorithms, ALPS at its new
/// codepoint 0x44cd, an ECH GREASE extension 0xfe0d, X25519MLKEM768 first.
const CHROME_143_ORDER: [u16; 16] = [
    0x002d, 0x0033, 0x0010, 0xfe0d, 0x0017, 0x44cd, 0x0000, 0x000b, 0x000a, 0x002b, 0xff01, 0x0023,
    0x0012, 0x0005, 0x000d, 0x001b,
];
const CHROME_143_GROUPS: [u16; 4] = [0x11ec, 0x001d, 0x0017, 0x0018];

#[test]
fn chrome_143_matches_the_telegram_ja4_and_its_published_ja3() {
    let rec = chrome_like(&CHROME_143_ORDER, &CHROME_143_GROUPS, &CHROME_SIG_ALGS);
    assert_eq!(ja4(&rec).unwrap(), TELEGRAM_JA4);
    assert_eq!(
        ja3_string(&rec).unwrap(),
        "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,\
         45-51-16-65037-23-17613-0-11-10-43-65281-35-18-5-13-27,4588-29-23-24,0"
    );
    assert_eq!(ja3(&rec).unwrap(), "98487aa16281980e7d1120d399efb6a4");
}

#[test]
fn ja4_ignores_extension_order_but_ja3_does_not() {
    let base = chrome_like(&CHROME_143_ORDER, &CHROME_143_GROUPS, &CHROME_SIG_ALGS);
    let mut rng = Rng(42);
    for _ in 0..8 {
        // Fisher–Yates, as Chrome permutes its extensions per connection.
        let mut order = CHROME_143_ORDER;
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let permuted = chrome_like(&order, &CHROME_143_GROUPS, &CHROME_SIG_ALGS);
        assert_eq!(ja4(&permuted), ja4(&base), "{order:04x?}");
        if order != CHROME_143_ORDER {
            assert_ne!(ja3(&permuted), ja3(&base), "{order:04x?}");
        }
    }
}

/// Our PostQuantum hello against the Telegram apps' JA4. It does NOT match:
/// it has 15 extensions (no ECH GREASE 0xfe0d) and carries ALPS at the old
/// codepoint 0x4469 where current TDLib/Chrome send 0x44cd, so both the
/// extension count in `a` and the `c` hash differ; `b` (ciphers) matches.
#[test]
fn our_post_quantum_hello_vs_the_telegram_ja4() {
    let ours = ja4(&pq_hello(1)).unwrap();
    assert_eq!(ours, "t13d1515h2_8daaf6152771_f37e75b10bcc");
    assert_ne!(ours, TELEGRAM_JA4);
    assert_eq!(ours[..11], TELEGRAM_JA4[..11].replace("1516", "1515"));
    assert_eq!(ours[11..23], TELEGRAM_JA4[11..23]);
    assert_eq!(
        ja4_r(&pq_hello(1)).unwrap(),
        "t13d1515h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_\
         0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,4469,ff01_\
         0403,0804,0401,0503,0805,0501,0806,0601"
    );
    // GREASE and key shares are random; the fingerprint is not.
    for seed in 2..=6 {
        assert_eq!(ja4(&pq_hello(seed)).unwrap(), ours);
    }
}

#[test]
fn ja_rejects_what_is_not_one_client_hello() {
    let rec = pq_hello(1);
    assert!(ja4(&rec[..rec.len() - 1]).is_none());
    let mut trailing = rec.clone();
    trailing.push(0);
    assert!(ja3(&trailing).is_none());
    assert!(ja4(b"GET / HTTP/1.1\r\n\r\n").is_none());
    assert!(ja3(&[]).is_none());
    let mut server_hello = rec;
    server_hello[5] = 0x02;
    assert!(ja4(&server_hello).is_none());
}

// === Iran 2020 protocol allowlist ===

fn dns_query(flags: u16, qdcount: u16) -> Vec<u8> {
    let mut msg = vec![0x12, 0x34];
    msg.extend_from_slice(&flags.to_be_bytes());
    msg.extend_from_slice(&qdcount.to_be_bytes());
    msg.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
    msg.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&msg);
    out
}

#[test]
fn protocol_allowlist_recognises_dns_http_tls() {
    assert_eq!(looks_like(&pq_hello(1)), Looks::Tls);
    assert_eq!(looks_like(&[0x16, 0x03, 0x01]), Looks::Tls);
    assert_eq!(
        looks_like(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Looks::Http
    );
    assert_eq!(looks_like(b"CONNECT a:443 HTTP/1.1\r\n\r\n"), Looks::Http);
    assert_eq!(looks_like(&dns_query(0x0100, 1)), Looks::Dns); // RD
    assert_eq!(looks_like(&dns_query(0x0120, 1)), Looks::Dns); // RD + AD
}

#[test]
fn protocol_allowlist_drops_the_rest() {
    for seed in 1..=16u64 {
        let mut random = [0u8; 64];
        Rng(seed).fill(&mut random);
        let init = initiate(random, Tag::Intermediate, 2, None);
        assert_eq!(looks_like(&init.wire), Looks::Other, "seed {seed}");
    }
    assert_eq!(looks_like(b"SSH-2.0-OpenSSH_9.6\r\n"), Looks::Other);
    assert_eq!(looks_like(b"get / HTTP/1.1\r\n\r\n"), Looks::Other);
    assert_eq!(looks_like(&[0x16, 0x03, 0x05, 0x00, 0x10]), Looks::Other);
    assert_eq!(looks_like(&[0x16, 0x03, 0x01, 0xff, 0xff]), Looks::Other);
    assert_eq!(looks_like(&dns_query(0x8180, 1)), Looks::Other); // a response
    assert_eq!(looks_like(&dns_query(0x0100, 0)), Looks::Other); // no question
    assert_eq!(looks_like(&dns_query(0x1900, 1)), Looks::Other); // opcode 3
    assert_eq!(looks_like(&dns_query(0x0100, 2)), Looks::Other); // QUERY with 2 questions
    assert_eq!(looks_like(&dns_query(0x2800, 1)), Looks::Dns); // UPDATE
    assert_eq!(looks_like(&dns_query(0x0103, 1)), Looks::Other); // RCODE 3
    assert_eq!(looks_like(&dns_query(0x0100, 1)[..13]), Looks::Other);
    assert_eq!(looks_like(&[]), Looks::Other);
}
