//! An in-memory connection with a middlebox in it: two
//! [`tokio::io::DuplexStream`] ends joined by a relay task per direction
//! that a test can tell to drop, freeze or alter what passes. Transport
//! tests put sessions, lanes or a whole braid on these ends and run on
//! virtual time (`#[tokio::test(start_paused = true)]`): there is no
//! socket, so the runtime skips ahead whenever everything waits on a timer,
//! and keepalive or dead-peer deadlines are reached at once and exactly.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let (mut a, mut b, tamper) = testkit::duplex::pair(64 * 1024);
//! tamper.alter(testkit::duplex::Direction::AToB, |bytes| bytes.reverse());
//! a.write_all(b"abc").await.unwrap();
//! let mut got = [0u8; 3];
//! b.read_exact(&mut got).await.unwrap();
//! assert_eq!(&got, b"cba");
//! # }
//! ```

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

/// Which way bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the first end of [`pair`] to the second.
    AToB,
    /// From the second end to the first.
    BToA,
}

/// What the middlebox does with one direction's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Passes them on.
    #[default]
    Pass,
    /// Throws them away (the connection stays open: a blackhole).
    Drop,
    /// Holds them, and everything after, until the fault changes: the
    /// sender's writes stall once the pipe is full, as behind a frozen
    /// connection.
    Freeze,
}

type Alter = Arc<dyn Fn(&mut Vec<u8>) + Send + Sync>;

/// One direction's state.
#[derive(Clone, Default)]
struct Rule {
    fault: Fault,
    alter: Option<Alter>,
    /// Bytes that went through (after altering), for tests to wait on.
    passed: u64,
}

/// The handle that changes what the middlebox does; clones share it.
#[derive(Clone)]
pub struct Tamper {
    rules: Arc<Mutex<[Rule; 2]>>,
    /// Bumped on every change, so a frozen relay wakes up.
    changed: watch::Sender<u64>,
    /// Bytes to put on the wire towards each end, ahead of the relayed
    /// ones (an on-path attacker's own).
    inject: [tokio::sync::mpsc::UnboundedSender<Vec<u8>>; 2],
}

impl std::fmt::Debug for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tamper").finish_non_exhaustive()
    }
}

fn index(d: Direction) -> usize {
    match d {
        Direction::AToB => 0,
        Direction::BToA => 1,
    }
}

impl Tamper {
    fn update(&self, d: Direction, f: impl FnOnce(&mut Rule)) {
        f(&mut self.rules.lock().unwrap_or_else(|e| e.into_inner())[index(d)]);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Sets what happens to `d`'s bytes from now on.
    pub fn set(&self, d: Direction, fault: Fault) {
        self.update(d, |r| r.fault = fault);
    }

    /// Freezes both directions (a censor that stops forwarding but keeps
    /// both TCP connections open).
    pub fn freeze(&self) {
        self.set(Direction::AToB, Fault::Freeze);
        self.set(Direction::BToA, Fault::Freeze);
    }

    /// Passes everything again (frozen bytes go out first).
    pub fn heal(&self) {
        self.set(Direction::AToB, Fault::Pass);
        self.set(Direction::BToA, Fault::Pass);
    }

    /// Applies `f` to every chunk going `d` from now on (chunks are what
    /// one read returned: any size from one byte).
    pub fn alter(&self, d: Direction, f: impl Fn(&mut Vec<u8>) + Send + Sync + 'static) {
        self.update(d, |r| r.alter = Some(Arc::new(f)));
    }

    /// Sends `bytes` going `d` as if the other end had written them.
    pub fn inject(&self, d: Direction, bytes: Vec<u8>) {
        let _ = self.inject[index(d)].send(bytes);
    }

    /// How many bytes went `d` so far.
    pub fn passed(&self, d: Direction) -> u64 {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())[index(d)].passed
    }
}

/// Two connected in-memory ends with a middlebox between them; each pipe
/// holds at most `capacity` bytes (so a frozen direction pushes back).
pub fn pair(capacity: usize) -> (DuplexStream, DuplexStream, Tamper) {
    let (a, a_mid) = tokio::io::duplex(capacity);
    let (b, b_mid) = tokio::io::duplex(capacity);
    let (changed, _) = watch::channel(0);
    let (to_b, inject_b) = tokio::sync::mpsc::unbounded_channel();
    let (to_a, inject_a) = tokio::sync::mpsc::unbounded_channel();
    let tamper = Tamper {
        rules: Arc::default(),
        changed,
        inject: [to_b, to_a],
    };
    let (a_read, a_write) = tokio::io::split(a_mid);
    let (b_read, b_write) = tokio::io::split(b_mid);
    tokio::spawn(relay(
        a_read,
        b_write,
        inject_b,
        Direction::AToB,
        tamper.clone(),
    ));
    tokio::spawn(relay(
        b_read,
        a_write,
        inject_a,
        Direction::BToA,
        tamper.clone(),
    ));
    (a, b, tamper)
}

/// Moves one direction's bytes under the tamper's rules until either side
/// closes.
async fn relay(
    mut from: tokio::io::ReadHalf<DuplexStream>,
    mut to: tokio::io::WriteHalf<DuplexStream>,
    mut injected: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    d: Direction,
    tamper: Tamper,
) {
    let mut changes = tamper.changed.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut chunk = tokio::select! {
            biased;
            Some(bytes) = injected.recv() => {
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
                continue;
            }
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => buf[..n].to_vec(),
            },
        };
        // A frozen direction holds this chunk (and reads nothing more)
        // until the rule changes.
        let rule = loop {
            let rule = tamper.rules.lock().unwrap_or_else(|e| e.into_inner())[index(d)].clone();
            if rule.fault != Fault::Freeze {
                break rule;
            }
            if changes.changed().await.is_err() {
                return;
            }
        };
        if rule.fault == Fault::Drop {
            continue;
        }
        if let Some(f) = &rule.alter {
            f(&mut chunk);
        }
        tamper.rules.lock().unwrap_or_else(|e| e.into_inner())[index(d)].passed +=
            chunk.len() as u64;
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn read_some(s: &mut DuplexStream, limit: Duration) -> Option<Vec<u8>> {
        let mut b = [0u8; 64];
        match tokio::time::timeout(limit, s.read(&mut b)).await {
            Ok(Ok(n)) => Some(b[..n].to_vec()),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_direction_holds_its_bytes_until_healed() {
        let (mut a, mut b, tamper) = pair(1024);
        a.write_all(b"one").await.unwrap();
        assert_eq!(
            read_some(&mut b, Duration::from_secs(1)).await.unwrap(),
            b"one"
        );
        tamper.freeze();
        a.write_all(b"two").await.unwrap();
        // An hour of virtual time: nothing comes through.
        assert_eq!(read_some(&mut b, Duration::from_secs(3600)).await, None);
        tamper.heal();
        assert_eq!(
            read_some(&mut b, Duration::from_secs(1)).await.unwrap(),
            b"two"
        );
        assert_eq!(tamper.passed(Direction::AToB), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_bytes_never_arrive_and_the_other_way_still_works() {
        let (mut a, mut b, tamper) = pair(1024);
        tamper.set(Direction::AToB, Fault::Drop);
        a.write_all(b"lost").await.unwrap();
        assert_eq!(read_some(&mut b, Duration::from_secs(60)).await, None);
        b.write_all(b"back").await.unwrap();
        assert_eq!(
            read_some(&mut a, Duration::from_secs(1)).await.unwrap(),
            b"back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn injected_bytes_arrive_and_a_close_passes_through() {
        let (a, mut b, tamper) = pair(1024);
        tamper.inject(Direction::AToB, b"forged".to_vec());
        assert_eq!(
            read_some(&mut b, Duration::from_secs(1)).await.unwrap(),
            b"forged"
        );
        drop(a);
        assert_eq!(
            read_some(&mut b, Duration::from_secs(1)).await.unwrap(),
            b""
        );
    }
}
