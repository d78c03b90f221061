use super::*;
use proptest::prelude::*;

const SECRET: [u8; 32] = [0x42; 32];
const NOW: u64 = 1_764_172_800;

fn sample() -> ServerList {
    ServerList {
        serial: 7,
        issued: NOW - 60,
        expires: NOW + 30 * 86_400,
        endpoints: vec![
            Listed {
                endpoint: Endpoint::direct("203.0.113.5", 443),
                server_key: None,
            },
            Listed {
                endpoint: Endpoint {
                    host: "cdn.example.net".into(),
                    port: 443,
                    ws_path: Some("/s/abc".into()),
                },
                server_key: None,
            },
            Listed {
                endpoint: Endpoint::direct("2001:db8::1", 8443),
                server_key: Some([5; 32]),
            },
            Listed {
                endpoint: Endpoint::direct("proxy.example.org", 443),
                server_key: None,
            },
        ],
    }
}

fn public() -> [u8; 32] {
    public_key(&SECRET)
}

#[test]
fn signs_and_verifies() {
    let text = sign(&sample(), &SECRET).unwrap();
    assert!(text.starts_with(PREFIX));
    assert!(text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    assert_eq!(verify(&text, &public(), NOW, None).unwrap(), sample());
    assert_eq!(verify(&text, &public(), NOW, Some(6)).unwrap(), sample());
    // Whitespace around (a file's newline) is fine.
    assert_eq!(
        verify(&format!("\n{text}\n"), &public(), NOW, Some(6)).unwrap(),
        sample()
    );
}

#[test]
fn the_body_is_readable_and_grouped_by_key() {
    let text = sign(&sample(), &SECRET).unwrap();
    let body = URL_SAFE_NO_PAD
        .decode(text[PREFIX.len()..].split('.').next().unwrap())
        .unwrap();
    let body = String::from_utf8(body).unwrap();
    let want = format!(
        "version 1\nsigner {}\nserial 7\nissued {}\nexpires {}\n\
         endpoint 203.0.113.5:443\nendpoint wss://cdn.example.net/s/abc\n\
         pk BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU\nendpoint [2001:db8::1]:8443\n\
         pk -\nendpoint proxy.example.org:443\n",
        key_id(&public()),
        NOW - 60,
        NOW + 30 * 86_400
    );
    assert_eq!(body, want);
}

#[test]
fn names_each_refusal() {
    let text = sign(&sample(), &SECRET).unwrap();
    let other = [0x43; 32];
    assert_eq!(
        verify(&text, &public_key(&other), NOW, None),
        Err(ListError::WrongKey {
            signer: key_id(&public()),
            expected: key_id(&public_key(&other)),
        })
    );
    assert_eq!(
        verify(&text, &public(), NOW, Some(7)),
        Err(ListError::Stale { serial: 7, have: 7 })
    );
    assert_eq!(
        verify(&text, &public(), NOW, Some(9)),
        Err(ListError::Stale { serial: 7, have: 9 })
    );
    let expires = NOW + 30 * 86_400;
    assert_eq!(
        verify(&text, &public(), expires, None),
        Err(ListError::Expired {
            expires,
            now: expires
        })
    );
    let early = NOW - 60 - MAX_CLOCK_SKEW - 1;
    assert_eq!(
        verify(&text, &public(), early, None),
        Err(ListError::NotYetValid {
            issued: NOW - 60,
            now: early
        })
    );
    // Within the allowed skew it is fine.
    assert!(verify(&text, &public(), early + 1, None).is_ok());
    // A signature from another key over a body naming our key.
    let body = sample().body(&key_id(&public())).unwrap();
    let forged = sign_body(body.as_bytes(), &other);
    assert_eq!(
        verify(&forged, &public(), NOW, None),
        Err(ListError::BadSignature)
    );
    assert!(matches!(
        verify("SZL2.abc.def", &public(), NOW, None),
        Err(ListError::Malformed(_))
    ));
    assert!(matches!(
        verify(&"A".repeat(MAX_TEXT + 1), &public(), NOW, None),
        Err(ListError::Malformed(_))
    ));
}

#[test]
fn refuses_malformed_bodies_even_when_signed() {
    let id = key_id(&public());
    let head = format!("version 1\nsigner {id}\nserial 1\nissued 10\nexpires 20\n");
    let cases: Vec<(String, &str)> = vec![
        (format!("{head}endpoint h.example:443"), "newline"),
        (head.clone(), "no endpoints"),
        (
            format!("version 2\nsigner {id}\nserial 1\nissued 10\nexpires 20\nendpoint h:1\n"),
            "version 2",
        ),
        (
            format!("signer {id}\nversion 1\nserial 1\nissued 10\nexpires 20\nendpoint h:1\n"),
            "first line",
        ),
        (format!("{head}endpoint h.example:0\n"), "line 6"),
        (
            format!("{head}serial 2\nendpoint h:1\n"),
            "serial given twice",
        ),
        (format!("{head}pk AAAA\nendpoint h:1\n"), "pk must be"),
        (format!("{head}endpoint h:1\r\n"), "not printable"),
        (format!("{head}endpoint h:1\nnospace\n"), "FIELD VALUE"),
        (
            "version 1\nsigner me\nserial 1\nissued 10\nexpires 20\nendpoint h:1\n".into(),
            "signer must be a key id",
        ),
        (
            format!("version 1\nsigner {id}\nserial 1\nissued 10\nexpires 10\nendpoint h:1\n"),
            "expires is not after",
        ),
        (
            format!("version 1\nsigner {id}\nserial x\nissued 10\nexpires 20\nendpoint h:1\n"),
            "serial is not a number",
        ),
        (
            format!("version 1\nsigner {id}\nissued 10\nexpires 20\nendpoint h:1\n"),
            "no serial",
        ),
    ];
    for (body, want) in cases {
        let text = sign_body(body.as_bytes(), &SECRET);
        match verify_signature(&text, &public()) {
            Err(ListError::Malformed(what)) => {
                assert!(what.contains(want), "{body:?}: {what:?} lacks {want:?}")
            }
            other => panic!("{body:?}: {other:?}"),
        }
    }
}

#[test]
fn ignores_unknown_fields_and_duplicate_endpoints() {
    let id = key_id(&public());
    let body = format!(
        "version 1\nsigner {id}\nserial 3\nissued 10\nexpires 20\nendpoint h:1\n\
         weight 5\nendpoint h:1\nendpoint g:2\n"
    );
    let list = verify_signature(&sign_body(body.as_bytes(), &SECRET), &public()).unwrap();
    let hosts: Vec<_> = list
        .endpoints
        .iter()
        .map(|l| l.endpoint.to_string())
        .collect();
    assert_eq!(hosts, ["h:1", "g:2"]);
}

#[test]
fn bounds_the_endpoint_count_on_both_sides() {
    let mut list = sample();
    list.endpoints = (0..=MAX_ENDPOINTS)
        .map(|i| Listed {
            endpoint: Endpoint::direct(format!("h{i}.example"), 443),
            server_key: None,
        })
        .collect();
    assert!(matches!(sign(&list, &SECRET), Err(ListError::Malformed(_))));
    let body = format!(
        "version 1\nsigner {}\nserial 1\nissued 10\nexpires 20\n{}",
        key_id(&public()),
        (0..=MAX_ENDPOINTS)
            .map(|i| format!("endpoint h{i}:1\n"))
            .collect::<String>()
    );
    let text = sign_body(body.as_bytes(), &SECRET);
    assert_eq!(
        verify_signature(&text, &public()),
        Err(malformed(format!("more than {MAX_ENDPOINTS} endpoints")))
    );
    list.endpoints.truncate(MAX_ENDPOINTS);
    let text = sign(&list, &SECRET).unwrap();
    assert!(text.len() <= MAX_TEXT);
    assert_eq!(verify_signature(&text, &public()).unwrap(), list);
}

/// The seed corpus holds a list signed by another Ed25519
/// implementation (Python's `cryptography`, i.e. OpenSSL) with the fuzz
/// key: ours must accept it, so the format is plain RFC 8032 Ed25519.
#[test]
fn accepts_a_list_signed_elsewhere() {
    let text = include_str!("../../../../fuzz/corpus/server_list/signed_simple");
    let list = verify(text, &public_key(&[0x5a; 32]), 1_800_000_000, Some(8)).unwrap();
    assert_eq!(list.serial, 9);
    assert_eq!(
        list.endpoints,
        [Listed {
            endpoint: Endpoint::direct("203.0.113.5", 443),
            server_key: None
        }]
    );
}

#[test]
fn key_ids_are_stable() {
    assert_eq!(key_id(&[0; 32]).len(), 16);
    assert_ne!(key_id(&[0; 32]), key_id(&[1; 32]));
    assert_eq!(key_id(&public()), key_id(&public_key(&SECRET)));
}

#[test]
fn every_single_byte_change_is_refused() {
    let text = sign(&sample(), &SECRET).unwrap();
    for i in 0..text.len() {
        for with in [b'A', b'_', b'.', b'0', b' '] {
            let mut bytes = text.clone().into_bytes();
            if bytes[i] == with {
                continue;
            }
            bytes[i] = with;
            let changed = String::from_utf8(bytes).unwrap();
            assert!(
                verify(&changed, &public(), NOW, None).is_err(),
                "byte {i} set to {with}"
            );
        }
    }
}

fn endpoint() -> impl Strategy<Value = Listed> {
    (
        "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,5})?",
        1u16..,
        proptest::option::of("/[a-z0-9/]{0,10}"),
        proptest::option::of(any::<[u8; 32]>()),
    )
        .prop_map(|(host, port, ws_path, server_key)| Listed {
            endpoint: Endpoint {
                host,
                port,
                ws_path,
            },
            server_key,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_list_roundtrips(
        serial in any::<u64>(),
        issued in 0u64..u64::MAX / 2,
        life in 1u64..1 << 40,
        endpoints in proptest::collection::vec(endpoint(), 1..12),
    ) {
        let mut endpoints = endpoints;
        let mut seen = std::collections::HashSet::new();
        endpoints.retain(|e| seen.insert(e.clone()));
        let list = ServerList { serial, issued, expires: issued + life, endpoints };
        let text = sign(&list, &SECRET).unwrap();
        prop_assert_eq!(verify(&text, &public(), issued, None).unwrap(), list);
    }

    #[test]
    fn any_changed_byte_is_refused(at in any::<prop::sample::Index>(), with in any::<u8>()) {
        let text = sign(&sample(), &SECRET).unwrap();
        let mut bytes = text.clone().into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != with);
        bytes[i] = with;
        let changed = String::from_utf8_lossy(&bytes).into_owned();
        // Whitespace at the ends is trimmed, so a space replacing the
        // first or last byte still changes the text: it must be refused.
        prop_assert!(verify(&changed, &public(), NOW, None).is_err(), "{}", changed);
    }
}
