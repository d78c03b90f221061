//! `samizdat users add|remove|list`: edit the fleet's shared user table
//! (`fleet::users` holds the table itself and how instances merge it).

use crate::fleet::users::Record;
use crate::fleet::{redact_url, Down, Fleet};
use crate::serve::config::{parse_rate, parse_size, ServeArgs, ServeConfig};
use std::time::Duration;

/// `samizdat users`: the shared user table.
#[derive(Debug, clap::Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
}

/// The server's options (`--redis` or `--config` with `[fleet]`; for links
/// also `--public-host`, `--listen`, `--domain`, `--modes`).
#[derive(Debug, clap::Args)]
struct Server {
    #[command(
        flatten,
        next_help_heading = "Server options (as for `samizdat serve`)"
    )]
    serve: ServeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum UsersCommand {
    /// Add a user to the shared table and print their links. Every
    /// instance serves them within seconds.
    Add {
        /// The user's name (letters, digits, '-', '_', '.', '@').
        name: String,
        /// Their key (32 hex digits) [default: a new random key].
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
        /// Most simultaneous connections, fleet-wide.
        #[arg(
            long = "user-max-connections",
            id = "user_max_connections",
            value_name = "N"
        )]
        max_connections: Option<usize>,
        /// Most distinct client addresses at once, fleet-wide.
        #[arg(long = "user-max-ips", id = "user_max_ips", value_name = "N")]
        max_ips: Option<usize>,
        /// Bytes both ways, fleet-wide, e.g. 10GiB.
        #[arg(long = "user-quota", id = "user_quota", value_name = "SIZE")]
        quota: Option<String>,
        /// Bandwidth cap, e.g. 2MiB/s.
        #[arg(long = "user-bandwidth", id = "user_bandwidth", value_name = "RATE")]
        bandwidth: Option<String>,
        /// Replace a user of the same name.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Remove a user from the shared table (their connections end on every
    /// instance within seconds) and forget their fleet usage.
    Remove {
        /// The user's name.
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// List the shared users with their limits and fleet usage (never keys).
    List {
        #[command(flatten)]
        server: Server,
    },
}

/// Runs `samizdat users …`.
pub fn run(args: &UsersArgs) -> anyhow::Result<()> {
    let server = match &args.command {
        UsersCommand::Add { server, .. }
        | UsersCommand::Remove { server, .. }
        | UsersCommand::List { server } => server,
    };
    let config = ServeConfig::from_args(&server.serve, || Ok(wire::secret::Key([0; 16])))?;
    let Some(mut fleet_config) = config.fleet.clone() else {
        anyhow::bail!("the shared user table needs --redis URL (or [fleet] redis in --config)");
    };
    // An operator command may wait longer than the connection path.
    fleet_config.timeout = fleet_config.timeout.max(Duration::from_secs(3));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let fleet = Fleet::start(fleet_config)?;
        fleet.quiet.store(true, std::sync::atomic::Ordering::Relaxed);
        let shown = redact_url(&fleet.config.url);
        let down = || {
            anyhow::anyhow!(
                "redis at {shown} did not answer or refused (check the address, the password and that Redis runs)"
            )
        };
        match &args.command {
            UsersCommand::Add {
                name,
                key,
                max_connections,
                max_ips,
                quota,
                bandwidth,
                replace,
                ..
            } => {
                let key = match key {
                    Some(k) => {
                        let key = wire::secret::Key::from_hex(k)
                            .map_err(|e| anyhow::anyhow!("--key: {e}"))?;
                        if let Some(why) = wire::secret::weak_key(&key) {
                            anyhow::bail!(
                                "--key: user {name}'s key is {why}: anyone could guess it and use \
                                 this proxy; leave out --key for a new random key"
                            );
                        }
                        key
                    }
                    None => {
                        let mut b = [0u8; 16];
                        crate::random::fill(&mut b);
                        wire::secret::Key(b)
                    }
                };
                let record = Record {
                    secret: hex::encode(key.0),
                    max_connections: *max_connections,
                    max_ips: *max_ips,
                    quota: quota
                        .as_deref()
                        .map(parse_size)
                        .transpose()
                        .map_err(|e| anyhow::anyhow!("--user-quota: {e}"))?,
                    expires: None,
                    bandwidth: bandwidth
                        .as_deref()
                        .map(parse_rate)
                        .transpose()
                        .map_err(|e| anyhow::anyhow!("--user-bandwidth: {e}"))?,
                };
                let entry = record.to_entry(name).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
                let json = serde_json::to_string(&record)?;
                let mut cmd = redis::cmd(if *replace { "HSET" } else { "HSETNX" });
                cmd.arg(fleet.key("users")).arg(name).arg(json);
                let added: i64 = fleet.call(&cmd).await.map_err(|_| down())?;
                if added == 0 && !replace {
                    anyhow::bail!("user {name} exists in the shared table; pass --replace to change them");
                }
                bump_version(&fleet).await.map_err(|_| down())?;
                let mut shown_config = config.clone();
                shown_config.users = vec![entry];
                shown_config.generated = false;
                let addr = match shown_config.listen.as_deref() {
                    Some([first, ..]) if first.port() != 0 => *first,
                    _ => std::net::SocketAddr::from(([0, 0, 0, 0], crate::serve::config::DEFAULT_PORT)),
                };
                let (host, hint) = crate::serve::links::link_host(&shown_config, addr);
                println!("added user {name} to the shared table at {shown}");
                // The samizdat:// link needs the fleet's shared transport
                // key; without `transport_key` each instance has its own.
                let public = match (&shown_config.transport_key, shown_config.tunnel) {
                    (Some(file), true) => {
                        let secret = crate::state::transport_key(Some(file), &shown_config.state_dir)?;
                        Some(wire::tunnel::handshake::ServerKey::from_secret(secret).public())
                    }
                    _ => None,
                };
                print!(
                    "{}",
                    crate::serve::links::render(&shown_config, &host, addr.port(), public.as_ref())
                );
                if let Some(h) = hint {
                    eprintln!("note: {h}");
                }
            }
            UsersCommand::Remove { name, .. } => {
                let mut cmd = redis::cmd("HDEL");
                cmd.arg(fleet.key("users")).arg(name);
                let removed: i64 = fleet.call(&cmd).await.map_err(|_| down())?;
                if removed == 0 {
                    anyhow::bail!("no user {name} in the shared table");
                }
                let mut cmd = redis::cmd("DEL");
                cmd.arg(fleet.key(&format!("usage:{name}")));
                let _: i64 = fleet.call(&cmd).await.map_err(|_| down())?;
                bump_version(&fleet).await.map_err(|_| down())?;
                println!("removed user {name} from the shared table");
            }
            UsersCommand::List { .. } => {
                let mut records = fleet.user_records().await.map_err(|_| down())?;
                records.sort();
                if records.is_empty() {
                    eprintln!("no users in the shared table at {shown}");
                }
                for (name, json) in records {
                    let usage = fleet.add_usage(&name, 0).await.map_err(|_| down())?;
                    let limits = match serde_json::from_str::<Record>(&json) {
                        Ok(r) => describe(&r),
                        Err(_) => "(unreadable record)".into(),
                    };
                    println!("{name}\tused {usage} bytes\t{limits}");
                }
            }
        }
        anyhow::Ok(())
    })
}

async fn bump_version(fleet: &Fleet) -> Result<i64, Down> {
    let mut cmd = redis::cmd("INCR");
    cmd.arg(fleet.key("users:version"));
    fleet.call(&cmd).await
}

fn describe(r: &Record) -> String {
    let mut parts = Vec::new();
    if let Some(n) = r.max_connections {
        parts.push(format!("max_connections={n}"));
    }
    if let Some(n) = r.max_ips {
        parts.push(format!("max_ips={n}"));
    }
    if let Some(n) = r.quota {
        parts.push(format!("quota={n}"));
    }
    if let Some(n) = r.bandwidth {
        parts.push(format!("bandwidth={n}/s"));
    }
    if let Some(n) = r.expires {
        parts.push(format!("expires={n}"));
    }
    if parts.is_empty() {
        "no limits".into()
    } else {
        parts.join(" ")
    }
}
