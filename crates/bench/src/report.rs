//! The Markdown tables: absolute figures, ratios against the baselines,
//! and the goals of issue 3.

use crate::callgrind::Load;
use crate::phases::{Dir, Memory, Work};
use std::fmt::Write;
use std::time::Duration;

/// Round-trip percentiles.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Samples taken.
    pub samples: usize,
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Results {
    /// CPU and cores.
    pub machine: String,
    /// `--threads` given to the systems.
    pub threads: Option<usize>,
    /// Threads samizdat ran with.
    pub sz_threads: u64,
    /// Whole run.
    pub elapsed: Duration,
    /// Counts used.
    pub sizes: String,
    /// Idle connections asked for.
    pub idle_target: usize,
    /// Open-files limit.
    pub fd_limit: u64,
    /// The core the systems under test were pinned to.
    pub pinned: Option<usize>,
    /// Runtime threads of the load generator.
    pub load_threads: usize,
    /// RSS of each system right after start (KiB).
    pub start_rss: Vec<(&'static str, u64)>,
    /// samizdat's peak RSS over the throughput and handshake phases (KiB).
    pub peak_rss: u64,
    /// Bulk phases.
    pub bulk: Vec<(&'static str, usize, Dir, Work)>,
    /// Latency per path.
    pub latency: Vec<(&'static str, Latency)>,
    /// Handshake phases.
    pub handshakes: Vec<(&'static str, Work)>,
    /// Set-up times: client form, streaming connections, percentiles,
    /// probes over the limit, bytes per second the streams received.
    pub setup: Vec<(&'static str, usize, Latency, u64, f64)>,
    /// Idle memory per system.
    pub memory: Vec<(&'static str, Memory)>,
    /// Callgrind totals.
    pub instructions: Vec<(&'static str, Load, Option<u64>)>,
}

fn bulk<'a>(r: &'a Results, name: &str, conns: usize, dir: Dir) -> Option<&'a Work> {
    r.bulk
        .iter()
        .find(|(n, c, d, _)| *n == name && *c == conns && *d == dir)
        .map(|(_, _, _, w)| w)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn kib(k: u64) -> String {
    if k >= 10 * 1024 {
        format!("{:.1} MiB", k as f64 / 1024.0)
    } else {
        format!("{k} KiB")
    }
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "not met"
    }
}

/// The systems of the throughput, handshake and instruction tables, in
/// column order.
const SYSTEMS: [&str; 4] = ["plain relay", "crypto floor", "samizdat dd", "samizdat ee"];

/// Renders the tables.
pub fn render(r: &Results) -> String {
    let mut o = String::new();
    header(&mut o, r);
    let conns = throughput(&mut o, r);
    handshakes(&mut o, r);
    latency(&mut o, r);
    setup(&mut o, r);
    memory(&mut o, r);
    let sz_ir = instructions(&mut o, r);
    goals(&mut o, r, &conns, sz_ir);
    o
}

/// The machine, placement, threads and counts of the run.
fn header(o: &mut String, r: &Results) {
    let _ = writeln!(*o, "Machine: {}.", r.machine);
    let placement = match r.pinned {
        Some(core) => format!(
            "Each system under test is pinned to core {core} (so its default runtime has one worker thread, as on a 1-core VPS); the load generator, DC and cover run in the bench process ({} runtime threads) on the other cores.",
            r.load_threads
        ),
        None => format!(
            "Nothing is pinned: the systems under test and the bench process ({} runtime threads: load generator, DC, cover) share every core.",
            r.load_threads
        ),
    };
    let _ = writeln!(
        *o,
        "{placement} Runtime worker threads of the systems under test: {} (samizdat had {} threads in all). Open-files limit {}. Run time {:.0} s.",
        r.threads.map(|n| n.to_string()).unwrap_or_else(|| "their default (one per available core)".into()),
        r.sz_threads,
        r.fd_limit,
        r.elapsed.as_secs_f64()
    );
    let _ = writeln!(*o, "Counts: `{}`.\n", r.sizes);
}

/// Relayed throughput per system, connection count and direction; the
/// connection counts measured.
fn throughput(o: &mut String, r: &Results) -> Vec<usize> {
    let systems = SYSTEMS;
    let _ = writeln!(*o, "### Relayed throughput\n");
    let _ = writeln!(
        *o,
        "GB (10⁹ bytes) of payload per CPU-second of the relay process (utime+stime from /proc); wall-clock GB/s in brackets. dd and ee are samizdat's two client forms; the floor speaks dd.\n"
    );
    let _ = writeln!(
        *o,
        "| conns | direction | plain relay | crypto floor | samizdat dd | samizdat ee | dd / floor | ee / floor | ee / plain |"
    );
    let _ = writeln!(*o, "|---|---|---|---|---|---|---|---|---|");
    let mut conns: Vec<usize> = r.bulk.iter().map(|b| b.1).collect();
    conns.dedup();
    for &c in &conns {
        for dir in [Dir::Up, Dir::Down] {
            let cells: Vec<String> = systems
                .iter()
                .map(|s| match bulk(r, s, c, dir) {
                    Some(w) if w.errors == 0 => format!(
                        "{:.2} ({:.2})",
                        w.per_cpu_sec() / 1e9,
                        w.per_wall_sec() / 1e9
                    ),
                    Some(w) => format!("{:.2} ({} errors)", w.per_cpu_sec() / 1e9, w.errors),
                    None => "–".into(),
                })
                .collect();
            let cpu = |s: &str| bulk(r, s, c, dir).map(|w| w.per_cpu_sec()).unwrap_or(0.0);
            let d = match dir {
                Dir::Up => "client → DC",
                Dir::Down => "DC → client",
            };
            let _ = writeln!(
                *o,
                "| {c} | {d} | {} | {} | {} | {} | {} | {} | {} |",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                ratio(cpu("samizdat dd"), cpu("crypto floor")),
                ratio(cpu("samizdat ee"), cpu("crypto floor")),
                ratio(cpu("samizdat ee"), cpu("plain relay")),
            );
        }
    }
    conns
}

/// Handshakes per CPU-second against the crypto floor.
fn handshakes(o: &mut String, r: &Results) {
    let _ = writeln!(*o, "\n### Handshakes\n");
    let _ = writeln!(
        *o,
        "A handshake is connect, the client's handshake, the proxy's connect and init to the DC, the DC's encrypted acknowledgement back to the client, and a close (RST). Per CPU-second of the relay process = per core.\n"
    );
    let _ = writeln!(
        *o,
        "| system | per CPU-second | per wall second | vs floor (CPU) | failed |"
    );
    let _ = writeln!(*o, "|---|---|---|---|---|");
    let floor_hs = r
        .handshakes
        .iter()
        .find(|h| h.0.starts_with("crypto floor"))
        .map(|h| h.1.per_cpu_sec())
        .unwrap_or(0.0);
    for (name, w) in &r.handshakes {
        let _ = writeln!(
            *o,
            "| {name} | {:.0} | {:.0} | {} | {} |",
            w.per_cpu_sec(),
            w.per_wall_sec(),
            ratio(w.per_cpu_sec(), floor_hs),
            w.errors
        );
    }
}

/// Round-trip latency added by each path.
fn latency(o: &mut String, r: &Results) {
    let _ = writeln!(*o, "\n### Round-trip latency\n");
    let _ = writeln!(
        *o,
        "64-byte messages echoed by the DC, one connection per path, the paths taking turns; added = this path minus the direct path.\n"
    );
    let _ = writeln!(
        *o,
        "| path | RTT p50 | RTT p99 | added p50 | added p99 | samples |"
    );
    let _ = writeln!(*o, "|---|---|---|---|---|---|");
    let direct = r.latency.first().map(|l| l.1).unwrap_or_default();
    for (name, l) in &r.latency {
        let _ = writeln!(
            *o,
            "| {name} | {} | {} | {} | {} | {} |",
            micros(l.p50),
            micros(l.p99),
            micros(l.p50.saturating_sub(direct.p50)),
            micros(l.p99.saturating_sub(direct.p99)),
            l.samples,
        );
    }
}

/// Set-up under load (when measured).
fn setup(o: &mut String, r: &Results) {
    if !r.setup.is_empty() {
        let _ = writeln!(*o, "\n### Set-up under load\n");
        let _ = writeln!(
            *o,
            "Time from connect to the DC's first byte at the client (its acknowledgement) for new connections, one at a time, while other `dd` connections stream both ways at full speed through the same samizdat; the streams and the DC's side of them run on a runtime of their own in the bench process. The samizdat client rows do the same with SOCKS5 streams through one `samizdat client` (the samizdat transport) to a loopback destination that sends a byte on accept, timed from connect to the SOCKS5 port to that byte, while other such streams stream both ways (a server of their own, `--transport-streams-per-user {}`). Goal: p99 ≤ 50 ms with 200 streams.\n",
            crate::run::CLIENT_SETUP_STREAMS_PER_USER
        );
        let _ = writeln!(
            *o,
            "| new connection | streaming | p50 | p99 | samples | over {} s | streams received |",
            crate::phases::SETUP_LIMIT.as_secs()
        );
        let _ = writeln!(*o, "|---|---|---|---|---|---|---|");
        for (name, streams, l, errors, rate) in &r.setup {
            let _ = writeln!(
                *o,
                "| {name} | {streams} | {:.1} ms | {:.1} ms | {} | {errors} | {:.0} MB/s |",
                l.p50.as_secs_f64() * 1e3,
                l.p99.as_secs_f64() * 1e3,
                l.samples,
                rate / 1e6
            );
        }
    }
}

/// RSS at start, with idle connections and after they closed.
fn memory(o: &mut String, r: &Results) {
    let _ = writeln!(*o, "\n### Memory (RSS of the relay process)\n");
    let _ = writeln!(
        *o,
        "A fresh process each: at start, with idle authenticated connections (handshake done, DC connected, acknowledged, nothing moving), and after they closed.\n"
    );
    let _ = writeln!(
        *o,
        "| system | at start | idle connections | with them | per idle connection | after close | anonymous: start / with / after |"
    );
    let _ = writeln!(*o, "|---|---|---|---|---|---|---|");
    for (name, m) in &r.memory {
        let _ = writeln!(
            *o,
            "| {name} | {} | {}{} | {} | {:.0} B | {} | {} / {} / {} |",
            kib(m.start),
            m.conns,
            if m.errors > 0 {
                format!(" ({} failed)", m.errors)
            } else {
                String::new()
            },
            kib(m.idle),
            m.per_conn(),
            kib(m.after),
            kib(m.anon[0]),
            kib(m.anon[1]),
            kib(m.anon[2]),
        );
    }
    let _ = writeln!(
        *o,
        "\nsamizdat's peak RSS over the throughput and handshake phases: {}.",
        kib(r.peak_rss)
    );
}

/// Instructions per byte and per handshake (when measured); samizdat ee's
/// (per byte, per handshake) for the goals.
fn instructions(o: &mut String, r: &Results) -> (Option<f64>, Option<f64>) {
    let systems = SYSTEMS;
    let ir = |name: &str, want: fn(&Load) -> bool| {
        r.instructions
            .iter()
            .find(|(n, l, _)| *n == name && want(l))
            .and_then(|x| x.2)
    };
    let idle_of = |name: &str| {
        let base = if name.starts_with("samizdat") {
            "samizdat dd"
        } else {
            name
        };
        ir(base, |l| matches!(l, Load::Idle))
    };
    let per = |name: &str, handshake: bool| -> Option<f64> {
        let idle = idle_of(name)?;
        r.instructions.iter().find_map(|(n, l, v)| {
            let v = (*v)?;
            match (l, handshake) {
                (Load::Bulk(b), false) if *n == name => {
                    Some(v.saturating_sub(idle) as f64 / (2 * b) as f64)
                }
                (Load::Handshakes(h), true) if *n == name => {
                    Some(v.saturating_sub(idle) as f64 / *h as f64)
                }
                _ => None,
            }
        })
    };
    let mut sz_ir = (None, None);
    if !r.instructions.is_empty() {
        let _ = writeln!(*o, "\n### Instructions (callgrind)\n");
        let _ = writeln!(
            *o,
            "Fixed workloads in a fresh process with one runtime thread, minus the same process only starting and stopping. Valgrind shows every machine the same CPU (AES-NI, no VAES), so these compare across machines.\n"
        );
        let _ = writeln!(
            *o,
            "| workload | plain relay | crypto floor | samizdat dd | samizdat ee | ee / floor |"
        );
        let _ = writeln!(*o, "|---|---|---|---|---|---|");
        for (label, hs) in [
            ("instructions per relayed byte (up and down)", false),
            ("instructions per handshake", true),
        ] {
            let v: Vec<Option<f64>> = systems.iter().map(|s| per(s, hs)).collect();
            let f = |x: Option<f64>| match x {
                Some(x) if hs => format!("{x:.0}"),
                Some(x) => format!("{x:.2}"),
                None => "–".into(),
            };
            let _ = writeln!(
                *o,
                "| {label} | {} | {} | {} | {} | {} |",
                f(v[0]),
                f(v[1]),
                f(v[2]),
                f(v[3]),
                ratio(v[3].unwrap_or(0.0), v[1].unwrap_or(0.0))
            );
            if hs {
                sz_ir.1 = v[3];
            } else {
                sz_ir.0 = v[3];
            }
        }
    }
    sz_ir
}

/// The goals of issue 3, measured.
fn goals(o: &mut String, r: &Results, conns: &[usize], sz_ir: (Option<f64>, Option<f64>)) {
    // Goals of issue 3.
    let _ = writeln!(*o, "\n### Goals\n");
    let _ = writeln!(*o, "| goal | target | measured | |");
    let _ = writeln!(*o, "|---|---|---|---|");
    for &c in conns {
        let mut worst = f64::INFINITY;
        let mut detail = Vec::new();
        for dir in [Dir::Up, Dir::Down] {
            for s in ["samizdat dd", "samizdat ee"] {
                let a = bulk(r, s, c, dir).map(|w| w.per_cpu_sec()).unwrap_or(0.0);
                let b = bulk(r, "crypto floor", c, dir)
                    .map(|w| w.per_cpu_sec())
                    .unwrap_or(0.0);
                if b > 0.0 {
                    worst = worst.min(a / b);
                    detail.push(format!(
                        "{} {}: {:.2}",
                        &s[9..],
                        if dir == Dir::Up { "up" } else { "down" },
                        a / b
                    ));
                }
            }
        }
        let _ = writeln!(
            *o,
            "| throughput, {c} connection{} | ≥ 0.90 × crypto floor (per CPU-second) | {} | {} |",
            if c == 1 { "" } else { "s" },
            detail.join(", "),
            yes(worst >= 0.90)
        );
    }
    if let Some((_, m)) = r.memory.iter().find(|m| m.0.starts_with("samizdat")) {
        let _ = writeln!(
            *o,
            "| memory per idle connection | ≤ 9 KB | {:.0} B | {} |",
            m.per_conn(),
            yes(m.per_conn() <= 9000.0)
        );
        let _ = writeln!(
            *o,
            "| idle RSS | ≤ 2 MB | {} at start ({} of it anonymous) | {} |",
            kib(m.start),
            kib(m.anon[0]),
            yes(m.start * 1024 <= 2_000_000)
        );
        let back = m.after <= m.start + (m.idle.saturating_sub(m.start)) / 10;
        let _ = writeln!(
            *o,
            "| memory comes back after close | within 10% of the idle growth | {} after, {} at start | {} |",
            kib(m.after),
            kib(m.start),
            yes(back)
        );
    }
    for (name, w) in r
        .handshakes
        .iter()
        .filter(|h| h.0.starts_with("samizdat ee"))
    {
        let _ = writeln!(
            *o,
            "| fake-TLS handshakes per core ({}) | ≥ 20,000 per CPU-second | {:.0} | {} |",
            name.trim_start_matches("samizdat ee, "),
            w.per_cpu_sec(),
            yes(w.per_cpu_sec() >= 20_000.0)
        );
    }
    if let (Some(b), Some(h)) = sz_ir {
        let _ = writeln!(
            *o,
            "| (reference) samizdat ee instructions | — | {b:.2} per byte, {h:.0} per handshake | |"
        );
    }
}
