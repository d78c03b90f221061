//! Signed server lists on the client (`wire::server_list`): the link's
//! `lk=` key says who may sign them, its `lu=` sources where to fetch them.
//!
//! - Sources are tried in order, each within [`FetchOptions::timeout`]:
//!   `file:PATH` (or a bare path), `https://HOST[:PORT]/PATH` (directly,
//!   then through the tunnel when a server works, so a list URL blocked on
//!   the user's network is still reachable), and `dns:NAME` (TXT records,
//!   from the system's resolver or [`FetchOptions::dns_server`]).
//! - A list is used only if it verifies against the link's key, has not
//!   expired, and has a higher serial than the list already held; a lower
//!   one (an old list replayed) is refused.
//! - The newest list is saved as `STATE_DIR/lists/KEY_ID.list` (owner-only)
//!   and loaded at start, so learned servers survive restarts.
//! - [`spawn_refresh`] fetches at start and then every [`REFRESH_EVERY`]
//!   (plus jitter; sooner after failures) and publishes each new server
//!   set on a `watch` channel for the dialer.
//!
//! | module | job |
//! |---|---|
//! | `source` | [`Source`]: a list's address, parsed and shown |
//! | `store` | the saved list: path, load, store, the servers it adds |
//! | `fetch` | [`fetch_all`]: every source, bounded in size and time |
//! | this file | loading at start and the refresh task |

use crate::dial::Dialer;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wire::link::{Endpoint, Link};
use wire::server_list::{self, ListError, ServerList};
use wire::tunnel::Destination;

mod fetch;
mod source;
mod store;

pub use fetch::{fetch_all, FetchOptions, ListFetchError, Refreshed, SourceFailure};
pub use source::Source;
pub use store::{load_saved, saved_path, servers, store};

/// How often lists are fetched again while all is well.
pub const REFRESH_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Up to this much is added to each wait, so clients do not all ask at once.
pub const REFRESH_JITTER: Duration = Duration::from_secs(30 * 60);

/// The first wait after a round in which no source worked; it doubles after
/// each failed round, up to [`REFRESH_EVERY`].
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5 * 60);

/// Deadline of one fetch (one source, one path).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// An extra trusted CA (PEM) for `https://` sources, on top of the web's
/// roots: for tests and self-hosted list servers. The same variable as the
/// `wss://` carrier's.
pub use crate::client::tls::TEST_CA_ENV;

/// Most bytes read from a source: a list is at most
/// [`server_list::MAX_TEXT`]; this leaves room for HTTP heads and chunking.
const MAX_RESPONSE: usize = 2 * server_list::MAX_TEXT + 16 * 1024;

/// How an answer with another status than 200 is reported.
const HTTP_STATUS: &str = "HTTP ";

/// Where saved lists live inside the state directory.
pub const DIR: &str = "lists";

// === saved lists ===

// === fetching ===

// === the refresh task ===

/// Loads the saved list for `link`'s key, logging what it adds; `None`
/// without a key or a usable file.
pub fn load_at_start(link: &Link, state_dir: &Path) -> Option<ServerList> {
    let key = link.list_key?;
    match load_saved(state_dir, &key) {
        Ok(Some(list)) => {
            if list.expires <= crate::clock::unix_now() {
                tracing::warn!(
                    "the saved server list (serial {}) has expired; its servers are not used until a newer list arrives",
                    list.serial
                );
            } else {
                let added = servers(link, Some(&list)).len() - link.servers.len();
                tracing::info!(
                    "saved server list: serial {}, {added} server(s) beyond the link's",
                    list.serial
                );
            }
            Some(list)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("ignoring the saved server list: {e}");
            None
        }
    }
}

/// The servers to use now ([`servers`]); an expired list adds none.
pub fn usable_servers(link: &Link, list: Option<&ServerList>) -> Vec<Endpoint> {
    servers(link, list.filter(|l| l.expires > crate::clock::unix_now()))
}

/// Random wait in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    max.mul_f64(crate::random::unit())
}

/// Starts fetching `link`'s lists: now, then every [`REFRESH_EVERY`] plus
/// jitter (after a failed round, from [`RETRY_AFTER_FAILURE`] doubling).
/// The channel holds the server set to use (the link's plus the newest
/// list's); its first value comes from `saved`. Ends when `stop` fires.
pub fn spawn_refresh(
    link: Link,
    saved: Option<ServerList>,
    tunnel: Option<Arc<dyn Dialer>>,
    state_dir: PathBuf,
    opts: FetchOptions,
    stop: CancellationToken,
) -> watch::Receiver<Vec<Endpoint>> {
    let (tx, rx) = watch::channel(usable_servers(&link, saved.as_ref()));
    tokio::spawn(async move {
        let mut current = saved;
        let mut failed_rounds = 0u32;
        loop {
            let round = fetch_all(
                &link,
                &link.list_sources,
                tunnel.clone(),
                &state_dir,
                current.as_ref(),
                &opts,
            );
            let result = tokio::select! {
                r = round => r,
                _ = stop.cancelled() => return,
            };
            let wait = match result {
                Ok(found) => {
                    failed_rounds = 0;
                    if let Refreshed::Newer(list) = found {
                        let skipped = list
                            .endpoints
                            .iter()
                            .filter(|l| l.server_key.is_some_and(|k| k != link.server_key))
                            .count();
                        if skipped > 0 {
                            tracing::warn!(
                                "server list serial {}: {skipped} endpoint(s) name another server key than the link's and are not used",
                                list.serial
                            );
                        }
                        current = Some(list);
                    }
                    REFRESH_EVERY
                }
                Err(why) => {
                    failed_rounds += 1;
                    let wait = RETRY_AFTER_FAILURE
                        .saturating_mul(1 << failed_rounds.min(10).saturating_sub(1))
                        .min(REFRESH_EVERY);
                    tracing::warn!("{why}; next try in {} min", wait.as_secs() / 60);
                    wait
                }
            };
            // Also drops the servers of a list that expired meanwhile.
            tx.send_if_modified(|set| {
                let new = usable_servers(&link, current.as_ref());
                let changed = *set != new;
                *set = new;
                changed
            });
            tokio::select! {
                _ = tokio::time::sleep(wait + jitter(REFRESH_JITTER.min(wait / 4))) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::fetch::{fetch_source, response_body};
    use super::*;
    use crate::dial::{BoxIo, OpenError, OpenFuture};
    use std::sync::Mutex;
    use wire::server_list::Listed;

    const SECRET: [u8; 32] = [0x21; 32];

    fn link() -> Link {
        let mut link = Link::parse(
            "samizdat://BwcHBwcHBwcHBwcHBwcHBw@127.0.0.1:9?pk=CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk&sni=a.example",
        )
        .unwrap();
        link.list_key = Some(server_list::public_key(&SECRET));
        link
    }

    fn list(serial: u64, endpoints: &[&str]) -> ServerList {
        let now = crate::clock::unix_now();
        ServerList {
            serial,
            issued: now - 10,
            expires: now + 3600,
            endpoints: endpoints
                .iter()
                .map(|e| Listed {
                    endpoint: wire::link::parse_endpoint(e).unwrap(),
                    server_key: None,
                })
                .collect(),
        }
    }

    #[test]
    fn parses_sources() {
        let https = |host: &str, port, path: &str| Source::Https {
            host: host.into(),
            port,
            path: path.into(),
        };
        assert_eq!(
            Source::parse("https://l.example/s.list").unwrap(),
            https("l.example", 443, "/s.list")
        );
        assert_eq!(
            Source::parse("https://127.0.0.1:8443").unwrap(),
            https("127.0.0.1", 8443, "/")
        );
        assert_eq!(
            Source::parse("https://[::1]:9/x?y=1").unwrap(),
            https("::1", 9, "/x?y=1")
        );
        assert_eq!(
            Source::parse("dns:_s.example.org.").unwrap(),
            Source::Dns("_s.example.org".into())
        );
        assert_eq!(
            Source::parse("file:/etc/s.list").unwrap(),
            Source::File("/etc/s.list".into())
        );
        assert_eq!(
            Source::parse("./s.list").unwrap(),
            Source::File("./s.list".into())
        );
        for bad in [
            "http://l.example/",
            "ftp://x/",
            "https://u@h/",
            "https://h:0/",
            "https://h/a b",
            "dns:",
            "dns:a b",
            "",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Source::parse("https://[::1]:9/x").unwrap().to_string(),
            "https://[::1]:9/x"
        );
    }

    #[test]
    fn servers_are_the_links_then_the_lists_without_repeats() {
        let link = link();
        let mut l = list(1, &["127.0.0.1:9", "10.0.0.1:443", "wss://cdn.example/s"]);
        l.endpoints.push(Listed {
            endpoint: Endpoint::direct("10.0.0.2", 1),
            server_key: Some([1; 32]),
        });
        l.endpoints.push(Listed {
            endpoint: Endpoint::direct("10.0.0.3", 1),
            server_key: Some(link.server_key),
        });
        let got: Vec<String> = servers(&link, Some(&l))
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "127.0.0.1:9",
                "10.0.0.1:443",
                "wss://cdn.example/s",
                "10.0.0.3:1"
            ]
        );
        assert_eq!(servers(&link, None), link.servers);
    }

    #[test]
    fn only_a_newer_list_replaces_the_saved_one() {
        let dir = tempfile::tempdir().unwrap();
        let key = server_list::public_key(&SECRET);
        assert_eq!(load_saved(dir.path(), &key), Ok(None));
        let five = list(5, &["10.0.0.5:1"]);
        store(
            dir.path(),
            &key,
            &server_list::sign(&five, &SECRET).unwrap(),
            &five,
        )
        .unwrap();
        assert_eq!(load_saved(dir.path(), &key), Ok(Some(five.clone())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(saved_path(dir.path(), &key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let four = list(4, &["10.0.0.4:1"]);
        let err = store(
            dir.path(),
            &key,
            &server_list::sign(&four, &SECRET).unwrap(),
            &four,
        )
        .unwrap_err();
        assert!(
            err.contains("serial 4 is not newer than the serial 5"),
            "{err}"
        );
        assert_eq!(load_saved(dir.path(), &key), Ok(Some(five)));
        let six = list(6, &["10.0.0.6:1"]);
        store(
            dir.path(),
            &key,
            &server_list::sign(&six, &SECRET).unwrap(),
            &six,
        )
        .unwrap();
        assert_eq!(load_saved(dir.path(), &key), Ok(Some(six)));
        // A damaged file is reported, not trusted.
        std::fs::write(saved_path(dir.path(), &key), "SZL1.AAAA.BBBB").unwrap();
        assert!(load_saved(dir.path(), &key).is_err());
    }

    #[tokio::test]
    async fn fetch_all_tries_sources_in_order_and_refuses_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let link = link();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let good = write(
            "good",
            server_list::sign(&list(9, &["10.0.0.9:9"]), &SECRET).unwrap(),
        );
        let foreign = write(
            "foreign",
            server_list::sign(&list(10, &["10.6.6.6:6"]), &[3; 32]).unwrap(),
        );
        let mut text = server_list::sign(&list(11, &["10.0.0.1:1"]), &SECRET).unwrap();
        let mid = text.len() / 3;
        text.replace_range(
            mid..mid + 1,
            if &text[mid..mid + 1] == "A" { "B" } else { "A" },
        );
        let tampered = write("tampered", text);
        let state = dir.path().join("state");
        let opts = FetchOptions::new(None);
        let sources = vec![
            "file:/nonexistent/list".to_string(),
            foreign.clone(),
            tampered,
            good.clone(),
        ];
        let got = fetch_all(&link, &sources, None, &state, None, &opts).await;
        let Ok(Refreshed::Newer(got)) = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            (got.serial, &got.endpoints),
            (9, &list(9, &["10.0.0.9:9"]).endpoints)
        );
        let saved = load_saved(&state, &link.list_key.unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(saved.serial, 9);
        // Again: the same list is "up to date", a foreign one is refused.
        let again = fetch_all(&link, &[good], None, &state, Some(&saved), &opts).await;
        assert_eq!(again, Ok(Refreshed::UpToDate(9)));
        let why = fetch_all(&link, &[foreign], None, &state, Some(&saved), &opts)
            .await
            .unwrap_err();
        let ListFetchError::NoSource(failures) = &why else {
            panic!("{why:?}")
        };
        assert!(failures[0].why.contains("signed by key"), "{why:?}");
    }

    #[test]
    fn decodes_http_answers() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(response_body(&head.as_bytes()[..10], false), Ok(None));
        assert_eq!(
            response_body(format!("{head}hel").as_bytes(), false),
            Ok(None)
        );
        assert_eq!(
            response_body(format!("{head}hello").as_bytes(), false),
            Ok(Some(b"hello".to_vec()))
        );
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=1\r\nlo\r\n0\r\n\r\n";
        assert_eq!(
            response_body(chunked.as_bytes(), false),
            Ok(Some(b"hello".to_vec()))
        );
        assert_eq!(
            response_body(&chunked.as_bytes()[..chunked.len() - 9], false),
            Ok(None)
        );
        let close = "HTTP/1.1 200 OK\r\n\r\nhello";
        assert_eq!(response_body(close.as_bytes(), false), Ok(None));
        assert_eq!(
            response_body(close.as_bytes(), true),
            Ok(Some(b"hello".to_vec()))
        );
        let missing = response_body(b"HTTP/1.1 404 Not Found\r\n\r\n", true).unwrap_err();
        assert_eq!(missing, "HTTP 404 Not Found");
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 1 << 30);
        assert!(response_body(huge.as_bytes(), false).is_err());
    }

    /// A fresh CA and a `localhost` leaf it signed (testkit); the CA as PEM.
    fn test_pki() -> (String, rustls::ServerConfig) {
        let pki = testkit::pki::localhost_ca();
        (pki.ca_pem(), pki.server_config())
    }

    /// A dialer standing in for the tunnel: records what it was asked to
    /// open and connects to `to` instead.
    struct Recording {
        to: SocketAddr,
        asked: Mutex<Vec<Destination>>,
    }

    impl Dialer for Recording {
        fn open(&self, dest: Destination, first: Vec<u8>) -> OpenFuture<'_> {
            Box::pin(async move {
                assert!(first.is_empty());
                self.asked.lock().unwrap().push(dest);
                let s = tokio::net::TcpStream::connect(self.to)
                    .await
                    .map_err(|e| OpenError::General(e.to_string()))?;
                Ok(Box::new(s) as BoxIo)
            })
        }
    }

    #[tokio::test]
    async fn an_https_source_blocked_directly_is_fetched_through_the_tunnel() {
        let (pem, server) = test_pki();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pem).unwrap();
        let text = server_list::sign(&list(3, &["10.0.0.3:3"]), &SECRET).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let web = l.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let served = text.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                let body = served.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut req = vec![0u8; 4096];
                    let n = tls.read(&mut req).await.unwrap_or(0);
                    if !req[..n].starts_with(b"GET /s.list HTTP/1.1\r\nHost: localhost:") {
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        // `list.invalid` resolves nowhere, so the direct path fails and the
        // tunnel is asked for the name; the certificate inside is checked
        // against that name, which it does not hold.
        let dialer = Arc::new(Recording {
            to: web,
            asked: Mutex::new(Vec::new()),
        });
        let opts = FetchOptions {
            dns_server: None,
            extra_ca: Some(ca),
            timeout: Duration::from_secs(10),
        };
        let wrong_name = Source::Https {
            host: "list.invalid".into(),
            port: web.port(),
            path: "/s.list".into(),
        };
        let err = fetch_source(
            &wrong_name,
            Some(&(dialer.clone() as Arc<dyn Dialer>)),
            &opts,
        )
        .await
        .unwrap_err();
        assert!(err.starts_with("direct: cannot connect"), "{err}");
        assert!(err.contains("through the tunnel: TLS"), "{err}");
        assert_eq!(
            dialer.asked.lock().unwrap().as_slice(),
            [Destination::Host {
                name: "list.invalid".into(),
                port: web.port()
            }]
        );
        // The right name, on a port nothing listens on directly: only the
        // tunnel (which leads to the web server) gets through.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let source = Source::Https {
            host: "localhost".into(),
            port: closed,
            path: "/s.list".into(),
        };
        let tunnel = Arc::new(Recording {
            to: web,
            asked: Mutex::new(Vec::new()),
        });
        let (texts, via) = fetch_source(&source, Some(&(tunnel.clone() as Arc<dyn Dialer>)), &opts)
            .await
            .unwrap();
        assert_eq!(via, "through the tunnel");
        assert_eq!(texts, [text]);
        assert_eq!(
            tunnel.asked.lock().unwrap().as_slice(),
            [Destination::Host {
                name: "localhost".into(),
                port: closed
            }]
        );
    }
}
