//! The braid driver (`samizdat::transport::braid`) over in-memory lanes: a
//! session's stream survives lanes being cut under it, budgets hold, and
//! nothing is left running.

use samizdat::transport::braid::{BraidHandle, LaneEvent};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use wire::tunnel::mux::Role;

/// Record keys for one lane: any matching pair will do here.
fn lane_keys(n: u8) -> (wire::tunnel::Established, wire::tunnel::Established) {
    wire::tunnel::Established::pair_for_tests(&[n; 32])
}

/// Runs lane `id` between the two braids over an in-memory pipe, the
/// server side with `budget`; returns a handle that cuts it when dropped
/// (or aborted).
fn lane(
    client: &BraidHandle,
    server: &BraidHandle,
    id: u32,
    budget: Option<u32>,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let (c_io, s_io): (DuplexStream, DuplexStream) = tokio::io::duplex(64 * 1024);
    let (ck, sk) = lane_keys(id as u8 + 1);
    let (c, s) = (client.clone(), server.clone());
    let (csealer, copener) = ck.into_split();
    let (ssealer, sopener) = sk.into_split();
    // Each lane registers in its task, as the real drivers do: a lane
    // cut before its task ever ran must not stay registered (the braid
    // would go on sending on it), and only run_lane's end unregisters it.
    let ct = tokio::spawn(async move {
        assert!(c.add_lane(id, None));
        c.run_lane(id, c_io, csealer, copener, &[], None).await;
    });
    let st = tokio::spawn(async move {
        assert!(s.add_lane(id, budget));
        s.run_lane(id, s_io, ssealer, sopener, &[], None).await;
    });
    (ct, st)
}

fn pattern(n: usize) -> Vec<u8> {
    // Whole records, as the inner session writes them.
    let mut out = Vec::with_capacity(n + n / 1000 * 2);
    let mut i = 0usize;
    while out.len() < n {
        let body = 1000.min(n - out.len()).max(1);
        out.extend_from_slice(&(body as u16).to_be_bytes());
        out.extend((0..body).map(|j| (i * 131 + j) as u8));
        i += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_survives_its_lanes_being_cut() {
    let (tx, mut events) = BraidHandle::event_channel();
    let client = BraidHandle::new(Role::Client, Some(tx));
    let server = BraidHandle::new(Role::Server, None);
    let data = pattern(3 << 20);
    let mut lanes = vec![lane(&client, &server, 0, None)];
    let sent = data.clone();
    let mut sio = server.io();
    let writer = tokio::spawn(async move {
        sio.write_all(&sent).await.unwrap();
        sio
    });
    let mut cio = client.io();
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];
    let mut next_cut = 256 * 1024;
    let mut id = 1;
    while got.len() < data.len() {
        let n = tokio::time::timeout(Duration::from_secs(10), cio.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "data stopped at {} (lane {}): {client:?} {server:?} {:?}",
                    got.len(),
                    id - 1,
                    server.lanes()
                )
            })
            .unwrap();
        assert!(n > 0, "the braid ended early at {}", got.len());
        got.extend_from_slice(&buf[..n]);
        if got.len() >= next_cut {
            // The lane to cut is running at both ends (the client may have
            // a window's worth buffered, so reads can outrun a new lane).
            let running = |b: &BraidHandle| b.lanes().iter().any(|l| l.id == id - 1);
            tokio::time::timeout(Duration::from_secs(10), async {
                while !running(&client) || !running(&server) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .expect("the lane starts");
            // Cut every lane under the transfer and add a fresh one, as a
            // censor's reset and the client's replacement would.
            for (c, s) in lanes.drain(..) {
                c.abort();
                s.abort();
            }
            lanes.push(lane(&client, &server, id, None));
            id += 1;
            next_cut += 512 * 1024;
        }
    }
    assert_eq!(got.len(), data.len(), "no byte twice");
    assert!(got == data, "every byte in order");
    assert!(id >= 5, "the transfer crossed several cuts");
    let mut ended = 0;
    while let Ok(ev) = events.try_recv() {
        ended += u32::from(matches!(ev, LaneEvent::Ended { .. }));
    }
    assert!(ended >= 4, "the cut lanes were reported: {ended}");
    drop(writer.await.unwrap());
    drop(cio);
    // The braids are closed; their lanes end by themselves.
    assert!(client.is_closed() && server.is_closed());
    for (c, s) in lanes {
        tokio::time::timeout(Duration::from_secs(5), async {
            let _ = c.await;
            let _ = s.await;
        })
        .await
        .expect("lane tasks end with their braid");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgeted_lanes_carry_no_more_than_their_budget() {
    let (tx, mut events) = BraidHandle::event_channel();
    let client = BraidHandle::new(Role::Client, Some(tx));
    let server = BraidHandle::new(Role::Server, None);
    let budget = 8000;
    let data = pattern(200_000);
    let mut lanes = vec![
        lane(&client, &server, 0, Some(budget)),
        lane(&client, &server, 1, Some(budget)),
    ];
    let sent = data.clone();
    let mut sio = server.io();
    tokio::spawn(async move {
        sio.write_all(&sent).await.unwrap();
        std::future::pending::<()>().await;
    });
    let mut cio = client.io();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut next_id = 2;
    let mut full = 0;
    while got.len() < data.len() {
        tokio::select! {
            n = cio.read(&mut buf) => {
                let n = n.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            ev = events.recv() => {
                if let Some(LaneEvent::Full { lane: l }) = ev {
                    full += 1;
                    let view = client.lanes().into_iter().find(|v| v.id == l).unwrap();
                    assert!(
                        view.raw_bytes <= u64::from(budget),
                        "lane {l} carried {} bytes down",
                        view.raw_bytes
                    );
                    client.drop_lane(l);
                    lanes.push(lane(&client, &server, next_id, Some(budget)));
                    next_id += 1;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("stuck at {}", got.len()),
        }
    }
    assert!(got == data);
    assert!(full >= 20, "200 kB over 8 kB lanes fills many: {full}");
    client.close();
    server.close();
}
