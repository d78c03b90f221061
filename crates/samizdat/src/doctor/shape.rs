//! The shape of a TLS server's first flight, read from the raw bytes: what
//! samizdat's own fake flight (spec §4.4) must look like to pass for the
//! cover site. Pure functions over captured bytes.

/// The `random` of a HelloRetryRequest (RFC 8446 §4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];
const HANDSHAKE: u8 = 0x16;
const CHANGE_CIPHER_SPEC: u8 = 0x14;
const APPLICATION_DATA: u8 = 0x17;
/// The extension types samizdat's ServerHello carries.
pub(super) const KEY_SHARE: u16 = 0x33;
pub(super) const SUPPORTED_VERSIONS: u16 = 0x2b;

/// What the first ServerHello and the records after it look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerShape {
    /// The first ServerHello was a HelloRetryRequest.
    pub(super) hello_retry: bool,
    /// The legacy session id it echoed.
    pub(super) session_id: Vec<u8>,
    /// Its extension types, in order.
    pub(super) extensions: Vec<u16>,
    /// Whether a ChangeCipherSpec record followed.
    pub(super) change_cipher_spec: bool,
    /// Length of the first ApplicationData record (TLS 1.3: the encrypted
    /// EncryptedExtensions, certificate, …), as its header says.
    pub(super) first_encrypted: Option<usize>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// Record headers and the part of each body that was captured: (type,
/// declared length, body so far). The last one may be cut short.
fn records(mut bytes: &[u8]) -> impl Iterator<Item = (u8, usize, &[u8])> {
    std::iter::from_fn(move || {
        if bytes.len() < 5 {
            return None;
        }
        let kind = bytes[0];
        let len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        let end = (5 + len).min(bytes.len());
        let body = &bytes[5..end];
        bytes = &bytes[end..];
        Some((kind, len, body))
    })
}

/// The body of a handshake message of `kind` at the start of a record.
fn handshake(body: &[u8], kind: u8) -> Option<Reader<'_>> {
    let mut r = Reader(body);
    if r.u8()? != kind {
        return None;
    }
    let len = r.u24()?;
    r.take(len).map(Reader)
}

/// Reads the server's bytes: `None` when they do not start with a
/// complete ServerHello record.
pub(super) fn server_shape(bytes: &[u8]) -> Option<ServerShape> {
    let mut recs = records(bytes);
    let (kind, len, body) = recs.next()?;
    if kind != HANDSHAKE || body.len() < len {
        return None;
    }
    let mut r = handshake(body, 2)?;
    let _legacy_version = r.u16()?;
    let random = r.take(32)?;
    let sid_len = usize::from(r.u8()?);
    let session_id = r.take(sid_len)?.to_vec();
    let _cipher_suite = r.u16()?;
    let _compression = r.u8()?;
    let ext_len = usize::from(r.u16()?);
    let mut exts = Reader(r.take(ext_len)?);
    let mut extensions = Vec::new();
    while !exts.0.is_empty() {
        extensions.push(exts.u16()?);
        let n = usize::from(exts.u16()?);
        exts.take(n)?;
    }
    let mut change_cipher_spec = false;
    let mut first_encrypted = None;
    for (kind, len, _) in recs {
        match kind {
            CHANGE_CIPHER_SPEC => change_cipher_spec = true,
            APPLICATION_DATA => {
                first_encrypted = Some(len);
                break;
            }
            _ => break,
        }
    }
    Some(ServerShape {
        hello_retry: random == HRR_RANDOM,
        session_id,
        extensions,
        change_cipher_spec,
        first_encrypted,
    })
}

/// The legacy session id of the ClientHello at the start of `bytes`.
pub(super) fn client_session_id(bytes: &[u8]) -> Option<&[u8]> {
    let (kind, _, body) = records(bytes).next()?;
    if kind != HANDSHAKE {
        return None;
    }
    let mut r = handshake(body, 1)?;
    r.take(2 + 32)?;
    let n = usize::from(r.u8()?);
    r.take(n)
}

/// A name for an extension type.
pub(super) fn extension_name(t: u16) -> String {
    match t {
        KEY_SHARE => "key_share".into(),
        SUPPORTED_VERSIONS => "supported_versions".into(),
        0x29 => "pre_shared_key".into(),
        t => format!("0x{t:04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS 1.3 server flight as samizdat builds it (spec §4.4), with
    /// the order of the two extensions chosen.
    fn flight(random: [u8; 32], versions_first: bool, encrypted: usize) -> Vec<u8> {
        let key_share = [
            &[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20][..],
            &[7; 32],
        ]
        .concat();
        let versions = vec![0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];
        let exts = if versions_first {
            [versions, key_share].concat()
        } else {
            [key_share, versions].concat()
        };
        let mut hello = vec![0x03, 0x03];
        hello.extend(random);
        hello.push(32);
        hello.extend([9; 32]);
        hello.extend([0x13, 0x01, 0x00]);
        hello.extend((exts.len() as u16).to_be_bytes());
        hello.extend(exts);
        let mut hs = vec![2, 0, 0, hello.len() as u8];
        hs.extend(hello);
        let mut out = vec![0x16, 0x03, 0x03];
        out.extend((hs.len() as u16).to_be_bytes());
        out.extend(hs);
        out.extend([0x14, 0x03, 0x03, 0x00, 0x01, 0x01, 0x17, 0x03, 0x03]);
        out.extend((encrypted as u16).to_be_bytes());
        out.extend(vec![0xaa; 10]); // cut short, as a capture may be
        out
    }

    #[test]
    fn reads_the_samizdat_flight_shape() {
        let s = server_shape(&flight([1; 32], false, 2873)).unwrap();
        assert!(!s.hello_retry);
        assert_eq!(s.session_id, vec![9; 32]);
        assert_eq!(s.extensions, vec![KEY_SHARE, SUPPORTED_VERSIONS]);
        assert!(s.change_cipher_spec);
        assert_eq!(s.first_encrypted, Some(2873));
        let s = server_shape(&flight(HRR_RANDOM, true, 100)).unwrap();
        assert!(s.hello_retry);
        assert_eq!(s.extensions, vec![SUPPORTED_VERSIONS, KEY_SHARE]);
    }

    #[test]
    fn rejects_what_is_not_a_server_hello() {
        assert_eq!(server_shape(b"HTTP/1.1 400 Bad Request\r\n\r\n"), None);
        assert_eq!(server_shape(&[]), None);
        let f = flight([1; 32], false, 10);
        assert_eq!(server_shape(&f[..40]), None);
        assert_eq!(client_session_id(&f), None);
    }
}
