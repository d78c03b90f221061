//! One cell of the scorecard: a subject through the middlebox under one
//! column's techniques, and the endpoint-pool cell.

use super::*;

pub(super) async fn run_cell(
    subject: Subject,
    column: Column,
    bench: Arc<Bench>,
    opts: Arc<ScorecardOptions>,
) -> io::Result<(Subject, String, Result<Session, String>)> {
    let r = match column.technique {
        ColumnKind::Lab(policy) if subject == Subject::Client => {
            let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
            let mb = crate::start(listen, bench.samizdat, policy()).await?;
            let client = start_client(&opts, &bench.link, &[mb.addr]).await?;
            let target = Target {
                dial: client.socks,
                echo: bench.echo,
            };
            // Two sessions: the first meets the censor (and the client
            // learns, a freeze say), the second is what its user lives with.
            let s = match session(subject, target, opts.payload, opts.stall).await {
                Session::Failed(why) => Session::Failed(format!("first session: {why}")),
                Session::Done(_) => session(subject, target, opts.payload, opts.stall).await,
            };
            drop(client);
            drop(mb);
            Ok(s)
        }
        ColumnKind::Lab(policy) => {
            let policy = policy();
            let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
            let mb = crate::start(listen, bench.server(subject), policy).await?;
            let target = Target {
                dial: mb.addr,
                echo: bench.echo,
            };
            let s = session(subject, target, opts.payload, opts.stall).await;
            drop(mb);
            Ok(s)
        }
        ColumnKind::Endpoints(scenario) => Ok(endpoints_cell(scenario, &bench, &opts).await?),
        ColumnKind::Probing => {
            let flight = record_first_flight(subject, &bench, opts.stall).await;
            let report = probe_server(
                bench.server(subject),
                bench.cover(subject),
                &[flight],
                &opts.probe,
            )
            .await;
            if report.flagged {
                let first = &report.differences[0];
                Err(format!(
                    "flagged by {} of {} probes (first: {}: {})",
                    report
                        .differences
                        .iter()
                        .map(|d| &d.probe)
                        .collect::<std::collections::BTreeSet<_>>()
                        .len(),
                    report.probes,
                    first.probe,
                    first.detail
                ))
            } else {
                Ok(Session::Done(f64::NAN))
            }
        }
    };
    Ok((subject, column.name, r))
}

/// Starts `samizdat client` for `link` with `servers` as its endpoints.
pub(super) async fn start_client(
    opts: &ScorecardOptions,
    link: &str,
    servers: &[SocketAddr],
) -> io::Result<testkit::process::Running> {
    let link = link_via(link, servers)?;
    let bin = opts.samizdat.clone();
    tokio::task::spawn_blocking(move || start_samizdat_client(&bin, &link))
        .await
        .map_err(io::Error::other)?
}

/// An endpoint-pool cell: four middleboxes sharing one [`LiveIpBlock`],
/// a client with all four, and a new SOCKS5 session (an echoed transfer)
/// after each step of `scenario`, and one more after the last. Survived if
/// every session got through; the rate is the extra session's.
async fn endpoints_cell(
    scenario: Scenario,
    bench: &Bench,
    opts: &ScorecardOptions,
) -> io::Result<Session> {
    let block = LiveIpBlock::new();
    let mut mbs = Vec::new();
    for label in POOL_LABELS {
        let policy = Policy::new(vec![Arc::new(block.clone())])
            .destination(label.parse().expect("a socket address"));
        mbs.push(crate::start(([127, 0, 0, 1], 0).into(), bench.samizdat, policy).await?);
    }
    let addrs: Vec<SocketAddr> = mbs.iter().map(|m| m.addr).collect();
    let client = start_client(opts, &bench.link, &addrs).await?;
    let target = Target {
        dial: client.socks,
        echo: bench.echo,
    };
    let steps = scenario.steps().len();
    for (n, step) in scenario.steps().into_iter().enumerate() {
        for (range, action) in step {
            block.block(range, action);
        }
        if let Session::Failed(why) =
            session(Subject::Client, target, opts.payload, POOL_STALL).await
        {
            return Ok(Session::Failed(format!(
                "session {} of {}: {why}",
                n + 1,
                steps + 1
            )));
        }
    }
    // One more under the last step's blocks: what the user lives with once
    // the client has noticed them.
    Ok(
        match session(Subject::Client, target, opts.payload, POOL_STALL).await {
            Session::Failed(why) => {
                Session::Failed(format!("session {0} of {0}: {why}", steps + 1))
            }
            done => done,
        },
    )
}
