//! The checks that stay on this machine: the configuration, the listen
//! ports (bound for an instant and let go) and the saved secret.

use super::{describe, Check, Finding, Level};
use crate::serve::config::{ServeConfig, DEFAULT_DOMAIN, DEFAULT_PORT, FALLBACK_PORT};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::SocketAddr;
use wire::secret::Mode;

/// What the configuration amounts to, and the choices that weaken the
/// disguise.
pub(super) fn config(c: &ServeConfig) -> Vec<Finding> {
    let modes: Vec<&str> = c.modes.iter().map(|m| m.name()).collect();
    let users = match c.users.len() {
        1 => "1 user".to_string(),
        n => format!("{n} users"),
    };
    let mut out = vec![Finding::ok(
        Check::Config,
        "config",
        format!(
            "valid: {users}, modes {}, domain {}, cover {}",
            modes.join(","),
            c.policy.domains.join(","),
            c.cover
        ),
    )];
    if c.modes.iter().any(|m| *m != Mode::FakeTls) {
        out.push(
            Finding::new(
                Level::Warn,
                Check::Config,
                "modes",
                "plain or dd is on: both are random bytes from the first byte, which DPI spots easily",
            )
            .fix("unless nothing filters where your users are, use --modes ee"),
        );
    }
    if c.policy.fake_tls && c.policy.domains.iter().any(|d| d == DEFAULT_DOMAIN) {
        out.push(
            Finding::new(
                Level::Warn,
                Check::Config,
                "domain",
                format!("fake-TLS as {DEFAULT_DOMAIN}, whose DNS never points at this server"),
            )
            .fix("pass --domain with a domain you control that resolves to this server and serves a real site"),
        );
    }
    out
}

/// Binds each listen address for an instant (as `serve` would, with
/// SO_REUSEADDR) and lets it go.
pub(super) fn listen(c: &ServeConfig) -> Vec<Finding> {
    let Some(addrs) = &c.listen else {
        return default_listen(c);
    };
    let mut out = Vec::new();
    for a in addrs {
        let subject = format!("listen {a}");
        out.push(match try_bind(*a) {
            Ok(()) => port_finding(c, *a, subject),
            Err(e) => bind_failure(*a, subject, &e, "--listen"),
        });
    }
    out
}

/// Without `--listen`, `serve` takes 0.0.0.0:443, or 8443 when 443 may
/// not be bound.
fn default_listen(c: &ServeConfig) -> Vec<Finding> {
    let main = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT));
    let subject = format!("listen {main}");
    match try_bind(main) {
        Ok(()) => vec![port_finding(c, main, subject)],
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let fallback = SocketAddr::from(([0, 0, 0, 0], FALLBACK_PORT));
            let mut out = vec![Finding::new(
                Level::Warn,
                Check::Listen,
                subject,
                format!("port {DEFAULT_PORT} needs root or CAP_NET_BIND_SERVICE, so serve would fall back to {FALLBACK_PORT}"),
            )
            .fix(format!("HTTPS on {DEFAULT_PORT} is what a censor expects: run as root, or setcap cap_net_bind_service=+ep $(which samizdat)"))];
            if let Err(e) = try_bind(fallback) {
                out.push(bind_failure(
                    fallback,
                    format!("listen {fallback}"),
                    &e,
                    "--listen",
                ));
            }
            out
        }
        Err(e) => vec![bind_failure(main, subject, &e, "--listen")],
    }
}

fn try_bind(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

fn port_finding(c: &ServeConfig, a: SocketAddr, subject: String) -> Finding {
    let port = a.port();
    if c.policy.fake_tls && port != DEFAULT_PORT && port != 0 {
        Finding::new(
            Level::Warn,
            Check::Listen,
            subject,
            format!("can be bound, but HTTPS on port {port} stands out"),
        )
        .fix(format!("listen on port {DEFAULT_PORT} if you can"))
    } else {
        Finding::ok(Check::Listen, subject, "can be bound")
    }
}

fn bind_failure(a: SocketAddr, subject: String, e: &io::Error, option: &str) -> Finding {
    let (level, fix) = match e.kind() {
        // Most likely `samizdat serve` itself: doctor is often run beside it.
        io::ErrorKind::AddrInUse => (
            Level::Warn,
            format!("fine if that is samizdat serve; otherwise stop the program that holds it (ss -ltnp shows which) or choose another {option}"),
        ),
        io::ErrorKind::PermissionDenied => (
            Level::Fail,
            format!("ports below 1024 need root or CAP_NET_BIND_SERVICE: setcap cap_net_bind_service=+ep $(which samizdat), or fix {option}"),
        ),
        io::ErrorKind::AddrNotAvailable => (
            Level::Fail,
            format!("{} is not an address of this machine: fix {option} (0.0.0.0 means all)", a.ip()),
        ),
        _ => (Level::Fail, format!("fix {option}")),
    };
    Finding::new(level, Check::Listen, subject, describe(e)).fix(fix)
}

/// The saved zero-config secret, read but never written: `serve` (or
/// `link`) creates it.
pub(super) fn state(c: &ServeConfig) -> Vec<Finding> {
    if !c.generated {
        return Vec::new();
    }
    let path = c.state_dir.join(crate::state::FILE);
    let subject = format!("state {}", path.display());
    if !path.exists() {
        return vec![Finding::ok(
            Check::State,
            subject,
            "no secret saved yet: samizdat serve will generate one here (so will samizdat link)",
        )];
    }
    match crate::state::load_or_create_key(&c.state_dir) {
        Ok(_) => vec![Finding::ok(
            Check::State,
            subject,
            "secret saved (the links stay the same across restarts)",
        )],
        Err(e) => vec![
            Finding::new(Level::Fail, Check::State, subject, format!("{e:#}"))
                .fix("fix or delete the file (deleting it makes a new secret: hand out new links)"),
        ],
    }
}
