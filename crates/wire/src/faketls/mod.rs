//! Fake TLS for `ee` secrets (spec §4).
//!
//! The client's ClientHello carries an HMAC of itself in its `random`; the
//! server answers with a ServerHello whose `random` is an HMAC too, then
//! both sides exchange obfuscated2 bytes inside TLS ApplicationData records.
//! No real TLS cryptography happens.

pub mod client;
pub mod client_hello;
pub mod records;
pub mod server_flight;
pub mod server_shape;

/// Record type: handshake.
pub const HANDSHAKE: u8 = 0x16;
/// Record type: change_cipher_spec.
pub const CHANGE_CIPHER_SPEC: u8 = 0x14;
/// Record type: alert.
pub const ALERT: u8 = 0x15;
/// Record type: application_data.
pub const APPLICATION_DATA: u8 = 0x17;
/// Offset of the 32-byte random inside a handshake record.
pub const RANDOM_OFFSET: usize = 11;
/// Length of the random.
pub const RANDOM_LEN: usize = 32;
/// Largest TLSPlaintext fragment (RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 16_384;
/// Largest TLSCiphertext fragment we accept from a client (RFC 8446 §5.2).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// The ChangeCipherSpec record both sides send once.
pub const CCS_RECORD: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];

/// Whether a 16-bit value is a GREASE value (RFC 8701: `0x?a?a`).
pub fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && (value >> 8) == (value & 0xff)
}

/// The header of an ApplicationData record carrying `len` bytes.
pub fn app_data_header(len: usize) -> [u8; 5] {
    let len = len as u16;
    [APPLICATION_DATA, 0x03, 0x03, (len >> 8) as u8, len as u8]
}

/// What the header at the front of a buffer says about the handshake
/// record that should start there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRecord {
    /// Fewer than five bytes: read more.
    NeedMore,
    /// A handshake record of `len` bytes, header included, no longer than
    /// the caller's bound; it is complete once the buffer holds `len` bytes.
    Len(usize),
    /// Not a TLS handshake record header, or longer than the bound.
    Refused,
}

/// Reads the header of the handshake record (a client's hello) expected at
/// the front of `buf`: type 0x16, major version 3, and a total length of at
/// most `max` bytes. The WebSocket listener uses it for the hello that
/// follows the upgrade, where there is nothing to splice to and so no need
/// for [`client_hello::probe`]'s stricter look.
pub fn handshake_record(buf: &[u8], max: usize) -> HandshakeRecord {
    let [kind, major, _minor, hi, lo, ..] = *buf else {
        return HandshakeRecord::NeedMore;
    };
    let len = 5 + usize::from(u16::from_be_bytes([hi, lo]));
    if kind != HANDSHAKE || major != 0x03 || len > max {
        return HandshakeRecord::Refused;
    }
    HandshakeRecord::Len(len)
}

#[cfg(test)]
mod record_header_tests {
    use super::*;

    #[test]
    fn handshake_record_headers() {
        let max = 5 + MAX_PLAINTEXT;
        assert_eq!(handshake_record(&[], max), HandshakeRecord::NeedMore);
        assert_eq!(
            handshake_record(&[0x16, 0x03, 0x01, 0x00], max),
            HandshakeRecord::NeedMore
        );
        assert_eq!(
            handshake_record(&[0x16, 0x03, 0x01, 0x00, 0x03, 1], max),
            HandshakeRecord::Len(8)
        );
        assert_eq!(
            handshake_record(&[0x17, 0x03, 0x03, 0x00, 0x03], max),
            HandshakeRecord::Refused
        );
        assert_eq!(
            handshake_record(&[0x16, 0x02, 0x03, 0x00, 0x03], max),
            HandshakeRecord::Refused
        );
        assert_eq!(
            handshake_record(&[0x16, 0x03, 0x01, 0xff, 0xff], max),
            HandshakeRecord::Refused
        );
        assert_eq!(
            handshake_record(&[0x16, 0x03, 0x01, 0x40, 0x00], max),
            HandshakeRecord::Len(max)
        );
    }
}
