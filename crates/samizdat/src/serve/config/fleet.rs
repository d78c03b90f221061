//! `[fleet]` and `--redis`: the Redis connection and what the instances
//! share (docs/fleet.md).

use super::{duration_item, pick_one, ConfigError, FleetSection, Loaded, Origin, ServeArgs};
use std::time::Duration;
use toml::Spanned;

/// The `[fleet]` section and the `--redis*` flags.
pub(super) fn fleet_config(
    args: &ServeArgs,
    loaded: Option<&Loaded>,
) -> Result<Option<crate::fleet::FleetConfig>, ConfigError> {
    use crate::fleet::{redact_url, FleetConfig};
    let empty = FleetSection::default();
    let section = loaded.map(|l| &l.file.fleet).unwrap_or(&empty);
    let Some(url) = pick_one(
        args.redis.as_ref(),
        "--redis",
        section.redis.as_ref(),
        "fleet.redis",
        loaded,
    ) else {
        let set = section.timeout.is_some()
            || section.replay_when_down.is_some()
            || section.limits_when_down.is_some()
            || section.shared_users.is_some()
            || section.instance.is_some()
            || section.prefix.is_some()
            || section.lease.is_some();
        if set {
            // A fleet that silently ran alone would let replays and quotas
            // slip between instances.
            return Err(ConfigError {
                place: match loaded {
                    Some(l) => format!("{}: fleet", l.path.display()),
                    None => "fleet".into(),
                },
                reason: "[fleet] has settings but no Redis URL: set fleet.redis, --redis or SAMIZDAT_REDIS"
                    .into(),
            });
        }
        return Ok(None);
    };
    let shown = redact_url(&url.value);
    crate::fleet::check_url(&url.value).map_err(|e| url.fail(&shown, e))?;
    let mut config = FleetConfig::new(url.value.clone());
    config.timeout = duration_item(
        args.redis_timeout,
        "--redis-timeout",
        section.timeout.as_ref(),
        "fleet.timeout",
        loaded,
        config.timeout,
    )?;
    // Where a checked duration came from: the flag, or file:line: key.
    let place = |flag: Option<(&str, Duration)>, file: Option<&Spanned<String>>, key: &str| match (
        flag, loaded, file,
    ) {
        (Some((name, d)), _, _) => format!("{name} {d:?}"),
        (None, Some(l), Some(f)) => Origin::File {
            path: &l.path,
            text: &l.text,
        }
        .place(key, Some(f.span()), ""),
        _ => key.to_string(),
    };
    if config.timeout.is_zero() || config.timeout > Duration::from_secs(5) {
        return Err(ConfigError {
            place: place(
                args.redis_timeout.map(|d| ("--redis-timeout", d)),
                section.timeout.as_ref(),
                "fleet.timeout",
            ),
            reason: "must be between 1ms and 5s: the connection path waits for it".into(),
        });
    }
    config.lease = duration_item(
        None,
        "",
        section.lease.as_ref(),
        "fleet.lease",
        loaded,
        config.lease,
    )?;
    if config.lease < Duration::from_secs(3) {
        return Err(ConfigError {
            place: place(None, section.lease.as_ref(), "fleet.lease"),
            reason: "must be at least 3s (leases are refreshed every third of it)".into(),
        });
    }
    if let Some(v) = args.redis_down_replay.or(section.replay_when_down) {
        config.replay_when_down = v;
    }
    if let Some(v) = args.redis_down_limits.or(section.limits_when_down) {
        config.limits_when_down = v;
    }
    if let Some(v) = section.shared_users {
        config.shared_users = v;
    }
    if let Some(item) = pick_one(
        args.instance.as_ref(),
        "--instance",
        section.instance.as_ref(),
        "fleet.instance",
        loaded,
    ) {
        if !crate::fleet::valid_name(&item.value) {
            return Err(item.fail(
                &item.value,
                "use 1-64 letters, digits, '-', '_', '.' or ':'",
            ));
        }
        config.instance = item.value;
    }
    if let Some(item) = pick_one(None, "", section.prefix.as_ref(), "fleet.prefix", loaded) {
        if !crate::fleet::valid_name(&item.value) {
            return Err(item.fail(
                &item.value,
                "use 1-64 letters, digits, '-', '_', '.' or ':'",
            ));
        }
        config.prefix = item.value;
    }
    Ok(Some(config))
}
