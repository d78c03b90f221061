//! `samizdat://` links: everything `samizdat client` needs to reach a server.
//!
//! ```text
//! samizdat://SECRET@HOST:PORT?pk=KEY&sni=NAME&fp=chrome&alt=HOST2:PORT2&name=LABEL
//! ```
//!
//! `SECRET` (the user's 16-byte key) and `pk` (the server's X25519 public
//! key) are base64url without padding. Each `alt` is one more server to fail
//! over to: `HOST:PORT` for a direct connection, or `wss://HOST[:PORT]/PATH`
//! for the transport carried in a WebSocket behind a reverse proxy or CDN.
//! `lk` is the Ed25519 key that signs server lists for this link, and each
//! `lu` a place to fetch them from. The layout is documented in
//! `docs/transport.md`.

use crate::secret::Key;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::fmt;

/// The URL scheme.
pub const SCHEME: &str = "samizdat://";

/// Longest link we parse; real ones are a few hundred bytes.
pub const MAX_LEN: usize = 8192;

/// Most servers in one link.
pub const MAX_SERVERS: usize = 64;

/// One server of a link.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct Endpoint {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `Some(path)`: reach the server through a WebSocket at
    /// `wss://host:port/path` (a reverse proxy or CDN in front of it);
    /// `None`: connect directly.
    pub ws_path: Option<String>,
}

impl Endpoint {
    /// A direct endpoint.
    pub fn direct(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            ws_path: None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.ws_path {
            None => write!(f, "{host}:{}", self.port),
            Some(path) if self.port == 443 => write!(f, "wss://{host}{path}"),
            Some(path) => write!(f, "wss://{host}:{}{path}", self.port),
        }
    }
}

/// A parsed `samizdat://` link.
#[derive(Clone, PartialEq, Eq)]
pub struct Link {
    /// The user's key.
    pub secret: Key,
    /// The server's static X25519 public key.
    pub server_key: [u8; 32],
    /// Servers in the order to try; never empty.
    pub servers: Vec<Endpoint>,
    /// The cover name the ClientHello carries.
    pub sni: String,
    /// Browser template name (`chrome`, `firefox`).
    pub fingerprint: String,
    /// Optional label for humans.
    pub name: Option<String>,
    /// The Ed25519 public key that signs server lists for this link.
    pub list_key: Option<[u8; 32]>,
    /// Where to fetch signed server lists (`https://…`, `dns:NAME` for a
    /// TXT record, or a file path); tried in order.
    pub list_sources: Vec<String>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret is a credential: never print it.
        f.debug_struct("Link")
            .field("servers", &self.servers)
            .field("sni", &self.sni)
            .field("fingerprint", &self.fingerprint)
            .field("name", &self.name)
            .field("list_sources", &self.list_sources)
            .finish_non_exhaustive()
    }
}

/// Why a link was refused; each says which part is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// Does not start with `samizdat://`.
    #[error("a samizdat link starts with samizdat:// (got {0:?}…)")]
    Scheme(String),
    /// Longer than [`MAX_LEN`].
    #[error("link is longer than {MAX_LEN} bytes")]
    TooLong,
    /// No `SECRET@` part.
    #[error("link has no user secret (samizdat://SECRET@HOST:PORT…)")]
    NoSecret,
    /// The secret is not 16 bytes of base64url.
    #[error("user secret must be 16 bytes in base64url (22 characters)")]
    BadSecret,
    /// `host:port` malformed.
    #[error("server {0:?} must be HOST:PORT with a port from 1 to 65535")]
    BadEndpoint(String),
    /// `pk=` missing or malformed.
    #[error("pk= must be the server's 32-byte public key in base64url (43 characters)")]
    BadServerKey,
    /// `sni=` missing or not a host name.
    #[error("sni= must be the cover site's host name")]
    BadSni,
    /// `sni=` is an IP address.
    #[error("sni= is an IP address; it must be the cover site's domain name (browsers send no server name for an IP address)")]
    IpSni,
    /// A parameter we do not know.
    #[error("unknown link parameter {0:?}")]
    UnknownParameter(String),
    /// A parameter given twice.
    #[error("link parameter {0:?} given twice")]
    Repeated(&'static str),
    /// More than [`MAX_SERVERS`] servers.
    #[error("link lists more than {MAX_SERVERS} servers")]
    TooManyServers,
    /// A `%` escape that is not two hex digits or not UTF-8.
    #[error("bad %-escape in link")]
    BadEscape,
    /// `lk=` malformed.
    #[error("lk= must be the 32-byte Ed25519 list key in base64url (43 characters)")]
    BadListKey,
    /// Too many `lu=` sources.
    #[error("link lists more than {MAX_SERVERS} server-list sources")]
    TooManySources,
}

fn unescape(text: &str) -> Result<String, LinkError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(LinkError::BadEscape)?;
            let s = std::str::from_utf8(hex).map_err(|_| LinkError::BadEscape)?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| LinkError::BadEscape)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| LinkError::BadEscape)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses one endpoint: `HOST:PORT`, `[IPV6]:PORT` or
/// `wss://HOST[:PORT]/PATH` (the forms of the link's `alt=`).
pub fn parse_endpoint(text: &str) -> Result<Endpoint, LinkError> {
    let bad = || LinkError::BadEndpoint(text.chars().take(80).collect());
    if let Some(rest) = text.strip_prefix("wss://") {
        let (authority, path) = rest.split_at(rest.find('/').ok_or_else(bad)?);
        if path.contains(['?', '#', ' ']) {
            return Err(bad());
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:443")
        } else {
            authority.to_string()
        };
        let mut e = parse_endpoint(&with_port).map_err(|_| bad())?;
        e.ws_path = Some(path.to_string());
        return Ok(e);
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        (h, p)
    } else {
        text.rsplit_once(':').ok_or_else(bad)?
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(['/', '@', '?', '#', ' ']) {
        return Err(bad());
    }
    if !text.starts_with('[') && host.contains(':') {
        return Err(bad());
    }
    Ok(Endpoint::direct(host, port))
}

impl Link {
    /// Parses a link. Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Link, LinkError> {
        let text = text.trim();
        if text.len() > MAX_LEN {
            return Err(LinkError::TooLong);
        }
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| LinkError::Scheme(text.chars().take(12).collect()))?;
        let (secret, rest) = rest.split_once('@').ok_or(LinkError::NoSecret)?;
        let raw = URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| LinkError::BadSecret)?;
        let secret = Key(raw.try_into().map_err(|_| LinkError::BadSecret)?);
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let mut servers = vec![parse_endpoint(authority)?];
        let (mut pk, mut sni, mut fp, mut name, mut lk) = (None, None, None, None, None);
        let mut list_sources = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = unescape(v)?;
            let slot = match k {
                "pk" => &mut pk,
                "sni" => &mut sni,
                "fp" => &mut fp,
                "name" => &mut name,
                "lk" => &mut lk,
                "lu" => {
                    if list_sources.len() == MAX_SERVERS {
                        return Err(LinkError::TooManySources);
                    }
                    list_sources.push(v);
                    continue;
                }
                "alt" => {
                    if servers.len() == MAX_SERVERS {
                        return Err(LinkError::TooManyServers);
                    }
                    servers.push(parse_endpoint(&v)?);
                    continue;
                }
                other => {
                    return Err(LinkError::UnknownParameter(
                        other.chars().take(40).collect(),
                    ))
                }
            };
            if slot.is_some() {
                return Err(LinkError::Repeated(match k {
                    "pk" => "pk",
                    "sni" => "sni",
                    "fp" => "fp",
                    "lk" => "lk",
                    _ => "name",
                }));
            }
            *slot = Some(v);
        }
        let pk = pk.ok_or(LinkError::BadServerKey)?;
        let server_key: [u8; 32] = URL_SAFE_NO_PAD
            .decode(pk)
            .map_err(|_| LinkError::BadServerKey)?
            .try_into()
            .map_err(|_| LinkError::BadServerKey)?;
        let list_key = match lk {
            Some(text) => Some(
                URL_SAFE_NO_PAD
                    .decode(text)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or(LinkError::BadListKey)?,
            ),
            None => None,
        };
        let sni = sni.ok_or(LinkError::BadSni)?;
        crate::secret::validate_domain(&sni).map_err(|e| match e {
            crate::secret::SecretError::IpDomain(_) => LinkError::IpSni,
            _ => LinkError::BadSni,
        })?;
        Ok(Link {
            secret,
            server_key,
            servers,
            sni,
            fingerprint: fp.unwrap_or_else(|| "chrome".to_string()),
            name,
            list_key,
            list_sources,
        })
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = &self.servers[0];
        write!(
            f,
            "{SCHEME}{}@{first}?pk={}&sni={}&fp={}",
            URL_SAFE_NO_PAD.encode(self.secret.0),
            URL_SAFE_NO_PAD.encode(self.server_key),
            escape(&self.sni),
            escape(&self.fingerprint),
        )?;
        for alt in &self.servers[1..] {
            write!(f, "&alt={}", escape(&alt.to_string()))?;
        }
        if let Some(name) = &self.name {
            write!(f, "&name={}", escape(name))?;
        }
        if let Some(key) = &self.list_key {
            write!(f, "&lk={}", URL_SAFE_NO_PAD.encode(key))?;
        }
        for source in &self.list_sources {
            write!(f, "&lu={}", escape(source))?;
        }
        Ok(())
    }
}

/// The WebSocket listener's path when the server is not given one:
/// `/` and 24 hex digits of SHA-256("samizdat websocket path\0" ‖ the
/// server's transport public key). It stays the same across restarts and
/// looks like any hashed asset path; the key is not sent on the wire, so
/// the path is as hard to guess as the link is to get.
pub fn default_ws_path(server_key: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"samizdat websocket path\0")
        .chain_update(server_key)
        .finalize();
    format!("/{}", hex::encode(&digest[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ws_path_is_a_stable_hash_of_the_server_key() {
        // SHA-256("samizdat websocket path\0" ‖ [7; 32]), first 12 bytes.
        assert_eq!(default_ws_path(&[7; 32]), "/f2e695239969ed9b9a8aae4b");
        assert_ne!(default_ws_path(&[8; 32]), default_ws_path(&[7; 32]));
    }

    fn sample() -> Link {
        Link {
            secret: Key([7; 16]),
            server_key: [9; 32],
            servers: vec![
                Endpoint::direct("203.0.113.5", 443),
                Endpoint::direct("2001:db8::1", 8443),
                Endpoint::direct("proxy.example.org", 443),
                Endpoint {
                    host: "cdn.example.net".into(),
                    port: 443,
                    ws_path: Some("/s/abc".into()),
                },
                Endpoint {
                    host: "2001:db8::2".into(),
                    port: 8443,
                    ws_path: Some("/".into()),
                },
            ],
            sni: "www.example.com".into(),
            fingerprint: "firefox".into(),
            name: Some("Ivan's phone & laptop".into()),
            list_key: Some([3; 32]),
            list_sources: vec![
                "https://lists.example.org/s.json".into(),
                "dns:_s.example.org".into(),
            ],
        }
    }

    #[test]
    fn roundtrips_through_text() {
        let link = sample();
        let text = link.to_string();
        assert!(text.starts_with("samizdat://BwcHBwcHBwcHBwcHBwcHBw@203.0.113.5:443?pk="));
        assert!(text.contains("&alt=%5B2001%3Adb8%3A%3A1%5D%3A8443"));
        assert!(text.contains("&alt=wss%3A%2F%2Fcdn.example.net%2Fs%2Fabc"));
        assert_eq!(Link::parse(&text).unwrap(), link);
        assert_eq!(Link::parse(&format!("  {text}\n")).unwrap(), link);
    }

    #[test]
    fn defaults_the_fingerprint_and_accepts_a_slash() {
        let text = "samizdat://BwcHBwcHBwcHBwcHBwcHBw@h.example:443/?pk=CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk&sni=a.example";
        let link = Link::parse(text).unwrap();
        assert_eq!(link.fingerprint, "chrome");
        assert_eq!(link.servers.len(), 1);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("BwcH") && !text.contains("[7, 7"), "{text}");
    }

    #[test]
    fn names_what_is_wrong() {
        let good = sample().to_string();
        let cases: Vec<(String, LinkError)> = vec![
            ("tg://proxy".into(), LinkError::Scheme("tg://proxy".into())),
            ("samizdat://h:1?pk=x".into(), LinkError::NoSecret),
            (
                good.replacen("BwcHBwcHBwcHBwcHBwcHBw", "AAAA", 1),
                LinkError::BadSecret,
            ),
            (
                good.replacen(":443?", ":0?", 1),
                LinkError::BadEndpoint("203.0.113.5:0".into()),
            ),
            (good.replacen("pk=", "pk=AA", 1), LinkError::BadServerKey),
            (
                good.replacen("sni=www.example.com", "sni=", 1),
                LinkError::BadSni,
            ),
            (
                good.replacen("sni=www.example.com", "sni=10.0.0.1", 1),
                LinkError::IpSni,
            ),
            (
                good.replacen("sni=www.example.com", "sni=%5B2001%3Adb8%3A%3A1%5D", 1),
                LinkError::IpSni,
            ),
            (
                format!("{good}&x=1"),
                LinkError::UnknownParameter("x".into()),
            ),
            (format!("{good}&sni=b.example"), LinkError::Repeated("sni")),
            (format!("{good}&alt=%zz"), LinkError::BadEscape),
            (
                format!("{good}&alt=wss://h.example"),
                LinkError::BadEndpoint("wss://h.example".into()),
            ),
            (good.replacen("&lk=", "&lk=AA", 1), LinkError::BadListKey),
            (
                "samizdat://".to_string() + &"a".repeat(MAX_LEN),
                LinkError::TooLong,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Link::parse(&text).unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn caps_the_server_list() {
        let mut text = sample().to_string();
        for i in 0..MAX_SERVERS {
            text.push_str(&format!("&alt=h{i}.example:443"));
        }
        assert_eq!(Link::parse(&text).unwrap_err(), LinkError::TooManyServers);
    }
}
