//! The scorecard: subjects × techniques on loopback.
//!
//! Every cell runs one client session of a subject (handshake, then an
//! echoed transfer of [`ScorecardOptions::payload`] bytes) through its own
//! [`crate::Middlebox`] applying one column's [`Policy`], and scores it:
//! - **blocked**: the handshake or the transfer failed or stalled for
//!   [`ScorecardOptions::stall`];
//! - **degraded**: it finished, below [`ScorecardOptions::degraded_below`]
//!   of the same subject's throughput with no censor;
//! - **survived**: otherwise.
//!
//! The active-probing column ([`crate::probe`]) uses no middlebox: it
//! probes the subject's server against its cover, with replays of the
//! subject's recorded first flights, and a flagged server is blocked.
//!
//! Subjects ([`Subject`]): the real `samizdat serve` (`ee` with the
//! official apps' post-quantum hello, `dd`, plain) in front of a fake DC and
//! an echo cover, a raw SOCKS5 server (compared, when probed, with an
//! HTTP server, the kind of site a censor expects on such a port), and the
//! real `samizdat client` binary, which alone also runs the endpoint-pool
//! columns ([`ColumnKind::Endpoints`]): four endpoints of one server
//! behind middleboxes sharing a [`LiveIpBlock`], blocked one by one or as
//! a /24 while it opens new streams.

pub mod apps;
mod cells;
mod render;
mod subjects;
use cells::{run_cell, start_client};

pub use subjects::{
    dd_first_flight, fake_cover, fake_dc, link_via, samizdat_bin, secret, socks5_server,
    start_samizdat, start_samizdat_client, Subject, DOMAIN, KEY,
};

use crate::probe::{probe_server, ProbeOptions};
use crate::techniques::{
    Fet, Fingerprint, Freeze, IpBlock, LiveIpBlock, ProtocolAllowlist, SniFilter, SniRule,
};
use crate::{Policy, Verdict};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use subjects::{session, Session, Target};
use testkit::fake_cover::CoverKind;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// The destination label every middlebox's techniques judge: a VPS at a
/// foreign hoster (Hetzner) on port 443, where a proxy would run.
pub const DESTINATION: &str = "5.9.10.20:443";

/// The destination labels of the endpoint-pool columns' four endpoints
/// (one server): three in one /24 of a foreign hoster, one elsewhere.
pub const POOL_LABELS: [&str; 4] = [
    "5.9.10.20:443",
    "5.9.10.21:443",
    "5.9.10.22:443",
    "88.198.7.7:443",
];
/// The prefix the "growing prefix blocks" column blackholes last.
pub const POOL_PREFIX: &str = "5.9.10.0/24";
/// Name of the column blocking the pool's endpoints one by one.
pub const ONE_BY_ONE: &str = "endpoints blocked one by one";
/// Name of the column blackholing the first endpoint, then its /24.
pub const PREFIX: &str = "growing prefix blocks";
/// A session of an endpoint-pool column may wait this long for a failover
/// (a blackholed lane is given up within about two seconds; a blackholed
/// session without lanes would be after 15 s of silence).
const POOL_STALL: Duration = Duration::from_secs(30);

/// Name of the column without a censor (the throughput baseline).
pub const NO_CENSOR: &str = "no censor";
/// Name of the active-probing column.
pub const PROBING: &str = "active probing";

/// How a cell scored.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Got through at full speed (`None` for the probing column).
    Survived {
        /// Throughput, bytes per second.
        bytes_per_sec: Option<f64>,
    },
    /// Got through, slowly.
    Degraded {
        /// Throughput, bytes per second.
        bytes_per_sec: f64,
    },
    /// Did not get through.
    Blocked {
        /// What failed, or which probes told it apart.
        why: String,
    },
}

/// One cell.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Row.
    pub subject: Subject,
    /// Column name.
    pub column: String,
    /// Score.
    pub outcome: Outcome,
}

/// The whole matrix.
#[derive(Debug, Clone)]
pub struct Scorecard {
    /// Rows, in order.
    pub subjects: Vec<Subject>,
    /// Columns, in order.
    pub columns: Vec<String>,
    /// Every cell.
    pub cells: Vec<Cell>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Scorecard {
    /// The outcome of a cell.
    pub fn get(&self, subject: Subject, column: &str) -> Option<&Outcome> {
        self.cells
            .iter()
            .find(|c| c.subject == subject && c.column == column)
            .map(|c| &c.outcome)
    }
}

/// Builds a column's policy: once per cell, so that state a technique
/// keeps between flows (FET's and the allowlist's residual blocks) does
/// not leak from one subject's cell into another's.
pub type PolicyFactory = Arc<dyn Fn() -> Policy + Send + Sync>;

/// What a column does.
#[derive(Clone)]
pub enum ColumnKind {
    /// Sessions through a middlebox with a fresh policy from this factory.
    Lab(PolicyFactory),
    /// [`crate::probe::probe_server`] against the subject's server.
    Probing,
    /// Only for [`Subject::Client`]: four endpoints of one server, each
    /// behind its own middlebox ([`POOL_LABELS`]), blocked while the
    /// client opens a new stream after each step.
    Endpoints(Scenario),
}

/// What an endpoint-pool column blocks, step by step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The first three endpoints, one after another (RST on connect and
    /// on every later segment, as an injecting censor does), leaving the
    /// fourth.
    OneByOne,
    /// The first endpoint, then all of [`POOL_PREFIX`], blackholed
    /// (2018-style: the blocks grew), leaving the
    /// fourth endpoint.
    Prefix,
}

impl Scenario {
    /// The blocks added before each session (the first session runs
    /// with none).
    fn steps(self) -> Vec<Vec<(ipnet::IpNet, Verdict)>> {
        let host = |i: usize| {
            let a: SocketAddr = POOL_LABELS[i].parse().expect("a socket address");
            ipnet::IpNet::from(a.ip())
        };
        match self {
            Scenario::OneByOne => vec![
                vec![],
                vec![(host(0), Verdict::Reset)],
                vec![(host(1), Verdict::Reset)],
                vec![(host(2), Verdict::Reset)],
            ],
            Scenario::Prefix => vec![
                vec![],
                vec![(host(0), Verdict::Drop)],
                vec![(POOL_PREFIX.parse().expect("a CIDR"), Verdict::Drop)],
            ],
        }
    }
}

/// Whether `subject` has a cell in a column of this kind.
fn applies(subject: Subject, kind: &ColumnKind) -> bool {
    match kind {
        ColumnKind::Lab(_) => true,
        ColumnKind::Probing => subject != Subject::Client,
        ColumnKind::Endpoints(_) => subject == Subject::Client,
    }
}

/// A column of the matrix.
#[derive(Clone)]
pub struct Column {
    /// Header.
    pub name: String,
    /// What it does.
    pub technique: ColumnKind,
}

fn lab<T: crate::Technique + 'static>(
    name: &str,
    technique: impl Fn() -> T + Send + Sync + 'static,
) -> Column {
    let dest: SocketAddr = DESTINATION.parse().expect("a socket address");
    Column {
        name: name.into(),
        technique: ColumnKind::Lab(Arc::new(move || {
            Policy::new(vec![Arc::new(technique())]).destination(dest)
        })),
    }
}

/// The shipped columns: no censor, then techniques 1–7 of `docs/lab.md`
/// as today's censors configure them, with the cover's name throttled.
pub fn default_columns() -> Vec<Column> {
    vec![
        Column {
            name: NO_CENSOR.into(),
            technique: ColumnKind::Lab(Arc::new(|| Policy::new(Vec::new()))),
        },
        lab("IP block (Telegram)", || {
            IpBlock::telegram_2018(Verdict::Drop)
        }),
        Column {
            name: ONE_BY_ONE.into(),
            technique: ColumnKind::Endpoints(Scenario::OneByOne),
        },
        Column {
            name: PREFIX.into(),
            technique: ColumnKind::Endpoints(Scenario::Prefix),
        },
        lab("SNI throttle", || {
            SniFilter::throttle(vec![SniRule::domain(DOMAIN)], 64_000)
        }),
        lab("FET", || Fet::new(Duration::from_secs(180))),
        lab("JA3/JA4", || Fingerprint::telegram_apps(Verdict::Reset)),
        lab("16 KiB freeze", Freeze::russia_2025),
        lab("protocol allowlist", || {
            ProtocolAllowlist::new(Duration::from_secs(60))
        }),
        Column {
            name: PROBING.into(),
            technique: ColumnKind::Probing,
        },
    ]
}

/// How to run the scorecard.
#[derive(Debug, Clone)]
pub struct ScorecardOptions {
    /// The `samizdat` binary ([`samizdat_bin`]).
    pub samizdat: PathBuf,
    /// Bytes each session sends and gets echoed (over 16 KiB, so that the
    /// freeze shows).
    pub payload: usize,
    /// A session that moves nothing for this long is blocked.
    pub stall: Duration,
    /// A session below this share of the no-censor throughput is degraded.
    pub degraded_below: f64,
    /// The active prober's settings.
    pub probe: ProbeOptions,
}

impl ScorecardOptions {
    /// Settings for a run of a few seconds.
    pub fn new(samizdat: PathBuf) -> ScorecardOptions {
        ScorecardOptions {
            samizdat,
            payload: 48 * 1024,
            stall: Duration::from_secs(5),
            degraded_below: 0.3,
            probe: ProbeOptions {
                window: Duration::from_millis(1500),
                tolerance: Duration::from_secs(1),
                replay_delays: vec![Duration::ZERO, Duration::from_millis(300)],
                sni: DOMAIN.into(),
                ..ProbeOptions::default()
            },
        }
    }
}

/// The servers under test, started once per run.
struct Bench {
    _samizdat: testkit::process::Served,
    samizdat: SocketAddr,
    /// The link `samizdat serve` printed (for [`Subject::Client`]).
    link: String,
    samizdat_cover: SocketAddr,
    socks: SocketAddr,
    socks_cover: SocketAddr,
    echo: SocketAddr,
}

impl Bench {
    fn server(&self, s: Subject) -> SocketAddr {
        if s == Subject::Socks5 {
            self.socks
        } else {
            self.samizdat
        }
    }
    fn cover(&self, s: Subject) -> SocketAddr {
        if s == Subject::Socks5 {
            self.socks_cover
        } else {
            self.samizdat_cover
        }
    }
}

/// Sends a subject's first flight once, as its real client would (so the
/// prober replays something the server has seen), and returns it.
async fn record_first_flight(s: Subject, bench: &Bench, stall: Duration) -> Vec<u8> {
    let flight = match s {
        Subject::Ee | Subject::EeApps => {
            let opts = testkit::client::Options {
                shape: wire::faketls::client::HelloShape::PostQuantum,
                hello: (s == Subject::EeApps)
                    .then_some(apps::hello as testkit::client::HelloBuilder),
                ..Default::default()
            };
            let c = tokio::time::timeout(
                stall,
                testkit::client::Client::connect(bench.samizdat, &secret("ee"), &opts),
            )
            .await;
            return match c {
                Ok(Ok(c)) => c.hello.clone().unwrap_or_default(),
                _ => Vec::new(),
            };
        }
        Subject::Dd => dd_first_flight(),
        Subject::Plain => {
            let init = wire::obfuscated2::initiate(
                loop {
                    let r: [u8; 64] = testkit::random();
                    if wire::obfuscated2::is_safe_bare_prefix(&r) {
                        break r;
                    }
                },
                wire::obfuscated2::Tag::Intermediate,
                2,
                Some(&secret("plain").key),
            );
            let mut b = init.wire.to_vec();
            b.extend_from_slice(&testkit::random::<40>());
            b
        }
        Subject::Socks5 | Subject::Client => vec![5, 1, 0],
    };
    if let Ok(mut c) = tokio::net::TcpStream::connect(bench.server(s)).await {
        let _ = c.write_all(&flight).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    flight
}

/// Runs every cell of `subjects` × `columns` (all at once) and scores them.
pub async fn run(
    opts: &ScorecardOptions,
    subjects: &[Subject],
    columns: &[Column],
) -> io::Result<Scorecard> {
    let started = Instant::now();
    let (dc, _) = fake_dc().await;
    let (samizdat_cover, _) = fake_cover(CoverKind::Echo).await;
    let (echo, _) = fake_cover(CoverKind::Echo).await;
    let (socks_cover, _) = fake_cover(CoverKind::Http).await;
    let proc = start_samizdat(&opts.samizdat, samizdat_cover, dc, "plain,dd,ee")?;
    let link = proc.link().unwrap_or_default().to_string();
    let bench = Arc::new(Bench {
        samizdat: proc.addr,
        link,
        _samizdat: proc,
        samizdat_cover,
        socks: socks5_server().await,
        socks_cover,
        echo,
    });
    let shared = Arc::new(opts.clone());
    if subjects.contains(&Subject::Client) {
        // The first samizdat-transport client waits while the server
        // measures its cover's answer (up to 5 s): do that before the
        // cells' clocks run.
        let client = start_client(opts, &bench.link, &[bench.samizdat]).await?;
        let target = Target {
            dial: client.socks,
            echo: bench.echo,
        };
        let _ = session(Subject::Client, target, 1024, POOL_STALL).await;
    }
    // Sessions first, all at once; then the prober, all at once, on an
    // otherwise idle machine (its verdicts hang on timing).
    let mut raw = Vec::new();
    for probing in [false, true] {
        let mut set = tokio::task::JoinSet::new();
        for &s in subjects {
            for c in columns {
                if matches!(c.technique, ColumnKind::Probing) == probing && applies(s, &c.technique)
                {
                    set.spawn(run_cell(s, c.clone(), bench.clone(), shared.clone()));
                }
            }
        }
        while let Some(r) = set.join_next().await {
            raw.push(r.map_err(io::Error::other)??);
        }
    }
    let baseline = |s: Subject| {
        raw.iter().find_map(|(rs, c, r)| match r {
            Ok(Session::Done(rate)) if *rs == s && c == NO_CENSOR => Some(*rate),
            _ => None,
        })
    };
    let mut cells = Vec::new();
    for &s in subjects {
        for c in columns {
            let Some((_, _, r)) = raw.iter().find(|(rs, rc, _)| *rs == s && *rc == c.name) else {
                continue;
            };
            let outcome = match r {
                Err(why) | Ok(Session::Failed(why)) => Outcome::Blocked { why: why.clone() },
                Ok(Session::Done(rate)) if rate.is_nan() => Outcome::Survived {
                    bytes_per_sec: None,
                },
                Ok(Session::Done(rate)) => match baseline(s) {
                    Some(base) if *rate < base * opts.degraded_below => Outcome::Degraded {
                        bytes_per_sec: *rate,
                    },
                    _ => Outcome::Survived {
                        bytes_per_sec: Some(*rate),
                    },
                },
            };
            cells.push(Cell {
                subject: s,
                column: c.name.clone(),
                outcome,
            });
        }
    }
    Ok(Scorecard {
        subjects: subjects.to_vec(),
        columns: columns.iter().map(|c| c.name.clone()).collect(),
        cells,
        elapsed: started.elapsed(),
    })
}

/// `samizdat-lab scorecard`: runs every subject against the shipped
/// columns, prints the table and writes the Markdown report to `out` and
/// the heat map to `svg`.
pub async fn run_and_write(out: &std::path::Path, svg: &std::path::Path) -> io::Result<Scorecard> {
    let bin = samizdat_bin().map_err(io::Error::other)?;
    let card = run(
        &ScorecardOptions::new(bin),
        &Subject::ALL,
        &default_columns(),
    )
    .await?;
    println!("{}", card.table());
    std::fs::write(out, card.markdown())?;
    std::fs::write(svg, card.svg())?;
    Ok(card)
}
