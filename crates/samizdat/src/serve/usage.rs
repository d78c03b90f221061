//! Per-user byte usage: kept across restarts in `usage.toml` for quotas on
//! one machine, or pushed to and read from Redis with a fleet.

use super::ServeShared;
use crate::state::StateError;
use std::time::Duration;

/// Per-user byte usage inside the state directory.
pub const USAGE_FILE: &str = "usage.toml";

/// Reads the usage file; a missing file is no usage, a broken one is an error.
pub(super) fn load_usage(
    dir: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, u64>, StateError> {
    let path = dir.join(USAGE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| StateError::Invalid {
            reason: format!("{e}; fix it, or delete it to reset every user's quota usage"),
            path,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(StateError::Read { path, source: e }),
    }
}

/// Users per pipelined usage push (bounds one request's size).
const USAGE_BATCH: usize = 500;

/// How often usage is pushed to (and read from) the fleet.
pub(super) const FLEET_USAGE_SYNC: Duration = Duration::from_secs(1);

impl ServeShared {
    /// Pushes each user's new bytes to the fleet and reads the totals
    /// back; on failure the bytes wait for the next push.
    pub async fn sync_usage(&self) {
        if self.state.usage_is_local() {
            return;
        }
        let snap = self.snapshot();
        for chunk in snap.states.chunks(USAGE_BATCH) {
            let deltas: Vec<(&str, u64)> = chunk
                .iter()
                .map(|u| (u.name.as_str(), u.take_pending()))
                .collect();
            match self.state.add_usage(&deltas).await {
                Ok(totals) => {
                    for (user, total) in chunk.iter().zip(totals) {
                        if user.set_fleet_usage(total) {
                            tracing::info!(user = %user.name, "fleet-wide quota used up; their connections end");
                        }
                    }
                }
                Err(_) => {
                    // Counted again with the next push: nothing is lost.
                    for (user, (_, delta)) in chunk.iter().zip(deltas) {
                        user.unpushed(delta);
                    }
                    break;
                }
            }
        }
    }

    fn usage_path(&self) -> std::path::PathBuf {
        self.snapshot().config.state_dir.join(USAGE_FILE)
    }

    /// Writes every user's byte usage to the state directory (atomically).
    pub fn save_usage(&self) -> std::io::Result<()> {
        if !self.state.usage_is_local() {
            // With a fleet, usage lives in Redis.
            return Ok(());
        }
        let usage = self.snapshot().usage();
        if usage.values().all(|&b| b == 0) && !self.usage_path().exists() {
            return Ok(());
        }
        let text = format!(
            "# Bytes used per user, kept across restarts for quotas. Written by samizdat serve.\n{}",
            toml::to_string(&usage).map_err(std::io::Error::other)?
        );
        let path = self.usage_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::state::replace_private(&path, text.as_bytes())
    }
}
