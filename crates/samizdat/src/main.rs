//! The `samizdat` command: parses flags and hands each subcommand to the
//! library (`serve`, `client`, `cli::*`).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use samizdat::serve::config::{ServeArgs, ServeConfig};
use samizdat::serve::Server;
use tokio_util::sync::CancellationToken;

/// samizdat keeps people connected when a censor blocks a service.
#[derive(Parser)]
#[command(name = "samizdat", version, about, long_about = None)]
struct Cli {
    /// Log filter, e.g. info, debug, samizdat=debug (or RUST_LOG).
    #[arg(long, global = true, default_value = "info", env = "SAMIZDAT_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an MTProto proxy for Telegram apps (plain, dd and ee secrets);
    /// everything that fails authentication is spliced to a cover site.
    Serve(ServeCmd),
    /// Run a local proxy (SOCKS5, HTTP, and an endpoint for the Telegram
    /// app) that carries every app through a samizdat server, given the
    /// samizdat:// link its operator printed.
    Client(samizdat::client::ClientArgs),
    /// Print each user's tg:// and t.me links (the ones `serve` prints, for
    /// the same options) and QR codes of them, without starting a server.
    Link(samizdat::cli::link::LinkArgs),
    /// Check the config, the clock, the domain's DNS, the cover site and
    /// the Telegram DCs; each problem comes with what to do. Exit code 1
    /// if a check failed.
    Doctor(samizdat::cli::doctor::DoctorArgs),
    /// The user table shared by a fleet through Redis: add (printing the
    /// new user's links), remove, list. See docs/fleet.md.
    Users(samizdat::cli::users::UsersArgs),
    /// Signed server lists: make the list key, sign a list of endpoints,
    /// check a list (docs/operators.md).
    #[command(subcommand)]
    List(samizdat::cli::list::ListCommand),
    /// The censor lab is its own program, `samizdat-lab` (docs/lab.md):
    /// this runs it from beside this binary with the same arguments.
    Lab {
        /// Arguments for `samizdat-lab`, e.g. `scorecard`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args)]
struct ServeCmd {
    #[command(flatten)]
    serve: ServeArgs,
    /// Do not print the users' links at start: they hold the secrets, and
    /// container runtimes keep standard output (`docker logs`). Get them
    /// with `samizdat link` and the same options instead.
    #[arg(long)]
    no_links: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        // A log line that cannot be written is dropped: a closed or full
        // stderr must never stop the server (or its shutdown).
        .with_writer(|| QuietStderr)
        .log_internal_errors(false)
        // Colours only on a terminal: journals and log files get plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let result = match cli.command {
        Command::Serve(ServeCmd {
            serve: args,
            no_links,
        }) => serve(args, no_links),
        Command::Client(args) => client(args),
        Command::Link(args) => samizdat::cli::link::run(&args),
        Command::List(command) => samizdat::cli::list::run(&command),
        Command::Doctor(args) => samizdat::cli::doctor::run(&args),
        Command::Users(args) => samizdat::cli::users::run(&args),
        Command::Lab { args } => return run_lab(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "samizdat: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Standard error for log lines, swallowing write errors: with nobody
/// reading it (a closed pipe, a full disk), logs are lost but nothing panics.
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The start-up banner on standard output. It is informational: when
/// stdout is closed (`samizdat serve | head -3`) or full, the rest is
/// dropped and the server keeps serving.
struct Banner(Option<std::io::Stdout>);

impl Banner {
    fn say(&mut self, text: std::fmt::Arguments) {
        use std::io::Write;
        if let Some(out) = &mut self.0 {
            if out.write_fmt(text).and_then(|()| out.flush()).is_err() {
                // Nobody reads any more: stop writing.
                self.0 = None;
            }
        }
    }
}

fn serve(args: ServeArgs, no_links: bool) -> anyhow::Result<()> {
    // Each connection needs two descriptors; the usual soft limit of 1024
    // would cap a server at ~500 users. Raise it to the hard limit.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
    let (config, created) = ServeConfig::load(&args)?;
    let created = created.unwrap_or(false);
    let state_dir = config.state_dir.clone();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = config.threads {
        rt.worker_threads(n);
    }
    let rt = rt.build()?;
    // Relays run on a runtime of their own so that busy ones cannot hold
    // back new connections' handshakes (Server::relay_on).
    let mut relays = tokio::runtime::Builder::new_multi_thread();
    relays.enable_all().thread_name("samizdat-relay");
    if let Some(n) = config.threads {
        relays.worker_threads(n);
    }
    let relays = relays.build()?;
    let relay_handle = relays.handle().clone();
    let served = rt.block_on(async move {
        let server = Server::bind(config.clone())?;
        server.relay_on(relay_handle);
        let bound = server.addrs[0];
        let (host, hint) = samizdat::serve::links::link_host(&config, bound);
        let mut out = Banner(Some(std::io::stdout()));
        out.say(format_args!(
            "samizdat serving on {}\n",
            server
                .addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if let (Some(addr), Some(path)) = (server.ws_addr, &server.ws_path) {
            out.say(format_args!(
                "WebSocket listener on http://{addr}{path} (for a TLS reverse proxy or CDN in front: docs/fronting.md)\n"
            ));
        }
        if config.generated {
            let verb = if created {
                "generated a new secret and saved it"
            } else {
                "using the secret saved"
            };
            out.say(format_args!(
                "{verb} in {}\n",
                state_dir.join("state.toml").display()
            ));
        }
        if no_links {
            out.say(format_args!(
                "links not printed (--no-links); `samizdat link` with the same options prints them\n"
            ));
        } else {
            out.say(format_args!(
                "{}",
                samizdat::serve::links::render(&config, &host, bound.port(), server.tunnel_public.as_ref())
            ));
            if let Some(h) = hint {
                out.say(format_args!("note: {h}\n"));
            }
        }
        if config.users.is_empty() {
            out.say(format_args!(
                "note: no users yet; add them to the fleet's shared table with \
                 `samizdat users add NAME --redis URL` (every instance serves them within seconds)\n"
            ));
        }
        out.say(format_args!(
            "cover site: {} (connections that fail authentication go there)\n",
            config.cover
        ));
        tokio::spawn(samizdat::serve::reload::on_change(args.clone(), server.shared()));
        let stop = CancellationToken::new();
        let signals = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            // Stop first: shutting down must not wait on (or fail with) a
            // log line.
            signals.cancel();
            tracing::info!("shutting down");
        });
        tokio::spawn(samizdat::serve::memory::release_after_crowds(server.shared()));
        server.run(stop).await;
        anyhow::Ok(())
    });
    // What is still relaying after the drain ends with the process.
    relays.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

/// `samizdat lab ARGS`: runs `samizdat-lab ARGS` from this binary's
/// directory (where cargo builds it) and passes its exit status on. The
/// production binary does not link the lab or its test doubles.
fn run_lab(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    let lab = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("samizdat-lab")))
        .filter(|p| p.is_file());
    let Some(lab) = lab else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "samizdat: the censor lab is its own program now, and there is no samizdat-lab \
             beside this binary: build it with `cargo build --release -p samizdat-lab` and run \
             `target/release/samizdat-lab scorecard` (docs/lab.md)"
        );
        return std::process::ExitCode::from(2);
    };
    match std::process::Command::new(&lab).args(args).status() {
        Ok(status) => std::process::ExitCode::from(status.code().map_or(1, |c| c as u8)),
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "samizdat: cannot run {}: {e}",
                lab.display()
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn client(args: samizdat::client::ClientArgs) -> anyhow::Result<()> {
    let config = samizdat::client::ClientConfig::load(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stop = CancellationToken::new();
        let signals = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signals.cancel();
        });
        samizdat::client::run(config, stop).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
