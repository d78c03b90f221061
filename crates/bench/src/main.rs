//! `samizdat-bench`: measures `samizdat serve` against a plain TCP relay
//! and the MTProto crypto floor on 127.0.0.1, in one run, and prints a
//! Markdown table of absolute figures and ratios (see BENCHMARKS.md).
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`system`] | starts the systems under test as processes |
//! | [`baseline`] | the plain relay and the crypto floor (`relay` command) |
//! | [`dc`] | the bench DC (sink, source, echo, hold), greeter and cover site |
//! | [`client`] | the load generator's handshakes and bulk I/O |
//! | [`phases`] | throughput, handshakes, latency, idle memory |
//! | [`callgrind`] | instruction counts of fixed workloads |
//! | [`procfs`] | CPU time, RSS, descriptors, machine |
//! | [`redis`] | a `redis-server` for the Redis-backend handshakes |
//! | [`run`] | one run: the phases in order against each system |
//! | [`report`] | the tables |
#![forbid(unsafe_code)]
// The load generators take randomness with `expect` (a failure panics);
// clippy.toml's one-function rule is for the server and client.
#![allow(clippy::disallowed_methods)]

mod baseline;
mod callgrind;
mod client;
mod dc;
mod phases;
mod procfs;
mod redis;
mod report;
mod run;
mod system;

use clap::{Parser, Subcommand};
use phases::Dir;
use report::Results;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use system::{Env, Spec};

#[derive(Parser)]
#[command(
    name = "samizdat-bench",
    about = "Benchmark samizdat serve against a plain relay and the crypto floor (127.0.0.1 only)"
)]
struct Cli {
    /// Smaller counts (about 30 s): a smoke test of the tool, not figures.
    #[arg(long)]
    quick: bool,
    /// The samizdat binary (default: target/release/samizdat, built first).
    #[arg(long)]
    samizdat: Option<PathBuf>,
    /// Runtime threads for every system under test (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Idle connections for the memory measurement.
    #[arg(long)]
    idle: Option<usize>,
    /// Skip the callgrind instruction counts.
    #[arg(long)]
    no_callgrind: bool,
    /// Pin each system under test to the last core (its default runtime
    /// then has one worker thread) and the load generator to the others.
    /// By default everything shares every core.
    #[arg(long)]
    pin: bool,
    /// Run only these parts (comma-separated: bulk, latency, handshakes,
    /// setup, client-setup, memory, callgrind). The handshakes include
    /// samizdat with the Redis backend (`--redis`) when `redis-server` is
    /// installed. "setup" times new dd and ee connections and new SOCKS5
    /// streams through a `samizdat client` while others stream;
    /// "client-setup" only the latter.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write the tables to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Subcommand)]
enum Sub {
    /// Run a baseline relay (used by the benchmark itself).
    #[command(hide = true)]
    Relay {
        #[arg(long, value_enum)]
        kind: baseline::Kind,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// Counts and durations of one run.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    one_conn: u64,
    many_conns: usize,
    bulk_reps: usize,
    many_total: u64,
    handshake_time: Duration,
    handshake_max: u64,
    handshake_workers: usize,
    round_trips: usize,
    idle: usize,
    cg_handshakes: u64,
    cg_bytes: u64,
    setup_streams: usize,
    setup_probes: usize,
}

const MIB: u64 = 1 << 20;

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            one_conn: 512 * MIB,
            many_conns: 1000,
            bulk_reps: 3,
            many_total: 500 * MIB,
            handshake_time: Duration::from_millis(2500),
            handshake_max: 50_000,
            handshake_workers: 32,
            round_trips: 2000,
            idle: 10_000,
            cg_handshakes: 100,
            cg_bytes: 16 * MIB,
            setup_streams: 200,
            setup_probes: 100,
        }
    }
    fn quick() -> Sizes {
        Sizes {
            one_conn: 128 * MIB,
            many_conns: 100,
            bulk_reps: 1,
            many_total: 128 * MIB,
            handshake_time: Duration::from_millis(500),
            handshake_max: 5_000,
            handshake_workers: 16,
            round_trips: 300,
            idle: 1000,
            cg_handshakes: 10,
            cg_bytes: 2 * MIB,
            setup_streams: 50,
            setup_probes: 10,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Sub::Relay {
        kind,
        upstream,
        threads,
    }) = cli.command
    {
        baseline::run(kind, upstream, system::key(), threads)?;
        return Ok(());
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build of the load generator; use cargo run --release");
    }
    let mut sizes = if cli.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let fds = raise_fd_limit();
    // Each idle connection costs the proxy two descriptors and the bench
    // two (client and DC side).
    let fit = (fds.saturating_sub(64) / 2 / 100 * 100) as usize;
    sizes.idle = cli.idle.unwrap_or(sizes.idle).min(fit);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pin = (cli.pin && cores >= 2).then(|| pin_self(cores));
    let samizdat = match cli.samizdat.clone() {
        Some(p) => p,
        None => build_samizdat()?,
    };
    let scratch = std::env::temp_dir().join(format!("samizdat-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let env = Env {
        samizdat,
        bench: std::env::current_exe()?,
        threads: cli.threads,
        scratch: scratch.clone(),
        pin: pin.flatten(),
    };
    let load_cores = if env.pin.is_some() { cores - 1 } else { cores };
    let parts = Parts(cli.only.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(load_cores.max(1))
        .enable_all()
        .build()?;
    let started = Instant::now();
    let result = rt.block_on(run::run(&env, sizes, !cli.no_callgrind, &parts));
    rt.shutdown_timeout(Duration::from_secs(1));
    callgrind::cleanup(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let mut results = result?;
    results.elapsed = started.elapsed();
    results.machine = procfs::machine(cores);
    results.threads = cli.threads;
    results.idle_target = sizes.idle;
    results.fd_limit = fds;
    results.pinned = env.pin;
    results.load_threads = load_cores.max(1);
    let text = report::render(&results);
    println!("{text}");
    if let Some(path) = cli.markdown {
        std::fs::write(path, &text)?;
    }
    Ok(())
}

/// Which parts to run.
struct Parts(Vec<String>);

impl Parts {
    fn has(&self, part: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p == part)
    }
}

/// Pins this process to every core but the last and returns the last,
/// where the systems under test will run (`taskset`); `None` if that
/// is not possible.
fn pin_self(cores: usize) -> Option<usize> {
    let last = cores - 1;
    let ok = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &format!("0-{}", last - 1)])
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(last)
}

/// Raises the open-files limit (hard too, when allowed) and returns the
/// soft limit now in force. Child processes inherit it.
fn raise_fd_limit() -> u64 {
    use rlimit::Resource;
    const WANT: u64 = 65_536;
    if let Ok((soft, hard)) = Resource::NOFILE.get() {
        if hard < WANT {
            let _ = Resource::NOFILE.set(WANT, WANT);
        } else if soft < WANT {
            let _ = Resource::NOFILE.set(WANT, hard);
        }
    }
    let _ = rlimit::increase_nofile_limit(WANT);
    Resource::NOFILE.get().map(|(s, _)| s).unwrap_or(1024)
}

/// Builds the release `samizdat` binary with the cargo that built this
/// one, and returns its path.
fn build_samizdat() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or_else(|| anyhow::anyhow!("cannot find the target directory"))?;
    let binary = target.join("release").join("samizdat");
    if let Some(cargo) = option_env!("CARGO") {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        eprintln!("building the release samizdat binary …");
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "samizdat",
                "--bin",
                "samizdat",
            ])
            .current_dir(root)
            .env("CARGO_TARGET_DIR", target)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: cargo build failed; using {} as it is",
                binary.display()
            );
        }
    }
    if !binary.exists() {
        anyhow::bail!(
            "{} is missing: run cargo build --release -p samizdat, or pass --samizdat PATH",
            binary.display()
        );
    }
    Ok(binary)
}

/// The systems of the throughput, latency and handshake phases.
fn systems() -> Vec<(&'static str, Spec, bool)> {
    vec![
        ("plain relay", Spec::Baseline(baseline::Kind::Plain), false),
        ("crypto floor", Spec::Baseline(baseline::Kind::Floor), false),
        ("samizdat dd", Spec::Samizdat(Vec::new()), false),
        ("samizdat ee", Spec::Samizdat(Vec::new()), true),
    ]
}

fn start(env: &Env, spec: &Spec, dc: &dc::Dc) -> anyhow::Result<system::Running> {
    let (cover, _) = dc::cover()?;
    tokio::task::block_in_place(|| system::start(env, spec, dc.addr, cover, None))
}

fn say(what: &str) {
    eprintln!("[{:>6.1}s] {what}", elapsed_secs());
}

fn elapsed_secs() -> f64 {
    use std::sync::OnceLock;
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_secs_f64()
}
