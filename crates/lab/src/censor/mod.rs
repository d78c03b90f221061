//! Censor detectors: the decision logic of the lab's techniques.
//!
//! Each detector is a pure function of the bytes a middlebox sees, so the
//! lab can replay a connection's first flight through it and say what a
//! given censor would have done. Nothing here blocks anything.
//!
//! | module | censor | looks at |
//! |---|---|---|
//! | [`fet`] | China 2021–2023, "fully encrypted traffic" (Wu et al., USENIX Security 2023, §4) | the first client payload |
//! | [`ja`] | any fingerprinting DPI | JA3 and JA4 (FoxIO) of a ClientHello record |
//! | [`protocol`] | Iran 2020 protocol allowlist | whether the first payload looks like DNS, HTTP or TLS |

pub mod fet;
pub mod ja;
pub mod protocol;

/// Request methods whose `METHOD ` prefix marks an HTTP/1.x request line
/// (RFC 9110 §9 plus PATCH, RFC 5789).
const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// Whether `payload` starts with an HTTP request method and a space.
fn starts_with_http_method(payload: &[u8]) -> bool {
    HTTP_METHODS.iter().any(|m| payload.starts_with(m))
}
