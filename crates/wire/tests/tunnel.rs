//! The samizdat transport handshake, records and mux, end to end in memory.

use wire::browser::BuiltHello;
use wire::faketls::client::{build_hello, HelloShape};
use wire::faketls::CCS_RECORD;
use wire::tunnel::handshake::{
    accept, ClientHandshake, Progress, Reject, ServerKey, UserCredential,
};
use wire::tunnel::{locate, Established, FlightShape};

const NOW: u64 = 1_790_000_000;
const SECRET: [u8; 16] = *b"tunnel-user-key!";

/// A deterministic fill (xorshift), so failures reproduce.
fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
    wire::testing::seeded_fill(seed)
}

/// A Chrome-like hello with every handshake slot zeroed.
fn template() -> Vec<u8> {
    let mut rec = build_hello(
        &[0; 16],
        "cover.example",
        0,
        HelloShape::PostQuantum,
        &mut rng(5),
    );
    let at = locate(&rec).unwrap();
    for slot in at.slots() {
        rec[slot].fill(0);
    }
    rec
}

fn server_key() -> ServerKey {
    ServerKey::from_secret([0x42; 32])
}

fn lookup(cred: &UserCredential) -> impl Fn(&[u8; 8]) -> Option<(usize, [u8; 32])> + '_ {
    move |id| (*id == cred.user_id()).then(|| (7, cred.auth_key()))
}

fn client_hello(seed: u64) -> (ClientHandshake, Vec<u8>) {
    let cred = UserCredential::from_secret(&SECRET);
    ClientHandshake::start(
        &BuiltHello::from_record(template()).unwrap(),
        &server_key().public(),
        &cred,
        NOW,
        &mut rng(seed),
    )
    .unwrap()
}

/// Runs a whole handshake and returns (client, server) transport keys.
fn handshake(shape: &FlightShape) -> (Established, Established, Vec<u8>, Vec<u8>) {
    let cred = UserCredential::from_secret(&SECRET);
    let (mut client, hello) = client_hello(1);
    let acc = accept(&hello, &server_key(), lookup(&cred), NOW + 3, 60).unwrap();
    assert_eq!(acc.user, 7);
    assert_eq!(acc.client_time, NOW);
    let at = locate(&hello).unwrap();
    assert_eq!(acc.replay_key[..], hello[at.x25519..at.x25519 + 32]);
    let (flight, server) = acc.respond(shape, &mut rng(2));
    // Byte by byte: NeedMore until the last byte.
    for cut in [0, 1, 5, 50, flight.len() - 1] {
        assert!(matches!(
            client.read_server_flight(&flight[..cut]).unwrap(),
            Progress::NeedMore
        ));
    }
    let mut with_extra = flight.clone();
    with_extra.extend_from_slice(b"after");
    let Progress::Done {
        consumed,
        established,
        reply,
    } = client.read_server_flight(&with_extra).unwrap()
    else {
        panic!("flight incomplete")
    };
    assert_eq!(consumed, flight.len());
    (established, server, flight, reply)
}

#[test]
fn handshake_roundtrip_and_transport() {
    let (client, server, _, reply) = handshake(&FlightShape::default());
    let (mut c_seal, mut c_open) = client.into_split();
    let (mut s_seal, mut s_open) = server.into_split();
    // The server's opener checks the client's confirmation first.
    assert_eq!(s_open.feed(&reply), reply.len());
    assert!(s_open.open_next().unwrap().is_none());
    let mut wire = Vec::new();
    c_seal.seal_record(b"hello server", &mut wire).unwrap();
    s_open.feed(&wire);
    assert_eq!(s_open.open_next().unwrap(), Some(&b"hello server"[..]));
    wire.clear();
    s_seal.seal_record(b"hello client", &mut wire).unwrap();
    c_open.feed(&wire);
    assert_eq!(c_open.open_next().unwrap(), Some(&b"hello client"[..]));
}

#[test]
fn missing_confirmation_is_rejected() {
    let (client, server, _, _) = handshake(&FlightShape::default());
    let (mut c_seal, _) = client.into_split();
    let (_, mut s_open) = server.into_split();
    let mut wire = Vec::new();
    c_seal.seal_record(&[0; 37], &mut wire).unwrap();
    s_open.feed(&wire);
    assert!(s_open.open_next().is_err());
}

#[test]
fn server_flight_has_the_shape_sizes_and_reply_is_browser_sized() {
    let shape = FlightShape {
        records: vec![32, 2615, 281, 53],
        ..FlightShape::default()
    };
    let (_, _, flight, reply) = handshake(&shape);
    // ServerHello, CCS, then exactly the shape.
    assert_eq!(&flight[..3], &[0x16, 0x03, 0x03]);
    let sh = 5 + u16::from_be_bytes([flight[3], flight[4]]) as usize;
    assert_eq!(sh, 5 + 4 + 2 + 32 + 1 + 32 + 2 + 1 + 2 + 6 + 40);
    assert_eq!(&flight[sh..sh + 6], &CCS_RECORD);
    let mut at = sh + 6;
    let mut sizes = Vec::new();
    while at < flight.len() {
        assert_eq!(&flight[at..at + 3], &[0x17, 0x03, 0x03]);
        let n = u16::from_be_bytes([flight[at + 3], flight[at + 4]]) as usize;
        sizes.push(n as u16);
        at += 5 + n;
    }
    assert_eq!(at, flight.len());
    assert_eq!(sizes, shape.records);
    // Client reply: CCS (6 bytes) and a 58-byte Finished-sized record.
    assert_eq!(reply.len(), 6 + 58);
    assert_eq!(&reply[..6], &CCS_RECORD);
    assert_eq!(&reply[6..11], &[0x17, 0x03, 0x03, 0x00, 53]);
}

#[test]
fn sha384_suite_gets_a_69_byte_finished() {
    let shape = FlightShape {
        cipher_suite: 0x1302,
        ..FlightShape::default()
    };
    let (_, _, flight, reply) = handshake(&shape);
    assert_eq!(&flight[76..78], &[0x13, 0x02]);
    assert_eq!(reply.len(), 6 + 5 + 69);
}

#[test]
fn unoffered_suite_falls_back_to_the_clients_first() {
    let shape = FlightShape {
        cipher_suite: 0x1304,
        ..FlightShape::default()
    };
    let (_, _, flight, _) = handshake(&shape);
    assert_eq!(&flight[76..78], &[0x13, 0x01]);
}

#[test]
fn every_bit_flip_in_the_hello_fails() {
    let cred = UserCredential::from_secret(&SECRET);
    let (_, hello) = client_hello(9);
    let key = server_key();
    assert!(accept(&hello, &key, lookup(&cred), NOW, 60).is_ok());
    for i in 0..hello.len() {
        for bit in 0..8 {
            let mut h = hello.clone();
            h[i] ^= 1 << bit;
            assert!(
                accept(&h, &key, lookup(&cred), NOW, 60).is_err(),
                "flip at byte {i} bit {bit} accepted"
            );
        }
    }
}

#[test]
fn rejects_name_the_cause() {
    let cred = UserCredential::from_secret(&SECRET);
    let (_, hello) = client_hello(3);
    let key = server_key();
    let other = ServerKey::from_secret([0x43; 32]);
    assert_eq!(
        accept(&hello, &other, lookup(&cred), NOW, 60).unwrap_err(),
        Reject::Untagged
    );
    assert_eq!(
        accept(&hello, &key, |_| None, NOW, 60).unwrap_err(),
        Reject::UnknownUser
    );
    let wrong = UserCredential::from_secret(&[1; 16]);
    assert_eq!(
        accept(&hello, &key, |_| Some((0, wrong.auth_key())), NOW, 60).unwrap_err(),
        Reject::BadMac
    );
    assert_eq!(
        accept(&hello, &key, lookup(&cred), NOW + 61, 60).unwrap_err(),
        Reject::Stale
    );
    assert_eq!(
        accept(&hello, &key, lookup(&cred), NOW - 61, 60).unwrap_err(),
        Reject::Stale
    );
    assert!(matches!(
        accept(&hello[..100], &key, lookup(&cred), NOW, 60).unwrap_err(),
        Reject::Malformed(_)
    ));
}

#[test]
fn tampered_server_flight_is_not_our_server() {
    let cred = UserCredential::from_secret(&SECRET);
    let (mut client, hello) = client_hello(1);
    let acc = accept(&hello, &server_key(), lookup(&cred), NOW, 60).unwrap();
    let (mut flight, _) = acc.respond(&FlightShape::default(), &mut rng(2));
    flight[20] ^= 1; // inside the ServerHello random (Noise ciphertext)
    assert!(client.read_server_flight(&flight).is_err());
}

#[test]
fn secrets_stay_out_of_debug() {
    let cred = UserCredential::from_secret(&SECRET);
    let text = format!("{cred:?} {:?}", server_key());
    assert!(!text.contains(&hex::encode(cred.auth_key())));
    assert!(!text.contains("4242"));
}

// === frames and the stream table ===

mod mux {
    use proptest::prelude::*;
    use std::net::{IpAddr, SocketAddr};
    use wire::obfuscated2::Tag;
    use wire::tunnel::frame::{frames, Frame, FrameError, Status, MAX_BODY};
    use wire::tunnel::mux::{
        Event, Mux, MuxConfig, OpenLimit, ProtocolError, Role, INITIAL_WINDOW,
    };
    use wire::tunnel::Destination;

    fn dest_strategy() -> impl Strategy<Value = Destination> {
        prop_oneof![
            ("[a-z0-9.-]{1,255}", any::<u16>())
                .prop_map(|(name, port)| Destination::Host { name, port }),
            (any::<IpAddr>(), any::<u16>())
                .prop_map(|(ip, port)| Destination::Addr(SocketAddr::new(ip, port))),
            (any::<i16>(), 0..3usize).prop_map(|(dc, t)| Destination::Telegram {
                dc,
                tag: [Tag::Abridged, Tag::Intermediate, Tag::Padded][t],
            }),
        ]
    }

    fn owned_frame() -> impl Strategy<Value = (u8, u32, u64, Destination, Vec<u8>)> {
        (
            1u8..=9,
            1u32..,
            any::<u64>(),
            dest_strategy(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
    }

    fn build<'a>(kind: u8, stream: u32, v: u64, dest: &Destination, body: &'a [u8]) -> Frame<'a> {
        match kind {
            1 => Frame::Open {
                stream,
                dest: dest.clone(),
                first: body,
            },
            2 => Frame::Reply {
                stream,
                status: Status::from_code(v as u8 % 8),
            },
            3 if !body.is_empty() => Frame::Data { stream, data: body },
            4 => Frame::Window {
                stream,
                credit: v as u32,
            },
            5 => Frame::Fin { stream },
            6 => Frame::Reset { stream },
            7 => Frame::Ping(v),
            8 => Frame::Pong(v),
            _ => Frame::Pad(body.len()),
        }
    }

    proptest! {
        #[test]
        fn frames_roundtrip(list in proptest::collection::vec(owned_frame(), 1..8)) {
            let built: Vec<Frame<'_>> = list
                .iter()
                .map(|(k, s, v, d, b)| build(*k, *s, *v, d, b))
                .collect();
            let mut buf = Vec::new();
            for f in &built {
                let before = buf.len();
                f.encode(&mut buf);
                prop_assert_eq!(buf.len() - before, f.encoded_len(), "{:?}", f);
            }
            let back: Vec<Frame<'_>> = frames(&buf).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(back, built);
            // Every strict prefix ends in a truncated frame or parses fewer.
            for cut in 0..buf.len() {
                let parsed: Result<Vec<_>, _> = frames(&buf[..cut]).collect();
                if let Ok(p) = parsed {
                    prop_assert!(p.len() < list.len());
                }
            }
        }

        #[test]
        fn destination_roundtrip(d in dest_strategy()) {
            let mut buf = Vec::new();
            d.encode(&mut buf);
            prop_assert_eq!(buf.len(), d.encoded_len());
            prop_assert_eq!(Destination::decode(&buf).unwrap(), (d, buf.len()));
        }
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(
            Frame::decode(&[3, 0, 0, 0, 1, 0]).unwrap_err(),
            FrameError::Truncated
        );
        assert_eq!(
            Frame::decode(&[3, 0, 0, 0, 1, 0, 5, 1]).unwrap_err(),
            FrameError::Truncated
        );
        assert_eq!(
            Frame::decode(&[0x42, 0, 0, 0, 1, 0, 0]).unwrap_err(),
            FrameError::UnknownType(0x42)
        );
        assert_eq!(
            Frame::decode(&[7, 0, 0, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            FrameError::BadStream(7)
        );
        assert_eq!(
            Frame::decode(&[3, 0, 0, 0, 0, 0, 1, 9]).unwrap_err(),
            FrameError::BadStream(3)
        );
        assert_eq!(
            Frame::decode(&[4, 0, 0, 0, 1, 0, 3, 0, 0, 1]).unwrap_err(),
            FrameError::BadLength(4)
        );
        assert!(Frame::decode(&[1, 0, 0, 0, 1, 0, 1, 99]).is_err());
    }

    fn open(stream: u32, first: &[u8]) -> Frame<'_> {
        Frame::Open {
            stream,
            dest: Destination::Host {
                name: "x.test".into(),
                port: 443,
            },
            first,
        }
    }

    fn server() -> Mux {
        Mux::new(
            Role::Server,
            MuxConfig {
                window: INITIAL_WINDOW,
                max_streams: 4,
            },
        )
    }

    #[test]
    fn window_violations_are_protocol_errors() {
        let mut m = server();
        let big = vec![0u8; MAX_BODY - 20];
        assert!(matches!(
            m.handle(open(1, &big)).unwrap(),
            Event::Opened { .. }
        ));
        let mut sent = big.len();
        let chunk = vec![1u8; 16_000];
        while sent + chunk.len() <= INITIAL_WINDOW as usize {
            m.handle(Frame::Data {
                stream: 1,
                data: &chunk,
            })
            .unwrap();
            sent += chunk.len();
        }
        let rest = vec![2u8; INITIAL_WINDOW as usize - sent];
        if !rest.is_empty() {
            m.handle(Frame::Data {
                stream: 1,
                data: &rest,
            })
            .unwrap();
        }
        assert_eq!(
            m.handle(Frame::Data {
                stream: 1,
                data: b"!"
            }),
            Err(ProtocolError::WindowExceeded(1))
        );
        // Consuming grants credit back, and then data is fine again.
        let mut m = server();
        m.handle(open(1, b"")).unwrap();
        let quarter = INITIAL_WINDOW as usize / 4;
        assert_eq!(m.consumed(1, quarter - 1), None);
        assert_eq!(m.consumed(1, 1), Some(quarter as u32));
        // A peer granting absurd credit is an error too.
        m.reply(1, Status::Ok);
        for _ in 0..7 {
            m.handle(Frame::Window {
                stream: 1,
                credit: u32::MAX / 2,
            })
            .ok();
        }
        assert_eq!(
            m.handle(Frame::Window {
                stream: 1,
                credit: u32::MAX
            }),
            Err(ProtocolError::WindowOverflow(1))
        );
    }

    #[test]
    fn too_many_streams_is_a_protocol_error() {
        let mut m = server();
        for id in [1, 3, 5, 7] {
            m.handle(open(id, b"")).unwrap();
        }
        assert_eq!(m.handle(open(9, b"")), Err(ProtocolError::TooManyStreams));
        // A stream that left frees its place.
        let mut m = server();
        for id in [1, 3, 5, 7] {
            m.handle(open(id, b"")).unwrap();
        }
        m.handle(Frame::Reset { stream: 3 }).unwrap();
        assert!(m.handle(open(9, b"")).is_ok());
        // And our own opens stop at the limit.
        let mut c = Mux::new(
            Role::Client,
            MuxConfig {
                window: INITIAL_WINDOW,
                max_streams: 2,
            },
        );
        assert_eq!(c.open(0), Ok(1));
        assert_eq!(c.open(0), Ok(3));
        assert_eq!(c.open(0), Err(OpenLimit::TooManyStreams));
    }

    #[test]
    fn frames_on_unknown_streams_and_bad_opens_are_rejected() {
        let mut m = server();
        assert_eq!(
            m.handle(Frame::Data {
                stream: 5,
                data: b"x"
            }),
            Err(ProtocolError::UnknownStream(5))
        );
        assert_eq!(
            m.handle(Frame::Fin { stream: 1 }),
            Err(ProtocolError::UnknownStream(1))
        );
        assert_eq!(m.handle(open(2, b"")), Err(ProtocolError::BadOpen(2)));
        m.handle(open(5, b"")).unwrap();
        assert_eq!(m.handle(open(3, b"")), Err(ProtocolError::BadOpen(3)));
        assert_eq!(m.handle(open(5, b"")), Err(ProtocolError::BadOpen(5)));
        // Frames for a stream that already left are ignored, not errors.
        m.handle(Frame::Reset { stream: 5 }).unwrap();
        assert_eq!(
            m.handle(Frame::Data {
                stream: 5,
                data: b"x"
            }),
            Ok(Event::None)
        );
        // A client never accepts opens; a reply to nothing is an error.
        let mut c = Mux::new(Role::Client, MuxConfig::default());
        assert_eq!(c.handle(open(1, b"")), Err(ProtocolError::BadOpen(1)));
        assert_eq!(
            c.handle(Frame::Reply {
                stream: 1,
                status: Status::Ok
            }),
            Err(ProtocolError::UnknownStream(1))
        );
    }

    #[test]
    fn stream_states_allow_the_right_frames() {
        let mut c = Mux::new(Role::Client, MuxConfig::default());
        let id = c.open(10).unwrap();
        assert_eq!(c.send_credit(id), INITIAL_WINDOW as u64 - 10);
        // No data before the reply.
        assert_eq!(
            c.handle(Frame::Data {
                stream: id,
                data: b"x"
            }),
            Err(ProtocolError::BadState(id))
        );
        c.handle(Frame::Reply {
            stream: id,
            status: Status::Ok,
        })
        .unwrap();
        assert_eq!(
            c.handle(Frame::Reply {
                stream: id,
                status: Status::Ok
            }),
            Err(ProtocolError::BadState(id))
        );
        c.handle(Frame::Data {
            stream: id,
            data: b"x",
        })
        .unwrap();
        c.handle(Frame::Fin { stream: id }).unwrap();
        assert_eq!(
            c.handle(Frame::Data {
                stream: id,
                data: b"x"
            }),
            Err(ProtocolError::BadState(id))
        );
        assert!(c.contains(id));
        assert!(c.fin(id));
        assert!(!c.contains(id), "both FINs retire the stream");
        // A refused open leaves the table.
        let id = c.open(0).unwrap();
        c.handle(Frame::Reply {
            stream: id,
            status: Status::ConnectionRefused,
        })
        .unwrap();
        assert_eq!(c.active(), 0);
    }

    /// An operation of the honest-peers property test.
    #[derive(Debug, Clone)]
    enum Op {
        Open,
        /// Side (0 client, 1 server), stream pick, bytes.
        Send(u8, usize, usize),
        /// Side, stream pick, bytes the application reads.
        Read(u8, usize, usize),
        Fin(u8, usize),
        Reset(u8, usize),
        /// Deliver up to n queued frames each way.
        Deliver(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Open),
            (0u8..2, any::<usize>(), 1usize..100_000).prop_map(|(s, i, n)| Op::Send(s, i, n)),
            (0u8..2, any::<usize>(), 1usize..100_000).prop_map(|(s, i, n)| Op::Read(s, i, n)),
            (0u8..2, any::<usize>()).prop_map(|(s, i)| Op::Fin(s, i)),
            (0u8..2, any::<usize>()).prop_map(|(s, i)| Op::Reset(s, i)),
            (1usize..20).prop_map(Op::Deliver),
        ]
    }

    /// What one side's application and driver know of a stream.
    #[derive(Default, Debug)]
    struct App {
        unread: usize,
        fin_sent: bool,
    }

    proptest! {
        /// Two honest ends that follow the table's answers never see a
        /// protocol error, whatever the interleaving; windows hold.
        #[test]
        fn honest_peers_never_break_the_protocol(ops in proptest::collection::vec(op(), 1..200)) {
            use std::collections::{BTreeMap, VecDeque};
            let cfg = MuxConfig { window: INITIAL_WINDOW, max_streams: 8 };
            let mut mux = [Mux::new(Role::Client, cfg), Mux::new(Role::Server, cfg)];
            let mut apps: [BTreeMap<u32, App>; 2] = Default::default();
            // Frames in flight, owned: (kind, stream, n)
            let mut wire: [VecDeque<(u8, u32, usize)>; 2] = Default::default();
            let payload = vec![7u8; 100_000];
            let dest = Destination::Host { name: "x".into(), port: 1 };
            for op in ops {
                match op {
                    Op::Open => {
                        if let Ok(id) = mux[0].open(10) {
                            apps[0].insert(id, App::default());
                            wire[0].push_back((1, id, 10));
                        }
                    }
                    Op::Send(side, pick, n) | Op::Read(side, pick, n) if apps[side as usize].is_empty() => {
                        let _ = (side, pick, n);
                    }
                    Op::Send(side, pick, n) => {
                        let side = side as usize;
                        let id = *apps[side].keys().nth(pick % apps[side].len()).unwrap();
                        let n = n.min(mux[side].send_credit(id) as usize).min(MAX_BODY);
                        if n > 0 && !apps[side][&id].fin_sent {
                            mux[side].sent(id, n);
                            wire[side].push_back((3, id, n));
                        }
                    }
                    Op::Read(side, pick, n) => {
                        let side = side as usize;
                        let id = *apps[side].keys().nth(pick % apps[side].len()).unwrap();
                        let app = apps[side].get_mut(&id).unwrap();
                        let n = n.min(app.unread);
                        app.unread -= n;
                        if let Some(credit) = mux[side].consumed(id, n) {
                            wire[side].push_back((4, id, credit as usize));
                        }
                    }
                    Op::Fin(side, pick) | Op::Reset(side, pick) if apps[side as usize].is_empty() => {
                        let _ = (side, pick);
                    }
                    Op::Fin(side, pick) => {
                        let side = side as usize;
                        let id = *apps[side].keys().nth(pick % apps[side].len()).unwrap();
                        if mux[side].fin(id) {
                            apps[side].get_mut(&id).unwrap().fin_sent = true;
                            wire[side].push_back((5, id, 0));
                        }
                    }
                    Op::Reset(side, pick) => {
                        let side = side as usize;
                        let id = *apps[side].keys().nth(pick % apps[side].len()).unwrap();
                        apps[side].remove(&id);
                        if mux[side].reset(id) {
                            wire[side].push_back((6, id, 0));
                        }
                    }
                    Op::Deliver(n) => {
                        for from in 0..2 {
                            let to = 1 - from;
                            for _ in 0..n {
                                let Some((kind, id, len)) = wire[from].pop_front() else { break };
                                let frame = match kind {
                                    1 => Frame::Open { stream: id, dest: dest.clone(), first: &payload[..len] },
                                    3 => Frame::Data { stream: id, data: &payload[..len] },
                                    4 => Frame::Window { stream: id, credit: len as u32 },
                                    5 => Frame::Fin { stream: id },
                                    6 => Frame::Reset { stream: id },
                                    _ => Frame::Reply { stream: id, status: Status::Ok },
                                };
                                match mux[to].handle(frame) {
                                    Ok(Event::Opened { stream, first, .. }) => {
                                        prop_assert!(mux[to].reply(stream, Status::Ok));
                                        wire[to].push_back((2, stream, 0));
                                        apps[to].insert(stream, App { unread: first.len(), fin_sent: false });
                                    }
                                    Ok(Event::Data { stream, data }) => {
                                        if let Some(app) = apps[to].get_mut(&stream) {
                                            app.unread += data.len();
                                            prop_assert!(app.unread <= INITIAL_WINDOW as usize);
                                        }
                                    }
                                    Ok(Event::Reset { stream }) => {
                                        apps[to].remove(&stream);
                                    }
                                    Ok(_) => {}
                                    Err(e) => prop_assert!(false, "honest peer broke the protocol: {e}"),
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn larger_windows_are_granted_at_open() {
        let mut m = Mux::new(
            Role::Server,
            MuxConfig {
                window: 4 * INITIAL_WINDOW,
                max_streams: 8,
            },
        );
        m.handle(open(1, b"")).unwrap();
        assert_eq!(m.consumed(1, 0), Some(3 * INITIAL_WINDOW));
        assert_eq!(m.consumed(1, 0), None);
    }
}

/// Writes the committed seed corpus of the tunnel fuzz targets:
/// `cargo test -p samizdat-wire --test tunnel -- --ignored write_fuzz_seeds`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    use wire::fuzzing::{FUZZ_KEY, TUNNEL_NOW, TUNNEL_SERVER_KEY};
    use wire::tunnel::frame::{Frame, Status};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let key = ServerKey::from_secret(TUNNEL_SERVER_KEY);
    let cred = UserCredential::from_secret(&FUZZ_KEY);
    let dir = root.join("tunnel_accept");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, shape) in [
        ("hello_pq", HelloShape::PostQuantum),
        ("hello_classic", HelloShape::Classic517),
    ] {
        let mut t = build_hello(&[0; 16], "cover.example", 0, shape, &mut rng(11));
        let at = locate(&t).unwrap();
        for slot in at.slots() {
            t[slot].fill(0);
        }
        let t = BuiltHello::from_record(t).unwrap();
        let (_, hello) =
            ClientHandshake::start(&t, &key.public(), &cred, TUNNEL_NOW, &mut rng(12)).unwrap();
        std::fs::write(dir.join(name), &hello).unwrap();
        if shape == HelloShape::PostQuantum {
            let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
            let acc = accept(&hello, &key, lookup, TUNNEL_NOW, 60).unwrap();
            let (flight, _) = acc.respond(&FlightShape::default(), &mut rng(13));
            std::fs::write(dir.join("server_flight"), &flight).unwrap();
        }
    }
    let dir = root.join("tunnel_frames");
    std::fs::create_dir_all(&dir).unwrap();
    let dest = wire::tunnel::Destination::Host {
        name: "example.org".into(),
        port: 443,
    };
    let mut server = vec![0u8];
    for f in [
        Frame::Open {
            stream: 1,
            dest: dest.clone(),
            first: b"GET / HTTP/1.1\r\n\r\n",
        },
        Frame::Data {
            stream: 1,
            data: b"more",
        },
        Frame::Window {
            stream: 1,
            credit: 65536,
        },
        Frame::Ping(7),
        Frame::Open {
            stream: 3,
            dest,
            first: b"",
        },
        Frame::Fin { stream: 1 },
        Frame::Reset { stream: 3 },
        Frame::Pad(20),
    ] {
        f.encode(&mut server);
    }
    std::fs::write(dir.join("server_session"), &server).unwrap();
    let mut client = vec![0x21u8];
    for f in [
        Frame::Reply {
            stream: 1,
            status: Status::Ok,
        },
        Frame::Data {
            stream: 1,
            data: b"HTTP/1.1 200 OK\r\n",
        },
        Frame::Window {
            stream: 1,
            credit: 1 << 20,
        },
        Frame::Reply {
            stream: 3,
            status: Status::ConnectionRefused,
        },
        Frame::Pong(7),
        Frame::Fin { stream: 1 },
    ] {
        f.encode(&mut client);
    }
    std::fs::write(dir.join("client_session"), &client).unwrap();
}
