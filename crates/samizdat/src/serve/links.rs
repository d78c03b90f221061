//! The links `samizdat serve` prints, and which host to put in them.

use crate::serve::config::ServeConfig;
use std::net::{IpAddr, SocketAddr};
use wire::link::{Endpoint, Link};
use wire::secret::{self, Mode, Secret};

/// Whether an address could be reached from the internet.
pub fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Picks the host for links: `--public-host`, else the listen address, else
/// (for 0.0.0.0) this machine's first public interface address. Returns the
/// host and, when it is a guess, a hint for the operator.
pub fn link_host(config: &ServeConfig, bound: SocketAddr) -> (String, Option<String>) {
    if let Some(h) = &config.public_host {
        return (h.clone(), None);
    }
    let hint = "pass --public-host HOST (the name or address clients reach this server at)";
    if !bound.ip().is_unspecified() {
        let ip = bound.ip();
        let note = (!is_public(&ip)).then(|| format!("{ip} is not a public address; {hint}"));
        return (ip.to_string(), note);
    }
    let want_v4 = bound.is_ipv4();
    let addrs: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() == want_v4 || !want_v4)
        .collect();
    if let Some(ip) = addrs.iter().find(|ip| is_public(ip)) {
        return (ip.to_string(), Some(format!("using this machine's address {ip}; if clients reach it by another name or address, {hint}")));
    }
    if let Some(ip) = addrs.iter().find(|ip| !ip.is_loopback()) {
        return (
            ip.to_string(),
            Some(format!("{ip} is a private address (behind NAT?); {hint}")),
        );
    }
    (
        "127.0.0.1".to_string(),
        Some(format!("no network address found; {hint}")),
    )
}

/// One link to print: whose it is, in which form.
#[derive(Debug, Clone)]
pub struct LinkEntry {
    /// The user's name.
    pub user: String,
    /// The form in words, e.g. `ee, fake-TLS as example.com`.
    pub label: String,
    /// The secret a client gets (key plus form).
    pub secret: Secret,
}

/// One entry per user and accepted form (`ee` once per domain), in the
/// order `samizdat serve` prints them.
pub fn entries(config: &ServeConfig) -> Vec<LinkEntry> {
    let mut out = Vec::new();
    for user in &config.users {
        for mode in &config.modes {
            let secrets: Vec<Secret> = match mode {
                Mode::FakeTls => config
                    .policy
                    .domains
                    .iter()
                    .map(|d| Secret {
                        key: user.key.clone(),
                        mode: Mode::FakeTls,
                        domain: Some(d.clone()),
                    })
                    .collect(),
                m => vec![Secret {
                    key: user.key.clone(),
                    mode: *m,
                    domain: None,
                }],
            };
            for s in secrets {
                let label = match (&s.mode, &s.domain) {
                    (Mode::FakeTls, Some(d)) => format!("ee, fake-TLS as {d}"),
                    (Mode::Padded, _) => "dd, padded".to_string(),
                    _ => "plain".to_string(),
                };
                out.push(LinkEntry {
                    user: user.name.clone(),
                    label,
                    secret: s,
                });
            }
        }
    }
    out
}

/// The WebSocket listener's path when `--ws-path` is not given (derived
/// from the server's transport key; the rule is in `wire::link`).
pub use wire::link::default_ws_path;

/// The path the WebSocket listener upgrades: `--ws-path`, else the
/// derived one.
pub fn ws_path(config: &ServeConfig, server_key: &[u8; 32]) -> String {
    config
        .ws_path
        .clone()
        .unwrap_or_else(|| default_ws_path(server_key))
}

/// The `wss://` endpoint links carry, with `--ws-public`.
pub fn ws_endpoint(config: &ServeConfig, server_key: &[u8; 32]) -> Option<Endpoint> {
    let mut e = config.ws_public.clone()?;
    if e.ws_path.is_none() {
        e.ws_path = Some(ws_path(config, server_key));
    }
    Some(e)
}

/// Each user's `samizdat://` link for `samizdat client`, when the server
/// accepts samizdat clients: the user's key, this server (and its
/// `--ws-public` front as an alternative), the server's transport public
/// key and the cover name (the first domain).
pub fn samizdat_links(
    config: &ServeConfig,
    host: &str,
    port: u16,
    server_key: &[u8; 32],
) -> Vec<(String, Link)> {
    if !config.tunnel {
        return Vec::new();
    }
    let Some(sni) = config.policy.domains.first() else {
        return Vec::new();
    };
    config
        .users
        .iter()
        .map(|u| {
            let link = Link {
                secret: u.key.clone(),
                server_key: *server_key,
                servers: std::iter::once(Endpoint::direct(
                    host.trim_start_matches('[').trim_end_matches(']'),
                    port,
                ))
                .chain(ws_endpoint(config, server_key))
                .collect(),
                sni: sni.clone(),
                fingerprint: "chrome".to_string(),
                name: None,
                list_key: None,
                list_sources: Vec::new(),
            };
            (u.name.clone(), link)
        })
        .collect()
}

/// The printable block of links for every user and accepted form, then
/// the `samizdat://` links if `server_key` is given.
pub fn render(
    config: &ServeConfig,
    host: &str,
    port: u16,
    server_key: Option<&[u8; 32]>,
) -> String {
    let mut out = String::new();
    for e in entries(config) {
        let l = secret::links(host, port, &e.secret.to_hex());
        out.push_str(&format!(
            "user {} ({}):\n  {}\n  {}\n",
            e.user, e.label, l.tg, l.tme
        ));
    }
    if let Some(key) = server_key {
        for (user, link) in samizdat_links(config, host, port, key) {
            out.push_str(&format!(
                "user {user} (samizdat client: any app, through `samizdat client LINK`):\n  {link}\n"
            ));
        }
    }
    out
}
