//! `samizdat doctor`: checks what a server needs to work and to pass for
//! an ordinary HTTPS site, and says what to do about each problem.
//!
//! It takes the same options as `serve` and builds the same
//! [`ServeConfig`], then runs the checks concurrently, each with a deadline
//! (`--timeout`), so it never hangs:
//!
//! | check | module | what it looks at |
//! |---|---|---|
//! | config, listen, state | `local` | the options, the listen ports, the saved secret |
//! | clock | `clock` | this clock against the cover site's `Date:` header |
//! | dns | `dns` | each fake-TLS domain resolves to this server (spec §4.6) |
//! | cover | `cover`, `shape` | a real TLS handshake with the cover: TLS 1.3, ServerHello shape (§4.4), HTTP |
//! | dc | `dc` | a TCP connection to each Telegram DC the config routes to (§5) |
//! | redis | `redis` | with `--redis`: reachable, round trip against the deadline, users |
//!
//! It is the one command that reaches outside (DNS, the cover site,
//! Telegram), and only when run. It writes nothing: no state, no port kept.

pub mod clock;
pub mod cover;
mod dc;
mod dns;
mod local;
mod redis;
mod shape;

use crate::serve::config::{ServeArgs, ServeConfig};
use std::fmt;
use std::time::Duration;
use wire::secret::Key;

/// Command-line options of `samizdat doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Deadline for each network check (DNS, cover site, each DC).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = crate::duration::parse)]
    pub timeout: Duration,

    /// Print the findings as one JSON document instead of lines.
    #[arg(long)]
    pub json: bool,

    /// The server's options: give the same ones as to `samizdat serve`.
    #[command(
        flatten,
        next_help_heading = "Server options (as for `samizdat serve`)"
    )]
    pub serve: ServeArgs,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but weakens the disguise or may break later.
    Warn,
    /// Does not work: `doctor` exits with 1.
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        })
    }
}

/// Which check a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// The options (and config file) build a valid configuration.
    Config,
    /// The listen addresses can be bound.
    Listen,
    /// The saved zero-config secret.
    State,
    /// This machine's clock.
    Clock,
    /// The fake-TLS domains' DNS.
    Dns,
    /// The cover site.
    Cover,
    /// Telegram's data centres.
    Dc,
    /// The fleet's Redis (with `--redis`).
    Redis,
}

/// One line of the report: what was found and, unless all is well, what
/// to do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// Which check.
    pub check: Check,
    /// What was looked at, e.g. `cover 127.0.0.1:8443`.
    pub subject: String,
    /// What was found.
    pub found: String,
    /// What to do about it.
    pub fix: Option<String>,
}

impl Finding {
    pub(crate) fn new(
        level: Level,
        check: Check,
        subject: impl Into<String>,
        found: impl Into<String>,
    ) -> Finding {
        Finding {
            level,
            check,
            subject: subject.into(),
            found: found.into(),
            fix: None,
        }
    }

    pub(crate) fn ok(check: Check, subject: impl Into<String>, found: impl Into<String>) -> Self {
        Self::new(Level::Ok, check, subject, found)
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4}  {}: {}", self.level, self.subject, self.found)?;
        if let Some(fix) = &self.fix {
            write!(f, " — {fix}")?;
        }
        Ok(())
    }
}

/// Runs every check and returns the findings in report order.
pub async fn diagnose(args: &DoctorArgs) -> Vec<Finding> {
    // The zero-config key is not needed to check anything: take a dummy
    // one here so that doctor writes no state; `local::state` looks at
    // the saved secret on its own.
    let config = match ServeConfig::from_args(&args.serve, || Ok(Key([0; 16]))) {
        Ok(c) => c,
        Err(e) => {
            return vec![Finding::new(
            Level::Fail,
            Check::Config,
            "config",
            format!("{e:#}"),
        )
        .fix(
            "fix the option or file entry named here; the other checks need a valid configuration",
        )]
        }
    };
    let timeout = args.timeout;
    let mut out = local::config(&config);
    out.extend(local::listen(&config));
    out.extend(local::state(&config));
    let (dns, cover, dcs, fleet) = tokio::join!(
        dns::check(&config, timeout),
        cover::check(&config, timeout),
        dc::check(&config, timeout),
        redis::check(&config, timeout),
    );
    out.push(clock::judge(
        cover.date.as_ref(),
        config.policy.max_past,
        config.policy.max_future,
    ));
    out.extend(dns);
    out.extend(cover.findings);
    out.extend(dcs);
    out.extend(fleet);
    out
}

/// The report as one JSON document: `{"ok": bool, "findings": [...]}`.
pub fn to_json(findings: &[Finding]) -> String {
    let ok = findings.iter().all(|f| f.level != Level::Fail);
    serde_json::json!({ "ok": ok, "findings": findings }).to_string()
}

/// Runs `samizdat doctor`: the report to standard output; an error (exit
/// code 1) when any check failed.
pub fn run(args: &DoctorArgs) -> anyhow::Result<()> {
    // Several threads, so that a TLS handshake's CPU time does not show
    // up in a DC's connect latency.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let findings = rt.block_on(diagnose(args));
    // A system DNS lookup that outlived its deadline is still running on a
    // blocking thread: do not wait for it.
    rt.shutdown_background();
    if args.json {
        println!("{}", to_json(&findings));
    } else {
        for f in &findings {
            println!("{f}");
        }
    }
    let failed = findings.iter().filter(|f| f.level == Level::Fail).count();
    match failed {
        0 => Ok(()),
        1 => anyhow::bail!("doctor: 1 check failed"),
        n => anyhow::bail!("doctor: {n} checks failed"),
    }
}

/// An I/O error in a few words, without the `(os error N)` tail.
pub(crate) fn describe(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        NetworkUnreachable => "network unreachable".into(),
        HostUnreachable => "host unreachable".into(),
        AddrNotAvailable => "address not available on this machine".into(),
        PermissionDenied => "permission denied".into(),
        AddrInUse => "address in use".into(),
        UnexpectedEof => "closed the connection".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

/// `1.5s`, `250ms`.
pub(crate) fn show(d: Duration) -> String {
    if d.as_millis() >= 1000 && d.as_millis() % 1000 == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_millis() >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if d.as_millis() >= 10 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    }
}
