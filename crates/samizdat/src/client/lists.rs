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

use crate::proxy::Dialer;
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

/// One place lists come from (a link's `lu=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local file.
    File(PathBuf),
    /// An HTTPS URL.
    Https {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
        /// Path and query, starting with `/`.
        path: String,
    },
    /// The TXT records of a DNS name.
    Dns(String),
}

impl Source {
    /// Parses `https://…`, `dns:NAME`, `file:PATH` or a bare path.
    pub fn parse(text: &str) -> Result<Source, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("https://") {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, "/"),
            };
            let bad = || format!("{text:?} is not an https://HOST[:PORT]/PATH URL");
            let (host, port) = if let Some(r) = authority.strip_prefix('[') {
                let (h, p) = r.split_once(']').ok_or_else(bad)?;
                h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
                (h, p.strip_prefix(':'))
            } else {
                match authority.split_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (authority, None),
                }
            };
            let port = match port {
                Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad)?,
                None => 443,
            };
            if host.is_empty()
                || host.contains(['@', ' ', '/'])
                || path.bytes().any(|b| !(b'!'..=b'~').contains(&b))
                || text.len() > 2048
            {
                return Err(bad());
            }
            return Ok(Source::Https {
                host: host.to_string(),
                port,
                path: path.to_string(),
            });
        }
        if let Some(name) = text.strip_prefix("dns:") {
            let name = name.trim_end_matches('.');
            if name.is_empty()
                || name.len() > 253
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(format!(
                    "{text:?}: dns: needs a DNS name, e.g. dns:_s.example.org"
                ));
            }
            return Ok(Source::Dns(name.to_string()));
        }
        if text.starts_with("http://") {
            return Err(format!(
                "{text:?}: use https:// (lists are signed, but over plain HTTP a censor sees and can block exactly what is fetched)"
            ));
        }
        if let Some(path) = text.strip_prefix("file://").or(text.strip_prefix("file:")) {
            return Ok(Source::File(PathBuf::from(path)));
        }
        if text.is_empty() || text.contains("://") {
            return Err(format!(
                "{text:?}: a list source is https://…, dns:NAME, file:PATH or a path"
            ));
        }
        Ok(Source::File(PathBuf::from(text)))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "file:{}", p.display()),
            Source::Https { host, port, path } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                match port {
                    443 => write!(f, "https://{host}{path}"),
                    p => write!(f, "https://{host}:{p}{path}"),
                }
            }
            Source::Dns(name) => write!(f, "dns:{name}"),
        }
    }
}

// === saved lists ===

/// Where the list signed by `key` is kept.
pub fn saved_path(state_dir: &Path, key: &[u8; 32]) -> PathBuf {
    state_dir
        .join(DIR)
        .join(format!("{}.list", server_list::key_id(key)))
}

/// The list saved for `key`, its signature checked again (a damaged or
/// foreign file is an error); times are not checked, so an expired list
/// still says which serials are old.
pub fn load_saved(state_dir: &Path, key: &[u8; 32]) -> Result<Option<ServerList>, String> {
    let path = saved_path(state_dir, key);
    let text = match std::fs::read(&path) {
        Ok(bytes) if bytes.len() > MAX_RESPONSE => {
            return Err(format!("{}: too large to be a list", path.display()))
        }
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    server_list::verify_signature(&text, key)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Saves `text` (a verified list) for `key`, owner-only and atomically,
/// unless the list saved already has the same or a higher serial.
pub fn store(
    state_dir: &Path,
    key: &[u8; 32],
    text: &str,
    list: &ServerList,
) -> Result<(), String> {
    if let Ok(Some(have)) = load_saved(state_dir, key) {
        if have.serial >= list.serial {
            return Err(ListError::Stale {
                serial: list.serial,
                have: have.serial,
            }
            .to_string());
        }
    }
    let dir = state_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let path = saved_path(state_dir, key);
    crate::state::replace_private(&path, format!("{}\n", text.trim()).as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The servers to use: the link's, then the list's (without repeats).
/// Endpoints the list gives another server key than the link's are left
/// out: this client speaks to one server key per link.
pub fn servers(link: &Link, saved: Option<&ServerList>) -> Vec<Endpoint> {
    let mut out = link.servers.clone();
    for listed in saved.map(|l| l.endpoints.as_slice()).unwrap_or_default() {
        let same_key = listed.server_key.is_none_or(|k| k == link.server_key);
        if same_key && !out.contains(&listed.endpoint) {
            out.push(listed.endpoint.clone());
        }
    }
    out
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// === fetching ===

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
) -> Result<Refreshed, Vec<String>> {
    let Some(key) = link.list_key else {
        return Err(vec!["the link has no lk= list key".into()]);
    };
    let have = current.map(|l| l.serial);
    let mut up_to_date = None;
    let mut failures = Vec::new();
    for text in sources {
        let source = match Source::parse(text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("server list source skipped: {e}");
                failures.push(e);
                continue;
            }
        };
        let (texts, via) = match fetch_source(&source, tunnel.as_ref(), opts).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("server list: {source}: unreachable: {e}");
                failures.push(format!("{source}: {e}"));
                continue;
            }
        };
        let now = now_unix();
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
                failures.push(format!("{source}: {why}"));
            }
        }
    }
    match up_to_date {
        Some(serial) => Ok(Refreshed::UpToDate(serial)),
        None => Err(failures),
    }
}

/// The list texts a source holds, and by which path they came.
async fn fetch_source(
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
fn first_list(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    crate::list_cmd::extract(&text).to_string()
}

async fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
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
async fn https_get<S>(
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

/// The body of a complete HTTP/1.1 response in `buf`: `Ok(None)` while
/// more is needed, an error for a non-200 status or a bad framing. `eof`:
/// nothing more will come (a body without a length ends there).
fn response_body(buf: &[u8], eof: bool) -> Result<Option<Vec<u8>>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP answer: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    if code != 200 {
        return Err(format!(
            "{HTTP_STATUS}{code} {}",
            resp.reason.unwrap_or_default()
        ));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &buf[head..];
    if header("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
        return dechunk(rest);
    }
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length".to_string())?;
        if len > server_list::MAX_TEXT * 2 {
            return Err(format!("the body is {len} bytes, too large for a list"));
        }
        return Ok((rest.len() >= len).then(|| rest[..len].to_vec()));
    }
    Ok(eof.then(|| rest.to_vec()))
}

/// Decodes a chunked body: `Ok(None)` until the last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..end]).map_err(|_| "bad chunk size".to_string())?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| "bad chunk size".to_string())?;
        if size > MAX_RESPONSE || body.len() + size > MAX_RESPONSE {
            return Err("chunked body too large".into());
        }
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The TXT records of `name` that hold a list (each record's strings
/// joined).
async fn dns_txt(name: &str, opts: &FetchOptions) -> Result<Vec<String>, String> {
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

// === the refresh task ===

/// Loads the saved list for `link`'s key, logging what it adds; `None`
/// without a key or a usable file.
pub fn load_at_start(link: &Link, state_dir: &Path) -> Option<ServerList> {
    let key = link.list_key?;
    match load_saved(state_dir, &key) {
        Ok(Some(list)) => {
            if list.expires <= now_unix() {
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
    servers(link, list.filter(|l| l.expires > now_unix()))
}

/// Random wait in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    crate::random::fill(&mut b);
    let ms = max.as_millis().max(1) as u64;
    Duration::from_millis(u64::from_le_bytes(b) % ms)
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
                    tracing::warn!(
                        "no server list source worked ({}); next try in {} min",
                        why.join("; "),
                        wait.as_secs() / 60
                    );
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
    use super::*;
    use crate::proxy::{BoxIo, OpenError, OpenFuture};
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
        let now = now_unix();
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
        assert!(why[0].contains("signed by key"), "{why:?}");
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

    /// A CA and a certificate for `localhost` signed by it; the CA as PEM.
    fn test_pki() -> (String, rustls::ServerConfig) {
        use base64::Engine;
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(ca.der());
        let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        (pem, config)
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
