//! Fetching lists: from every source at once (a file, HTTPS through the
//! tunnel or directly, DNS TXT), each bounded in size and time.

use super::*;
use wire::http1::body::{self, BodyError};

/// How lists are fetched.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// DNS server for `dns:` sources; `None`: the system's.
    pub dns_server: Option<SocketAddr>,
    /// A PEM file of extra CAs trusted for `https://` sources.
    pub extra_ca: Option<PathBuf>,
    /// Deadline of each fetch.
    pub timeout: Duration,
}

impl FetchOptions {
    /// The defaults, with the extra CA from [`TEST_CA_ENV`] if set.
    pub fn new(dns_server: Option<SocketAddr>) -> FetchOptions {
        FetchOptions {
            dns_server,
            extra_ca: std::env::var_os(TEST_CA_ENV).map(PathBuf::from),
            timeout: FETCH_TIMEOUT,
        }
    }
}

/// What a round of fetching found.
#[derive(Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// A list newer than the one held, verified and saved.
    Newer(ServerList),
    /// A source answered with the list already held (this serial).
    UpToDate(u64),
}

/// Tries `sources` in order until one yields a list newer than `current`;
/// saves it in `state_dir`. `tunnel` (the client's dialer) is the second
/// path to `https://` sources. Logs each source's outcome. The error lists
/// why each source failed.
pub async fn fetch_all(
    link: &Link,
    sources: &[String],
    tunnel: Option<Arc<dyn Dialer>>,
    state_dir: &Path,
    current: Option<&ServerList>,
    opts: &FetchOptions,
) -> Result<Refreshed, ListFetchError> {
    let Some(key) = link.list_key else {
        return Err(ListFetchError::NoListKey);
    };
    let have = current.map(|l| l.serial);
    let mut up_to_date = None;
    let mut failures = Vec::new();
    for text in sources {
        let source = match Source::parse(text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("server list source skipped: {e}");
                failures.push(SourceFailure {
                    source: text.clone(),
                    why: e,
                });
                continue;
            }
        };
        let (texts, via) = match fetch_source(&source, tunnel.as_ref(), opts).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("server list: {source}: unreachable: {e}");
                failures.push(SourceFailure {
                    source: source.to_string(),
                    why: e,
                });
                continue;
            }
        };
        let now = crate::clock::unix_now();
        let mut best: Option<(ServerList, &String)> = None;
        let mut refusal = None;
        for t in &texts {
            match server_list::verify(t, &key, now, have) {
                Ok(list) if best.as_ref().is_none_or(|(b, _)| list.serial > b.serial) => {
                    best = Some((list, t))
                }
                Ok(_) => {}
                Err(ListError::Stale { serial, have }) if serial == have => {
                    up_to_date = Some(serial);
                    refusal.get_or_insert_with(|| "up to date".to_string());
                }
                Err(e) => refusal = Some(e.to_string()),
            }
        }
        match best {
            Some((list, text)) => {
                if let Err(e) = store(state_dir, &key, text, &list) {
                    tracing::warn!("server list: {source}: not saved: {e}");
                }
                tracing::info!(
                    "server list: {source} ({via}): serial {} with {} endpoint(s){}",
                    list.serial,
                    list.endpoints.len(),
                    have.map(|h| format!(", replacing serial {h}"))
                        .unwrap_or_default()
                );
                return Ok(Refreshed::Newer(list));
            }
            None => {
                let why = refusal.unwrap_or_else(|| "no list in the answer".into());
                if why == "up to date" {
                    tracing::info!(
                        "server list: {source} ({via}): up to date (serial {})",
                        have.unwrap_or(0)
                    );
                } else {
                    tracing::warn!("server list: {source} ({via}): refused: {why}");
                }
                failures.push(SourceFailure {
                    source: source.to_string(),
                    why,
                });
            }
        }
    }
    match up_to_date {
        Some(serial) => Ok(Refreshed::UpToDate(serial)),
        None => Err(ListFetchError::NoSource(failures)),
    }
}

/// Why a round of list fetching found no newer list and no current one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListFetchError {
    /// The link carries no `lk=` key, so no list can be verified.
    #[error("the link has no lk= list key")]
    NoListKey,
    /// Every source failed; what went wrong with each, in order.
    #[error("no server list source worked ({})", failures_text(.0))]
    NoSource(Vec<SourceFailure>),
}

/// One source that gave no usable list, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFailure {
    /// The source as written (`https://…`, `file:…`, `dns:…`).
    pub source: String,
    /// What went wrong: unreachable, refused (with the list check's
    /// reason), or not a source at all.
    pub why: String,
}

fn failures_text(failures: &[SourceFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{}: {}", f.source, f.why))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The list texts a source holds, and by which path they came.
pub(super) async fn fetch_source(
    source: &Source,
    tunnel: Option<&Arc<dyn Dialer>>,
    opts: &FetchOptions,
) -> Result<(Vec<String>, &'static str), String> {
    let deadline = |what: &str| format!("{what}: no answer within {} s", opts.timeout.as_secs());
    match source {
        Source::File(path) => {
            let bytes = tokio::time::timeout(opts.timeout, read_bounded(path))
                .await
                .map_err(|_| deadline("reading"))??;
            Ok((vec![first_list(&bytes)], "file"))
        }
        Source::Dns(name) => {
            let texts = tokio::time::timeout(opts.timeout, dns_txt(name, opts))
                .await
                .map_err(|_| deadline("DNS"))??;
            Ok((texts, "DNS"))
        }
        Source::Https { host, port, path } => {
            let tls = crate::client::tls::build(&[b"http/1.1"], opts.extra_ca.as_deref())?;
            let direct = async {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?;
                https_get(tcp, host, *port, path, tls.clone()).await
            };
            let direct_error = match tokio::time::timeout(opts.timeout, direct).await {
                Ok(Ok(body)) => return Ok((vec![first_list(&body)], "direct")),
                // The real server answered (its certificate checked): the
                // tunnel would get the same answer.
                Ok(Err(e)) if e.starts_with(HTTP_STATUS) => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => deadline("direct").replace("direct: ", ""),
            };
            let Some(dialer) = tunnel else {
                return Err(direct_error);
            };
            let dest = match host.parse::<IpAddr>() {
                Ok(ip) => Destination::Addr(SocketAddr::new(ip, *port)),
                Err(_) => Destination::Host {
                    name: host.clone(),
                    port: *port,
                },
            };
            let through = async {
                let io = dialer
                    .open(dest, Vec::new())
                    .await
                    .map_err(|e| e.to_string())?;
                https_get(io, host, *port, path, tls.clone()).await
            };
            match tokio::time::timeout(opts.timeout, through).await {
                Ok(Ok(body)) => Ok((vec![first_list(&body)], "through the tunnel")),
                Ok(Err(e)) => Err(format!("direct: {direct_error}; through the tunnel: {e}")),
                Err(_) => Err(format!(
                    "direct: {direct_error}; through the tunnel: no answer within {} s",
                    opts.timeout.as_secs()
                )),
            }
        }
    }
}

/// The first line that looks like a list, else the whole text trimmed.
pub(super) fn first_list(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    crate::cli::list::extract(&text).to_string()
}

pub(super) async fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut bytes = Vec::new();
        f.take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if bytes.len() > MAX_RESPONSE {
            return Err(format!("{} is larger than a list can be", path.display()));
        }
        Ok(bytes)
    })
    .await
    .map_err(|e| format!("reading: {e}"))?
}

/// `GET path` over TLS on `io`; the body of a 200 answer.
pub(super) async fn https_get<S>(
    io: S,
    host: &str,
    port: u16,
    path: &str,
    tls: Arc<ClientConfig>,
) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, io)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let authority = match (host.contains(':'), port) {
        (true, 443) => format!("[{host}]"),
        (true, p) => format!("[{host}]:{p}"),
        (false, 443) => host.to_string(),
        (false, p) => format!("{host}:{p}"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: samizdat\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let eof = match stream.read(&mut chunk).await {
            Ok(0) => true,
            Ok(n) => {
                if buf.len() + n > MAX_RESPONSE {
                    return Err(format!("the answer is larger than {MAX_RESPONSE} bytes"));
                }
                buf.extend_from_slice(&chunk[..n]);
                false
            }
            // Servers that close without close_notify: what came is judged.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => true,
            Err(e) => return Err(format!("reading the answer: {e}")),
        };
        if let Some(body) = response_body(&buf, eof)? {
            return Ok(body);
        }
        if eof {
            return Err("the connection closed before the answer was complete".into());
        }
    }
}

/// The body of a complete HTTP/1.1 response in `buf` (see
/// [`wire::http1::body::response_body`]): `Ok(None)` while more is needed,
/// an error for a non-200 status (worded with [`HTTP_STATUS`] so the
/// caller can tell it apart) or a bad framing. The body is bounded by
/// twice the largest list text.
pub(super) fn response_body(buf: &[u8], eof: bool) -> Result<Option<Vec<u8>>, String> {
    body::response_body(buf, eof, 2 * server_list::MAX_TEXT).map_err(|e| match e {
        BodyError::Status { code, reason } => format!("{HTTP_STATUS}{code} {reason}"),
        BodyError::TooLarge(len) => format!("the body is {len} bytes, too large for a list"),
        other => other.to_string(),
    })
}

/// The TXT records of `name` that hold a list (each record's strings
/// joined).
pub(super) async fn dns_txt(name: &str, opts: &FetchOptions) -> Result<Vec<String>, String> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::proto::rr::RData;
    use hickory_resolver::Resolver;
    let mut builder = match opts.dns_server {
        Some(addr) => {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut server.connections {
                c.port = addr.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => {
            Resolver::builder_tokio().map_err(|e| format!("no system DNS configuration: {e}"))?
        }
    };
    let dns = builder.options_mut();
    dns.timeout = (opts.timeout / 4).max(Duration::from_secs(1));
    dns.attempts = 2;
    let resolver = builder.build().map_err(|e| format!("DNS resolver: {e}"))?;
    let fqdn = format!("{name}.");
    let lookup = resolver
        .txt_lookup(fqdn.as_str())
        .await
        .map_err(|e| format!("TXT lookup of {name}: {e}"))?;
    let mut texts = Vec::new();
    let mut total = 0;
    for record in lookup.answers() {
        let RData::TXT(txt) = &record.data else {
            continue;
        };
        let joined: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        total += joined.len();
        if total > MAX_RESPONSE {
            return Err(format!("the TXT records of {name} are too large"));
        }
        if joined.starts_with(server_list::PREFIX.as_bytes()) {
            texts.push(String::from_utf8_lossy(&joined).into_owned());
        }
    }
    if texts.is_empty() {
        return Err(format!(
            "no TXT record of {name} holds a list ({}…)",
            server_list::PREFIX
        ));
    }
    Ok(texts)
}
