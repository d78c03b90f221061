//! Harness: the real `samizdat` binary on 127.0.0.1 between a fake DC and
//! a fake cover site run in the test's own runtime.
#![allow(dead_code)]

pub mod apps;
pub mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::fake_cover::{self, CoverKind, Received};
use testkit::fake_dc::{self, Events};
use testkit::process::{Serve, Served};
use tokio::net::TcpListener;

pub const KEY: &str = "19a31a279e164085398129e8ec40976b";
pub const DOMAIN: &str = "cover.localhost";

/// `samizdat serve` with its fake DC and cover; killed on drop. Derefs to
/// the [`Served`] process (`proxy.addr`, `proxy.child`, `proxy.stdout`).
pub struct Proxy {
    pub served: Served,
    pub dc_events: Events,
    pub dc_addr: SocketAddr,
    pub cover_received: Received,
    pub cover_addr: SocketAddr,
}

impl std::ops::Deref for Proxy {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.served
    }
}

impl std::ops::DerefMut for Proxy {
    fn deref_mut(&mut self) -> &mut Served {
        &mut self.served
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_samizdat")
}

pub async fn fake_dc() -> (SocketAddr, Events) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(fake_dc::serve(l, events.clone(), false));
    (addr, events)
}

pub async fn fake_cover(kind: CoverKind) -> (SocketAddr, Received) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(fake_cover::serve(l, kind, received.clone()));
    (addr, received)
}

/// Starts the proxy with every form enabled, the fake DC and an echo cover,
/// plus `extra` arguments.
pub async fn start(extra: &[&str]) -> Proxy {
    start_with(CoverKind::Echo, extra).await
}

pub async fn start_with(cover: CoverKind, extra: &[&str]) -> Proxy {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (dc_addr, dc_events) = fake_dc().await;
    let (cover_addr, cover_received) = fake_cover(cover).await;
    let served = serve()
        .secret(KEY)
        .modes("plain,dd,ee")
        .domain(DOMAIN)
        .cover(cover_addr)
        .dc(dc_addr)
        .args(extra)
        .spawn()
        .await
        .expect("samizdat serve starts");
    Proxy {
        served,
        dc_events,
        dc_addr,
        cover_received,
        cover_addr,
    }
}

/// A `samizdat serve` builder for this test's binary.
pub fn serve() -> Serve {
    Serve::new(bin())
}

/// A `samizdat client LINK` builder for this test's binary.
pub fn client(link: impl ToString) -> testkit::process::Client {
    testkit::process::Client::new(bin(), link)
}

pub fn secret(form: &str) -> wire::secret::Secret {
    let text = match form {
        "plain" => KEY.to_string(),
        "dd" => format!("dd{KEY}"),
        "ee" => format!("ee{KEY}{}", hex::encode(DOMAIN)),
        other => panic!("unknown form {other}"),
    };
    wire::secret::Secret::parse(&text).unwrap()
}

/// Open descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls `f` until it is true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}
