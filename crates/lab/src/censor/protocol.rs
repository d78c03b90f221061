//! Iran's 2020 protocol allowlist: on some ports, a connection whose first
//! client payload did not look like DNS, HTTP or TLS was cut off (Bock et
//! al., *Detecting and Evading Censorship-in-Depth: A Case Study of Iran's
//! Protocol Whitelister*, FOCI 2020). This is the "does it look like" half;
//! which ports are filtered is the lab's configuration.

use super::starts_with_http_method;

/// Which allowed protocol a first payload resembles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Looks {
    /// A DNS-over-TCP query: 2-byte length, then a sane query header.
    Dns,
    /// An HTTP/1.x request line (`METHOD `).
    Http,
    /// A TLS record header.
    Tls,
    /// None of the above: an allowlist censor drops it.
    Other,
}

/// Largest TLS record body a header may announce (RFC 8446 §5.2).
const MAX_TLS_RECORD: usize = 16_384 + 256;
/// DNS header length (RFC 1035 §4.1.1).
const DNS_HEADER: usize = 12;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL: u8 = 63;
/// Smallest question: the root name (1 byte), QTYPE and QCLASS.
const DNS_MIN_QUESTION: usize = 5;

/// Classifies the first payload a client sent on a TCP connection.
///
/// - TLS: content type `14`–`17` (change_cipher_spec, alert, handshake,
///   application_data), version `03 00`–`03 04`, and, once five bytes are
///   there, a length of at most 2^14 + 256.
/// - HTTP: an RFC 9110 method followed by a space.
/// - DNS over TCP (RFC 1035 §4.2.2): a length of at least 17, then a header
///   with QR = 0 (a query), opcode QUERY, NOTIFY or UPDATE (0, 4, 5), Z = 0,
///   RCODE = 0, and QDCOUNT (ZOCOUNT for UPDATE) exactly 1 — what each of
///   those sends in practice (RFC 9619 for QUERY, RFC 2136 §2.3 for UPDATE,
///   NOTIFY names one zone) and stricter
///   than "≥ 1", which lets text such as `get / HTTP/1.1` parse as a query.
///   A QUERY also has ANCOUNT = 0, and the first label is at most 63 bytes.
pub fn looks_like(first_payload: &[u8]) -> Looks {
    if looks_tls(first_payload) {
        Looks::Tls
    } else if starts_with_http_method(first_payload) {
        Looks::Http
    } else if looks_dns(first_payload) {
        Looks::Dns
    } else {
        Looks::Other
    }
}

fn looks_tls(p: &[u8]) -> bool {
    let [0x14..=0x17, 0x03, 0x00..=0x04, rest @ ..] = p else {
        return false;
    };
    match rest {
        [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])) <= MAX_TLS_RECORD,
        _ => true,
    }
}

fn looks_dns(p: &[u8]) -> bool {
    if p.len() < 2 + DNS_HEADER {
        return false;
    }
    let len = usize::from(u16::from_be_bytes([p[0], p[1]]));
    if len < DNS_HEADER + DNS_MIN_QUESTION {
        return false;
    }
    let h = &p[2..2 + DNS_HEADER];
    let flags = u16::from_be_bytes([h[2], h[3]]);
    let qr = flags >> 15;
    let opcode = (flags >> 11) & 0x0f;
    let z = (flags >> 6) & 1;
    let rcode = flags & 0x0f;
    let qdcount = u16::from_be_bytes([h[4], h[5]]);
    let ancount = u16::from_be_bytes([h[6], h[7]]);
    let sane_query = opcode != 0 || ancount == 0;
    let sane_label = p.get(2 + DNS_HEADER).is_none_or(|&l| l <= MAX_LABEL);
    qr == 0
        && matches!(opcode, 0 | 4 | 5)
        && z == 0
        && rcode == 0
        && qdcount == 1
        && sane_query
        && sane_label
}
