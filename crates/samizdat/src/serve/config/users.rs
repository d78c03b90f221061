//! The users of `samizdat serve`: `[users.NAME]` sections (key and
//! optional limits) and `--secret` flags, each key checked, and the
//! domains their ee secrets name added to the server's.

use super::{
    datetime_to_unix, parse_rate, parse_size, parse_user_secret, redact, valid_user_name,
    ConfigError, FileConfig, Item, Loaded, Origin, ServeArgs, UserEntry, UserLimits,
};
use wire::secret::Secret;

/// The users from the file, then those of `--secret` (named `default`,
/// `userN` or, beside a file's, `cliN`).
pub(super) fn users(
    args: &ServeArgs,
    file: &FileConfig,
    loaded: Option<&Loaded>,
    domains: &mut Vec<String>,
) -> Result<Vec<UserEntry>, ConfigError> {
    let mut users: Vec<UserEntry> = Vec::new();
    let from_file = if loaded.is_some() {
        file.users.len()
    } else {
        0
    };
    let mut add_user =
        |name: String, secret: Secret, limits: UserLimits, domains: &mut Vec<String>| {
            let own: Vec<String> = secret
                .domain
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect();
            for d in &own {
                if !domains.contains(d) {
                    domains.push(d.clone());
                }
            }
            users.push(UserEntry {
                name,
                key: secret.key,
                domains: own,
                limits,
            });
        };
    if let Some(l) = loaded {
        let from = Origin::File {
            path: &l.path,
            text: &l.text,
        };
        for (name, user) in &file.users {
            let key = format!("users.{name}.secret");
            let item = Item {
                value: (),
                from,
                key: key.clone(),
                span: Some(user.secret.span()),
            };
            if !valid_user_name(name) {
                return Err(item.fail(
                    "",
                    format!("user name {name:?}: use 1-64 letters, digits, '-', '_', '.' or '@'"),
                ));
            }
            let secret =
                parse_user_secret(name, user.secret.get_ref()).map_err(|e| item.fail("", e))?;
            let at = |key: &str, span: std::ops::Range<usize>| Item {
                value: (),
                from,
                key: format!("users.{name}.{key}"),
                span: Some(span),
            };
            let mut limits = UserLimits::default();
            if let Some(v) = &user.max_connections {
                if *v.get_ref() == 0 {
                    return Err(at("max_connections", v.span())
                        .fail("", "must be at least 1 (remove the user to refuse them)"));
                }
                limits.max_connections = Some(*v.get_ref());
            }
            if let Some(v) = &user.max_ips {
                if *v.get_ref() == 0 {
                    return Err(at("max_ips", v.span()).fail("", "must be at least 1"));
                }
                limits.max_ips = Some(*v.get_ref());
            }
            if let Some(v) = &user.quota {
                limits.quota =
                    Some(parse_size(v.get_ref()).map_err(|e| at("quota", v.span()).fail("", e))?);
            }
            if let Some(v) = &user.bandwidth {
                limits.bandwidth = Some(
                    parse_rate(v.get_ref()).map_err(|e| at("bandwidth", v.span()).fail("", e))?,
                );
            }
            if let Some(v) = &user.expires {
                limits.expires = Some(
                    datetime_to_unix(v.get_ref())
                        .map_err(|e| at("expires", v.span()).fail("", e))?,
                );
            }
            add_user(name.clone(), secret, limits, domains);
        }
    }
    for (i, text) in args.secret.iter().enumerate() {
        let item = Item {
            value: (),
            from: Origin::Flag("--secret"),
            key: String::new(),
            span: None,
        };
        let name = match (from_file, args.secret.len()) {
            (0, 1) => "default".to_string(),
            (0, _) => format!("user{}", i + 1),
            _ => format!("cli{}", i + 1),
        };
        let secret = parse_user_secret(&name, text).map_err(|e| item.fail(&redact(text), e))?;
        add_user(name, secret, UserLimits::default(), domains);
    }
    Ok(users)
}
