//! SOCKS5 server side (RFC 1928) with username/password auth (RFC 1929):
//! the method greeting, the auth subnegotiation, the request, and replies.
//!
//! Each `parse_*` follows the three-outcome rule: `Ok(None)` needs more
//! bytes, `Err` is invalid, `Ok(Some((value, used)))` consumed `used`
//! bytes. None needs more than [`MAX_MESSAGE`] bytes to decide.

use crate::tunnel::Destination;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The protocol version byte.
pub const VERSION: u8 = 5;
/// Auth method: none.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Auth method: username/password (RFC 1929).
pub const METHOD_USER_PASS: u8 = 0x02;
/// Method-selection answer: none of the offered methods is acceptable.
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
/// The RFC 1929 subnegotiation version.
pub const AUTH_VERSION: u8 = 1;
/// The longest message any parser here waits for (a request with a
/// 255-byte name, or auth with two 255-byte fields).
pub const MAX_MESSAGE: usize = 3 + 255 + 255;

/// Reply codes (RFC 1928 §6).
pub mod reply {
    /// Succeeded.
    pub const SUCCEEDED: u8 = 0x00;
    /// General SOCKS server failure.
    pub const GENERAL_FAILURE: u8 = 0x01;
    /// Connection not allowed by ruleset.
    pub const NOT_ALLOWED: u8 = 0x02;
    /// Network unreachable.
    pub const NETWORK_UNREACHABLE: u8 = 0x03;
    /// Host unreachable.
    pub const HOST_UNREACHABLE: u8 = 0x04;
    /// Connection refused.
    pub const CONNECTION_REFUSED: u8 = 0x05;
    /// TTL expired (we use it for timeouts).
    pub const TTL_EXPIRED: u8 = 0x06;
    /// Command not supported.
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    /// Address type not supported.
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

/// Why a SOCKS5 message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Socks5Error {
    /// The first byte was not 5: not SOCKS5 (SOCKS4, HTTP, noise).
    #[error("not SOCKS5: version byte {0:#04x}")]
    BadVersion(u8),
    /// The greeting offered no methods at all.
    #[error("the greeting offers no auth methods")]
    NoMethods,
    /// The auth subnegotiation's version byte was not 1.
    #[error("username/password auth version {0:#04x}, expected 0x01")]
    BadAuthVersion(u8),
    /// The reserved request byte was not zero.
    #[error("reserved byte {0:#04x} in the request, expected 0")]
    BadReserved(u8),
    /// An address type other than IPv4, domain or IPv6.
    #[error("unknown address type {0:#04x}")]
    BadAddressType(u8),
    /// A domain name that is empty or holds bytes no host name has.
    #[error("the destination name is not a valid host name")]
    BadName,
}

impl Socks5Error {
    /// The reply code a request error is answered with.
    pub fn reply_code(&self) -> u8 {
        match self {
            Socks5Error::BadAddressType(_) => reply::ADDRESS_TYPE_NOT_SUPPORTED,
            _ => reply::GENERAL_FAILURE,
        }
    }
}

/// The methods a client offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Method bytes as offered (1 to 255 of them).
    pub methods: Vec<u8>,
}

impl Greeting {
    /// The method to select: username/password when `auth_required`,
    /// else no auth; `None` when the client does not offer it.
    pub fn choose(&self, auth_required: bool) -> Option<u8> {
        let want = if auth_required {
            METHOD_USER_PASS
        } else {
            METHOD_NO_AUTH
        };
        self.methods.contains(&want).then_some(want)
    }
}

/// Parses the method greeting: `05 n methods[n]`.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(Greeting, usize)>, Socks5Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Socks5Error::BadVersion(ver));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(Socks5Error::NoMethods);
    }
    let end = 2 + usize::from(n);
    match buf.get(2..end) {
        Some(m) => Ok(Some((
            Greeting {
                methods: m.to_vec(),
            },
            end,
        ))),
        None => Ok(None),
    }
}

/// The method-selection answer: `05 method`.
pub fn encode_method(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// Username and password from the RFC 1929 subnegotiation.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name, 0 to 255 bytes.
    pub username: Vec<u8>,
    /// The password, 0 to 255 bytes.
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Whether these match the expected pair, in constant time for
    /// inputs of equal length.
    pub fn matches(&self, username: &[u8], password: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let u = self.username.ct_eq(username);
        let p = self.password.ct_eq(password);
        bool::from(u & p)
    }
}

/// Parses the auth request: `01 ulen user plen pass`.
pub fn parse_auth(buf: &[u8]) -> Result<Option<(Credentials, usize)>, Socks5Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != AUTH_VERSION {
        return Err(Socks5Error::BadAuthVersion(ver));
    }
    let Some(&ulen) = buf.get(1) else {
        return Ok(None);
    };
    let uend = 2 + usize::from(ulen);
    let Some(&plen) = buf.get(uend) else {
        return Ok(None);
    };
    let end = uend + 1 + usize::from(plen);
    if buf.len() < end {
        return Ok(None);
    }
    let creds = Credentials {
        username: buf[2..uend].to_vec(),
        password: buf[uend + 1..end].to_vec(),
    };
    Ok(Some((creds, end)))
}

/// The auth answer: `01 00` accepted, `01 01` refused.
pub fn encode_auth_reply(ok: bool) -> [u8; 2] {
    [AUTH_VERSION, if ok { 0 } else { 1 }]
}

/// The request's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// CONNECT: open a TCP stream (the only one we carry).
    Connect,
    /// BIND: wait for an inbound connection.
    Bind,
    /// UDP ASSOCIATE.
    UdpAssociate,
    /// Any other byte.
    Other(u8),
}

impl Command {
    fn from_byte(b: u8) -> Command {
        match b {
            1 => Command::Connect,
            2 => Command::Bind,
            3 => Command::UdpAssociate,
            other => Command::Other(other),
        }
    }
}

/// A parsed request. Commands other than CONNECT are parsed (so the reply
/// can say "command not supported") but not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the client asks for.
    pub command: Command,
    /// Where to.
    pub destination: Destination,
}

/// Parses the request: `05 cmd 00 atyp addr port`.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, Socks5Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Socks5Error::BadVersion(ver));
    }
    if buf.len() < 5 {
        // Check the reserved and type bytes as soon as they are here.
        if let Some(&rsv) = buf.get(2) {
            if rsv != 0 {
                return Err(Socks5Error::BadReserved(rsv));
            }
        }
        return Ok(None);
    }
    let command = Command::from_byte(buf[1]);
    if buf[2] != 0 {
        return Err(Socks5Error::BadReserved(buf[2]));
    }
    let port_at = |at: usize| -> Option<u16> {
        let p = buf.get(at..at + 2)?;
        Some(u16::from_be_bytes([p[0], p[1]]))
    };
    let (destination, used) = match buf[3] {
        0x01 => {
            let Some(port) = port_at(8) else {
                return Ok(None);
            };
            let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            (Destination::Addr(SocketAddr::new(ip.into(), port)), 10)
        }
        0x04 => {
            let Some(port) = port_at(20) else {
                return Ok(None);
            };
            let mut o = [0u8; 16];
            o.copy_from_slice(&buf[4..20]);
            let ip = Ipv6Addr::from(o);
            (Destination::Addr(SocketAddr::new(ip.into(), port)), 22)
        }
        0x03 => {
            let len = usize::from(buf[4]);
            let Some(port) = port_at(5 + len) else {
                return Ok(None);
            };
            let name = std::str::from_utf8(&buf[5..5 + len]).map_err(|_| Socks5Error::BadName)?;
            let dest = host_destination(name, port).ok_or(Socks5Error::BadName)?;
            (dest, 7 + len)
        }
        other => return Err(Socks5Error::BadAddressType(other)),
    };
    Ok(Some((
        Request {
            command,
            destination,
        },
        used,
    )))
}

/// The reply: `05 code 00 atyp addr port`. `bound` is the address the
/// server connected from; front-ends that do not know it send 0.0.0.0:0.
pub fn encode_reply(code: u8, bound: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, code, 0]);
    match bound.ip() {
        IpAddr::V4(a) => {
            out.push(0x01);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(0x04);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
}

/// A destination for a host as clients write it: an IP literal (IPv6 with
/// or without brackets) becomes an address, anything else must be a
/// plausible DNS name (1 to 255 bytes of letters, digits, `-`, `_`, `.`).
pub fn host_destination(host: &str, port: u16) -> Option<Destination> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(Destination::Addr(SocketAddr::new(ip, port)));
    }
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| Destination::Host {
        name: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn greeting_incremental_and_choice() {
        let g = [5, 2, 0, 2];
        for n in 0..g.len() {
            assert_eq!(parse_greeting(&g[..n]), Ok(None), "prefix {n}");
        }
        let (greeting, used) = parse_greeting(&[5, 2, 0, 2, 9]).unwrap().unwrap();
        assert_eq!(used, 4);
        assert_eq!(greeting.choose(false), Some(METHOD_NO_AUTH));
        assert_eq!(greeting.choose(true), Some(METHOD_USER_PASS));
        let only_none = Greeting { methods: vec![0] };
        assert_eq!(only_none.choose(true), None);
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(Socks5Error::BadVersion(4)));
        assert_eq!(
            parse_greeting(b"GET / HTTP/1.1"),
            Err(Socks5Error::BadVersion(b'G'))
        );
        assert_eq!(parse_greeting(&[5, 0]), Err(Socks5Error::NoMethods));
        assert_eq!(encode_method(METHOD_NONE_ACCEPTABLE), [5, 0xff]);
    }

    #[test]
    fn auth_parses_and_compares() {
        let msg = [1, 3, b'b', b'o', b'b', 2, b'p', b'w'];
        for n in 0..msg.len() {
            assert_eq!(parse_auth(&msg[..n]), Ok(None), "prefix {n}");
        }
        let (c, used) = parse_auth(&msg).unwrap().unwrap();
        assert_eq!(used, msg.len());
        assert!(c.matches(b"bob", b"pw"));
        assert!(!c.matches(b"bob", b"pW"));
        assert!(!c.matches(b"bo", b"pw"));
        assert_eq!(format!("{c:?}"), "Credentials(<redacted>)");
        let empty = parse_auth(&[1, 0, 0]).unwrap().unwrap();
        assert_eq!(empty.1, 3);
        assert_eq!(parse_auth(&[5, 1]), Err(Socks5Error::BadAuthVersion(5)));
        assert_eq!(encode_auth_reply(true), [1, 0]);
        assert_eq!(encode_auth_reply(false), [1, 1]);
    }

    #[test]
    fn requests_of_every_address_type() {
        let v4 = [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
        let (r, used) = parse_request(&v4).unwrap().unwrap();
        assert_eq!(used, 10);
        assert_eq!(r.command, Command::Connect);
        assert_eq!(
            r.destination,
            Destination::Addr("127.0.0.1:8080".parse().unwrap())
        );

        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 80]);
        let (r, used) = parse_request(&v6).unwrap().unwrap();
        assert_eq!(used, 22);
        assert_eq!(
            r.destination,
            Destination::Addr("[::1]:80".parse().unwrap())
        );

        let mut name = vec![5, 1, 0, 3, 11];
        name.extend_from_slice(b"Example.COM");
        name.extend_from_slice(&[1, 187, 0xaa]);
        for n in 0..name.len() - 1 {
            assert_eq!(parse_request(&name[..n]), Ok(None), "prefix {n}");
        }
        let (r, used) = parse_request(&name).unwrap().unwrap();
        assert_eq!(used, name.len() - 1);
        assert_eq!(
            r.destination,
            Destination::Host {
                name: "example.com".into(),
                port: 443
            }
        );

        // A literal sent as a name is an address.
        let mut lit = vec![5, 1, 0, 3, 9];
        lit.extend_from_slice(b"127.0.0.1");
        lit.extend_from_slice(&[0, 80]);
        let (r, _) = parse_request(&lit).unwrap().unwrap();
        assert_eq!(
            r.destination,
            Destination::Addr("127.0.0.1:80".parse().unwrap())
        );
    }

    #[test]
    fn other_commands_and_bad_requests() {
        let bind = [5, 2, 0, 1, 1, 2, 3, 4, 0, 1];
        assert_eq!(
            parse_request(&bind).unwrap().unwrap().0.command,
            Command::Bind
        );
        let udp = [5, 3, 0, 1, 1, 2, 3, 4, 0, 1];
        assert_eq!(
            parse_request(&udp).unwrap().unwrap().0.command,
            Command::UdpAssociate
        );
        let odd = [5, 9, 0, 1, 1, 2, 3, 4, 0, 1];
        assert_eq!(
            parse_request(&odd).unwrap().unwrap().0.command,
            Command::Other(9)
        );

        assert_eq!(
            parse_request(&[4, 1, 0, 1]),
            Err(Socks5Error::BadVersion(4))
        );
        assert_eq!(parse_request(&[5, 1, 7]), Err(Socks5Error::BadReserved(7)));
        let e = parse_request(&[5, 1, 0, 9, 0, 0]).unwrap_err();
        assert_eq!(e, Socks5Error::BadAddressType(9));
        assert_eq!(e.reply_code(), reply::ADDRESS_TYPE_NOT_SUPPORTED);
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 80]),
            Err(Socks5Error::BadName)
        );
        let mut bad = vec![5, 1, 0, 3, 3];
        bad.extend_from_slice(b"a b");
        bad.extend_from_slice(&[0, 80]);
        assert_eq!(parse_request(&bad), Err(Socks5Error::BadName));
        assert_eq!(Socks5Error::BadName.reply_code(), reply::GENERAL_FAILURE);
    }

    #[test]
    fn replies_encode() {
        let mut out = Vec::new();
        encode_reply(reply::NOT_ALLOWED, "0.0.0.0:0".parse().unwrap(), &mut out);
        assert_eq!(out, [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
        out.clear();
        encode_reply(0, "[::1]:258".parse().unwrap(), &mut out);
        assert_eq!(out.len(), 22);
        assert_eq!(&out[..4], &[5, 0, 0, 4]);
        assert_eq!(&out[20..], &[1, 2]);
        // Our own reply parses back as a request-shaped message.
        let (r, _) = parse_request(&out).unwrap().unwrap();
        assert_eq!(
            r.destination,
            Destination::Addr("[::1]:258".parse().unwrap())
        );
    }

    #[test]
    fn host_names() {
        assert_eq!(
            host_destination("[::1]", 5),
            Some(Destination::Addr("[::1]:5".parse().unwrap()))
        );
        assert!(host_destination("", 5).is_none());
        assert!(host_destination("a/b", 5).is_none());
        assert!(host_destination(&"a".repeat(256), 5).is_none());
        assert!(host_destination(&"a".repeat(255), 5).is_some());
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            for r in [
                parse_greeting(&data).map(|o| o.map(|x| x.1)),
                parse_auth(&data).map(|o| o.map(|x| x.1)),
                parse_request(&data).map(|o| o.map(|x| x.1)),
            ] {
                if let Ok(Some(used)) = r {
                    prop_assert!(used <= data.len() && used <= MAX_MESSAGE);
                }
                if data.len() >= MAX_MESSAGE {
                    prop_assert!(!matches!(r, Ok(None)));
                }
            }
        }

        #[test]
        fn requests_round_trip(a in any::<[u8; 16]>(), port: u16, v6: bool, cmd in 1u8..4) {
            let ip: IpAddr = if v6 { Ipv6Addr::from(a).into() } else { Ipv4Addr::new(a[0], a[1], a[2], a[3]).into() };
            let mut msg = Vec::new();
            encode_reply(cmd, SocketAddr::new(ip, port), &mut msg);
            let (r, used) = parse_request(&msg).unwrap().unwrap();
            prop_assert_eq!(used, msg.len());
            prop_assert_eq!(r.destination, Destination::Addr(SocketAddr::new(ip, port)));
        }
    }
}
