//! Where a signed server list comes from: a file, an HTTPS URL or a DNS
//! TXT name, parsed from and shown as the link's text.

use super::*;

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
