//! The state directory: what `samizdat serve` generates once and must keep
//! across restarts (today: the zero-config secret).

use crate::sync::Locked;
use std::io::Write;
use std::path::{Path, PathBuf};
use wire::secret::Key;

/// The state file inside the state directory.
pub const FILE: &str = "state.toml";

/// Where state lives unless `--state-dir` says otherwise:
/// `$SAMIZDAT_STATE_DIR`, else `/var/lib/samizdat` for root, else
/// `$XDG_STATE_HOME/samizdat` or `~/.local/state/samizdat`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SAMIZDAT_STATE_DIR") {
        return PathBuf::from(dir);
    }
    // SAFETY-free check for root: the effective uid through /proc.
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/samizdat");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(x).join("samizdat");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".local/state/samizdat")
}

/// A state file that could not be read, written or understood. Each names
/// the file and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading a state file failed (other than its absence).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing one failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state directory could not be made.
    #[error("cannot create state directory {}: {source}; pass --state-dir DIR", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--transport-key FILE` (shared by a fleet's instances) is missing or
    /// unreadable: it is never generated in its place.
    #[error("transport key {}: {source}; copy transport.toml from a server's state directory there", path.display())]
    TransportKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is there but its content is not what it must be.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl StateError {
    fn invalid(path: &Path, reason: impl Into<String>) -> StateError {
        StateError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// The generated key, hex.
    key: String,
}

/// Loads the generated key from `dir`, or makes and saves a new one. The
/// file is created readable by its owner only: it holds the proxy's key.
pub fn load_or_create_key(dir: &Path) -> Result<(Key, bool), StateError> {
    warn_if_exposed(dir, "state directory");
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            warn_if_exposed(&path, "state file");
            let state: StateFile = toml::from_str(&text).map_err(|e| {
                StateError::invalid(
                    &path,
                    format!("{e}; fix or delete the file to generate a new secret"),
                )
            })?;
            let key = Key::from_hex(&state.key)
                .map_err(|e| StateError::invalid(&path, format!("key: {e}")))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::generate(&mut crate::random::fill);
            let text = format!(
                "# Written by `samizdat serve`. It holds the proxy's secret key: keep it private.\n{}",
                toml::to_string(&StateFile { key: key.to_hex() })
                    .map_err(|e| StateError::invalid(&path, e.to_string()))?
            );
            write_private(dir, FILE, &text)?;
            Ok((key, true))
        }
        Err(e) => Err(StateError::Read { path, source: e }),
    }
}

/// The file holding the server's static X25519 private key for the
/// samizdat transport; its public half is in every `samizdat://` link.
pub const TRANSPORT_FILE: &str = "transport.toml";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransportFile {
    /// The private key, hex.
    private_key: String,
}

/// Loads the transport's static private key from `dir`, or makes and saves
/// a new one (owner-only file). Changing it invalidates every samizdat link.
pub fn load_or_create_transport_key(dir: &Path) -> Result<[u8; 32], StateError> {
    warn_if_exposed(dir, "state directory");
    let path = dir.join(TRANSPORT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            warn_if_exposed(&path, "transport key file");
            parse_transport_key(&text, &path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            crate::random::fill(&mut key);
            let text = format!(
                "# Written by `samizdat serve`: the private key of the samizdat transport.\n# Keep it private; its public half is in every samizdat:// link.\n{}",
                toml::to_string(&TransportFile {
                    private_key: hex::encode(key)
                })
                .map_err(|e| StateError::invalid(&path, e.to_string()))?
            );
            write_private(dir, TRANSPORT_FILE, &text)?;
            Ok(key)
        }
        Err(e) => Err(StateError::Read { path, source: e }),
    }
}

/// The transport key: from `file` when given (it must exist: a fleet's
/// instances share it), else from (or generated into) `dir`.
pub fn transport_key(file: Option<&Path>, dir: &Path) -> Result<[u8; 32], StateError> {
    match file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| StateError::TransportKeyFile {
                    path: path.to_path_buf(),
                    source,
                })?;
            warn_if_exposed(path, "transport key file");
            parse_transport_key(&text, path)
        }
        None => load_or_create_transport_key(dir),
    }
}

fn parse_transport_key(text: &str, path: &Path) -> Result<[u8; 32], StateError> {
    let file: TransportFile = toml::from_str(text).map_err(|e| {
        StateError::invalid(
            path,
            format!("{e}; fix it, or delete it to generate a new key (every samizdat:// link then changes)"),
        )
    })?;
    hex::decode(file.private_key.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            StateError::invalid(
                path,
                "private_key must be 64 hex characters (a 32-byte X25519 key)",
            )
        })
}

/// Writes `text` to `dir/name` atomically, readable by the owner only,
/// creating `dir` (owner-only) if needed.
fn write_private(dir: &Path, name: &str, text: &str) -> Result<(), StateError> {
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| StateError::CreateDir {
        path: dir.to_path_buf(),
        source: e,
    })?;
    #[cfg(unix)]
    if !existed {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let path = dir.join(name);
    replace_private(&path, text.as_bytes()).map_err(|e| StateError::Write { path, source: e })
}

/// Replaces `path` with `bytes` atomically, the new file readable by its
/// owner only (0600). The bytes go to `path` + `.tmp`, created exclusively
/// and without following links, so that a file or symlink planted there
/// (in a shared or attacker-writable directory) can neither redirect the
/// write nor lend the file its mode; a stale one left by a crash is
/// removed first (`unlink` removes a link, never its target). The rename
/// then replaces `path` itself, even if `path` is a symlink.
pub fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let open = || {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        opts.open(&tmp)
    };
    let mut f = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            // Planted again in between: give up rather than follow it.
            open()?
        }
        other => other?,
    };
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Warns, once per path and process, when the state directory or a key
/// file can be read (or, for the directory, written) by other users:
/// group or world bits on a directory, anything beyond 0600 on a file.
/// Returns the warning (also logged), for tests.
pub fn warn_if_exposed(path: &Path, what: &str) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::Mutex;
        static WARNED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
        let meta = std::fs::metadata(path).ok()?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            return None;
        }
        let (want, fix) = if meta.is_dir() {
            ("0700", format!("chmod 700 {}", path.display()))
        } else {
            ("0600", format!("chmod 600 {}", path.display()))
        };
        let text =
            format!(
            "{what} {} has mode {mode:04o}: other users on this machine can {} it, and it holds \
             the proxy's keys; make it {want} ({fix})",
            path.display(),
            if meta.is_dir() { "read or change what is in" } else { "read" }
        );
        let mut warned = WARNED.locked();
        if !warned.iter().any(|p| p == path) {
            warned.push(path.to_path_buf());
            tracing::warn!("{text}");
        }
        Some(text)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, what);
        None
    }
}
