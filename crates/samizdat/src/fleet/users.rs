//! The shared user table: its records in Redis, and how an instance merges
//! them into its own users. `samizdat users` (`cli::users`) edits it.
//!
//! Users live in the hash `PREFIX:users` (name → JSON record with the key
//! and limits); every change increments `PREFIX:users:version`, which each
//! instance polls every 2 s and then reads the table again. Users from the
//! config file come first; a shared user with the same name or key as one
//! of them is skipped with a warning.

use super::Fleet;
use crate::serve::config::UserLimits;
use crate::serve::config::{parse_secret, ServeConfig, UserEntry};
use std::time::Duration;

/// How often instances look at the shared table's version.
pub const POLL: Duration = Duration::from_secs(2);

/// One shared user as stored (JSON).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 32 hex digits, or a full `ee…`/`dd…` secret.
    pub secret: String,
    /// Most simultaneous connections, fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Most distinct client addresses at once, fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ips: Option<usize>,
    /// Bytes, both ways, fleet-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
    /// Unix time after which the user is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Bytes per second per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
}

impl Record {
    /// The user this record describes. Errors never quote the secret.
    pub fn to_entry(&self, name: &str) -> Result<UserEntry, String> {
        if !crate::serve::config::valid_user_name(name) {
            return Err("bad user name".into());
        }
        let secret = parse_secret(&self.secret).map_err(|e| format!("secret: {e}"))?;
        if self.max_connections == Some(0) || self.max_ips == Some(0) {
            return Err("limits must be at least 1".into());
        }
        Ok(UserEntry {
            name: name.to_string(),
            key: secret.key,
            domains: secret
                .domain
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            limits: UserLimits {
                max_connections: self.max_connections,
                max_ips: self.max_ips,
                quota: self.quota,
                expires: self.expires,
                bandwidth: self.bandwidth,
            },
        })
    }
}

impl Fleet {
    /// Reads the shared table. Broken records are skipped (logged by name).
    pub async fn shared_users(&self) -> Result<Vec<UserEntry>, super::Down> {
        let mut out = Vec::new();
        for (name, json) in self.user_records().await? {
            match serde_json::from_str::<Record>(&json)
                .map_err(|e| format!("not a user record ({})", e.classify_name()))
                .and_then(|r| r.to_entry(&name))
            {
                Ok(u) => out.push(u),
                Err(e) => tracing::warn!(user = %name, "shared user skipped: {e}"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        }
    }
}

/// Appends the shared users to the file's, skipping clashes.
pub fn merge(config: &mut ServeConfig, shared: &[UserEntry]) {
    if shared.is_empty() {
        return;
    }
    if config.generated {
        // The zero-config user exists only because the file had none.
        config.users.clear();
        config.generated = false;
    }
    for u in shared {
        if config
            .users
            .iter()
            .any(|f| f.name == u.name || f.key == u.key)
        {
            tracing::warn!(
                user = %u.name,
                "shared user skipped: the config file has a user with this name or key"
            );
            continue;
        }
        for d in &u.domains {
            if !config.policy.domains.contains(d) {
                config.policy.domains.push(d.clone());
            }
        }
        config.users.push(u.clone());
    }
}
