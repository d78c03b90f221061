//! The signed body: its line format, parsed strictly and bounded, and
//! written back the same way (`docs/server-lists.md`).

use super::*;
use crate::link::parse_endpoint;
use std::fmt::Write as _;

fn number(line: usize, field: &str, value: &str) -> Result<u64, ListError> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("line {line}: {field} is not a number")));
    }
    value
        .parse()
        .map_err(|_| malformed(format!("line {line}: {field} is out of range")))
}

pub(super) fn parse_body(body: &[u8]) -> Result<ServerList, ListError> {
    if let Some(at) = body
        .iter()
        .position(|&b| b != b'\n' && !(b' '..=b'~').contains(&b))
    {
        return Err(malformed(format!(
            "byte {at} of the body is not printable ASCII"
        )));
    }
    // Only printable ASCII and newlines remain, so this cannot fail.
    let text = std::str::from_utf8(body).map_err(|_| malformed("not UTF-8"))?;
    let text = text
        .strip_suffix('\n')
        .ok_or_else(|| malformed("the body does not end with a newline"))?;
    let (mut version, mut signer, mut serial, mut issued, mut expires) =
        (false, false, None, None, None);
    let mut group_key: Option<[u8; 32]> = None;
    let mut endpoints: Vec<Listed> = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        if n > MAX_LINES {
            return Err(malformed(format!("more than {MAX_LINES} lines")));
        }
        let (field, value) = line
            .split_once(' ')
            .ok_or_else(|| malformed(format!("line {n}: expected FIELD VALUE")))?;
        if field.is_empty()
            || !field
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(malformed(format!("line {n}: bad field name")));
        }
        if n == 1 {
            if field != "version" {
                return Err(malformed("the first line must be `version 1`"));
            }
            if value != "1" {
                return Err(malformed(format!(
                    "version {value} is not supported by this client (it reads version 1)"
                )));
            }
            version = true;
            continue;
        }
        let once = |slot: &mut Option<u64>| -> Result<(), ListError> {
            if slot.is_some() {
                return Err(malformed(format!("line {n}: {field} given twice")));
            }
            *slot = Some(number(n, field, value)?);
            Ok(())
        };
        match field {
            "version" => return Err(malformed(format!("line {n}: version given twice"))),
            "signer" => {
                if signer {
                    return Err(malformed(format!("line {n}: signer given twice")));
                }
                if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(malformed(format!(
                        "line {n}: signer must be a key id (16 hex digits)"
                    )));
                }
                signer = true;
            }
            "serial" => once(&mut serial)?,
            "issued" => once(&mut issued)?,
            "expires" => once(&mut expires)?,
            "pk" => {
                group_key = if value == "-" {
                    None
                } else {
                    Some(
                        URL_SAFE_NO_PAD
                            .decode(value)
                            .ok()
                            .and_then(|k| <[u8; 32]>::try_from(k).ok())
                            .ok_or_else(|| {
                                malformed(format!(
                                    "line {n}: pk must be a 32-byte key in base64url, or -"
                                ))
                            })?,
                    )
                };
            }
            "endpoint" => {
                let endpoint =
                    parse_endpoint(value).map_err(|e| malformed(format!("line {n}: {e}")))?;
                let listed = Listed {
                    endpoint,
                    server_key: group_key,
                };
                if !endpoints.contains(&listed) {
                    if endpoints.len() == MAX_ENDPOINTS {
                        return Err(malformed(format!("more than {MAX_ENDPOINTS} endpoints")));
                    }
                    endpoints.push(listed);
                }
            }
            // A field of a later version: ignored.
            _ => {}
        }
    }
    if !version {
        return Err(malformed("the first line must be `version 1`"));
    }
    if !signer {
        return Err(malformed("no signer line"));
    }
    let serial = serial.ok_or_else(|| malformed("no serial line"))?;
    let issued = issued.ok_or_else(|| malformed("no issued line"))?;
    let expires = expires.ok_or_else(|| malformed("no expires line"))?;
    let list = ServerList {
        serial,
        issued,
        expires,
        endpoints,
    };
    list.validate()?;
    Ok(list)
}

impl ServerList {
    pub(super) fn validate(&self) -> Result<(), ListError> {
        if self.endpoints.is_empty() {
            return Err(malformed("no endpoints"));
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            return Err(malformed(format!("more than {MAX_ENDPOINTS} endpoints")));
        }
        if self.expires <= self.issued {
            return Err(malformed("expires is not after issued"));
        }
        Ok(())
    }

    /// The body this list signs as, naming `signer` (a [`key_id`]).
    pub(super) fn body(&self, signer: &str) -> Result<String, ListError> {
        self.validate()?;
        let mut out = format!(
            "version 1\nsigner {signer}\nserial {}\nissued {}\nexpires {}\n",
            self.serial, self.issued, self.expires
        );
        let mut group: Option<[u8; 32]> = None;
        for listed in &self.endpoints {
            let text = listed.endpoint.to_string();
            // Only what parses back to the same endpoint may be signed.
            if parse_endpoint(&text).as_ref() != Ok(&listed.endpoint) {
                return Err(malformed(format!("endpoint {text:?} is not valid")));
            }
            if listed.server_key != group {
                group = listed.server_key;
                match &group {
                    Some(key) => writeln!(out, "pk {}", URL_SAFE_NO_PAD.encode(key)),
                    None => writeln!(out, "pk -"),
                }
                .map_err(|_| malformed("formatting"))?;
            }
            writeln!(out, "endpoint {text}").map_err(|_| malformed("formatting"))?;
        }
        if !out
            .bytes()
            .all(|b| b == b'\n' || (b' '..=b'~').contains(&b))
        {
            return Err(malformed("an endpoint is not printable ASCII"));
        }
        Ok(out)
    }
}
