//! The config file (`--config`): its sections as serde reads them, and
//! where each value came from (a flag or a file line), so that every error
//! names the place, the key and the fix.

use super::{ConfigError, ServeArgs, TransportLimitsSection, UnknownSni};
use crate::serve::cover::CoverConnect;
use crate::serve::dc::IpPreference;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Where a value came from, for error messages.
#[derive(Clone, Copy)]
pub(super) enum Origin<'a> {
    Flag(&'static str),
    File { path: &'a Path, text: &'a str },
}

impl Origin<'_> {
    /// `place` for a value of this origin. `shown` is the value as it may
    /// appear in the message (already redacted for secrets).
    pub(super) fn place(
        &self,
        key: &str,
        span: Option<std::ops::Range<usize>>,
        shown: &str,
    ) -> String {
        match self {
            Origin::Flag(flag) => format!("{flag} {shown:?}"),
            Origin::File { path, text } => {
                let line = span.map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1);
                match line {
                    Some(line) => format!("{}:{line}: {key}", path.display()),
                    None => format!("{}: {key}", path.display()),
                }
            }
        }
    }
}

/// A value with where it came from.
pub(super) struct Item<'a, T> {
    pub(super) value: T,
    pub(super) from: Origin<'a>,
    pub(super) key: String,
    pub(super) span: Option<std::ops::Range<usize>>,
}

impl<T> Item<'_, T> {
    pub(super) fn fail(&self, shown: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            place: self.from.place(&self.key, self.span.clone(), shown),
            reason: reason.into(),
        }
    }
}

/// The config file's shape. Unknown keys are errors.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) server: ServerSection,
    #[serde(default)]
    pub(super) dc: DcSection,
    #[serde(default)]
    pub(super) users: BTreeMap<String, UserSection>,
    #[serde(default)]
    pub(super) fleet: FleetSection,
    #[serde(default)]
    pub(super) transport_limits: TransportLimitsSection,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FleetSection {
    pub(super) redis: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) replay_when_down: Option<crate::fleet::DownReplay>,
    pub(super) limits_when_down: Option<crate::fleet::DownLimits>,
    pub(super) shared_users: Option<bool>,
    pub(super) instance: Option<Spanned<String>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) lease: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerSection {
    pub(super) listen: Option<Vec<Spanned<String>>>,
    pub(super) modes: Option<Vec<Spanned<String>>>,
    pub(super) domains: Option<Vec<Spanned<String>>>,
    pub(super) cover: Option<Spanned<String>>,
    pub(super) cover_connect: Option<CoverConnect>,
    pub(super) public_host: Option<String>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) unknown_sni: Option<UnknownSni>,
    pub(super) max_clock_behind: Option<Spanned<String>>,
    pub(super) max_clock_ahead: Option<Spanned<String>>,
    pub(super) handshake_timeout: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) drain_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) max_unauthenticated_per_ip: Option<Spanned<usize>>,
    pub(super) max_unauthenticated_per_subnet: Option<Spanned<usize>>,
    pub(super) threads: Option<Spanned<usize>>,
    pub(super) log_client_ips: Option<bool>,
    pub(super) metrics: Option<Spanned<String>>,
    pub(super) tunnel: Option<bool>,
    pub(super) transport_key: Option<PathBuf>,
    pub(super) egress_allow: Option<Vec<Spanned<String>>>,
    pub(super) egress_deny_ports: Option<Spanned<Vec<u16>>>,
    pub(super) log_destinations: Option<bool>,
    pub(super) ws_listen: Option<Spanned<String>>,
    pub(super) ws_path: Option<Spanned<String>>,
    pub(super) ws_public: Option<Spanned<String>>,
    pub(super) ws_trusted_proxies: Option<Vec<Spanned<String>>>,
    pub(super) ws_client_header: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DcSection {
    #[serde(rename = "override")]
    pub(super) override_all: Option<Spanned<String>>,
    pub(super) ip_preference: Option<IpPreference>,
    #[serde(default)]
    pub(super) routes: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserSection {
    pub(super) secret: Spanned<String>,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) max_ips: Option<Spanned<usize>>,
    pub(super) quota: Option<Spanned<String>>,
    pub(super) expires: Option<Spanned<toml::value::Datetime>>,
    pub(super) bandwidth: Option<Spanned<String>>,
}

/// The config file as read, with its text for line numbers.
pub(super) struct Loaded {
    pub(super) path: PathBuf,
    pub(super) text: String,
    pub(super) file: FileConfig,
}

pub(super) fn read_file(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        place: path.display().to_string(),
        reason: format!("cannot read the config file: {e}"),
    })?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().trim_end().to_string();
        let place = match line {
            Some(l) => format!("{}:{l}", path.display()),
            None => path.display().to_string(),
        };
        ConfigError { place, reason: msg }
    })?;
    Ok(Loaded {
        path: path.to_path_buf(),
        text,
        file,
    })
}

/// Flag values if given, else the file's, each with its origin.
pub(super) fn pick<'a, T: Clone>(
    flag: &[T],
    flag_name: &'static str,
    file: Option<&Vec<Spanned<T>>>,
    key: &str,
    loaded: Option<&'a Loaded>,
) -> Vec<Item<'a, T>> {
    if !flag.is_empty() || loaded.is_none() {
        return flag
            .iter()
            .map(|v| Item {
                value: v.clone(),
                from: Origin::Flag(flag_name),
                key: key.to_string(),
                span: None,
            })
            .collect();
    }
    let l = loaded.expect("checked");
    let from = Origin::File {
        path: &l.path,
        text: &l.text,
    };
    file.map(|vs| {
        vs.iter()
            .map(|v| Item {
                value: v.get_ref().clone(),
                from,
                key: key.to_string(),
                span: Some(v.span()),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// A single value: the flag if given, else the file's.
pub(super) fn pick_one<'a, T: Clone>(
    flag: Option<&T>,
    flag_name: &'static str,
    file: Option<&Spanned<T>>,
    key: &str,
    loaded: Option<&'a Loaded>,
) -> Option<Item<'a, T>> {
    if let Some(v) = flag {
        return Some(Item {
            value: v.clone(),
            from: Origin::Flag(flag_name),
            key: key.to_string(),
            span: None,
        });
    }
    let (l, f) = (loaded?, file?);
    Some(Item {
        value: f.get_ref().clone(),
        from: Origin::File {
            path: &l.path,
            text: &l.text,
        },
        key: key.to_string(),
        span: Some(f.span()),
    })
}

pub(super) fn duration_item(
    flag: Option<Duration>,
    flag_name: &'static str,
    file: Option<&Spanned<String>>,
    key: &str,
    loaded: Option<&Loaded>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    if let Some(d) = flag {
        return Ok(d);
    }
    match pick_one(None::<&String>, flag_name, file, key, loaded) {
        Some(item) => crate::duration::parse(&item.value).map_err(|e| item.fail(&item.value, e)),
        None => Ok(default),
    }
}

/// Where values come from: the flags, then the config file (if any).
pub(super) struct Sources<'a> {
    pub(super) args: &'a ServeArgs,
    pub(super) file: &'a FileConfig,
    pub(super) loaded: Option<&'a Loaded>,
}

impl<'a> Sources<'a> {
    pub(super) fn server(&self) -> &'a ServerSection {
        &self.file.server
    }

    /// The flag's value, else the file's, parsed by `parse`; `None` when
    /// neither is given.
    pub(super) fn parsed<F: Clone, T>(
        &self,
        flag: Option<&F>,
        flag_name: &'static str,
        file: Option<&Spanned<F>>,
        key: &str,
        parse: impl Fn(&F) -> Result<T, String>,
        shown: impl Fn(&F) -> String,
    ) -> Result<Option<T>, ConfigError> {
        match pick_one(flag, flag_name, file, key, self.loaded) {
            Some(item) => parse(&item.value)
                .map(Some)
                .map_err(|e| item.fail(&shown(&item.value), e)),
            None => Ok(None),
        }
    }

    /// A text value parsed by `parse` (the value is shown in errors).
    pub(super) fn text<T>(
        &self,
        flag: Option<&String>,
        flag_name: &'static str,
        file: Option<&Spanned<String>>,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.parsed(flag, flag_name, file, key, |v| parse(v), |v| v.clone())
    }

    /// A count that must be at least 1.
    pub(super) fn positive(
        &self,
        flag: Option<&usize>,
        flag_name: &'static str,
        file: Option<&Spanned<usize>>,
        key: &str,
    ) -> Result<Option<usize>, ConfigError> {
        let at_least_one = |&n: &usize| {
            if n == 0 {
                Err("must be at least 1".to_string())
            } else {
                Ok(n)
            }
        };
        self.parsed(flag, flag_name, file, key, at_least_one, |n| n.to_string())
    }

    /// A duration (`10s`), with its default.
    pub(super) fn duration(
        &self,
        flag: Option<Duration>,
        flag_name: &'static str,
        file: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        duration_item(flag, flag_name, file.as_ref(), key, self.loaded, default)
    }

    /// An item of the config file at `key`, for an error about one entry
    /// of a list there.
    pub(super) fn file_item(
        &self,
        l: &'a Loaded,
        key: String,
        span: std::ops::Range<usize>,
    ) -> Item<'a, ()> {
        Item {
            value: (),
            from: Origin::File {
                path: &l.path,
                text: &l.text,
            },
            key,
            span: Some(span),
        }
    }
}

/// An item for an error about a repeated flag's value.
pub(super) fn flag_item(flag: &'static str) -> Item<'static, ()> {
    Item {
        value: (),
        from: Origin::Flag(flag),
        key: String::new(),
        span: None,
    }
}
