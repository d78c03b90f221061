//! `ServeConfig::build`: flags over the config file, checked and combined,
//! one named step per concern. Each step reads `Sources` (the flags over
//! the file, in `file`) and returns its part of the configuration or the
//! first mistake it finds.

use super::*;

impl ServeConfig {
    pub(super) fn build(
        args: &ServeArgs,
        loaded: Option<&Loaded>,
        state_dir: PathBuf,
        generated_key: impl FnOnce() -> Result<Key, StateError>,
    ) -> Result<ServeConfig, LoadError> {
        let empty = FileConfig::default();
        let file = loaded.map(|l| &l.file).unwrap_or(&empty);
        let src = Sources { args, file, loaded };
        let server = src.server();

        let modes = modes(args, server, loaded)?;
        let mut domains = domains(args, server, loaded)?;
        let fleet = fleet_config(args, loaded)?;
        let (users, generated) = users_and_keys(&src, &mut domains, &fleet, generated_key)?;
        let cover = cover(&src, &domains)?;
        let listen = listen(&src)?;
        let dcs = dc_table(&src)?;
        let policy = policy(&src, &modes, domains)?;
        let timeouts = timeouts(&src)?;
        let capacity = capacity(&src)?;
        let (egress_allow, egress_deny_ports) = egress(&src)?;
        let websocket = websocket(&src)?;
        let tunnel = !args.no_tunnel && server.tunnel.unwrap_or(true);
        if websocket.listen.is_some() && !tunnel {
            return Err(ConfigError {
                place: "--ws-listen".into(),
                reason: "the WebSocket listener carries samizdat clients only; drop --no-tunnel (or tunnel = false) or --ws-listen".into(),
            }
            .into());
        }

        Ok(ServeConfig {
            listen: (!listen.is_empty()).then_some(listen),
            users,
            generated,
            modes,
            policy,
            cover,
            cover_connect: args
                .cover_connect
                .or(server.cover_connect)
                .unwrap_or_default(),
            dcs,
            public_host: args
                .public_host
                .clone()
                .or_else(|| server.public_host.clone()),
            handshake_timeout: timeouts.handshake,
            idle_timeout: timeouts.idle,
            connect_timeout: timeouts.connect,
            drain_timeout: timeouts.drain,
            max_connections: capacity.max_connections,
            source_caps: capacity.source_caps,
            threads: capacity.threads,
            log_client_ips: args.log_client_ips || server.log_client_ips.unwrap_or(false),
            state_dir,
            metrics: capacity.metrics,
            fleet,
            tunnel,
            transport_key: args
                .transport_key
                .clone()
                .or_else(|| server.transport_key.clone()),
            egress_allow,
            egress_deny_ports,
            log_destinations: args.log_destinations || server.log_destinations.unwrap_or(false),
            ws_listen: websocket.listen,
            ws_path: websocket.path,
            ws_public: websocket.public,
            transport_limits: transport_limits(&args.transport_limits, loaded)?,
            ws_trusted_proxies: websocket.trusted_proxies,
            ws_client_header: websocket.client_header,
        })
    }
}

/// The users (flags, file, and the generated one when there is none), and
/// whether that one was generated. A fleet that shares its user table
/// generates no user of its own: each instance would make a different one.
/// No two users may share a key.
fn users_and_keys(
    src: &Sources<'_>,
    domains: &mut Vec<String>,
    fleet: &Option<crate::fleet::FleetConfig>,
    generated_key: impl FnOnce() -> Result<Key, StateError>,
) -> Result<(Vec<UserEntry>, bool), LoadError> {
    let mut users = users::users(src.args, src.file, src.loaded, domains)?;
    let shared_users = fleet.as_ref().is_some_and(|f| f.shared_users);
    let generated = users.is_empty() && !shared_users;
    if generated {
        users.push(UserEntry {
            name: "default".into(),
            key: generated_key()?,
            domains: Vec::new(),
            limits: UserLimits::default(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for u in &users {
        if !seen.insert(u.key.0) {
            return Err(ConfigError {
                place: format!("user {}", u.name),
                reason: "has the same key as another user; give every user a key of their own"
                    .into(),
            }
            .into());
        }
    }
    if domains.is_empty() {
        domains.push(DEFAULT_DOMAIN.to_string());
    }
    Ok((users, generated))
}

/// `--cover`: where unauthenticated connections go; by default the first
/// domain on port 443.
fn cover(src: &Sources<'_>, domains: &[String]) -> Result<CoverTarget, ConfigError> {
    let given = src.text(
        src.args.cover.as_ref(),
        "--cover",
        src.server().cover.as_ref(),
        "server.cover",
        parse_cover,
    )?;
    Ok(given.unwrap_or_else(|| CoverTarget::Host(domains[0].clone(), 443)))
}

/// `--listen` (repeatable) or `server.listen`; empty: the default.
fn listen(src: &Sources<'_>) -> Result<Vec<SocketAddr>, ConfigError> {
    if !src.args.listen.is_empty() {
        return Ok(src.args.listen.clone());
    }
    let (Some(l), Some(list)) = (src.loaded, &src.server().listen) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|v| {
            let item = src.file_item(l, "server.listen".into(), v.span());
            parse_addr(v.get_ref()).map_err(|e| item.fail("", e))
        })
        .collect()
}

/// The DC table: the address preference, `--dc-override`, the file's
/// routes, then `--dc ID=ADDR` flags (the flags win).
fn dc_table(src: &Sources<'_>) -> Result<DcTable, ConfigError> {
    let (args, file) = (src.args, src.file);
    let mut dcs = DcTable {
        preference: args
            .ip_preference
            .or(file.dc.ip_preference)
            .unwrap_or_default(),
        ..Default::default()
    };
    let override_flag = args.dc_override.map(|a| a.to_string());
    dcs.all = src.text(
        override_flag.as_ref(),
        "--dc-override",
        file.dc.override_all.as_ref(),
        "dc.override",
        parse_addr,
    )?;
    if let Some(l) = src.loaded {
        for (id, addr) in &file.dc.routes {
            let item = src.file_item(l, format!("dc.routes.\"{id}\""), addr.span());
            let id = parse_dc_id(id).map_err(|e| item.fail("", e))?;
            let addr = parse_addr(addr.get_ref()).map_err(|e| item.fail("", e))?;
            dcs.by_id.insert(id, addr);
        }
    }
    let item = flag_item("--dc");
    for text in &args.dc {
        let (id, addr) = text
            .split_once('=')
            .ok_or_else(|| item.fail(text, "expected ID=ADDR, e.g. 2=127.0.0.1:443"))?;
        let id = parse_dc_id(id).map_err(|e| item.fail(text, e))?;
        dcs.by_id
            .insert(id, parse_addr(addr).map_err(|e| item.fail(text, e))?);
    }
    Ok(dcs)
}

/// The classifier's policy: modes, domains, what an unknown SNI gets, and
/// how far client clocks may be off.
fn policy(src: &Sources<'_>, modes: &[Mode], domains: Vec<String>) -> Result<Policy, ConfigError> {
    let (args, server) = (src.args, src.server());
    let mut policy = Policy::for_modes(modes, domains);
    policy.unknown_sni = match args
        .unknown_sni
        .or(server.unknown_sni)
        .unwrap_or(UnknownSni::Cover)
    {
        UnknownSni::Cover => SniPolicy::Cover,
        UnknownSni::Accept => SniPolicy::Accept,
    };
    policy.max_past = src
        .duration(
            args.max_clock_behind,
            "--max-clock-behind",
            &server.max_clock_behind,
            "server.max_clock_behind",
            Duration::from_secs(600),
        )?
        .as_secs();
    policy.max_future = src
        .duration(
            args.max_clock_ahead,
            "--max-clock-ahead",
            &server.max_clock_ahead,
            "server.max_clock_ahead",
            Duration::from_secs(60),
        )?
        .as_secs();
    Ok(policy)
}

struct Timeouts {
    handshake: Duration,
    idle: Duration,
    connect: Duration,
    drain: Duration,
}

/// The handshake, idle, connect and drain timeouts.
fn timeouts(src: &Sources<'_>) -> Result<Timeouts, ConfigError> {
    let (args, server) = (src.args, src.server());
    Ok(Timeouts {
        handshake: src.duration(
            args.handshake_timeout,
            "--handshake-timeout",
            &server.handshake_timeout,
            "server.handshake_timeout",
            Duration::from_secs(30),
        )?,
        idle: src.duration(
            args.idle_timeout,
            "--idle-timeout",
            &server.idle_timeout,
            "server.idle_timeout",
            Duration::from_secs(600),
        )?,
        connect: src.duration(
            args.connect_timeout,
            "--connect-timeout",
            &server.connect_timeout,
            "server.connect_timeout",
            Duration::from_secs(10),
        )?,
        drain: src.duration(
            args.drain_timeout,
            "--drain-timeout",
            &server.drain_timeout,
            "server.drain_timeout",
            Duration::from_secs(15),
        )?,
    })
}

struct Capacity {
    max_connections: usize,
    source_caps: crate::serve::sources::SourceCaps,
    threads: Option<usize>,
    metrics: Option<SocketAddr>,
}

/// Connection caps, per-source caps, threads and the metrics address.
fn capacity(src: &Sources<'_>) -> Result<Capacity, ConfigError> {
    let (args, server) = (src.args, src.server());
    let max_connections = src
        .positive(
            args.max_connections.as_ref(),
            "--max-connections",
            server.max_connections.as_ref(),
            "server.max_connections",
        )?
        .unwrap_or(20_000);
    let mut source_caps = crate::serve::sources::SourceCaps::defaults(max_connections);
    if let Some(n) = src.positive(
        args.max_unauthenticated_per_ip.as_ref(),
        "--max-unauthenticated-per-ip",
        server.max_unauthenticated_per_ip.as_ref(),
        "server.max_unauthenticated_per_ip",
    )? {
        source_caps.per_ip = n;
    }
    if let Some(n) = src.positive(
        args.max_unauthenticated_per_subnet.as_ref(),
        "--max-unauthenticated-per-subnet",
        server.max_unauthenticated_per_subnet.as_ref(),
        "server.max_unauthenticated_per_subnet",
    )? {
        source_caps.per_subnet = n;
    }
    let threads = src.positive(
        args.threads.as_ref(),
        "--threads",
        server.threads.as_ref(),
        "server.threads",
    )?;
    let metrics_flag = args.metrics.map(|a| a.to_string());
    let metrics = src.text(
        metrics_flag.as_ref(),
        "--metrics",
        server.metrics.as_ref(),
        "server.metrics",
        parse_addr,
    )?;
    Ok(Capacity {
        max_connections,
        source_caps,
        threads,
        metrics,
    })
}

/// Where samizdat clients' streams may go: the `allow` exceptions and the
/// denied ports.
fn egress(src: &Sources<'_>) -> Result<(Vec<ipnet::IpNet>, Vec<u16>), ConfigError> {
    let (args, server) = (src.args, src.server());
    let allow = prefixes(
        &args.egress_allow,
        "--egress-allow",
        server.egress_allow.as_deref(),
        "server.egress_allow",
        src.loaded,
    )?
    .unwrap_or_default();
    let deny_ports = match (&args.egress_deny_ports, &server.egress_deny_ports) {
        (Some(text), _) => parse_ports(text).map_err(|e| ConfigError {
            place: format!("--egress-deny-ports {text:?}"),
            reason: e,
        })?,
        (None, Some(list)) => {
            if let (Some(l), true) = (src.loaded, list.get_ref().contains(&0)) {
                return Err(src
                    .file_item(l, "server.egress_deny_ports".into(), list.span())
                    .fail("", "ports are 1 to 65535; write [] to deny none"));
            }
            list.get_ref().clone()
        }
        (None, None) => crate::serve::egress::DEFAULT_DENY_PORTS.to_vec(),
    };
    Ok((allow, deny_ports))
}

struct WebSocket {
    listen: Option<SocketAddr>,
    path: Option<String>,
    public: Option<wire::link::Endpoint>,
    trusted_proxies: Vec<ipnet::IpNet>,
    client_header: String,
}

/// The WebSocket listener for a reverse proxy or CDN in front.
fn websocket(src: &Sources<'_>) -> Result<WebSocket, ConfigError> {
    let (args, server) = (src.args, src.server());
    let trusted_proxies = prefixes(
        &args.ws_trusted_proxies,
        "--ws-trusted-proxy",
        server.ws_trusted_proxies.as_deref(),
        "server.ws_trusted_proxies",
        src.loaded,
    )?
    .unwrap_or_else(|| vec![loopback_v4(), loopback_v6()]);
    let client_header = src
        .text(
            args.ws_client_header.as_ref(),
            "--ws-client-header",
            server.ws_client_header.as_ref(),
            "server.ws_client_header",
            parse_header_name,
        )?
        .unwrap_or_else(|| "X-Real-IP".to_string());
    let listen_flag = args.ws_listen.map(|a| a.to_string());
    Ok(WebSocket {
        listen: src.text(
            listen_flag.as_ref(),
            "--ws-listen",
            server.ws_listen.as_ref(),
            "server.ws_listen",
            parse_addr,
        )?,
        path: src.text(
            args.ws_path.as_ref(),
            "--ws-path",
            server.ws_path.as_ref(),
            "server.ws_path",
            parse_ws_path,
        )?,
        public: src.text(
            args.ws_public.as_ref(),
            "--ws-public",
            server.ws_public.as_ref(),
            "server.ws_public",
            parse_ws_public,
        )?,
        trusted_proxies,
        client_header,
    })
}

/// 127.0.0.0/8.
fn loopback_v4() -> ipnet::IpNet {
    let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(127, 0, 0, 0), 8);
    ipnet::IpNet::V4(net.expect("8 is a valid IPv4 prefix length"))
}

/// ::1/128.
fn loopback_v6() -> ipnet::IpNet {
    let net = ipnet::Ipv6Net::new(std::net::Ipv6Addr::LOCALHOST, 128);
    ipnet::IpNet::V6(net.expect("128 is a valid IPv6 prefix length"))
}

/// `--modes` / `server.modes`: the client forms served, fake-TLS alone by
/// default; naming none is an error.
fn modes(
    args: &ServeArgs,
    server: &ServerSection,
    loaded: Option<&Loaded>,
) -> Result<Vec<Mode>, ConfigError> {
    let mut modes = Vec::new();
    for item in pick(
        &args.modes,
        "--modes",
        server.modes.as_ref(),
        "server.modes",
        loaded,
    ) {
        let mode = Mode::parse(&item.value).map_err(|e| item.fail(&item.value, e.to_string()))?;
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    if modes.is_empty() {
        if args.modes.is_empty() && server.modes.is_none() {
            modes.push(Mode::FakeTls);
        } else {
            return Err(ConfigError {
                place: "modes".into(),
                reason: "name at least one of plain, dd, ee".into(),
            });
        }
    }
    Ok(modes)
}

/// `--domain` / `server.domains`: the fake-TLS domains, checked and
/// lower-cased, each once.
fn domains(
    args: &ServeArgs,
    server: &ServerSection,
    loaded: Option<&Loaded>,
) -> Result<Vec<String>, ConfigError> {
    let mut domains: Vec<String> = Vec::new();
    for item in pick(
        &args.domain,
        "--domain",
        server.domains.as_ref(),
        "server.domains",
        loaded,
    ) {
        validate_domain(&item.value).map_err(|e| item.fail(&item.value, e.to_string()))?;
        let d = item.value.to_ascii_lowercase();
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    Ok(domains)
}

/// A list of prefixes from repeated `flag`s, else from the file's `key`
/// (`None`: given in neither place).
fn prefixes(
    flags: &[String],
    flag: &'static str,
    file: Option<&[Spanned<String>]>,
    key: &str,
    loaded: Option<&Loaded>,
) -> Result<Option<Vec<ipnet::IpNet>>, ConfigError> {
    if !flags.is_empty() {
        let item = Item {
            value: (),
            from: Origin::Flag(flag),
            key: String::new(),
            span: None,
        };
        return flags
            .iter()
            .map(|t| parse_prefix(t).map_err(|e| item.fail(t, e)))
            .collect::<Result<_, _>>()
            .map(Some);
    }
    let (Some(l), Some(list)) = (loaded, file) else {
        return Ok(None);
    };
    list.iter()
        .map(|v| {
            let item = Item {
                value: (),
                from: Origin::File {
                    path: &l.path,
                    text: &l.text,
                },
                key: key.into(),
                span: Some(v.span()),
            };
            parse_prefix(v.get_ref()).map_err(|e| item.fail("", e))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}
