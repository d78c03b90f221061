//! A fake Telegram DC: accepts the proxy's obfuscated2 (no secret), decodes
//! the client's framing, answers `req_pq_multi`/`req_pq` with `resPQ` and
//! echoes every other packet back in the same framing.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wire::framing::{self, Decoded};
use wire::obfuscated2::{self, Tag};

/// What the fake DC saw, for tests to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcEvent {
    /// A connection with a valid init.
    Connected {
        /// DC id written by the proxy.
        dc: i16,
        /// Framing tag.
        tag: Tag,
    },
    /// A request answered with resPQ.
    AnsweredReqPq {
        /// DC id of the connection.
        dc: i16,
        /// Framing tag.
        tag: Tag,
    },
    /// Bytes that were not a valid init.
    BadInit,
}

/// Shared event log.
pub type Events = Arc<Mutex<Vec<DcEvent>>>;

/// Runs the fake DC on `listener` forever. When `print` is set, each event
/// is also printed on stdout (for the interop suite).
pub async fn serve(listener: TcpListener, events: Events, print: bool) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let _ = handle(stream, events, print).await;
        });
    }
}

fn record(events: &Events, e: DcEvent, print: bool) {
    if print {
        match &e {
            DcEvent::Connected { dc, tag } => println!("connected dc={dc} tag={}", tag.name()),
            DcEvent::AnsweredReqPq { dc, tag } => {
                println!("answered req_pq_multi dc={dc} tag={}", tag.name())
            }
            DcEvent::BadInit => println!("bad init"),
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    events.lock().unwrap().push(e);
}

async fn handle(mut stream: TcpStream, events: Events, print: bool) -> std::io::Result<()> {
    let mut init = [0u8; 64];
    stream.read_exact(&mut init).await?;
    let Some(mut acc) = obfuscated2::accept(&init, None) else {
        record(&events, DcEvent::BadInit, print);
        return Ok(());
    };
    let (tag, dc) = (acc.tag, acc.dc);
    record(&events, DcEvent::Connected { dc, tag }, print);
    let mut inbox = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown().await;
        }
        acc.ciphers.decrypt.apply(&mut buf[..n]);
        inbox.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        let mut used = 0;
        while let Ok(Decoded::Packet(p, len)) = framing::decode(tag, &inbox[used..]) {
            used += len;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let answer = crate::res_pq::answer(&p.payload, crate::random(), (now << 32) | 1);
            if answer.is_some() {
                record(&events, DcEvent::AnsweredReqPq { dc, tag }, print);
            }
            let payload = answer.unwrap_or(p.payload);
            framing::encode(tag, &payload, false, &[], &mut out);
        }
        inbox.drain(..used);
        if !out.is_empty() {
            acc.ciphers.encrypt.apply(&mut out);
            stream.write_all(&out).await?;
        }
    }
}
