//! The catalogue of active probes: what a censor sends to a suspected
//! server (truncations, garbage, replays of recorded first flights).

use super::*;

fn send(b: impl AsRef<[u8]>) -> Step {
    Step::Send(b.as_ref().to_vec())
}

/// `payload` with every byte at `at` (those inside it) XORed with a
/// nonzero random value.
pub fn changed(payload: &[u8], at: &[usize], rng: &mut Rng) -> Vec<u8> {
    let mut b = payload.to_vec();
    for &i in at {
        if let Some(x) = b.get_mut(i) {
            *x ^= (rng.next_u64() as u8) | 1;
        }
    }
    b
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Every probe for a suspect whose clients were seen sending
/// `recorded_first_payloads`.
pub fn catalogue(recorded_first_payloads: &[Vec<u8>], opts: &ProbeOptions) -> Vec<Probe> {
    let mut rng = Rng::new(opts.seed);
    let mut p = Vec::new();
    let raw = |name: String, steps: Vec<Step>| Probe { name, steps };

    p.push(raw("silence".into(), vec![]));
    p.push(raw("half-close at once".into(), vec![Step::HalfClose]));

    for &n in WILD_LENGTHS {
        p.push(raw(format!("random {n} bytes"), vec![send(rng.bytes(n))]));
    }
    for n in [8, 33, 49, 221] {
        p.push(raw(
            format!("random {n} bytes, half-closed"),
            vec![send(rng.bytes(n)), Step::HalfClose],
        ));
    }
    // Around the thresholds naive servers read: an obfuscated2 init (64),
    // a fake-TLS hello (517).
    for n in [63, 64, 65, 516, 517, 518] {
        p.push(raw(format!("random {n} bytes"), vec![send(rng.bytes(n))]));
    }

    // TLS: the censor knows the cover's name but not the key.
    let now = opts.now.unwrap_or_else(unix_now);
    let mut key = [0u8; 16];
    for (name, sni, shape) in [
        (
            "hello, wrong HMAC",
            opts.sni.as_str(),
            HelloShape::Classic517,
        ),
        (
            "post-quantum hello, wrong HMAC",
            opts.sni.as_str(),
            HelloShape::PostQuantum,
        ),
        ("hello, another SNI", "example.com", HelloShape::Classic517),
    ] {
        rng.fill(&mut key);
        let hello = build_hello(&key, sni, now, shape, &mut |b| rng.fill(b));
        p.push(raw(name.into(), vec![send(&hello)]));
        if name == "hello, wrong HMAC" {
            for cut in [5, 100, hello.len() - 1] {
                p.push(raw(
                    format!("{name}, cut at {cut}"),
                    vec![send(&hello[..cut])],
                ));
            }
        }
    }
    let mut header = rng.bytes(43);
    header[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
    p.push(raw(
        "TLS header + random, 43 bytes".into(),
        vec![send(header)],
    ));

    // Replays, identical and changed, at once and after delays.
    for (i, payload) in recorded_first_payloads.iter().enumerate() {
        if payload.is_empty() {
            continue;
        }
        for &delay in &opts.replay_delays {
            let wait = |mut steps: Vec<Step>| {
                if !delay.is_zero() {
                    steps.insert(0, Step::Pause(delay));
                }
                steps
            };
            let after = if delay.is_zero() {
                String::new()
            } else {
                format!(", after {delay:?}")
            };
            p.push(raw(
                format!("replay {i}, identical{after}"),
                wait(vec![send(payload)]),
            ));
            for (what, at) in REPLAY_CHANGES {
                if at.iter().any(|&a| a < payload.len()) {
                    p.push(raw(
                        format!("replay {i}, {what}{after}"),
                        wait(vec![send(changed(payload, at, &mut rng))]),
                    ));
                }
            }
        }
        p.push(raw(
            format!("replay {i}, identical, half-closed"),
            vec![send(payload), Step::HalfClose],
        ));
        if payload.len() > 1 {
            p.push(raw(
                format!("replay {i}, first half"),
                vec![send(&payload[..payload.len() / 2])],
            ));
        }
    }
    p
}
