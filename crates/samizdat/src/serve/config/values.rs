//! The value parsers of `samizdat serve`'s options, shared by the flags
//! and the config file: sizes, rates, dates, keys and secrets, addresses,
//! DC ids, WebSocket paths and URLs, port lists, header names, prefixes.
//! Each returns a message that says what was expected.

use crate::serve::cover::CoverTarget;
use std::net::SocketAddr;
use wire::secret::{validate_domain, weak_key, Key, Mode, Secret};

/// Parses a byte size: `1048576`, `500MB`, `10GiB`, `1.5TB` (SI and binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("{text:?} is not a size; write e.g. 500MB, 10GiB or a number of bytes")
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ))
        }
    };
    let bytes = value * mult;
    if !bytes.is_finite() || !(1.0..=1e18).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses a rate: `1MiB/s`, `500KB/s`, `8Mbit/s`, `100Mbps`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let (size, bits) = if let Some(x) = lower
        .strip_suffix("bit/s")
        .or_else(|| lower.strip_suffix("bps"))
    {
        (x.to_string(), true)
    } else if let Some(x) = lower.strip_suffix("/s") {
        (x.to_string(), false)
    } else {
        return Err(format!(
            "{text:?} is not a rate; write e.g. 1MiB/s, 500KB/s or 8Mbit/s"
        ));
    };
    let size = if bits { format!("{size}b") } else { size };
    let n = parse_size(&size)
        .map_err(|_| format!("{text:?} is not a rate; write e.g. 1MiB/s, 500KB/s or 8Mbit/s"))?;
    Ok(if bits { (n / 8).max(1) } else { n })
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(super) fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A TOML date-time as unix seconds; a date alone is midnight UTC, a local
/// time is taken as UTC.
pub(super) fn datetime_to_unix(dt: &toml::value::Datetime) -> Result<u64, String> {
    let date = dt
        .date
        .ok_or("expected a date, e.g. 2027-01-31 or 2027-01-31T12:00:00Z")?;
    let mut secs = days_from_civil(i64::from(date.year), date.month, date.day) * 86_400;
    if let Some(t) = dt.time {
        secs += i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second);
    }
    if let Some(toml::value::Offset::Custom { minutes }) = dt.offset {
        secs -= i64::from(minutes) * 60;
    }
    u64::try_from(secs).map_err(|_| "dates before 1970 are not supported".to_string())
}

/// How to make a key, for error messages.
pub const MAKE_A_KEY: &str =
    "make a new one with `openssl rand -hex 16` (or `head -c16 /dev/urandom | xxd -p`)";

/// [`parse_secret`] for a user who will be served, refusing what others
/// can guess: the placeholder of samizdat.example.toml, a key published in
/// samizdat's docs and example config, an obvious pattern ([`weak_key`]).
pub fn parse_user_secret(user: &str, text: &str) -> Result<Secret, String> {
    let t = text.trim().to_ascii_lowercase();
    if t.contains("replace") || t.contains("change-me") || t.contains("changeme") {
        return Err(format!(
            "user {user}: replace {:?} with the user's own key; {MAKE_A_KEY}",
            text.trim()
        ));
    }
    let secret = parse_secret(text)?;
    check_key(user, &secret.key)?;
    Ok(secret)
}

/// Refuses `key` for `user` if [`weak_key`] does, saying why and how to
/// make a good one.
pub fn check_key(user: &str, key: &Key) -> Result<(), String> {
    match weak_key(key) {
        None => Ok(()),
        Some(why) => Err(format!(
            "user {user}'s key is {why}: anyone could guess it and use this proxy; {MAKE_A_KEY}"
        )),
    }
}

/// Parses a secret as given to `--secret` or `users.NAME.secret`: 32 hex
/// digits are a key; longer text is a full dd…/ee… secret.
pub fn parse_secret(text: &str) -> Result<Secret, String> {
    let t = text.trim();
    let short_hex = t.len() <= 32 && t.bytes().all(|b| b.is_ascii_hexdigit());
    if short_hex {
        Key::from_hex(t).map(|key| Secret {
            key,
            mode: Mode::Plain,
            domain: None,
        })
    } else {
        Secret::parse(t)
    }
    .map_err(|e| e.to_string())
}

/// Parses `HOST:PORT` or `IP:PORT` for the cover site.
pub fn parse_cover(text: &str) -> Result<CoverTarget, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(CoverTarget::Addr(addr));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or("expected HOST:PORT, e.g. 127.0.0.1:8443")?;
    let port: u16 = port
        .parse()
        .map_err(|_| "the port must be a number from 1 to 65535".to_string())?;
    validate_domain(host).map_err(|e| e.to_string())?;
    Ok(CoverTarget::Host(host.to_string(), port))
}

pub(super) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:443 or [::1]:443".to_string())
}

pub(super) fn parse_dc_id(text: &str) -> Result<i32, String> {
    text.trim()
        .parse()
        .map_err(|_| "the DC id must be a number such as 2, -2 or 10002".to_string())
}

/// A WebSocket path: `/` then URL path characters, at most 200 bytes.
pub(super) fn parse_ws_path(text: &str) -> Result<String, String> {
    let ok = text.starts_with('/')
        && text.len() <= 200
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:@".contains(&b));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "expected a URL path such as /assets/ws (starting with /, no spaces, ? or #), got {text:?}"
        ))
    }
}

/// `wss://HOST[:PORT][/PATH]`, as clients reach the front.
pub(super) fn parse_ws_public(text: &str) -> Result<wire::link::Endpoint, String> {
    let bad = || {
        format!(
            "expected wss://HOST[:PORT][/PATH], e.g. wss://cdn.example.com/assets/ws, got {text:?}"
        )
    };
    let rest = text.strip_prefix("wss://").ok_or_else(bad)?;
    let has_path = rest.contains('/');
    let full = if has_path {
        text.to_string()
    } else {
        format!("{text}/")
    };
    let mut endpoint = wire::link::parse_endpoint(&full).map_err(|_| bad())?;
    if has_path {
        let path = endpoint.ws_path.take().unwrap_or_default();
        endpoint.ws_path = Some(parse_ws_path(&path)?);
    } else {
        endpoint.ws_path = None;
    }
    Ok(endpoint)
}

/// A comma-separated port list as `--egress-deny-ports` takes it; "none"
/// is the empty list.
pub(super) fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|p| match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "expected ports 1-65535 separated by commas (e.g. 25,465,587) or \"none\", got {p:?}"
            )),
        })
        .collect()
}

/// An HTTP header name (a token: letters, digits and `-`), 1-64 bytes.
pub(super) fn parse_header_name(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() || t.len() > 64 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!(
            "expected an HTTP header name such as X-Real-IP or CF-Connecting-IP, got {text:?}"
        ));
    }
    Ok(t.to_string())
}

/// An address prefix such as `10.1.0.0/16`, or one address (a /32 or /128).
pub(super) fn parse_prefix(text: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| {
            format!("expected an address prefix such as 10.1.0.0/16 or fd00::/8, got {text:?}")
        })
}
