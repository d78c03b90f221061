//! The cover check: a real TLS handshake with the cover site, with the SNI
//! clients send, then `GET /`. Connections that fail authentication are
//! spliced there, so what a prober sees is this site: it must answer TLS
//! 1.3 with a ServerHello shaped like the one samizdat forges (spec §4.4).

use super::clock::{parse_http_date, DateSample};
use super::shape::{self, ServerShape};
use super::{describe, show, Check, Finding, Level};
use crate::serve::config::ServeConfig;
use crate::serve::cover::CoverTarget;
use crate::sync::Locked;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig};
use tokio_rustls::TlsConnector;

mod tap;
pub mod verifier;

use tap::{Log, Tap};

/// What the cover probes found, and the first `Date:` header for the clock.
pub(super) struct CoverReport {
    pub(super) findings: Vec<Finding>,
    pub(super) date: Option<DateSample>,
}

/// Probes the cover once per fake-TLS domain, concurrently.
pub(super) async fn check(c: &ServeConfig, timeout: Duration) -> CoverReport {
    let config = client_config();
    let several = c.policy.domains.len() > 1;
    let tasks: Vec<_> = c
        .policy
        .domains
        .iter()
        .map(|d| {
            let subject = if several {
                format!("cover {} as {d}", c.cover)
            } else {
                format!("cover {}", c.cover)
            };
            let probe = Probe {
                target: c.cover.clone(),
                sni: d.clone(),
                subject,
                timeout,
                config: config.clone(),
            };
            tokio::spawn(probe.run())
        })
        .collect();
    let mut report = CoverReport {
        findings: Vec::new(),
        date: None,
    };
    for t in tasks {
        if let Ok((findings, date)) = t.await {
            report.findings.extend(findings);
            report.date = report.date.or(date);
        }
    }
    report
}

/// A TLS client that offers what Telegram clients offer where it shapes the
/// answer (TLS 1.3 and 1.2, an X25519 key share only) and takes any
/// certificate.
fn client_config() -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
        .dangerous()
        // We check the cover's shape, not whether we trust it: the cover
        // is often a self-signed or not-yet-issued certificate on a test
        // box, and doctor sends nothing secret over this connection.
        .with_custom_certificate_verifier(Arc::new(verifier::AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

struct Probe {
    target: CoverTarget,
    sni: String,
    subject: String,
    timeout: Duration,
    config: Arc<ClientConfig>,
}

impl Probe {
    fn finding(&self, level: Level, found: impl Into<String>) -> Finding {
        Finding::new(level, Check::Cover, self.subject.clone(), found)
    }

    async fn run(self) -> (Vec<Finding>, Option<DateSample>) {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let tcp = match self.target.connect(self.timeout).await {
            Ok(s) => s,
            Err(e) => return (vec![self.connect_failure(&e)], None),
        };
        let Ok(name) = ServerName::try_from(self.sni.clone()) else {
            let f = self
                .finding(
                    Level::Fail,
                    format!("{} is not a name TLS accepts as SNI", self.sni),
                )
                .fix("fix --domain");
            return (vec![f], None);
        };
        let log = Arc::new(Mutex::new(Log::default()));
        let tap = Tap {
            inner: tcp,
            log: log.clone(),
        };
        let handshake = TlsConnector::from(self.config.clone()).connect(name, tap);
        let mut tls = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let read = log.locked().read.clone();
                return (vec![self.handshake_failure(&e, &read)], None);
            }
            Err(_) => {
                let f = self
                    .finding(
                        Level::Fail,
                        format!("no answer to the TLS hello within {}", show(self.timeout)),
                    )
                    .fix(not_tls_fix());
                return (vec![f], None);
            }
        };
        let handshake_time = start.elapsed();
        let (read, written) = {
            let l = log.locked();
            (l.read.clone(), l.written.clone())
        };
        let (_, conn) = tls.get_ref();
        let version = conn.protocol_version();
        let suite = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let mut out = Vec::new();
        let http = http_get(&mut tls, &self.sni, deadline).await;
        let mut facts = Vec::new();
        let mut main = if version == Some(rustls::ProtocolVersion::TLSv1_3) {
            facts.push(format!("TLS 1.3 ({suite})"));
            let sid = shape::client_session_id(&written).unwrap_or_default();
            if let Some(s) = shape::server_shape(&read) {
                facts.push(describe_shape(&s));
                out.extend(self.shape_warnings(&s, sid));
            }
            self.finding(Level::Ok, "")
        } else {
            let name = match version {
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
                v => format!("{v:?}"),
            };
            facts.push(format!("{name} ({suite}), not TLS 1.3"));
            self.finding(Level::Fail, "").fix("samizdat answers Telegram clients as a TLS 1.3 server, so a prober comparing the two sees the difference: \
                  enable TLS 1.3 on the cover (nginx: ssl_protocols TLSv1.2 TLSv1.3;) or choose a cover that has it")
        };
        let mut date = None;
        match http {
            Ok(answer) => {
                facts.push(format!("GET / answered HTTP {}", answer.status));
                if answer.status.starts_with('5') {
                    out.push(
                        self.finding(Level::Warn, format!("GET / answers HTTP {}", answer.status))
                            .fix("a broken site draws attention: fix the web server behind the cover"),
                    );
                }
                date = answer.date.map(|d| DateSample {
                    source: self.subject.clone(),
                    date: d,
                    local: answer.received,
                });
            }
            Err(e) => out.push(
                self.finding(
                    Level::Warn,
                    format!("TLS works, but GET / got no HTTP answer: {e}"),
                )
                .fix("the cover should be a real web site: check the web server behind it"),
            ),
        }
        facts.push(format!("handshake in {}", show(handshake_time)));
        main.found = facts.join(", ");
        out.insert(0, main);
        (out, date)
    }

    fn connect_failure(&self, e: &io::Error) -> Finding {
        let (found, fix) = match e.kind() {
            io::ErrorKind::ConnectionRefused => (
                "connection refused".to_string(),
                "start your cover web server or fix --cover",
            ),
            io::ErrorKind::TimedOut => (
                format!("no answer within {}", show(self.timeout)),
                "check the cover's address and that no firewall drops the connection, or fix --cover",
            ),
            _ if matches!(self.target, CoverTarget::Host(..)) && e.to_string().contains("lookup") => (
                format!("cannot resolve the name: {}", describe(e)),
                "fix --cover (without it, the cover is the first --domain on port 443)",
            ),
            _ => (describe(e), "check the cover's address or fix --cover"),
        };
        self.finding(Level::Fail, found).fix(fix)
    }

    fn handshake_failure(&self, e: &io::Error, read: &[u8]) -> Finding {
        if shape::server_shape(read).is_some_and(|s| s.hello_retry) {
            return self
                .finding(
                    Level::Warn,
                    "answers an X25519 key share (all Telegram clients offer) with a HelloRetryRequest, which samizdat never sends",
                )
                .fix("choose a cover whose TLS accepts X25519 at once (any current nginx, Apache or Caddy)");
        }
        match read.first() {
            None => self
                .finding(Level::Fail, "closed the connection without answering the TLS hello")
                .fix(not_tls_fix()),
            Some(0x16) => self
                .finding(Level::Fail, format!("TLS handshake failed: {}", describe(e)))
                .fix("make the cover a working HTTPS server with TLS 1.3"),
            Some(0x15) => self
                .finding(Level::Fail, format!("refused the TLS hello: {}", describe(e)))
                .fix(format!("the cover must accept the SNI {} and TLS 1.3 with X25519: check its server_name and ssl_protocols", self.sni)),
            Some(_) => self
                .finding(Level::Fail, format!("answers, but not with TLS (it sent {})", preview(read)))
                .fix(not_tls_fix()),
        }
    }

    /// Where the cover's ServerHello differs from the one samizdat forges:
    /// samizdat echoes the client's session id and sends ChangeCipherSpec
    /// (as TLS 1.3 servers in middlebox-compatibility mode do), and lists
    /// key_share before supported_versions (serve/connection.rs).
    fn shape_warnings(&self, s: &ServerShape, client_sid: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        if s.session_id != client_sid || !s.change_cipher_spec {
            out.push(
                self.finding(
                    Level::Warn,
                    "its ServerHello does not echo the session id or sends no ChangeCipherSpec; samizdat's does both",
                )
                .fix("choose a cover with a mainstream TLS stack (nginx, Apache, Caddy)"),
            );
        }
        let ours = [shape::KEY_SHARE, shape::SUPPORTED_VERSIONS];
        let theirs: Vec<u16> = s
            .extensions
            .iter()
            .copied()
            .filter(|t| ours.contains(t))
            .collect();
        if theirs.len() == 2 && theirs != ours {
            out.push(
                self.finding(
                    Level::Warn,
                    "its ServerHello lists supported_versions before key_share (OpenSSL does); samizdat's lists key_share first, so a prober comparing the two can tell",
                )
                .fix("nothing to set yet: samizdat does not copy the cover's order; a cover on rustls matches"),
            );
        }
        out
    }
}

fn not_tls_fix() -> &'static str {
    "the cover must be an HTTPS server: point --cover at its TLS port (usually 443)"
}

fn describe_shape(s: &ServerShape) -> String {
    let exts: Vec<String> = s
        .extensions
        .iter()
        .map(|t| shape::extension_name(*t))
        .collect();
    let mut text = format!("ServerHello [{}]", exts.join(", "));
    // Only the first: the capture runs on into the HTTP answer.
    if let Some(n) = s.encrypted.first() {
        text.push_str(&format!(", first encrypted record {n} bytes"));
    }
    text
}

/// The first bytes as text when they are printable, else as hex.
fn preview(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(24)];
    let line = head
        .split(|b| *b == b'\r' || *b == b'\n')
        .next()
        .unwrap_or(head);
    if !line.is_empty() && line.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(line))
    } else {
        hex::encode(head)
    }
}

/// An HTTP answer's status and `Date:`.
struct Answer {
    status: String,
    date: Option<u64>,
    received: SystemTime,
}

/// `GET /` over the TLS connection; reads the head of the answer.
async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    tls: &mut S,
    host: &str,
    deadline: Instant,
) -> Result<Answer, String> {
    let request =
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    let exchange = async {
        tls.write_all(request.as_bytes()).await?;
        tls.flush().await?;
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 32 * 1024 {
            match tls.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
                Err(e) if !head.is_empty() && e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        Ok((head, crate::clock::system_now()))
    };
    let (head, received) = match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => return Err("no answer in time".into()),
        Ok(Err(e)) => return Err(describe(&e)),
        Ok(Ok(r)) => r,
    };
    let status = match wire::http1::status_line(&head) {
        Ok(line) => line.code.to_string(),
        Err(_) if head.is_empty() => return Err("the connection closed".into()),
        Err(_) => return Err(format!("not HTTP ({})", preview(&head))),
    };
    let text = String::from_utf8_lossy(&head);
    let date = text
        .split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("date"))
        .and_then(|(_, value)| parse_http_date(value.trim()));
    Ok(Answer {
        status,
        date,
        received,
    })
}
