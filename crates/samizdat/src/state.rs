//! The state directory: what `samizdat serve` generates once and must keep
//! across restarts (today: the zero-config secret).

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

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// The generated key, hex.
    key: String,
}

/// Loads the generated key from `dir`, or makes and saves a new one. The
/// file is created readable by its owner only: it holds the proxy's key.
pub fn load_or_create_key(dir: &Path) -> anyhow::Result<(Key, bool)> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let state: StateFile = toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e}; fix or delete the file to generate a new secret",
                    path.display()
                )
            })?;
            let key = Key::from_hex(&state.key)
                .map_err(|e| anyhow::anyhow!("{}: key: {e}", path.display()))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Telethon strips a leading dd/ee byte from any secret, so a key
            // starting with 0xdd or 0xee fails there (1 key in 128): avoid them.
            let mut bytes = [0xddu8; 16];
            while bytes[0] == 0xdd || bytes[0] == 0xee {
                crate::random::fill(&mut bytes);
            }
            let key = Key(bytes);
            let text = format!(
                "# Written by `samizdat serve`. It holds the proxy's secret key: keep it private.\n{}",
                toml::to_string(&StateFile { key: key.to_hex() })?
            );
            write_private(dir, FILE, &text)?;
            Ok((key, true))
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
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
pub fn load_or_create_transport_key(dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = dir.join(TRANSPORT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_transport_key(&text, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            crate::random::fill(&mut key);
            let text = format!(
                "# Written by `samizdat serve`: the private key of the samizdat transport.\n# Keep it private; its public half is in every samizdat:// link.\n{}",
                toml::to_string(&TransportFile {
                    private_key: hex::encode(key)
                })?
            );
            write_private(dir, TRANSPORT_FILE, &text)?;
            Ok(key)
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// The transport key: from `file` when given (it must exist: a fleet's
/// instances share it), else from (or generated into) `dir`.
pub fn transport_key(file: Option<&Path>, dir: &Path) -> anyhow::Result<[u8; 32]> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "transport key {}: {e}; copy transport.toml from a server's state directory there",
                    path.display()
                )
            })?;
            parse_transport_key(&text, path)
        }
        None => load_or_create_transport_key(dir),
    }
}

fn parse_transport_key(text: &str, path: &Path) -> anyhow::Result<[u8; 32]> {
    let file: TransportFile = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; fix it, or delete it to generate a new key (every samizdat:// link then changes)",
            path.display()
        )
    })?;
    hex::decode(file.private_key.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: private_key must be 64 hex characters (a 32-byte X25519 key)",
                path.display()
            )
        })
}

/// Writes `text` to `dir/name` atomically, readable by the owner only,
/// creating `dir` (owner-only) if needed.
fn write_private(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create state directory {}: {e}; pass --state-dir DIR",
            dir.display()
        )
    })?;
    #[cfg(unix)]
    if !existed {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let tmp = dir.join(format!("{name}.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}
