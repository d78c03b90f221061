//! `samizdat serve` with no arguments: generates and keeps a secret, listens
//! on the default port and prints links that work.
//!
//! With no arguments samizdat listens on 0.0.0.0:443 and its cover site is
//! a real public domain, so this test runs it in a network namespace of its
//! own that has nothing but loopback: nothing can leave the machine.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("samizdat-test-{}", std::process::id());
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        assert!(
            ok(&["netns", "add", &name]),
            "this test needs root and iproute2 (`ip netns add`) to make an isolated network namespace"
        );
        assert!(ok(&["-n", &name, "link", "set", "lo", "up"]));
        Netns(name)
    }

    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn testkit_bin() -> PathBuf {
    let p = PathBuf::from(common::bin()).with_file_name("samizdat-testkit");
    assert!(p.exists(), "{} is missing: build it with `cargo build -p samizdat-testkit` (cargo test --workspace does)", p.display());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_arguments_prints_working_links_and_keeps_the_secret() {
    let ns = Netns::new();
    let state = tempfile::tempdir().unwrap();
    let run = || {
        common::serve()
            .wrap([
                "ip".to_string(),
                "netns".into(),
                "exec".into(),
                ns.0.clone(),
                "env".into(),
                format!("SAMIZDAT_STATE_DIR={}", state.path().display()),
            ])
            .listen(None)
            .no_state_dir()
            .spawn()
    };
    let server = run().await.unwrap();
    let (addr, lines) = (server.addr, server.stdout.clone());
    assert_eq!(addr.port(), 443, "the default port: {lines:?}");
    let link = lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("tg://proxy?"))
        .expect("a tg:// link")
        .to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.trim().starts_with("https://t.me/proxy?")),
        "{lines:?}"
    );
    assert!(link.contains("secret=ee"), "the default form is ee: {link}");
    assert!(
        lines.iter().any(|l| l.contains("generated a new secret")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("note:") && l.contains("--public-host")),
        "a hint about the link host: {lines:?}"
    );
    let probe = ns
        .exec()
        .arg(testkit_bin())
        .args(["probe-link", &link])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "the printed link does not work: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    drop(server);

    // A restart keeps the secret, so links already shared keep working.
    let server = run().await.unwrap();
    let lines = server.stdout.clone();
    let again = lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("tg://proxy?"))
        .unwrap();
    assert_eq!(again, link);
    assert!(
        lines.iter().any(|l| l.contains("using the secret saved")),
        "{lines:?}"
    );
    drop(server);
    let mode = std::fs::metadata(state.path().join("state.toml")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        mode.permissions().mode() & 0o077,
        0,
        "the state file holds the key: owner-only"
    );
}
