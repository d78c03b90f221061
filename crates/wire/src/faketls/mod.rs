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
