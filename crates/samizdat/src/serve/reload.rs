//! Live reload: a new configuration replaces the running one without a
//! restart ([`ServeShared::reload`] says what took effect and what waits for one).

use super::config::{ServeArgs, ServeConfig};
use super::ServeShared;
use std::sync::Arc;

/// Reloads the configuration on SIGHUP and when the config file changes
/// (polled every 2 s, which also catches editors and Kubernetes replacing
/// the file). An invalid new configuration is refused and the old one keeps
/// serving.
pub async fn on_change(args: ServeArgs, shared: Arc<ServeShared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    let stamp = |path: &Option<std::path::PathBuf>| {
        path.as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut seen = stamp(&args.config);
    loop {
        let why = tokio::select! {
            _ = hup.recv() => "SIGHUP",
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {
                let now = stamp(&args.config);
                if now == seen {
                    continue;
                }
                seen = now;
                "the config file changed"
            }
        };
        match ServeConfig::load(&args) {
            Ok((config, _)) => {
                for note in shared.reload(config) {
                    tracing::info!("{why}: {note}");
                }
            }
            Err(e) => tracing::error!("{why}, but the new configuration is refused; still serving the previous one: {e:#}"),
        }
    }
}
