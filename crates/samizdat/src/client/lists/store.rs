//! The saved list: its path in the state directory, loading, storing
//! (newer serials only) and the endpoints it adds to the link's.

use super::*;

/// Where the list signed by `key` is kept.
pub fn saved_path(state_dir: &Path, key: &[u8; 32]) -> PathBuf {
    state_dir
        .join(DIR)
        .join(format!("{}.list", server_list::key_id(key)))
}

/// The list saved for `key`, its signature checked again (a damaged or
/// foreign file is an error); times are not checked, so an expired list
/// still says which serials are old.
pub fn load_saved(state_dir: &Path, key: &[u8; 32]) -> Result<Option<ServerList>, String> {
    let path = saved_path(state_dir, key);
    let text = match std::fs::read(&path) {
        Ok(bytes) if bytes.len() > MAX_RESPONSE => {
            return Err(format!("{}: too large to be a list", path.display()))
        }
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    server_list::verify_signature(&text, key)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Saves `text` (a verified list) for `key`, owner-only and atomically,
/// unless the list saved already has the same or a higher serial.
pub fn store(
    state_dir: &Path,
    key: &[u8; 32],
    text: &str,
    list: &ServerList,
) -> Result<(), String> {
    if let Ok(Some(have)) = load_saved(state_dir, key) {
        if have.serial >= list.serial {
            return Err(ListError::Stale {
                serial: list.serial,
                have: have.serial,
            }
            .to_string());
        }
    }
    let dir = state_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let path = saved_path(state_dir, key);
    crate::state::replace_private(&path, format!("{}\n", text.trim()).as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The servers to use: the link's, then the list's (without repeats).
/// Endpoints the list gives another server key than the link's are left
/// out: this client speaks to one server key per link.
pub fn servers(link: &Link, saved: Option<&ServerList>) -> Vec<Endpoint> {
    let mut out = link.servers.clone();
    for listed in saved.map(|l| l.endpoints.as_slice()).unwrap_or_default() {
        let same_key = listed.server_key.is_none_or(|k| k == link.server_key);
        if same_key && !out.contains(&listed.endpoint) {
            out.push(listed.endpoint.clone());
        }
    }
    out
}
