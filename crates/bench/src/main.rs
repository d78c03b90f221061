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
    let result = rt.block_on(run(&env, sizes, !cli.no_callgrind, &parts));
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

async fn run(
    env: &Env,
    sizes: Sizes,
    with_callgrind: bool,
    parts: &Parts,
) -> anyhow::Result<Results> {
    let _ = elapsed_secs();
    let dc = dc::Dc::start()?;
    let mut r = Results::default();

    // One process per system; samizdat dd and ee share one.
    let plain = start(env, &Spec::Baseline(baseline::Kind::Plain), &dc)?;
    let floor = start(env, &Spec::Baseline(baseline::Kind::Floor), &dc)?;
    let sz = start(env, &Spec::Samizdat(Vec::new()), &dc)?;
    let running = |name: &str| match name {
        "plain relay" => &plain,
        "crypto floor" => &floor,
        _ => &sz,
    };
    r.start_rss = vec![
        ("plain relay", procfs::rss_kib(plain.pid)),
        ("crypto floor", procfs::rss_kib(floor.pid)),
        ("samizdat", procfs::rss_kib(sz.pid)),
    ];

    // Throughput: each phase across all systems in turn, so they are
    // compared close together in time; repeated, and the median kept.
    let bulk_phases = if parts.has("bulk") {
        vec![(1, sizes.one_conn), (sizes.many_conns, sizes.many_total)]
    } else {
        Vec::new()
    };
    for (conns, total) in bulk_phases {
        for dir in [Dir::Up, Dir::Down] {
            let mut samples: Vec<Vec<phases::Work>> = vec![Vec::new(); systems().len()];
            for _ in 0..sizes.bulk_reps {
                for (i, (name, spec, tls)) in systems().into_iter().enumerate() {
                    let proto = system::proto(&spec, tls);
                    let w = phases::bulk(running(name), &dc, &proto, conns, dir, total).await;
                    say(&format!(
                        "bulk {name:<13} {conns:>5} conn {dir:?}: {:.2} GB per CPU-s, {:.2} GB/s wall, {} errors",
                        w.per_cpu_sec() / 1e9,
                        w.per_wall_sec() / 1e9,
                        w.errors
                    ));
                    samples[i].push(w);
                }
            }
            for ((name, _, _), mut runs) in systems().into_iter().zip(samples) {
                let errors = runs.iter().map(|w| w.errors).sum();
                runs.sort_by(|a, b| a.per_cpu_sec().total_cmp(&b.per_cpu_sec()));
                let mut median = runs[runs.len() / 2];
                median.errors = errors;
                r.bulk.push((name, conns, dir, median));
            }
        }
    }

    // Latency: one connection, small round trips; "direct" skips the relay.
    if parts.has("latency") {
        let mut names = vec!["direct to the DC"];
        let mut targets = vec![(dc.addr, client::Proto::Raw)];
        for (name, spec, tls) in systems() {
            names.push(name);
            targets.push((running(name).addr, system::proto(&spec, tls)));
        }
        let rtts = phases::round_trips(&targets, sizes.round_trips).await?;
        for (name, rtts) in names.into_iter().zip(rtts) {
            say(&format!(
                "latency {name}: p50 {:?}",
                phases::percentile(&rtts, 0.5)
            ));
            r.latency.push((name, stats(&rtts)));
        }
    }

    // Handshakes.
    let lazy = start(
        env,
        &Spec::Samizdat(vec!["--cover-connect".into(), "lazy".into()]),
        &dc,
    )?;
    // The same samizdat with its state in a local redis-server.
    let redis = parts
        .has("handshakes")
        .then(|| redis::Redis::start(&env.scratch))
        .flatten();
    let fleet = match &redis {
        Some(r) => Some(start(
            env,
            &Spec::Samizdat(vec!["--redis".into(), r.url()]),
            &dc,
        )?),
        None => {
            if parts.has("handshakes") {
                say("redis-server is not installed: no Redis-backend handshake figures");
            }
            None
        }
    };
    let mut hs_systems: Vec<(&str, &system::Running, client::Proto)> = vec![
        ("plain relay (TCP + DC connect)", &plain, client::Proto::Raw),
        (
            "crypto floor (dd)",
            &floor,
            client::Proto::Dd(system::key()),
        ),
        ("samizdat dd", &sz, client::Proto::Dd(system::key())),
        (
            "samizdat ee, cover eager (default)",
            &sz,
            client::Proto::Ee(system::key(), system::DOMAIN.into()),
        ),
        (
            "samizdat ee, cover lazy",
            &lazy,
            client::Proto::Ee(system::key(), system::DOMAIN.into()),
        ),
    ];
    if let Some(f) = &fleet {
        hs_systems.push((
            "samizdat dd, Redis backend",
            f,
            client::Proto::Dd(system::key()),
        ));
        hs_systems.push((
            "samizdat ee, Redis backend",
            f,
            client::Proto::Ee(system::key(), system::DOMAIN.into()),
        ));
    }
    for (name, sys, proto) in hs_systems.into_iter().filter(|_| parts.has("handshakes")) {
        let redis_cpu0 = redis.as_ref().map(|r| procfs::cpu_time(r.pid()));
        let w = phases::handshakes(
            sys,
            &proto,
            sizes.handshake_workers,
            sizes.handshake_time,
            sizes.handshake_max,
        )
        .await;
        say(&format!(
            "handshakes {name}: {:.0} per CPU-s, {:.0}/s wall, {} errors",
            w.per_cpu_sec(),
            w.per_wall_sec(),
            w.errors
        ));
        if let (Some(r), Some(cpu0), true) = (&redis, redis_cpu0, name.contains("Redis")) {
            // redis-server's own work, which the per-CPU-s figure leaves out.
            let cpu = procfs::cpu_time(r.pid()).saturating_sub(cpu0);
            let total = w.cpu + cpu;
            say(&format!(
                "handshakes {name}: redis-server {:.1} µs CPU per handshake; samizdat + redis-server {:.0} per CPU-s",
                cpu.as_secs_f64() * 1e6 / w.count.max(1) as f64,
                w.count as f64 / total.as_secs_f64().max(1e-9)
            ));
        }
        r.handshakes.push((name, w));
    }
    // Set-up under load: new dd and ee connections while others stream
    // both ways, and the same on the idle server.
    if parts.has("setup") {
        let probes = [
            client::Route::Mtproto(sz.addr, client::Proto::Dd(system::key())),
            client::Route::Mtproto(
                sz.addr,
                client::Proto::Ee(system::key(), system::DOMAIN.into()),
            ),
        ];
        let names = ["samizdat dd", "samizdat ee"];
        let load = client::Route::Mtproto(sz.addr, client::Proto::Dd(system::key()));
        setup_rows(&mut r, &load, &probes, &names, sizes).await?;
    }
    // The same for samizdat clients' streams (SOCKS5 through `samizdat
    // client` and the samizdat transport) while others stream.
    if parts.has("setup") || parts.has("client-setup") {
        client_setup(env, &dc, sizes, &mut r).await?;
    }
    r.peak_rss = procfs::peak_rss_kib(sz.pid);
    r.sz_threads = procfs::threads(sz.pid);
    drop((plain, floor, sz, lazy, fleet, redis));

    // Memory: a fresh process each, so "start" is a cold start.
    let memory_systems = [
        ("plain relay", Spec::Baseline(baseline::Kind::Plain), false),
        ("crypto floor", Spec::Baseline(baseline::Kind::Floor), false),
        ("samizdat (ee)", Spec::Samizdat(Vec::new()), true),
    ];
    for (name, spec, tls) in memory_systems.into_iter().filter(|_| parts.has("memory")) {
        let sys = start(env, &spec, &dc)?;
        let m = phases::idle_memory(&sys, &system::proto(&spec, tls), sizes.idle).await;
        say(&format!(
            "memory {name}: start {} KiB, {} idle {} KiB ({:.0} B each), after {} KiB",
            m.start,
            m.conns,
            m.idle,
            m.per_conn(),
            m.after
        ));
        r.memory.push((name, m));
    }

    // Instruction counts.
    if with_callgrind && parts.has("callgrind") && callgrind::available() {
        let sz = Spec::Samizdat(Vec::new());
        let plain = Spec::Baseline(baseline::Kind::Plain);
        let floor = Spec::Baseline(baseline::Kind::Floor);
        let hs = sizes.cg_handshakes;
        let bytes = sizes.cg_bytes;
        let jobs: Vec<(&str, &Spec, bool, callgrind::Load)> = vec![
            ("plain relay", &plain, false, callgrind::Load::Idle),
            ("plain relay", &plain, false, callgrind::Load::Bulk(bytes)),
            (
                "plain relay",
                &plain,
                false,
                callgrind::Load::Handshakes(hs),
            ),
            ("crypto floor", &floor, false, callgrind::Load::Idle),
            ("crypto floor", &floor, false, callgrind::Load::Bulk(bytes)),
            (
                "crypto floor",
                &floor,
                false,
                callgrind::Load::Handshakes(hs),
            ),
            ("samizdat dd", &sz, false, callgrind::Load::Idle),
            ("samizdat dd", &sz, false, callgrind::Load::Bulk(bytes)),
            ("samizdat dd", &sz, false, callgrind::Load::Handshakes(hs)),
            ("samizdat ee", &sz, true, callgrind::Load::Bulk(bytes)),
            ("samizdat ee", &sz, true, callgrind::Load::Handshakes(hs)),
        ];
        for (name, spec, tls, load) in jobs {
            let n = callgrind::count(env, &dc, spec, tls, load).await;
            say(&format!("callgrind {name} {load:?}: {n:?}"));
            r.instructions.push((name, load, n.ok()));
        }
    }
    r.sizes = format!("{sizes:?}");
    Ok(r)
}

/// Per-user stream limit of the client set-up phase's server: its streams
/// all belong to one user, more than the default 112.
const CLIENT_SETUP_STREAMS_PER_USER: usize = 1024;

/// Set-up under load through a samizdat client: a `samizdat serve` that
/// lets its transport's streams reach loopback, one `samizdat client` in
/// front of it, and SOCKS5 streams through that client to the greeter,
/// first with none streaming, then with `sizes.setup_streams`.
async fn client_setup(env: &Env, dc: &dc::Dc, sizes: Sizes, r: &mut Results) -> anyhow::Result<()> {
    let greeter = dc::greeter()?;
    let server = start(
        env,
        &Spec::Samizdat(vec![
            "--egress-allow".into(),
            "127.0.0.0/8".into(),
            "--transport-streams-per-user".into(),
            CLIENT_SETUP_STREAMS_PER_USER.to_string(),
        ]),
        dc,
    )?;
    let link = server
        .link
        .clone()
        .ok_or_else(|| anyhow::anyhow!("samizdat serve printed no samizdat:// link"))?;
    let client = tokio::task::block_in_place(|| {
        system::start(env, &Spec::Client(link), dc.addr, dc.addr, None)
    })?;
    let route = client::Route::Socks(client.addr, greeter);
    // The first stream waits for the client's session, and that for the
    // server's first look at its cover's TLS answer (up to 5 s; the bench
    // cover never answers): not a stream's set-up, so not timed with them.
    let t = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(15), route.open(false)).await;
    say(&format!(
        "set-up samizdat client: first stream (session handshake, cover measured) {:?}{}",
        t.elapsed(),
        if matches!(first, Ok(Ok(_))) {
            ""
        } else {
            ", failed"
        }
    ));
    drop(first);
    setup_rows(
        r,
        &route,
        std::slice::from_ref(&route),
        &["samizdat client (SOCKS5)"],
        sizes,
    )
    .await?;
    drop((client, server));
    Ok(())
}

/// The set-up phase with none and then `sizes.setup_streams` connections
/// streaming over `load`, `probes` (named `names`) timed: a row each.
async fn setup_rows(
    r: &mut Results,
    load: &client::Route,
    probes: &[client::Route],
    names: &[&'static str],
    sizes: Sizes,
) -> anyhow::Result<()> {
    for streams in [0, sizes.setup_streams] {
        let (times, rate) =
            phases::setup_under_load(load, streams, probes, sizes.setup_probes).await?;
        for (&name, (samples, errors)) in names.iter().zip(times) {
            let l = stats(&samples);
            say(&format!(
                "set-up {name} with {streams} streaming: p50 {:?}, p99 {:?}, {errors} over {:?} (streams {:.0} MB/s)",
                l.p50,
                l.p99,
                phases::SETUP_LIMIT,
                rate / 1e6
            ));
            r.setup.push((name, streams, l, errors, rate));
        }
    }
    Ok(())
}

fn stats(sorted: &[Duration]) -> report::Latency {
    report::Latency {
        p50: phases::percentile(sorted, 0.50),
        p99: phases::percentile(sorted, 0.99),
        samples: sorted.len(),
    }
}
