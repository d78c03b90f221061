//! The DNS check: each fake-TLS domain should resolve to this server. A
//! censor can resolve the SNI of a connection and compare it with the
//! address the connection goes to; a mismatch gives the proxy away (spec
//! §4.6). Uses the system resolver, as the censor's view of it.

use super::{show, Check, Finding, Level};
use crate::serve::config::ServeConfig;
use crate::serve::links::is_public;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

/// This server's addresses, as far as doctor can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ours {
    /// Where they come from, for the messages.
    source: String,
    addrs: BTreeSet<IpAddr>,
    /// Given by the operator (`--public-host`), not guessed.
    given: bool,
}

/// Checks `--public-host` and every fake-TLS domain, concurrently.
pub(super) async fn check(c: &ServeConfig, timeout: Duration) -> Vec<Finding> {
    if !c.policy.fake_tls {
        return Vec::new();
    }
    let lookups: Vec<_> = c
        .policy
        .domains
        .iter()
        .map(|d| tokio::spawn(resolve(d.clone(), timeout)))
        .collect();
    let mut out = Vec::new();
    let ours = match &c.public_host {
        Some(host) => match resolve(host.clone(), timeout).await {
            Ok(addrs) => Ours {
                source: format!("--public-host {host}"),
                addrs,
                given: true,
            },
            Err(e) => {
                out.push(
                    Finding::new(
                        Level::Fail,
                        Check::Dns,
                        format!("dns {host}"),
                        format!("--public-host does not resolve: {e}"),
                    )
                    .fix("clients given the links cannot connect: fix the name's DNS or pass this server's IP"),
                );
                return out;
            }
        },
        None => this_machine(c),
    };
    for (domain, lookup) in c.policy.domains.iter().zip(lookups) {
        let resolved = lookup
            .await
            .unwrap_or_else(|_| Err("lookup failed".to_string()));
        out.push(judge(domain, resolved, &ours));
    }
    out
}

async fn resolve(host: String, timeout: Duration) -> Result<BTreeSet<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok([ip].into());
    }
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), 443))).await {
        Err(_) => Err(format!("no DNS answer within {}", show(timeout))),
        Ok(Err(e)) => Err(super::describe(&e)),
        Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).collect()),
    }
}

/// Without `--public-host`: the specific listen addresses, and this
/// machine's interface addresses when listening on all of them. Loopback
/// is left out: a domain resolving to 127.0.0.1 points at no server.
fn this_machine(c: &ServeConfig) -> Ours {
    let mut addrs: BTreeSet<IpAddr> = BTreeSet::new();
    let listen = c.listen.clone().unwrap_or_default();
    for a in &listen {
        if !a.ip().is_unspecified() {
            addrs.insert(a.ip());
        }
    }
    if listen.is_empty() || listen.iter().any(|a| a.ip().is_unspecified()) {
        addrs.extend(
            if_addrs::get_if_addrs()
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.ip()),
        );
    }
    addrs.retain(|ip| !ip.is_loopback() && !ip.is_unspecified());
    Ours {
        source: "this machine".into(),
        addrs,
        given: false,
    }
}

fn list(addrs: &BTreeSet<IpAddr>) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compares what a domain resolves to with this server's addresses.
pub(super) fn judge(
    domain: &str,
    resolved: Result<BTreeSet<IpAddr>, String>,
    ours: &Ours,
) -> Finding {
    let subject = format!("dns {domain}");
    let control = "use a domain you control whose A/AAAA records point at this server (and that serves a real site here), with --domain";
    let resolved = match resolved {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return judge(domain, Err("no addresses".into()), ours),
        Err(e) => {
            return Finding::new(
                Level::Warn,
                Check::Dns,
                subject,
                format!("does not resolve ({e}): TLS to a name without an address stands out"),
            )
            .fix(control)
        }
    };
    let names = list(&resolved);
    if !resolved.is_disjoint(&ours.addrs) {
        return Finding::ok(
            Check::Dns,
            subject,
            format!("resolves to {names}: this server ({})", ours.source),
        );
    }
    if ours.addrs.is_empty() || (!ours.given && !ours.addrs.iter().any(is_public)) {
        let why = if ours.addrs.is_empty() {
            "no address of this server is known".to_string()
        } else {
            format!(
                "this machine has only private addresses ({}: behind NAT?)",
                list(&ours.addrs)
            )
        };
        return Finding::new(
            Level::Warn,
            Check::Dns,
            subject,
            format!("resolves to {names}; cannot tell whether that is this server: {why}"),
        )
        .fix("pass --public-host with the address clients reach this server at");
    }
    Finding::new(
        Level::Warn,
        Check::Dns,
        subject,
        format!(
            "resolves to {names}, not to this server ({}: {})",
            ours.source,
            list(&ours.addrs)
        ),
    )
    .fix(format!(
        "a censor can resolve the SNI and see that it does not point at this proxy: {control}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(addrs: &[&str], given: bool) -> Ours {
        Ours {
            source: "test".into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            given,
        }
    }

    fn ips(addrs: &[&str]) -> Result<BTreeSet<IpAddr>, String> {
        Ok(addrs.iter().map(|a| a.parse().unwrap()).collect())
    }

    #[test]
    fn match_mismatch_and_cannot_tell() {
        let public = ours(&["203.0.113.7", "10.0.0.2"], false);
        let f = judge("a.example", ips(&["203.0.113.7", "2001:db8::1"]), &public);
        assert_eq!(f.level, Level::Ok, "{f}");
        let f = judge("a.example", ips(&["198.51.100.1"]), &public);
        assert_eq!(f.level, Level::Warn);
        assert!(f.fix.unwrap().contains("censor"));
        let nat = ours(&["10.0.0.2"], false);
        let f = judge("a.example", ips(&["198.51.100.1"]), &nat);
        assert!(f.found.contains("behind NAT"), "{f}");
        let f = judge("a.example", Err("nope".into()), &public);
        assert!(f.found.contains("does not resolve"), "{f}");
        // Given by the operator, even a private address is compared.
        let f = judge("a.example", ips(&["10.0.0.3"]), &ours(&["10.0.0.2"], true));
        assert!(f.found.contains("not to this server"), "{f}");
    }
}
