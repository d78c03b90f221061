//! An `ee` client that sends the official Telegram apps' ClientHello: the
//! Chrome-like hello whose JA4 is [`crate::techniques::fingerprint::TELEGRAM_APPS_JA4`]
//! (extension order and lists as the lab's fingerprint tests rebuild Chrome
//! 143's), with a real-sized post-quantum key share, signed with the
//! secret as fake-TLS requires. testkit's client sends it when given
//! [`hello`] as its `Options::hello`.

use wire::faketls::client::sign_hello;

fn list(width: usize, values: &[u16]) -> Vec<u8> {
    let len = values.len() * 2;
    let mut out = if width == 1 {
        vec![len as u8]
    } else {
        (len as u16).to_be_bytes().to_vec()
    };
    values
        .iter()
        .for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
    out
}

/// The apps' hello for `sni`, signed with `key` at `now`.
pub fn hello(key: &[u8; 16], sni: &str, now: u32) -> Vec<u8> {
    const CIPHERS: [u16; 16] = [
        0x3a3a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
        0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
    ];
    const ORDER: [u16; 16] = [
        0x002d, 0x0033, 0x0010, 0xfe0d, 0x0017, 0x44cd, 0x0000, 0x000b, 0x000a, 0x002b, 0xff01,
        0x0023, 0x0012, 0x0005, 0x000d, 0x001b,
    ];
    const SIG_ALGS: [u16; 8] = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    let data = |kind: u16| -> Vec<u8> {
        match kind {
            0x0000 => {
                let host = sni.as_bytes();
                let mut out = ((host.len() + 3) as u16).to_be_bytes().to_vec();
                out.push(0);
                out.extend_from_slice(&(host.len() as u16).to_be_bytes());
                out.extend_from_slice(host);
                out
            }
            0x000a => list(2, &[0x2a2a, 0x11ec, 0x001d, 0x0017, 0x0018]),
            0x000b => vec![1, 0],
            0x000d => list(2, &SIG_ALGS),
            0x0010 => {
                let mut l = vec![2];
                l.extend_from_slice(b"h2");
                l.push(8);
                l.extend_from_slice(b"http/1.1");
                let mut out = (l.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&l);
                out
            }
            0x002b => list(1, &[0x2a2a, 0x0304, 0x0303]),
            0x002d => vec![1, 1],
            0xff01 => vec![0],
            0x0005 => vec![1, 0, 0, 0, 0],
            0x0033 => {
                let mut shares = vec![0x2a, 0x2a, 0x00, 0x01, 0x00];
                shares.extend_from_slice(&[0x11, 0xec, 0x04, 0xc0]);
                let mut pq = vec![0u8; 1216];
                testkit::fill(&mut pq);
                shares.extend_from_slice(&pq);
                shares.extend_from_slice(&[0x00, 0x1d, 0x00, 0x20]);
                shares.extend_from_slice(&testkit::random::<32>());
                let mut out = (shares.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&shares);
                out
            }
            0x001b => vec![2, 0, 2],
            _ => Vec::new(),
        }
    };
    let mut exts = vec![(0x1a1a, Vec::new())];
    exts.extend(ORDER.iter().map(|&k| (k, data(k))));
    exts.push((0x4a4a, vec![0]));
    let mut body = 0x0303u16.to_be_bytes().to_vec();
    body.extend_from_slice(&[0; 32]);
    body.push(32);
    body.extend_from_slice(&testkit::random::<32>());
    body.extend(list(2, &CIPHERS));
    body.extend_from_slice(&[1, 0]);
    let mut e = Vec::new();
    for (kind, d) in exts {
        e.extend_from_slice(&u16::to_be_bytes(kind));
        e.extend_from_slice(&(d.len() as u16).to_be_bytes());
        e.extend_from_slice(&d);
    }
    body.extend_from_slice(&(e.len() as u16).to_be_bytes());
    body.extend_from_slice(&e);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    sign_hello(key, now, &mut rec);
    rec
}
