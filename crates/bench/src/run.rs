//! One run of the bench: the phases in order against each system, the
//! set-up latency rows, and the summary statistics.

use super::*;

pub(crate) async fn run(
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
pub(crate) const CLIENT_SETUP_STREAMS_PER_USER: usize = 1024;

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
