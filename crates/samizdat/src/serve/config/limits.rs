//! `[transport_limits]`: what one user's samizdat sessions may hold on
//! this server (flags override the file; zero is refused).

use super::{duration_item, parse_size, pick_one, ConfigError, Loaded, TransportLimitArgs};
use std::time::Duration;
use toml::Spanned;

/// What one user's samizdat sessions may hold on this server, so that one
/// link holder cannot take the memory, sockets or ports every user needs
/// (`docs/transport.md`, "Limits per user"). With the defaults a user costs
/// at most about 64 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportLimits {
    /// Sessions one user may have at once; a new one ends the user's oldest.
    pub sessions_per_user: usize,
    /// Streams (each one egress socket) one user may have open at once,
    /// across their sessions; more are refused.
    pub streams_per_user: usize,
    /// Bytes a user's sessions may buffer before their new streams are
    /// refused.
    pub buffer_per_user: u64,
    /// A stream that moves no byte either way for this long is closed.
    pub stream_idle_timeout: Duration,
    /// A session whose client acknowledges nothing (neither receipt nor
    /// reading) for this long while the server holds data for it is closed.
    pub ack_deadline: Duration,
}

impl Default for TransportLimits {
    fn default() -> TransportLimits {
        TransportLimits {
            sessions_per_user: 4,
            streams_per_user: 112,
            buffer_per_user: 32 << 20,
            stream_idle_timeout: Duration::from_secs(300),
            ack_deadline: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransportLimitsSection {
    sessions_per_user: Option<Spanned<usize>>,
    streams_per_user: Option<Spanned<usize>>,
    buffer_per_user: Option<Spanned<String>>,
    stream_idle_timeout: Option<Spanned<String>>,
    ack_deadline: Option<Spanned<String>>,
}

pub(super) fn transport_limits(
    args: &TransportLimitArgs,
    loaded: Option<&Loaded>,
) -> Result<TransportLimits, ConfigError> {
    let empty = TransportLimitsSection::default();
    let file = loaded.map(|l| &l.file.transport_limits).unwrap_or(&empty);
    let d = TransportLimits::default();
    let count = |flag: Option<&usize>, name, f: Option<&Spanned<usize>>, key: &str, default| {
        match pick_one(flag, name, f, key, loaded) {
            Some(item) if item.value == 0 => Err(item.fail("0", "must be at least 1")),
            Some(item) => Ok(item.value),
            None => Ok(default),
        }
    };
    let sessions_per_user = count(
        args.transport_sessions_per_user.as_ref(),
        "--transport-sessions-per-user",
        file.sessions_per_user.as_ref(),
        "transport_limits.sessions_per_user",
        d.sessions_per_user,
    )?;
    let streams_per_user = count(
        args.transport_streams_per_user.as_ref(),
        "--transport-streams-per-user",
        file.streams_per_user.as_ref(),
        "transport_limits.streams_per_user",
        d.streams_per_user,
    )?;
    let buffer_per_user = match pick_one(
        args.transport_buffer_per_user.as_ref(),
        "--transport-buffer-per-user",
        file.buffer_per_user.as_ref(),
        "transport_limits.buffer_per_user",
        loaded,
    ) {
        Some(item) => parse_size(&item.value).map_err(|e| item.fail(&item.value, e))?,
        None => d.buffer_per_user,
    };
    let positive = |v: Duration, name: &'static str| {
        if v.is_zero() {
            Err(ConfigError {
                place: name.to_string(),
                reason: "must be longer than zero".into(),
            })
        } else {
            Ok(v)
        }
    };
    let stream_idle_timeout = positive(
        duration_item(
            args.transport_stream_idle_timeout,
            "--transport-stream-idle-timeout",
            file.stream_idle_timeout.as_ref(),
            "transport_limits.stream_idle_timeout",
            loaded,
            d.stream_idle_timeout,
        )?,
        "transport_limits.stream_idle_timeout",
    )?;
    let ack_deadline = positive(
        duration_item(
            args.transport_ack_deadline,
            "--transport-ack-deadline",
            file.ack_deadline.as_ref(),
            "transport_limits.ack_deadline",
            loaded,
            d.ack_deadline,
        )?,
        "transport_limits.ack_deadline",
    )?;
    Ok(TransportLimits {
        sessions_per_user,
        streams_per_user,
        buffer_per_user,
        stream_idle_timeout,
        ack_deadline,
    })
}
