//! Lanes: one session's byte stream carried over many connections.
//!
//! A censor that cuts or freezes single connections (the 2025 "16 KiB
//! freeze", an endpoint blocked mid-download) would kill every stream of a
//! session bound to one connection. So a session runs over a *braid*: a
//! reliable, ordered byte stream whose pieces travel on any of several
//! *lanes* — transport connections, each with its own handshake and record
//! keys — and are acknowledged, reordered and, when a lane dies, resent on
//! another. The inner session (mux, streams) runs over the braid with
//! its records unsealed (`len u16 | frames`, module `inner`): each lane
//! record is sealed with its lane's keys, so every byte the session sends
//! is sealed exactly once.
//!
//! The server may be told a *budget* per lane: the most record bytes it may
//! send down that lane. It fills a lane up to its budget, marks the last
//! record FULL, and moves on to the next lane the client joined, so that no
//! connection ever carries more than the censor lets through.
//!
//! Lane frames, inside each lane's record plaintexts: `type u8 | len u16 BE
//! | body`. The first frame of a lane is NEW (first lane of a session) or
//! JOIN (a later one). `docs/transport.md` has the table and the rules.
//!
//! [`Braid`] is the sans-io state of one end: send buffer with go-back-N
//! retransmission, reorder buffer, acknowledgements, lanes and budgets.
//!
//! | module | job |
//! |---|---|
//! | `frame` | the lane frames ([`LaneFrame`]): decode, encode, [`lane_frames`] |
//! | `opening` | a lane's first frame ([`Opening`]) and the [`SessionSecret`] |
//! | `braid` | [`Braid`]: the state machine of one end |
//! | `inner` | the session's unsealed records in the braid stream ([`InnerReader`]) |

use super::record::{HEADER_LEN, TAG_LEN};
use crate::faketls::MAX_PLAINTEXT;

mod braid;
mod frame;
mod inner;
mod opening;

pub use braid::{Braid, Received};
pub use frame::{lane_frames, LaneError, LaneFrame};
pub use inner::{encode_inner, finish_inner, InnerError, InnerReader, INNER_BUFFER};
pub use opening::{encode_opening, opening, Opening, SessionSecret, Token};

/// First frame of a session's first lane: the session secret, the lane's
/// id and budget.
pub const NEW: u8 = 1;
/// First frame of a later lane: the session token, the lane's id and
/// budget, and how much the client has received.
pub const JOIN: u8 = 2;
/// A piece of the braid byte stream: offset u64, bytes.
pub const SEG: u8 = 3;
/// Received (contiguously) and consumed offsets, u64 each.
pub const ACK: u8 = 4;
/// Server → client: this lane reached its budget; nothing more comes on it.
pub const FULL: u8 = 5;
/// Client → server: lane u32 is dead; resend from received u64.
pub const REWIND: u8 = 6;
/// Lane liveness probe (u64), answered by PONG on the same lane.
pub const PING: u8 = 7;
/// Answer to a PING.
pub const PONG: u8 = 8;
/// Padding, ignored.
pub const PAD: u8 = 9;

/// Lane frame header length.
pub const LANE_HEADER: usize = 3;
/// Most bytes in flight per direction: sent and not yet consumed by the
/// receiver. Bounds the send buffer and the receiver's buffers.
pub const WINDOW: usize = 1 << 20;
/// Most lanes one braid keeps at once.
pub const MAX_LANES: usize = 16;
/// Record bytes around a plaintext: header and tag.
pub const RECORD_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// An acknowledgement goes out at once after this many new bytes.
pub const ACK_EVERY: u64 = 32 * 1024;
/// Header of the session's records in the braid stream: their length,
/// u16 BE (they carry no seal of their own: the lane records do).
pub const INNER_HEADER: usize = 2;
/// Largest record plaintext of the session a braid carries: one of its
/// records then fits a lane record whole, with room for an ACK and a PONG.
/// With its header it is exactly as long as the sealed record (5-byte
/// header, 16-byte tag, 16,320 bytes of plaintext) the braid carried
/// before session records lost their own seal, so full lane records keep
/// their size on the wire.
pub const INNER_PLAINTEXT: usize = MAX_PLAINTEXT - 64 + RECORD_OVERHEAD - INNER_HEADER;
/// The smallest budget a lane may be given (smaller ones are raised).
pub const MIN_BUDGET: u32 = 2048;
/// What one out-of-order piece costs besides its bytes' allocation: its
/// map entry, its vector and the allocator's rounding (measured ~96 B).
pub const PIECE_COST: usize = 96;
/// Most memory the reorder buffer may hold, pieces charged with
/// [`PIECE_COST`] plus their allocation: a peer that cuts the window into
/// tiny pieces is refused ([`LaneError::Fragmented`]) instead of costing
/// ~100 bytes per byte. Whole pieces (even merged, whose vectors may have
/// grown to twice their length) never reach it.
pub const AHEAD_LIMIT: usize = 3 * WINDOW;

const SEG_HEADER: usize = LANE_HEADER + 8;
const ACK_LEN: usize = LANE_HEADER + 16;
const PONG_LEN: usize = LANE_HEADER + 8;
const MAX_PONGS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::mux::Role;

    /// `n` records' worth of stream, as the inner session writes it.
    fn records(n: usize, body: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend_from_slice(&(body as u16).to_be_bytes());
            out.extend((0..body).map(|j| (i * 31 + j) as u8));
        }
        out
    }

    fn pump(from: &mut Braid, to: &mut Braid, lane: u32, drop_all: bool) -> usize {
        let mut moved = 0;
        while let Some(pt) = from.next_record(lane, true, 7) {
            moved += pt.len() + RECORD_OVERHEAD;
            if !drop_all {
                to.receive(lane, &pt).unwrap();
            }
        }
        moved
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            LaneFrame::New {
                secret: [7; 32],
                lane: 1,
                budget: 9000,
            },
            LaneFrame::Join {
                token: [3; 16],
                lane: 2,
                budget: 0,
                received: 77,
            },
            LaneFrame::Seg {
                offset: 5,
                data: b"hello",
            },
            LaneFrame::Ack {
                received: 10,
                consumed: 4,
            },
            LaneFrame::Full,
            LaneFrame::Rewind {
                lane: 3,
                received: 99,
            },
            LaneFrame::Ping(1),
            LaneFrame::Pong(2),
            LaneFrame::Pad,
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let back: Vec<_> = lane_frames(&buf).map(Result::unwrap).collect();
        assert_eq!(back, frames);
    }

    #[test]
    fn data_crosses_and_is_acknowledged() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        assert!(c.add_lane(0, None) && s.add_lane(0, None));
        let data = records(7, 16_000);
        assert_eq!(c.write(&data), data.len());
        pump(&mut c, &mut s, 0, false);
        let mut got = vec![0; data.len()];
        assert_eq!(s.read(&mut got), data.len());
        assert_eq!(got, data);
        pump(&mut s, &mut c, 0, false);
        assert_eq!(c.unacked(), 0);
    }

    #[test]
    fn a_budgeted_lane_fills_and_the_next_one_carries_on() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        for id in 0..3 {
            c.add_lane(id, None);
            s.add_lane(id, Some(8000));
        }
        let data = records(4, 4_998);
        assert_eq!(data.len(), 20_000);
        s.write(&data);
        let mut total = 0;
        for id in 0..3 {
            let sent = pump(&mut s, &mut c, id, false);
            assert!(sent <= 8000, "lane {id} carried {sent}");
            // 20,000 bytes fill two lanes of 8,000 and part of the third.
            assert_eq!(c.lane_full(id), id < 2, "lane {id}");
            total += c.readable();
            let mut sink = vec![0; c.readable()];
            c.read(&mut sink);
        }
        assert_eq!(total, 20_000);
    }

    #[test]
    fn a_dead_lane_is_resent_on_the_next() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        c.add_lane(0, None);
        s.add_lane(0, None);
        let data = records(5, 9_000);
        s.write(&data);
        // Lane 0 swallows everything.
        pump(&mut s, &mut c, 0, true);
        assert_eq!(c.readable(), 0);
        c.add_lane(1, None);
        s.add_lane(1, None);
        assert!(s.peer_received(c.received()).is_ok());
        s.remove_lane(0);
        c.remove_lane(0);
        pump(&mut s, &mut c, 1, false);
        let mut got = vec![0; data.len()];
        assert_eq!(c.read(&mut got), data.len());
        assert_eq!(got, data);
    }

    #[test]
    fn pieces_end_at_record_ends() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        c.add_lane(0, None);
        s.add_lane(0, None);
        // Records of 16,339 bytes of plaintext fit one lane record whole;
        // each lane record must carry exactly one.
        let data = records(6, INNER_PLAINTEXT);
        s.write(&data);
        let mut sizes = Vec::new();
        while let Some(pt) = s.next_record(0, false, 0) {
            for f in lane_frames(&pt) {
                if let LaneFrame::Seg { data, .. } = f.unwrap() {
                    sizes.push(data.len());
                }
            }
            c.receive(0, &pt).unwrap();
            // Acknowledge, as the client would.
            let ack = c.next_record(0, true, 0).unwrap();
            s.receive(0, &ack).unwrap();
        }
        assert_eq!(sizes, vec![INNER_HEADER + INNER_PLAINTEXT; 6]);
        // A half-written record waits while anything is in flight.
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        s.write(&data[..100]);
        assert!(
            s.next_record(0, false, 0).is_some(),
            "nothing in flight: sent"
        );
        s.write(&data[100..30_000]);
        let pt = s.next_record(0, false, 0).unwrap();
        let seg: usize = lane_frames(&pt)
            .filter_map(|f| match f.unwrap() {
                LaneFrame::Seg { data, .. } => Some(data.len()),
                _ => None,
            })
            .sum();
        assert_eq!(100 + seg, INNER_HEADER + INNER_PLAINTEXT);
        assert!(s.next_record(0, false, 0).is_none(), "the rest waits");
    }

    #[test]
    fn out_of_order_pieces_are_reassembled_and_bounded() {
        let mut c = Braid::new(Role::Client);
        c.add_lane(0, None);
        let mut rec = |off: u64, d: &[u8]| {
            let mut pt = Vec::new();
            LaneFrame::Seg {
                offset: off,
                data: d,
            }
            .encode(&mut pt);
            c.receive(0, &pt)
        };
        assert!(!rec(5, b"fghij").unwrap().readable);
        // Resent pieces cut elsewhere overlap the stored one: only the new
        // bytes are kept.
        assert!(!rec(3, b"defghijk").unwrap().readable);
        assert!(!rec(9, b"jk").unwrap().readable);
        assert!(rec(0, b"abcdefg").unwrap().readable);
        assert_eq!(rec(WINDOW as u64, b"x").unwrap_err(), LaneError::OutOfRange);
        let mut got = [0u8; 16];
        let n = c.read(&mut got);
        assert_eq!(&got[..n], b"abcdefghijk");
    }

    fn seg(off: u64, d: &[u8]) -> Vec<u8> {
        let mut pt = Vec::new();
        LaneFrame::Seg {
            offset: off,
            data: d,
        }
        .encode(&mut pt);
        pt
    }

    #[test]
    fn one_byte_pieces_cannot_make_the_reorder_buffer_cost_more_than_its_limit() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        // Byte 0 never comes; one byte at every odd offset of the window.
        let mut refused = None;
        for i in 0..(WINDOW as u64 / 2) {
            match s.receive(0, &seg(2 * i + 1, b"x")) {
                Ok(_) => assert!(s.ahead_charge() <= AHEAD_LIMIT + PIECE_COST + 8),
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        let (at, e) = refused.expect("a window of one-byte pieces is refused");
        assert_eq!(e, LaneError::Fragmented);
        // The limit, not the window, stopped it: about 3 MiB / 97 B.
        let most = (AHEAD_LIMIT / (PIECE_COST + 1)) as u64;
        assert!(at <= most + 1, "{at} pieces stored");
        assert!(at >= most / 2, "only {at} pieces stored");
    }

    #[test]
    fn pieces_filling_gaps_merge_into_one() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        for i in 0..1000u64 {
            s.receive(0, &seg(2 * i + 1, b"o")).unwrap();
        }
        assert!(s.ahead_charge() >= 1000 * (PIECE_COST + 1));
        // One piece over all the gaps: everything merges into one piece.
        s.receive(0, &seg(2, &[b'e'; 1998])).unwrap();
        assert!(s.ahead.len() <= 2, "adjacent pieces are merged");
        assert!(s.ahead_charge() < 4 * 2000 + PIECE_COST);
        let mut want = vec![b'e'; 2000];
        for i in 0..1000 {
            want[2 * i + 1] = b'o';
        }
        want[0] = b'z';
        assert!(s.receive(0, &seg(0, b"z")).unwrap().readable);
        let mut got = vec![0u8; 4096];
        let n = s.read(&mut got);
        assert_eq!(&got[..n], &want[..], "every byte once, in order");
        assert_eq!(s.ahead_charge(), 0);
    }

    #[test]
    // A generous wall-clock bound, far above the real cost, that only
    // quadratic work per piece would cross.
    #[allow(clippy::disallowed_methods)]
    fn one_byte_pieces_in_reverse_order_are_refused_quickly() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        let started = std::time::Instant::now();
        let mut refused = false;
        for i in (1..WINDOW as u64).rev() {
            if s.receive(0, &seg(i, b"r")).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a window of one-byte pieces is refused");
        assert!(s.ahead_charge() <= AHEAD_LIMIT + PIECE_COST + 8);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_window_of_whole_pieces_out_of_order_is_accepted() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        let piece = 16 * 1024 - 64;
        let n = WINDOW / piece;
        // Every piece but the first, in reverse order, then the first.
        for i in (1..n).rev() {
            let body = vec![(i % 251) as u8; piece];
            s.receive(0, &seg((i * piece) as u64, &body)).unwrap();
        }
        assert!(s.ahead_charge() <= AHEAD_LIMIT);
        assert!(s.receive(0, &seg(0, &vec![0u8; piece])).unwrap().readable);
        assert_eq!(s.readable(), n * piece);
        assert_eq!(s.ahead_charge(), 0);
    }

    #[test]
    fn a_late_join_report_behind_newer_acks_is_no_error() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        s.write(&records(2, 100));
        while s.next_record(0, false, 0).is_some() {}
        let mut pt = Vec::new();
        LaneFrame::Ack {
            received: 150,
            consumed: 150,
        }
        .encode(&mut pt);
        s.receive(0, &pt).unwrap();
        // A JOIN written before that ACK arrives after it.
        assert_eq!(s.peer_received(40), Ok(false));
        assert_eq!(s.in_flight(), 204 - 150);
    }

    #[test]
    fn an_acknowledgement_lost_with_its_lane_is_sent_again_when_data_comes_again() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        c.add_lane(0, None);
        s.add_lane(0, None);
        // A window's worth, all read: the server's window is shut until
        // it hears that the client consumed it.
        s.write(&records(64, WINDOW / 64 - INNER_HEADER));
        pump(&mut s, &mut c, 0, false);
        let mut sink = vec![0; WINDOW];
        assert_eq!(c.read(&mut sink), WINDOW);
        // The client's ACK goes down lane 0, which dies with it.
        assert!(pump(&mut c, &mut s, 0, true) > 0);
        assert_eq!(c.ack_owed(), None);
        assert_eq!(s.write(&records(1, 100)), 0, "the window is shut");
        c.remove_lane(0);
        s.remove_lane(0);
        c.add_lane(1, None);
        s.add_lane(1, None);
        // The server resends what it never heard about; the client had it
        // all, and owes its acknowledgement again (and wakes its writers,
        // which would otherwise sleep until the application reads).
        let pt = s.next_record(1, false, 0).unwrap();
        assert!(c.receive(1, &pt).unwrap().wake_writers);
        pump(&mut s, &mut c, 1, false);
        assert_eq!(c.received(), WINDOW as u64, "nothing new yet");
        assert!(c.ack_owed().is_some(), "a resend calls for the ACK again");
        pump(&mut c, &mut s, 1, false);
        assert_eq!(c.ack_owed(), None);
        assert_eq!(s.write(&records(1, 100)), 102, "the window opened");
        pump(&mut s, &mut c, 1, false);
        assert_eq!(c.received(), WINDOW as u64 + 102);
    }

    #[test]
    fn acknowledging_unsent_bytes_is_refused() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        let mut pt = Vec::new();
        LaneFrame::Ack {
            received: 1,
            consumed: 0,
        }
        .encode(&mut pt);
        assert_eq!(s.receive(0, &pt).unwrap_err(), LaneError::OutOfRange);
    }
}
