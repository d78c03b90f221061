//! The fleet's Redis (only with `--redis`): reachable with the password,
//! fast enough for the per-call deadline, and holding users.

use super::{Check, Finding, Level};
use crate::fleet::{redact_url, Fleet};
use crate::serve::config::ServeConfig;
use std::time::Duration;

/// Checks the Redis of `[fleet]`, if any.
pub(crate) async fn check(config: &ServeConfig, timeout: Duration) -> Vec<Finding> {
    let Some(fleet_config) = config.fleet.clone() else {
        return Vec::new();
    };
    let subject = format!("redis {}", redact_url(&fleet_config.url));
    let deadline = fleet_config.timeout;
    // The first call connects: give it the doctor's network deadline.
    let mut probe = fleet_config.clone();
    probe.timeout = timeout;
    let fleet = match Fleet::start(probe) {
        Ok(f) => f,
        Err(e) => {
            return vec![Finding::new(
                Level::Fail,
                Check::Redis,
                subject,
                format!("{e:#}"),
            )]
        }
    };
    fleet
        .quiet
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if fleet.call::<String>(&redis::cmd("PING")).await.is_err() {
        return vec![Finding::new(
            Level::Fail,
            Check::Redis,
            subject,
            "no answer, or refused",
        )
        .fix("check the address, the password (in the URL), TLS (rediss:// and its CA) and that Redis runs; meanwhile each instance serves with its fallbacks (docs/fleet.md)")];
    }
    // The round trip now, connected, against the per-call deadline.
    let started = crate::clock::real_now();
    let ping = fleet.call::<String>(&redis::cmd("PING")).await;
    let rtt = started.elapsed();
    let mut out = Vec::new();
    if ping.is_err() || rtt * 2 > deadline {
        out.push(
            Finding::new(
                Level::Warn,
                Check::Redis,
                subject.clone(),
                format!("a round trip took {rtt:?}, against a deadline of {deadline:?}"),
            )
            .fix("put Redis closer to the instances, or raise [fleet] timeout (each handshake may wait that long)"),
        );
    } else {
        out.push(Finding::ok(
            Check::Redis,
            subject.clone(),
            format!("answers in {rtt:?} (deadline {deadline:?})"),
        ));
    }
    if fleet_config.shared_users {
        match fleet.user_records().await {
            Ok(users) if users.is_empty() && config.users.is_empty() => out.push(
                Finding::new(
                    Level::Warn,
                    Check::Redis,
                    subject,
                    "no users: neither the config file nor the shared table has any",
                )
                .fix("add one: samizdat users add NAME --redis URL"),
            ),
            Ok(users) => out.push(Finding::ok(
                Check::Redis,
                subject,
                format!("{} users in the shared table", users.len()),
            )),
            Err(_) => {}
        }
    }
    out
}
