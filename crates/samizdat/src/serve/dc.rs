//! Telegram data centres: the built-in address table (spec §5), the
//! operator's overrides, and the one way to reach a DC ([`connect`]): for
//! the MTProto path ([`serve`]: our own obfuscated2, then the relay) and
//! for samizdat clients' Telegram streams ([`DcDialer`]).

use super::admit::shown;
use super::relay::{self, ClientToDc, DcToClient};
use super::users::{Admission, Snapshot};
use super::ServeShared;
use crate::dial::{BoxIo, Dialer, OpenError, OpenFuture};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wire::cipher::Ctr;
use wire::faketls::records::RecordDecoder;
use wire::obfuscated2::{self, Accepted, Tag, INIT_LEN};
use wire::tunnel::Destination;

/// Most bytes a DC stream encrypts per write.
const STREAM_BUF: usize = 64 * 1024;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which address family to try first when a DC has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpPreference {
    /// IPv4 first, then IPv6.
    #[default]
    Ipv4,
    /// IPv6 first, then IPv4.
    Ipv6,
    /// IPv4 only.
    Ipv4Only,
    /// IPv6 only.
    Ipv6Only,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const fn v6(s: [u16; 8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
    ))
}

/// Production DCs 1–5 and the CDN DC 203: (IPv4, IPv6), port 443.
const PRODUCTION: [(u16, IpAddr, IpAddr); 6] = [
    (
        1,
        v4(149, 154, 175, 50),
        v6([0x2001, 0xb28, 0xf23d, 0xf001, 0, 0, 0, 0xa]),
    ),
    (
        2,
        v4(149, 154, 167, 51),
        v6([0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xa]),
    ),
    (
        3,
        v4(149, 154, 175, 100),
        v6([0x2001, 0xb28, 0xf23d, 0xf003, 0, 0, 0, 0xa]),
    ),
    (
        4,
        v4(149, 154, 167, 91),
        v6([0x2001, 0x67c, 0x4e8, 0xf004, 0, 0, 0, 0xa]),
    ),
    (
        5,
        v4(149, 154, 171, 5),
        v6([0x2001, 0xb28, 0xf23f, 0xf005, 0, 0, 0, 0xa]),
    ),
    (
        203,
        v4(91, 105, 192, 100),
        v6([0x2a0a, 0xf280, 0x203, 0xa, 0x5000, 0, 0, 0x100]),
    ),
];

/// Test DCs 1–3 (DC ids 10001–10003).
const TEST: [(u16, IpAddr, IpAddr); 3] = [
    (
        1,
        v4(149, 154, 175, 10),
        v6([0x2001, 0xb28, 0xf23d, 0xf001, 0, 0, 0, 0xe]),
    ),
    (
        2,
        v4(149, 154, 167, 40),
        v6([0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xe]),
    ),
    (
        3,
        v4(149, 154, 175, 117),
        v6([0x2001, 0xb28, 0xf23d, 0xf003, 0, 0, 0, 0xe]),
    ),
];

/// How DC ids map to addresses.
#[derive(Debug, Clone, Default)]
pub struct DcTable {
    /// `--dc-override`: every DC id goes here.
    pub all: Option<SocketAddr>,
    /// `--dc ID=ADDR`: per-id overrides (exact id first, then its absolute value).
    pub by_id: HashMap<i32, SocketAddr>,
    /// Family preference for the built-in table.
    pub preference: IpPreference,
}

impl DcTable {
    /// The addresses to try, in order, for the DC id a client asked for.
    /// Empty means the id is unknown.
    pub fn resolve(&self, dc: i16) -> Vec<SocketAddr> {
        let id = i32::from(dc);
        if let Some(addr) = self.by_id.get(&id).or_else(|| self.by_id.get(&id.abs())) {
            return vec![*addr];
        }
        if let Some(addr) = self.all {
            return vec![addr];
        }
        let abs = id.unsigned_abs();
        let entry = if abs > 10_000 {
            TEST.iter().find(|e| u32::from(e.0) + 10_000 == abs)
        } else {
            PRODUCTION.iter().find(|e| u32::from(e.0) == abs)
        };
        let Some(&(_, ip4, ip6)) = entry else {
            return Vec::new();
        };
        let (a, b) = (SocketAddr::new(ip4, 443), SocketAddr::new(ip6, 443));
        match self.preference {
            IpPreference::Ipv4 => vec![a, b],
            IpPreference::Ipv6 => vec![b, a],
            IpPreference::Ipv4Only => vec![a],
            IpPreference::Ipv6Only => vec![b],
        }
    }
}

/// Connects to data centre `dc` for `user` (for the log): each of its
/// addresses in the table's order, each within `--connect-timeout`,
/// counting successes, failures and connect time in the metrics. Both the
/// MTProto path and samizdat clients' Telegram streams come here.
pub(super) async fn connect(
    shared: &super::ServeShared,
    snap: &super::users::Snapshot,
    dc: i16,
    user: &str,
) -> Result<tokio::net::TcpStream, crate::dial::OpenError> {
    use crate::dial::OpenError;
    let addrs = snap.config.dcs.resolve(dc);
    if addrs.is_empty() {
        tracing::info!(
            user,
            dc,
            "client asked for an unknown DC id; add --dc {dc}=ADDR to route it"
        );
        return Err(OpenError::HostUnreachable);
    }
    let mut last = OpenError::HostUnreachable;
    for addr in &addrs {
        let started = tokio::time::Instant::now();
        let connecting = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(snap.config.connect_timeout, connecting).await {
            Ok(Ok(s)) => {
                shared.metrics.dc_connected(dc, started.elapsed());
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => {
                shared.metrics.dc_connect_failed(dc);
                tracing::warn!(dc, %addr, error = %e, "cannot connect to Telegram DC");
                last = OpenError::from(e);
            }
            Err(_) => {
                shared.metrics.dc_connect_failed(dc);
                tracing::warn!(dc, %addr, "connecting to Telegram DC timed out");
                last = OpenError::TimedOut;
            }
        }
    }
    Err(last)
}

/// Reaches a Telegram DC for a stream that names one: the same table,
/// overrides and deadline as the MTProto path, and our own obfuscated2
/// toward the DC. The stream carries the client's MTProto packets in the
/// tag's framing; this side encrypts and decrypts them for the DC.
pub(super) struct DcDialer {
    pub(super) shared: Arc<ServeShared>,
    pub(super) snap: Arc<Snapshot>,
    pub(super) user: String,
}

impl Dialer for DcDialer {
    fn open(&self, dest: Destination, first: Vec<u8>) -> OpenFuture<'_> {
        Box::pin(async move {
            let Destination::Telegram { dc, tag } = dest else {
                return Err(OpenError::NotAllowed);
            };
            let socket = super::dc::connect(&self.shared, &self.snap, dc, &self.user).await?;
            DcStream::start(socket, dc, tag, first)
                .await
                .map(|s| Box::new(s) as BoxIo)
        })
    }
}

/// A DC connection under our obfuscated2: plaintext framed MTProto on the
/// stream side, ciphertext on the socket.
struct DcStream {
    socket: TcpStream,
    encrypt: Ctr,
    decrypt: Ctr,
    /// Encrypted bytes not yet written (at most one write's worth).
    pending: Vec<u8>,
    written: usize,
}

impl DcStream {
    async fn start(
        socket: TcpStream,
        dc: i16,
        tag: Tag,
        first: Vec<u8>,
    ) -> Result<DcStream, OpenError> {
        let ours = obfuscated2::initiate(
            obfuscated2::safe_init_random(&mut crate::random::fill),
            tag,
            dc.saturating_abs(),
            None,
        );
        let mut s = DcStream {
            socket,
            encrypt: ours.ciphers.encrypt,
            decrypt: ours.ciphers.decrypt,
            pending: Vec::new(),
            written: 0,
        };
        let mut out = Vec::with_capacity(INIT_LEN + first.len());
        out.extend_from_slice(&ours.wire);
        let mut first = first;
        s.encrypt.apply(&mut first);
        out.extend_from_slice(&first);
        relay::write_all(&s.socket, &out)
            .await
            .map_err(OpenError::from)?;
        Ok(s)
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.socket).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for DcStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.socket).poll_read(cx, buf))?;
        let this = &mut *self;
        this.decrypt.apply(&mut buf.filled_mut()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for DcStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Bytes are encrypted once, when taken; what the socket does not
        // take yet waits in `pending`, which is flushed before more is taken.
        ready!(self.poll_pending(cx))?;
        let take = buf.len().min(STREAM_BUF);
        let this = &mut *self;
        this.pending.extend_from_slice(&buf[..take]);
        this.encrypt.apply(&mut this.pending);
        // Start writing now; what is left goes out on the next call.
        let _ = this.poll_pending(cx)?;
        Poll::Ready(Ok(take))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.socket).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

/// Connects to the client's DC, opens our own obfuscated2 toward it and
/// relays until either side ends.
pub(super) async fn serve(
    client: TcpStream,
    admission: Admission,
    init: Accepted,
    records: Option<RecordDecoder>,
    mut leftover: Vec<u8>,
    shared: &Arc<ServeShared>,
    snap: &Snapshot,
) {
    let user = admission.user.clone();
    let peer_ip = admission.ip();
    let name = user.name.as_str();
    let tls = records.is_some();
    // Resolved once per connection: no label lookup while relaying.
    let user_metrics = shared.metrics.user(name);
    user_metrics.connections.inc();
    let _user_open = crate::metrics::GaugeGuard::new(&user_metrics.active);
    let Ok(server) = super::dc::connect(shared, snap, init.dc, name).await else {
        return;
    };
    let ours = obfuscated2::initiate(
        obfuscated2::safe_init_random(&mut crate::random::fill),
        init.tag,
        init.dc.saturating_abs(),
        None,
    );
    if relay::write_all(&server, &ours.wire).await.is_err() {
        return;
    }
    let mut up = ClientToDc {
        records,
        decrypt: init.ciphers.decrypt,
        encrypt: ours.ciphers.encrypt,
    };
    if !leftover.is_empty() {
        up.decrypt.apply(&mut leftover);
        up.encrypt.apply(&mut leftover);
        if relay::write_all(&server, &leftover).await.is_err() {
            return;
        }
    }
    let down = DcToClient {
        decrypt: ours.ciphers.decrypt,
        encrypt: init.ciphers.encrypt,
        tls,
    };
    let started = Instant::now();
    let relaying = crate::metrics::GaugeGuard::new(&shared.metrics.relays_active);
    let out = relay_dc(
        client,
        server,
        up,
        down,
        shared,
        &user,
        snap.config.idle_timeout,
    )
    .await;
    let _ = user.charge(leftover.len());
    if out.end == relay::RelayEnd::Quota {
        tracing::info!(user = name, "quota used up; the user's connections end");
    }
    drop(relaying);
    // Bytes are added once, when the relay ends.
    user_metrics
        .from_client
        .inc_by(out.up + leftover.len() as u64);
    user_metrics.to_client.inc_by(out.down);
    drop(admission);
    tracing::debug!(
        user = name,
        dc = init.dc,
        tag = init.tag.name(),
        tls,
        up = out.up + leftover.len() as u64,
        down = out.down,
        end = out.end.name(),
        secs = started.elapsed().as_secs_f32(),
        client = %shown(snap, SocketAddr::new(peer_ip, 0)),
        "relay ended"
    );
}

/// Relays an authenticated client and its DC until either ends, on the
/// relay runtime when there is one ([`super::Server::relay_on`]): the
/// sockets leave this runtime's reactor and join that one's.
async fn relay_dc(
    client: TcpStream,
    server: TcpStream,
    up: ClientToDc,
    down: DcToClient,
    shared: &Arc<ServeShared>,
    user: &Arc<super::users::UserState>,
    idle: std::time::Duration,
) -> relay::Outcome {
    let relay_here = {
        let (shared, user) = (shared.clone(), user.clone());
        move |client: TcpStream, server: TcpStream| async move {
            relay::relay(
                &client,
                &server,
                up,
                down,
                &shared.pool,
                relay::Bounds {
                    idle: Some(idle),
                    stall: None,
                    stop: &user.ended,
                    meter: &*user,
                },
            )
            .await
        }
    };
    let Some(rt) = shared.relay_runtime.get() else {
        return relay_here(client, server).await;
    };
    let broken = relay::Outcome {
        up: 0,
        down: 0,
        end: relay::RelayEnd::Reset,
    };
    // `into_std` leaves the sockets non-blocking, as `from_std` needs.
    let (Ok(client), Ok(server)) = (client.into_std(), server.into_std()) else {
        return broken;
    };
    let task = rt.spawn(async move {
        match (TcpStream::from_std(client), TcpStream::from_std(server)) {
            (Ok(client), Ok(server)) => Some(relay_here(client, server).await),
            _ => None,
        }
    });
    match task.await {
        Ok(Some(out)) => out,
        Ok(None) => {
            tracing::warn!("cannot move a connection to the relay runtime (its reactor is gone?)");
            broken
        }
        // The relay runtime shut down under it (the process is ending).
        Err(_) => broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_and_test_dcs_map_like_the_spec() {
        let t = DcTable::default();
        assert_eq!(t.resolve(2)[0], "149.154.167.51:443".parse().unwrap());
        assert_eq!(t.resolve(-2), t.resolve(2));
        assert_eq!(t.resolve(10002)[0], "149.154.167.40:443".parse().unwrap());
        assert_eq!(t.resolve(-10003)[0], "149.154.175.117:443".parse().unwrap());
        assert_eq!(
            t.resolve(203)[1],
            "[2a0a:f280:203:a:5000::100]:443".parse().unwrap()
        );
        assert!(t.resolve(0).is_empty());
        assert!(t.resolve(6).is_empty());
        assert!(t.resolve(10004).is_empty());
    }

    #[test]
    fn overrides_win_exact_id_first() {
        let mut t = DcTable {
            preference: IpPreference::Ipv6Only,
            ..Default::default()
        };
        assert_eq!(t.resolve(1).len(), 1);
        assert!(t.resolve(1)[0].is_ipv6());
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        t.all = Some(a);
        t.by_id.insert(-2, b);
        assert_eq!(t.resolve(-2), vec![b]);
        assert_eq!(t.resolve(2), vec![a]);
        assert_eq!(t.resolve(0), vec![a]);
        t.by_id.insert(4, b);
        assert_eq!(t.resolve(-4), vec![b]);
    }
}
