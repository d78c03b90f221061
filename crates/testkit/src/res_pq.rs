//! The fake DC's brain: answers the first unencrypted MTProto request of the
//! auth-key exchange (`req_pq_multi` / `req_pq`) with a `resPQ`, the way a
//! Telegram data center would, so that real client libraries' proxy checks
//! see a genuine answer coming back through the proxy.
//!
//! Pure function of its inputs, std only. What the clients check in the
//! answer (read in their sources, see the interop test suite's notes):
//!
//! * TDLib `pingProxy` (`PingConnectionReqPQ::on_raw_packet`): only that an
//!   unencrypted packet (`auth_key_id == 0`) of at least 8 + 12 bytes arrives;
//!   the body is not parsed. It sends `req_pq_multi` twice per ping, with the
//!   client msg_id `1`.
//! * TDLib `testProxy` / the auth-key handshake (`AuthKeyHandshake::on_res_pq`):
//!   parses the body as `resPQ`, requires the echoed nonce, one fingerprint of
//!   its built-in main RSA key, and a `pq` it can factor into two factors.
//! * Telethon (`MTProtoPlainSender.send`, `authenticator.do_authentication`):
//!   `auth_key_id == 0`, `msg_id != 0`, `length > 0`, then a `ResPQ` object with
//!   the echoed nonce, a factorable `pq` and a fingerprint of one of its keys.
//!
//! None of the clients checks the server msg_id parity on unencrypted packets,
//! but the answer follows the MTProto rule anyway (`msg_id % 4 == 1`).

/// `req_pq_multi#be7e8ef1 nonce:int128 = ResPQ`
pub const REQ_PQ_MULTI: u32 = 0xbe7e_8ef1;
/// `req_pq#60469778 nonce:int128 = ResPQ` (deprecated, still answered by DCs)
pub const REQ_PQ: u32 = 0x6046_9778;
/// `resPQ#05162463 nonce:int128 server_nonce:int128 pq:string
/// server_public_key_fingerprints:Vector<long> = ResPQ`
pub const RES_PQ: u32 = 0x0516_2463;
/// The boxed `Vector` constructor `vector#1cb5c415`.
pub const VECTOR: u32 = 0x1cb5_c415;

/// `pq` sent in the answer: the example value of the MTProto auth-key
/// documentation, a product of two 31-bit primes (top bit clear, so TDLib's
/// 64-bit factoriser is used).
pub const PQ: u64 = 0x17ed_4894_1a08_f981;
/// The two prime factors of [`PQ`], smaller first.
pub const PQ_FACTORS: (u64, u64) = (0x494c_553b, 0x5391_1073);

/// Fingerprint of TDLib's built-in production RSA key
/// (`PublicRsaKeySharedMain::create(false)`); `testProxy` needs it.
pub const TDLIB_MAIN_KEY_FINGERPRINT: u64 = 0xd09d_1d85_de64_fd85;
/// Fingerprint of the first (non-"old") key built into Telethon 1.x
/// (`telethon/crypto/rsa.py`); TDLib's key is not among Telethon's.
pub const TELETHON_KEY_FINGERPRINT: u64 = 0x0bc3_5f35_09f7_b7a5;
/// Fingerprints put in every answer, in this order.
pub const FINGERPRINTS: [u64; 2] = [TDLIB_MAIN_KEY_FINGERPRINT, TELETHON_KEY_FINGERPRINT];

/// Length of the unencrypted-message header: auth_key_id, msg_id, msg_len.
const HEADER_LEN: usize = 8 + 8 + 4;

/// Name of the request carried by an unencrypted MTProto packet, if it is one
/// that [`answer`] answers (`"req_pq_multi"` or `"req_pq"`).
pub fn request_name(request: &[u8]) -> Option<&'static str> {
    let body = unencrypted_body(request)?;
    if body.len() < 4 + 16 {
        return None;
    }
    match u32::from_le_bytes([body[0], body[1], body[2], body[3]]) {
        REQ_PQ_MULTI => Some("req_pq_multi"),
        REQ_PQ => Some("req_pq"),
        _ => None,
    }
}

/// Answers an unencrypted MTProto request the way a Telegram DC would, enough for client libraries' proxy checks.
///
/// `request` is one MTProto packet exactly as carried inside the transport
/// framing: `auth_key_id (8 zero bytes) || msg_id u64le || msg_len u32le || body`.
/// Bytes after `msg_len` bytes of body are ignored (padded-intermediate
/// senders may leave up to 12 padding bytes after the `len & !3` cut).
///
/// For `req_pq_multi` and `req_pq` returns the `resPQ` packet in the same
/// envelope; its msg_id is `msg_id` with the low two bits forced to `01`
/// (a server response). Returns `None` for anything else.
pub fn answer(request: &[u8], server_nonce: [u8; 16], msg_id: u64) -> Option<Vec<u8>> {
    request_name(request)?;
    let body = unencrypted_body(request)?;
    let nonce = &body[4..20];

    let mut out = Vec::with_capacity(HEADER_LEN + 56 + 8 * FINGERPRINTS.len());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&((msg_id & !3) | 1).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // msg_len, filled in below
    out.extend_from_slice(&RES_PQ.to_le_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&server_nonce);
    put_tl_bytes(&mut out, &PQ.to_be_bytes());
    out.extend_from_slice(&VECTOR.to_le_bytes());
    out.extend_from_slice(&(FINGERPRINTS.len() as u32).to_le_bytes());
    for fingerprint in FINGERPRINTS {
        out.extend_from_slice(&fingerprint.to_le_bytes());
    }
    let msg_len = (out.len() - HEADER_LEN) as u32;
    out[16..20].copy_from_slice(&msg_len.to_le_bytes());
    Some(out)
}

/// A server-style msg_id for `unix_secs` + `nanos`: time in the high 32 bits,
/// the sub-second part below, and `msg_id % 4 == 1` (response to a request).
pub fn server_msg_id(unix_secs: u32, nanos: u32) -> u64 {
    let frac = ((u64::from(nanos) << 32) / 1_000_000_000) as u32;
    (((u64::from(unix_secs) << 32) | u64::from(frac)) & !3) | 1
}

/// The body of an unencrypted message, or `None` if the envelope is wrong.
fn unencrypted_body(request: &[u8]) -> Option<&[u8]> {
    if request.len() < HEADER_LEN || request[..8] != [0u8; 8] {
        return None;
    }
    let msg_len = u32::from_le_bytes(request[16..20].try_into().ok()?) as usize;
    request.get(HEADER_LEN..HEADER_LEN.checked_add(msg_len)?)
}

/// Appends a TL `bytes`/`string` (short form: length byte, data, zero pad to 4).
fn put_tl_bytes(out: &mut Vec<u8>, data: &[u8]) {
    assert!(
        data.len() < 254,
        "only the short TL string form is needed here"
    );
    out.push(data.len() as u8);
    out.extend_from_slice(data);
    let pad = (4 - (1 + data.len()) % 4) % 4;
    out.extend_from_slice(&[0u8; 3][..pad]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 16] = *b"0123456789abcdef";
    const SERVER_NONCE: [u8; 16] = [0xa5; 16];

    fn request(constructor: u32, msg_id: u64, trailing: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; 8];
        r.extend_from_slice(&msg_id.to_le_bytes());
        r.extend_from_slice(&20u32.to_le_bytes());
        r.extend_from_slice(&constructor.to_le_bytes());
        r.extend_from_slice(&NONCE);
        r.extend_from_slice(trailing);
        r
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn answers_req_pq_multi_with_a_well_formed_res_pq() {
        let a = answer(
            &request(REQ_PQ_MULTI, 1, &[]),
            SERVER_NONCE,
            0x6000_0000_0000_0000,
        )
        .unwrap();
        assert_eq!(a.len(), 20 + 72);
        assert_eq!(&a[..8], &[0u8; 8], "auth_key_id");
        assert_eq!(u64_at(&a, 8), 0x6000_0000_0000_0001, "server msg_id");
        assert_eq!(u32_at(&a, 16) as usize, a.len() - 20, "msg_len");
        assert_eq!(u32_at(&a, 20), RES_PQ);
        assert_eq!(&a[24..40], &NONCE);
        assert_eq!(&a[40..56], &SERVER_NONCE);
        // pq: TL string of 8 bytes = 1 length byte + 8 + 3 pad
        assert_eq!(a[56], 8);
        assert_eq!(u64::from_be_bytes(a[57..65].try_into().unwrap()), PQ);
        assert_eq!(&a[65..68], &[0, 0, 0]);
        assert_eq!(u32_at(&a, 68), VECTOR);
        assert_eq!(u32_at(&a, 72), 2);
        assert_eq!(u64_at(&a, 76), TDLIB_MAIN_KEY_FINGERPRINT);
        assert_eq!(u64_at(&a, 84), TELETHON_KEY_FINGERPRINT);
    }

    #[test]
    fn exact_bytes_of_an_answer() {
        let a = answer(&request(REQ_PQ_MULTI, 1, &[]), SERVER_NONCE, 5).unwrap();
        let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "0000000000000000",
                "0500000000000000",
                "48000000",
                "63241605",
                "30313233343536373839616263646566",
                "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
                "08",
                "17ed48941a08f981",
                "000000",
                "15c4b51c",
                "02000000",
                "85fd64de851d9dd0",
                "a5b7f709355fc30b",
            )
        );
    }

    #[test]
    fn answers_req_pq_too() {
        let a = answer(&request(REQ_PQ, 77, &[]), SERVER_NONCE, 8).unwrap();
        assert_eq!(u32_at(&a, 20), RES_PQ);
        assert_eq!(&a[24..40], &NONCE);
        assert_eq!(request_name(&request(REQ_PQ, 77, &[])), Some("req_pq"));
        assert_eq!(
            request_name(&request(REQ_PQ_MULTI, 77, &[])),
            Some("req_pq_multi")
        );
    }

    #[test]
    fn server_msg_id_is_odd_response_id() {
        for id in [0u64, 1, 2, 3, 4, u64::MAX, 0x1234_5678_9abc_def0] {
            let a = answer(&request(REQ_PQ_MULTI, 1, &[]), SERVER_NONCE, id).unwrap();
            assert_eq!(u64_at(&a, 8) % 4, 1);
            assert_eq!(u64_at(&a, 8) & !3, id & !3);
        }
        let m = server_msg_id(1_700_000_000, 999_999_999);
        assert_eq!(m % 4, 1);
        assert_eq!(m >> 32, 1_700_000_000);
        assert_eq!(
            server_msg_id(1_700_000_000, 0),
            (1_700_000_000u64 << 32) | 1
        );
    }

    #[test]
    fn trailing_padding_is_ignored() {
        let plain = answer(&request(REQ_PQ_MULTI, 1, &[]), SERVER_NONCE, 1).unwrap();
        let padded = answer(&request(REQ_PQ_MULTI, 1, &[0xff; 12]), SERVER_NONCE, 1).unwrap();
        assert_eq!(plain, padded);
    }

    #[test]
    fn pq_factors_are_right() {
        let (p, q) = PQ_FACTORS;
        assert_eq!(p * q, PQ);
        assert!(p < q);
        for f in [p, q] {
            let mut d = 2;
            while d * d <= f {
                assert_ne!(f % d, 0, "{f} is not prime");
                d += 1;
            }
        }
        assert_eq!(PQ >> 63, 0, "top bit clear: TDLib's 64-bit path");
    }

    #[test]
    fn rejects_everything_else() {
        let ok = request(REQ_PQ_MULTI, 1, &[]);
        // other constructors: req_DH_params, ping, garbage
        assert!(answer(&request(0xd712_e4be, 1, &[]), SERVER_NONCE, 1).is_none());
        assert!(answer(&request(0x7abe_77ec, 1, &[]), SERVER_NONCE, 1).is_none());
        assert!(request_name(&request(0xd712_e4be, 1, &[])).is_none());
        // encrypted (non-zero auth_key_id)
        let mut enc = ok.clone();
        enc[3] = 1;
        assert!(answer(&enc, SERVER_NONCE, 1).is_none());
        // truncated anywhere
        for n in 0..ok.len() {
            assert!(answer(&ok[..n], SERVER_NONCE, 1).is_none(), "len {n}");
        }
        // msg_len claims more than present, or too little for a nonce
        let mut long = ok.clone();
        long[16..20].copy_from_slice(&21u32.to_le_bytes());
        assert!(answer(&long, SERVER_NONCE, 1).is_none());
        let mut short = ok.clone();
        short[16..20].copy_from_slice(&19u32.to_le_bytes());
        assert!(answer(&short, SERVER_NONCE, 1).is_none());
        let mut huge = ok;
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(answer(&huge, SERVER_NONCE, 1).is_none());
        assert!(answer(&[], SERVER_NONCE, 1).is_none());
    }
}
