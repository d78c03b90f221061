//! The shape of a TLS 1.3 server's first flight, read from its raw bytes:
//! what our own answers must look like to pass for the cover site. `doctor`
//! compares samizdat's fake-TLS flight with it, and `serve` copies it into
//! the samizdat transport's answer (`docs/transport.md`).

use super::{APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE};
use crate::codec::Reader;

/// The `random` of a HelloRetryRequest (RFC 8446 §4.1.3).
pub const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// The key_share extension type.
pub const KEY_SHARE: u16 = 0x33;
/// The supported_versions extension type.
pub const SUPPORTED_VERSIONS: u16 = 0x2b;

/// What the first ServerHello and the records after it look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerShape {
    /// The first ServerHello was a HelloRetryRequest.
    pub hello_retry: bool,
    /// The legacy session id it echoed.
    pub session_id: Vec<u8>,
    /// The cipher suite it chose.
    pub cipher_suite: u16,
    /// Its extension types, in order.
    pub extensions: Vec<u16>,
    /// The key-share group it chose, if it sent a key share.
    pub group: Option<u16>,
    /// Bytes of the ServerHello record, header included: 122 or so for an
    /// X25519 answer, about 1.2 KB for X25519MLKEM768.
    pub hello_len: usize,
    /// Whether a ChangeCipherSpec record followed.
    pub change_cipher_spec: bool,
    /// Declared lengths of the ApplicationData records that followed, in
    /// order (TLS 1.3: the encrypted EncryptedExtensions, Certificate,
    /// CertificateVerify and Finished, however the server split them). The
    /// last may be cut short in the capture; its header still counts.
    pub encrypted: Vec<usize>,
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

/// Whether the first record of `bytes` is complete (header and the body it
/// declares), so [`server_shape`] can judge it: a driver reading a cover's
/// answer stops as soon as that first record is not a ServerHello.
pub fn first_record_complete(bytes: &[u8]) -> bool {
    let mut r = Reader::new(bytes);
    r.skip(3).and_then(|()| r.vec16()).is_some()
}

/// The body of a handshake message of `kind` at the start of a record.
fn handshake(body: &[u8], kind: u8) -> Option<Reader<'_>> {
    let mut r = Reader::new(body);
    if r.u8()? != kind {
        return None;
    }
    let len = r.u24()?;
    r.sub(len as usize)
}

/// Reads the server's bytes: `None` when they do not start with a complete
/// ServerHello record.
pub fn server_shape(bytes: &[u8]) -> Option<ServerShape> {
    let mut recs = records(bytes);
    let (kind, len, body) = recs.next()?;
    if kind != HANDSHAKE || body.len() < len {
        return None;
    }
    let mut r = handshake(body, 2)?;
    let _legacy_version = r.u16()?;
    let random = r.take(32)?;
    let session_id = r.vec8()?.to_vec();
    let cipher_suite = r.u16()?;
    let _compression = r.u8()?;
    let mut exts = r.sub16()?;
    let mut extensions = Vec::new();
    let mut group = None;
    while !exts.is_empty() {
        let t = exts.u16()?;
        extensions.push(t);
        let body = exts.vec16()?;
        if t == KEY_SHARE && body.len() >= 2 {
            group = Some(u16::from_be_bytes([body[0], body[1]]));
        }
    }
    let mut change_cipher_spec = false;
    let mut encrypted = Vec::new();
    for (kind, len, _) in recs {
        match kind {
            CHANGE_CIPHER_SPEC if encrypted.is_empty() => change_cipher_spec = true,
            APPLICATION_DATA => encrypted.push(len),
            _ => break,
        }
    }
    Some(ServerShape {
        hello_retry: random == HRR_RANDOM,
        session_id,
        cipher_suite,
        extensions,
        group,
        hello_len: 5 + len,
        change_cipher_spec,
        encrypted,
    })
}

/// The legacy session id of the ClientHello at the start of `bytes`.
pub fn client_session_id(bytes: &[u8]) -> Option<&[u8]> {
    let (kind, _, body) = records(bytes).next()?;
    if kind != HANDSHAKE {
        return None;
    }
    let mut r = handshake(body, 1)?;
    r.skip(2 + 32)?;
    r.vec8()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS 1.3 server flight with the order of the two extensions chosen
    /// and the given encrypted record lengths (the last one cut short).
    fn flight(random: [u8; 32], versions_first: bool, encrypted: &[usize]) -> Vec<u8> {
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
        hello.extend([0x13, 0x02, 0x00]);
        hello.extend((exts.len() as u16).to_be_bytes());
        hello.extend(exts);
        let mut hs = vec![2, 0, 0, hello.len() as u8];
        hs.extend(hello);
        let mut out = vec![0x16, 0x03, 0x03];
        out.extend((hs.len() as u16).to_be_bytes());
        out.extend(hs);
        out.extend([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
        for (i, &len) in encrypted.iter().enumerate() {
            out.extend([0x17, 0x03, 0x03]);
            out.extend((len as u16).to_be_bytes());
            let body = if i + 1 == encrypted.len() { 10 } else { len };
            out.extend(vec![0xaa; body]);
        }
        out
    }

    #[test]
    fn reads_suite_group_order_and_every_encrypted_record() {
        let s = server_shape(&flight([1; 32], false, &[36, 2873, 286, 74])).unwrap();
        assert!(!s.hello_retry);
        assert_eq!(s.session_id, vec![9; 32]);
        assert_eq!(s.cipher_suite, 0x1302);
        assert_eq!(s.extensions, vec![KEY_SHARE, SUPPORTED_VERSIONS]);
        assert_eq!(s.group, Some(0x001d));
        assert!(s.change_cipher_spec);
        assert_eq!(s.encrypted, vec![36, 2873, 286, 74]);
        let s = server_shape(&flight(HRR_RANDOM, true, &[100])).unwrap();
        assert!(s.hello_retry);
        assert_eq!(s.extensions, vec![SUPPORTED_VERSIONS, KEY_SHARE]);
    }

    #[test]
    fn rejects_what_is_not_a_server_hello() {
        assert_eq!(server_shape(b"HTTP/1.1 400 Bad Request\r\n\r\n"), None);
        assert_eq!(server_shape(&[]), None);
        let f = flight([1; 32], false, &[10]);
        assert_eq!(server_shape(&f[..40]), None);
        assert_eq!(client_session_id(&f), None);
    }

    #[test]
    fn the_first_record_is_complete_once_its_declared_body_is_there() {
        let f = flight([1; 32], false, &[10]);
        let first = 5 + usize::from(u16::from_be_bytes([f[3], f[4]]));
        assert!(!first_record_complete(&f[..4]));
        assert!(!first_record_complete(&f[..first - 1]));
        assert!(first_record_complete(&f[..first]));
        assert!(first_record_complete(&f));
    }
}
