//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay
//! test, so both exercise exactly the same code. Each must return without
//! panicking for any input.

use crate::browser::{Browser, Template};
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
    let one = classify::classify(data, &policy, &users, 1_700_000_000, &mut replay, None);
    // The pumped classifier the server drives decides the same, with a
    // fleet that has seen nothing.
    let mut replay = ReplayState {
        tls: ReplayCache::new(0, 660, 1000),
        obfuscated2: ReplayCache::new(0, 0, 1000),
    };
    let mut c = classify::Classifier::new(data, &policy, &users, 1_700_000_000, None).with_fleet();
    let pumped = loop {
        match c.step() {
            classify::Step::NeedMore => break classify::Verdict::NeedMore,
            classify::Step::Search => {
                if !c.search(&[0]) {
                    c.searched_all();
                }
            }
            classify::Step::Admit => c.admit(&mut replay),
            classify::Step::FleetReplay { .. } => c.fleet_answer(true),
            classify::Step::Done(v) => break v,
        }
    };
    assert_eq!(verdict_name(&one), verdict_name(&pumped));
}

fn verdict_name(v: &classify::Verdict) -> &'static str {
    match v {
        classify::Verdict::NeedMore => "need more",
        classify::Verdict::Cover(r) => r.name(),
        classify::Verdict::FakeTls(_) => "fake-tls",
        classify::Verdict::Obfuscated2(_) => "obfuscated2",
        classify::Verdict::Tunnel(_) => "tunnel",
    }
}

/// Secret text parsing.
pub fn secret(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(s) = Secret::parse(text) {
            assert_eq!(Secret::parse(&s.to_hex()).as_ref(), Ok(&s));
        }
    }
}

/// Browser templates: arbitrary bytes as a captured hello must not panic
/// (and a template that parses must build); a built-in template built with
/// a server name and filler bytes taken from the input must give a hello the
/// proxy's parser accepts, with that name and the capture's JA4.
///
/// Input: byte 0 picks the browser (bit 0) and the name length (the rest),
/// then the name, then the filler's bytes (repeated; zeros if none).
pub fn browser_hello(data: &[u8]) {
    if let Ok(t) = Template::parse(data) {
        let _ = t.try_build("example.com", &mut |b| b.fill(0x5a));
    }
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let browser = Browser::ALL[usize::from(head & 1)];
    let (name, filler) = rest.split_at(usize::from(head >> 1).min(rest.len()));
    let sni = String::from_utf8_lossy(name);
    let mut at = 0;
    let mut fill = |buf: &mut [u8]| {
        for b in buf {
            *b = filler.get(at % filler.len().max(1)).copied().unwrap_or(0);
            at += 1;
        }
    };
    let template = Template::builtin(browser);
    let Ok(hello) = template.try_build(&sni, &mut fill) else {
        let ok = !sni.is_empty()
            && sni.len() <= crate::browser::MAX_SNI
            && sni.bytes().all(|b| b.is_ascii_graphic())
            && sni.parse::<std::net::IpAddr>().is_err();
        assert!(!ok, "{sni:?} refused");
        return;
    };
    let parsed = client_hello::parse(&hello.record).expect("a built hello parses");
    assert_eq!(parsed.sni, Some(sni.to_ascii_lowercase()));
    assert_eq!(
        client_hello::probe(&hello.record),
        client_hello::Probe::Record {
            len: hello.record.len()
        }
    );
    // The fingerprint (JA4) stays the capture's whatever the name: the
    // censor's detectors live in the lab, so tests/browser.rs checks it
    // (`generated_hellos_parse_and_fingerprint_like_the_captures`, 240 names).
}

/// The local proxies' request parsers (SOCKS5 greeting, auth and request;
/// HTTP proxy heads). A message accepted from a longer buffer is accepted
/// identically from exactly its own bytes and is incomplete one byte
/// short; a rewritten HTTP head is itself a complete request head.
pub fn proxy_requests(data: &[u8]) {
    use crate::{http_proxy, socks5};
    fn check<T: PartialEq + std::fmt::Debug, E: std::fmt::Debug + PartialEq>(
        data: &[u8],
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
    ) {
        if let Ok(Some((value, used))) = parse(data) {
            assert!(used > 0 && used <= data.len() && used <= socks5::MAX_MESSAGE);
            assert_eq!(parse(&data[..used]), Ok(Some((value, used))));
            assert_eq!(parse(&data[..used - 1]), Ok(None));
        }
    }
    check(data, socks5::parse_greeting);
    check(data, socks5::parse_auth);
    check(data, socks5::parse_request);
    if let Ok(Some((req, used))) = http_proxy::parse_request(data) {
        assert!(used <= data.len() && used <= http_proxy::MAX_HEAD);
        if let http_proxy::ProxyRequest::Forward { head, .. } = req {
            let mut headers = [httparse::EMPTY_HEADER; http_proxy::MAX_HEADERS + 2];
            let mut parsed = httparse::Request::new(&mut headers);
            assert_eq!(
                parsed.parse(&head),
                Ok(httparse::Status::Complete(head.len()))
            );
            assert!(parsed.path.is_some_and(|p| p.starts_with('/')));
        }
    }
}

/// The unix time the tunnel fuzz corpus's hellos carry.
pub const TUNNEL_NOW: u64 = 1_790_000_000;
/// The tunnel server key the fuzz corpus's hellos are made for.
pub const TUNNEL_SERVER_KEY: [u8; 32] = [0x5a; 32];

/// Tunnel: the frame decoder and the stream table on arbitrary record
/// plaintexts. Byte 0 picks the role and the stream limit; every decoded
/// frame must re-encode to the same bytes, and the table must never hold
/// more streams than allowed.
pub fn tunnel_frames(data: &[u8]) {
    use crate::tunnel::frame::{Frame, Status};
    use crate::tunnel::mux::{Event, Mux, MuxConfig, Role, INITIAL_WINDOW};
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let role = if head & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let max_streams = 1 + usize::from(head >> 1) % 8;
    let mut mux = Mux::new(
        role,
        MuxConfig {
            window: INITIAL_WINDOW,
            max_streams,
        },
    );
    if role == Role::Client {
        for _ in 0..usize::from(head >> 4) {
            let _ = mux.open(0);
        }
    }
    while !rest.is_empty() {
        let Ok((frame, used)) = Frame::decode(rest) else {
            return;
        };
        let mut again = Vec::new();
        frame.encode(&mut again);
        assert_eq!(Frame::decode(&again).map(|(f, _)| f), Ok(frame.clone()));
        rest = &rest[used..];
        match mux.handle(frame) {
            Ok(Event::Opened { stream, .. }) => {
                let status = if stream % 4 == 1 {
                    Status::Ok
                } else {
                    Status::NotAllowed
                };
                assert!(mux.reply(stream, status));
            }
            Ok(Event::Data { stream, data }) => {
                let _ = mux.consumed(stream, data.len());
                if data[0] & 1 == 1 {
                    mux.fin(stream);
                }
                if data[0] == 0xff {
                    mux.reset(stream);
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
        assert!(mux.active() <= max_streams);
    }
}

/// Tunnel: server accept on arbitrary bytes (and, for a hello that
/// authenticates, the server flight read back by a client); and a client
/// reading arbitrary bytes as a server flight.
pub fn tunnel_accept(data: &[u8]) {
    use crate::tunnel::handshake::{accept, ClientHandshake, ServerKey, UserCredential};
    use crate::tunnel::FlightShape;
    let _ = crate::tunnel::locate(data);
    let key = ServerKey::from_secret(TUNNEL_SERVER_KEY);
    let cred = UserCredential::from_secret(&FUZZ_KEY);
    let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
    if let Ok(acc) = accept(data, &key, lookup, TUNNEL_NOW, 600) {
        let shape = FlightShape {
            records: data.iter().take(6).map(|&b| u16::from(b) * 13).collect(),
            ..FlightShape::default()
        };
        let (flight, _) = acc.respond(&shape, &mut |b| b.fill(7));
        assert!(flight.len() > 100);
    }
    // The same bytes as a server flight, for a client that sent `data`
    // (when it is a usable hello template).
    let hello = crate::browser::BuiltHello::from_record(data.to_vec());
    if let Ok((mut client, _)) = hello.map_err(drop).and_then(|h| {
        ClientHandshake::start(&h, &key.public(), &cred, TUNNEL_NOW, &mut |b| b.fill(3))
            .map_err(drop)
    }) {
        let _ = client.read_server_flight(data);
    }
}

/// Server lists: `data` as a signed text, and `data` as a body signed with
/// the fuzz key (so the body parser is reached past the signature check).
/// A body that verifies must sign back to a list that verifies equal.
pub fn server_list(data: &[u8]) {
    use crate::server_list::{public_key, sign, sign_body, verify, verify_signature};
    const SECRET: [u8; 32] = [0x5a; 32];
    let public = public_key(&SECRET);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = verify(text, &public, 1_800_000_000, Some(5));
    }
    if data.len() > crate::server_list::MAX_TEXT {
        return;
    }
    if let Ok(list) = verify_signature(&sign_body(data, &SECRET), &public) {
        assert!(!list.endpoints.is_empty());
        let again = sign(&list, &SECRET).expect("a verified list signs again");
        assert_eq!(verify_signature(&again, &public).as_ref(), Ok(&list));
        let _ = list.check(1_800_000_000, Some(5));
    }
}

/// Lane frames, the session records a braid carries, and the braid:
/// openings, and records on four lanes in any order (the peer is
/// authenticated but may be buggy or hostile): never a panic, and the
/// buffers stay within the window.
pub fn tunnel_lanes(data: &[u8]) {
    use crate::tunnel::lanes::{
        lane_frames, opening, Braid, InnerReader, LaneFrame, INNER_BUFFER, WINDOW,
    };
    use crate::tunnel::mux::Role;
    let _ = opening(data);
    // The session's records in a braid stream: cut whole, never past the
    // buffer, whatever the length headers say.
    let mut inner = InnerReader::new();
    let mut pending = data;
    loop {
        let n = inner.feed(pending);
        pending = &pending[n..];
        let mut took = false;
        while let Ok(Some(pt)) = inner.next_record() {
            let _ = crate::tunnel::frame::frames(pt).count();
            took = true;
        }
        assert!(inner.buffered() <= INNER_BUFFER);
        if !took && (n == 0 || pending.is_empty()) {
            break;
        }
    }
    for frame in lane_frames(data) {
        let Ok(frame) = frame else { break };
        let mut again = Vec::new();
        frame.encode(&mut again);
        assert_eq!(LaneFrame::decode(&again).map(|(f, _)| f), Ok(frame));
    }
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let role = if head & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let mut braid = Braid::new(role);
    for lane in 0..4 {
        let budget = (head & 2 != 0).then_some(2048 + 1000 * lane);
        braid.add_lane(lane, budget);
    }
    braid.write(&vec![0x17; usize::from(head >> 2) * 300]);
    let mut sink = [0u8; 4096];
    while let Some((&op, tail)) = rest.split_first() {
        let len = usize::from(op >> 3).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        let lane = u32::from(op & 3);
        match op & 4 {
            0 => {
                let _ = braid.receive(lane, chunk);
            }
            _ => {
                let _ = braid.next_record(lane, op & 8 != 0, u32::from(op));
                braid.read(&mut sink);
                if op & 16 != 0 {
                    braid.remove_lane(lane);
                    braid.add_lane(lane + 4, None);
                }
            }
        }
        assert!(braid.unacked() <= WINDOW);
        assert!(braid.readable() <= WINDOW);
    }
}

/// HTTP/1.1: the head bound, the request line, both sides of the WebSocket
/// upgrade, response bodies (with and without the end of input), chunked
/// decoding and dates, all on the same bytes.
pub fn http1(data: &[u8]) {
    use crate::http1::{self, body, date, websocket, Head};
    const LIMIT: usize = 512;
    match http1::find_head(data, LIMIT) {
        Head::Complete { len } => {
            assert!(len <= LIMIT && len <= data.len());
            assert_eq!(&data[len - 4..len], b"\r\n\r\n");
        }
        Head::TooLarge => assert!(data.len() >= LIMIT),
        Head::NeedMore => assert!(data.len() < LIMIT),
    }
    if let Ok(line) = http1::request_line(data) {
        assert!(line.target.starts_with(line.path()));
    }
    if let Ok(status) = http1::status_line(data) {
        assert!((0..1000).contains(&status.code));
    }
    let _ = websocket::upgrade_request(data, "/p", "x-real-ip");
    let _ = websocket::check_upgrade_response(data, "dGhlIHNhbXBsZSBub25jZQ==");
    for eof in [false, true] {
        if let Ok(Some(b)) = body::response_body(data, eof, LIMIT) {
            assert!(b.len() <= LIMIT);
        }
    }
    if let Ok(Some(b)) = body::dechunk(data, LIMIT) {
        assert!(b.len() <= LIMIT);
    }
    let text = String::from_utf8_lossy(data);
    if let Some(t) = date::parse(&text) {
        assert_eq!(date::parse(&date::format(t)), Some(t));
    }
}
