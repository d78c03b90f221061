//! The config file: the example loads, flags override it, and every
//! documented mistake is refused with a message naming file, line, key and
//! the fix.

use samizdat::serve::config::{ServeArgs, ServeConfig};
use std::path::PathBuf;
use std::time::Duration;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samizdat.example.toml")
}

/// Keys for the example's users, as an operator makes them
/// (`openssl rand -hex 16`).
const ALICE: &str = "c41e07a9d2b86f35e09a7b1c4d2f6e83";
const BOB: &str = "7b2d9e04a61fc853d7e0b2a94c6f1835";

/// The example as an operator uses it: each REPLACE_ME filled in.
fn filled(text: &str) -> String {
    let filled = text
        .replacen("\"REPLACE_ME\"", &format!("\"{ALICE}\""), 1)
        .replacen("\"REPLACE_ME\"", &format!("\"{BOB}\""), 1);
    assert!(
        !filled.contains("\"REPLACE_ME\""),
        "more placeholders than users"
    );
    filled
}

/// [`filled`] example, written into `dir`.
fn filled_example(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("samizdat.toml");
    std::fs::write(&path, filled(&std::fs::read_to_string(example()).unwrap())).unwrap();
    path
}

fn load(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
    ServeConfig::from_args(args, || panic!("users are configured: nothing to generate"))
        .map_err(anyhow::Error::from)
}

#[test]
fn the_example_config_loads_with_its_documented_values() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServeArgs {
        config: Some(filled_example(dir.path())),
        ..Default::default()
    };
    let c = load(&args).unwrap();
    assert_eq!(
        c.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert_eq!(c.users[0].key.to_hex(), ALICE);
    assert_eq!(c.users[1].key.to_hex(), BOB);
    assert_eq!(c.policy.domains, ["www.example.org"]);
    assert_eq!(c.cover.to_string(), "127.0.0.1:8443");
    assert_eq!(c.listen, Some(vec!["0.0.0.0:443".parse().unwrap()]));
    assert_eq!(c.idle_timeout, Duration::from_secs(600));
    assert_eq!(c.public_host.as_deref(), Some("proxy.example.org"));
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/samizdat"));
    assert_eq!(c.max_connections, 20_000);
    assert!(!c.log_client_ips);
    let bob = &c.users[1].limits;
    assert_eq!(bob.max_connections, Some(8));
    assert_eq!(bob.max_ips, Some(2));
    assert_eq!(bob.quota, Some(50 << 30));
    assert_eq!(bob.expires, Some(1_924_905_600));
    assert_eq!(bob.bandwidth, Some(2 << 20));
    assert_eq!(c.users[0].limits, Default::default());
}

#[test]
fn the_websocket_client_header_is_trusted_from_loopback_unless_configured() {
    let base = ServeArgs {
        secret: vec![ALICE.into()],
        ..Default::default()
    };
    let c = load(&base).unwrap();
    let loopback: Vec<ipnet::IpNet> =
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    assert_eq!(c.ws_trusted_proxies, loopback);
    assert_eq!(c.ws_client_header, "X-Real-IP");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samizdat.toml");
    std::fs::write(
        &path,
        "[server]\nws_trusted_proxies = [\"198.51.100.0/24\", \"2001:db8::1\"]\nws_client_header = \"CF-Connecting-IP\"\n",
    )
    .unwrap();
    let file = ServeArgs {
        config: Some(path),
        ..base.clone()
    };
    let c = load(&file).unwrap();
    let cdn: Vec<ipnet::IpNet> = vec![
        "198.51.100.0/24".parse().unwrap(),
        "2001:db8::1/128".parse().unwrap(),
    ];
    assert_eq!(c.ws_trusted_proxies, cdn);
    assert_eq!(c.ws_client_header, "CF-Connecting-IP");
    // Flags replace the file's list.
    let flags = ServeArgs {
        ws_trusted_proxies: vec!["10.0.0.0/8".into()],
        ..file
    };
    let c = load(&flags).unwrap();
    assert_eq!(
        c.ws_trusted_proxies,
        vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]
    );
}

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServeArgs {
        config: Some(filled_example(dir.path())),
        listen: vec!["127.0.0.1:9999".parse().unwrap()],
        domain: vec!["other.example".into()],
        idle_timeout: Some(Duration::from_secs(5)),
        secret: vec!["f676c5cef2858ccdfd54ff1cc54d92e9".into()],
        ..Default::default()
    };
    let c = load(&args).unwrap();
    assert_eq!(c.listen, Some(vec!["127.0.0.1:9999".parse().unwrap()]));
    assert_eq!(c.policy.domains, ["other.example"]);
    assert_eq!(c.idle_timeout, Duration::from_secs(5));
    assert_eq!(c.users.len(), 3, "a --secret adds a user to the file's");
    assert_eq!(c.users[2].name, "cli1");
}

/// Writes `text` as a config file and returns the error `samizdat serve` prints.
fn error_for(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samizdat.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_samizdat"))
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "accepted:\n{text}");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    err.replace(&path.display().to_string(), "samizdat.toml")
        .trim()
        .to_string()
}

#[test]
fn mistakes_name_file_line_key_and_fix() {
    assert_eq!(
        error_for("[users.alice]\nsecret = \"0123456789abcdef0123456789abcd\"\n"),
        "samizdat: samizdat.toml:2: users.alice.secret: expected 32 hex characters (a 16-byte key), got 30"
    );
    assert_eq!(
        error_for("[server]\nlisen = [\"0.0.0.0:443\"]\n"),
        "samizdat: samizdat.toml:2: unknown field `lisen`, expected one of `listen`, `modes`, `domains`, `cover`, \
         `cover_connect`, `public_host`, `state_dir`, `unknown_sni`, `max_clock_behind`, `max_clock_ahead`, \
         `handshake_timeout`, `idle_timeout`, `connect_timeout`, `drain_timeout`, `max_connections`, \
         `max_unauthenticated_per_ip`, `max_unauthenticated_per_subnet`, `threads`, \
         `log_client_ips`, `metrics`, `tunnel`, `transport_key`, `egress_allow`, `egress_deny_ports`, \
         `log_destinations`, `ws_listen`, `ws_path`, `ws_public`, \
         `ws_trusted_proxies`, `ws_client_header`"
    );
    assert_eq!(
        error_for("[server]\negress_deny_ports = [25, 0]\n"),
        "samizdat: samizdat.toml:2: server.egress_deny_ports: ports are 1 to 65535; write [] to deny none"
    );
    assert_eq!(
        error_for("[server]\negress_allow = [\"10.0.0.0/33\"]\n"),
        "samizdat: samizdat.toml:2: server.egress_allow: expected an address prefix such as 10.1.0.0/16 or fd00::/8, got \"10.0.0.0/33\""
    );
    assert_eq!(
        error_for("[server]\nws_trusted_proxies = [\"proxy\"]\n"),
        "samizdat: samizdat.toml:2: server.ws_trusted_proxies: expected an address prefix such as 10.1.0.0/16 or fd00::/8, got \"proxy\""
    );
    assert_eq!(
        error_for("[server]\nws_client_header = \"X-Real-IP:\"\n"),
        "samizdat: samizdat.toml:2: server.ws_client_header: expected an HTTP header name such as X-Real-IP or CF-Connecting-IP, got \"X-Real-IP:\""
    );
    assert_eq!(
        error_for("[server]\nmetrics = \"localhost\"\n"),
        "samizdat: samizdat.toml:2: server.metrics: expected IP:PORT, e.g. 127.0.0.1:443 or [::1]:443"
    );
    assert_eq!(
        error_for("[server]\nmodes = [\"ee\", \"xx\"]\n"),
        "samizdat: samizdat.toml:2: server.modes: unknown mode \"xx\"; expected plain, dd or ee"
    );
    assert_eq!(
        error_for("[server]\n\nidle_timeout = \"5 parsecs\"\n"),
        "samizdat: samizdat.toml:3: server.idle_timeout: \"5 parsecs\": unknown unit \"parsecs\"; use ms, s, m, h or d"
    );
    assert_eq!(
        error_for("[server]\ncover = \"nonsense\"\n"),
        "samizdat: samizdat.toml:2: server.cover: expected HOST:PORT, e.g. 127.0.0.1:8443"
    );
    assert_eq!(
        error_for("[dc.routes]\n\"two\" = \"127.0.0.1:443\"\n"),
        "samizdat: samizdat.toml:2: dc.routes.\"two\": the DC id must be a number such as 2, -2 or 10002"
    );
    assert_eq!(
        error_for("[users.\"al ice\"]\nsecret = \"f676c5cef2858ccdfd54ff1cc54d92e9\"\n"),
        "samizdat: samizdat.toml:2: users.al ice.secret: user name \"al ice\": use 1-64 letters, digits, '-', '_', '.' or '@'"
    );
    assert_eq!(
        error_for("[users.a]\nsecret = \"f676c5cef2858ccdfd54ff1cc54d92e9\"\n[users.b]\nsecret = \"f676c5cef2858ccdfd54ff1cc54d92e9\"\n"),
        "samizdat: user b: has the same key as another user; give every user a key of their own"
    );
    assert_eq!(
        error_for("[server]\nmax_connections = 0\n"),
        "samizdat: samizdat.toml:2: server.max_connections: must be at least 1"
    );
    let user = |line: &str| {
        format!("[users.alice]\nsecret = \"f676c5cef2858ccdfd54ff1cc54d92e9\"\n{line}\n")
    };
    assert_eq!(
        error_for(&user("quota = \"10 parsecs\"")),
        "samizdat: samizdat.toml:3: users.alice.quota: \"10 parsecs\": unknown unit \"parsecs\"; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
    );
    assert_eq!(
        error_for(&user("bandwidth = \"8M\"")),
        "samizdat: samizdat.toml:3: users.alice.bandwidth: \"8M\" is not a rate; write e.g. 1MiB/s, 500KB/s or 8Mbit/s"
    );
    assert_eq!(
        error_for(&user("max_connections = 0")),
        "samizdat: samizdat.toml:3: users.alice.max_connections: must be at least 1 (remove the user to refuse them)"
    );
    assert_eq!(
        error_for(&user("expires = 12:00:00")),
        "samizdat: samizdat.toml:3: users.alice.expires: expected a date, e.g. 2027-01-31 or 2027-01-31T12:00:00Z"
    );
    assert_eq!(
        error_for(&user("max_ip = 2")),
        "samizdat: samizdat.toml:3: unknown field `max_ip`, expected one of `secret`, `max_connections`, `max_ips`, \
         `quota`, `expires`, `bandwidth`"
    );
    assert_eq!(
        error_for("[server\n"),
        "samizdat: samizdat.toml:1: unclosed table, expected `]`"
    );
}

#[test]
fn a_missing_file_is_named() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_samizdat"))
        .args(["serve", "--config", "/nonexistent/samizdat.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/samizdat.toml: cannot read the config file"),
        "{err}"
    );
}

/// The example's `[fleet]` section, uncommented, in a file of its own.
fn example_with_fleet(dir: &std::path::Path) -> PathBuf {
    let text = filled(&std::fs::read_to_string(example()).unwrap());
    let (head, tail) = text.split_at(text.find("# [fleet]").expect("a [fleet] example"));
    let tail: String = tail
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("fleet.toml");
    std::fs::write(&path, format!("{head}{tail}\n")).unwrap();
    path
}

#[test]
fn the_example_fleet_section_loads_and_keeps_the_password_out_of_debug() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServeArgs {
        config: Some(example_with_fleet(dir.path())),
        ..Default::default()
    };
    let c = load(&args).unwrap();
    let f = c.fleet.expect("fleet configured");
    assert_eq!(f.url, "rediss://:PASSWORD@redis.example.internal:6380/0");
    assert_eq!(f.timeout, Duration::from_millis(100));
    assert_eq!(f.replay_when_down, samizdat::fleet::DownReplay::Closed);
    assert_eq!(f.limits_when_down, samizdat::fleet::DownLimits::Local);
    assert!(f.shared_users);
    assert_eq!(f.instance, "proxy-1");
    assert_eq!(f.prefix, "samizdat");
    assert_eq!(f.lease, Duration::from_secs(30));
    assert!(!format!("{f:?}").contains("PASSWORD"));
    // Without the section: in-process.
    let c = load(&ServeArgs {
        config: Some(filled_example(dir.path())),
        ..Default::default()
    })
    .unwrap();
    assert!(c.fleet.is_none());
}

#[test]
fn fleet_mistakes_name_the_place_and_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    let cases = [
        (
            "redis = \"http://:hunter2@h:1\"",
            "fleet.redis",
            "expected redis://",
        ),
        (
            "redis = \"redis://h:1\"\ntimeout = \"0s\"",
            "fleet.timeout",
            "between 1ms and 5s",
        ),
        (
            "redis = \"redis://h:1\"\nlease = \"1s\"",
            "fleet.lease",
            "at least 3s",
        ),
        (
            "redis = \"redis://h:1\"\ninstance = \"a b\"",
            "fleet.instance",
            "letters",
        ),
        (
            "redis = \"redis://h:1\"\nreplay_when_down = \"maybe\"",
            "",
            "unknown variant",
        ),
    ];
    for (fleet, place, reason) in cases {
        std::fs::write(
            &path,
            format!("[users.a]\nsecret = \"f676c5cef2858ccdfd54ff1cc54d92e9\"\n[fleet]\n{fleet}\n"),
        )
        .unwrap();
        let err = load(&ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(place) && err.contains(reason),
            "{fleet}: {err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    // Settings without a URL: an error, not a silent single server.
    std::fs::write(
        &path,
        "[users.a]\nsecret = \"f676c5cef2858ccdfd54ff1cc54d92e9\"\n[fleet]\ntimeout = \"100ms\"\n",
    )
    .unwrap();
    let err = load(&ServeArgs {
        config: Some(path.clone()),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("s.toml: fleet: [fleet] has settings but no Redis URL"),
        "{err}"
    );
    let err = load(&ServeArgs {
        redis: Some("redis://:hunter2@".into()),
        secret: vec!["f676c5cef2858ccdfd54ff1cc54d92e9".into()],
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("--redis"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/configmap.yaml"),
    )
    .unwrap();
    let start = manifest
        .find("samizdat.toml: |\n")
        .expect("the embedded file")
        + 17;
    let text: String = manifest[start..]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samizdat.toml");
    std::fs::write(&path, text).unwrap();
    // As in the Deployment: the URL comes from SAMIZDAT_REDIS (--redis).
    let c = ServeConfig::from_args(
        &ServeArgs {
            config: Some(path),
            redis: Some("redis://:pw@redis:6379/0".into()),
            ..Default::default()
        },
        || panic!("a fleet with a shared user table generates no user"),
    )
    .unwrap();
    assert!(c.users.is_empty() && !c.generated);
    assert_eq!(c.metrics, Some("0.0.0.0:9090".parse().unwrap()));
    // Every pod shares the transport key from the Secret the Deployment mounts.
    assert_eq!(
        c.transport_key.as_deref(),
        Some(std::path::Path::new(
            "/etc/samizdat-transport/transport.toml"
        ))
    );
    let deployment = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/deployment.yaml"),
    )
    .unwrap();
    assert!(deployment.contains("mountPath: /etc/samizdat-transport"));
    assert!(deployment.contains("secretName: samizdat-transport"));
    let f = c.fleet.unwrap();
    assert!(f.shared_users);
    assert_eq!(f.timeout, Duration::from_millis(100));
}

#[test]
fn egress_deny_ports_and_log_destinations_from_file_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samizdat.toml");
    let with = |text: &str, flags: ServeArgs| {
        std::fs::write(&path, text).unwrap();
        load(&ServeArgs {
            config: Some(path.clone()),
            secret: vec!["5a1f0e9d3c7b2a4e6f8d0c1b3a5e7f9d".into()],
            ..flags
        })
    };
    let c = with("", ServeArgs::default()).unwrap();
    assert_eq!(c.egress_deny_ports, [25, 465, 587], "SMTP by default");
    assert!(!c.log_destinations);
    let c = with(
        "[server]\negress_deny_ports = []\nlog_destinations = true\n",
        ServeArgs::default(),
    )
    .unwrap();
    assert!(c.egress_deny_ports.is_empty());
    assert!(c.log_destinations);
    // The flag wins over the file.
    let flags = ServeArgs {
        egress_deny_ports: Some("25, 2525".into()),
        ..Default::default()
    };
    let c = with("[server]\negress_deny_ports = []\n", flags).unwrap();
    assert_eq!(c.egress_deny_ports, [25, 2525]);
    let flags = ServeArgs {
        egress_deny_ports: Some("none".into()),
        ..Default::default()
    };
    assert!(with("", flags).unwrap().egress_deny_ports.is_empty());
    let flags = ServeArgs {
        egress_deny_ports: Some("25,smtp".into()),
        ..Default::default()
    };
    assert_eq!(
        with("", flags).unwrap_err().to_string(),
        "--egress-deny-ports \"25,smtp\": expected ports 1-65535 separated by commas (e.g. 25,465,587) or \"none\", got \"smtp\""
    );
}

#[test]
fn transport_limits_load_from_file_and_flags() {
    use samizdat::serve::config::TransportLimits;
    // The example documents the defaults.
    let dir = tempfile::tempdir().unwrap();
    let args = ServeArgs {
        config: Some(filled_example(dir.path())),
        ..Default::default()
    };
    assert_eq!(
        load(&args).unwrap().transport_limits,
        TransportLimits::default()
    );
    let d = TransportLimits::default();
    assert_eq!(
        (d.sessions_per_user, d.streams_per_user, d.buffer_per_user),
        (4, 112, 32 << 20)
    );
    // A file sets them; a flag overrides one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[transport_limits]\nsessions_per_user = 2\nstreams_per_user = 10\nbuffer_per_user = \"1MiB\"\nstream_idle_timeout = \"30s\"\nack_deadline = \"5s\"\n\n[users.a]\nsecret = \"5f3a9c0e7b21d4486ac2e91f03b7d655\"\n",
    )
    .unwrap();
    let mut args = ServeArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    args.transport_limits.transport_streams_per_user = Some(20);
    let l = load(&args).unwrap().transport_limits;
    assert_eq!(
        l,
        TransportLimits {
            sessions_per_user: 2,
            streams_per_user: 20,
            buffer_per_user: 1 << 20,
            stream_idle_timeout: Duration::from_secs(30),
            ack_deadline: Duration::from_secs(5),
        }
    );
    // Zero is refused with the place and the fix.
    std::fs::write(
        &path,
        "[transport_limits]\nsessions_per_user = 0\n\n[users.a]\nsecret = \"5f3a9c0e7b21d4486ac2e91f03b7d655\"\n",
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    let e = load(&args).unwrap_err().to_string();
    assert!(
        e.contains("transport_limits.sessions_per_user") && e.contains("at least 1"),
        "{e}"
    );
}

#[test]
fn per_source_caps_follow_max_connections_unless_set() {
    use samizdat::serve::sources::SourceCaps;
    let dir = tempfile::tempdir().unwrap();
    let args = ServeArgs {
        config: Some(filled_example(dir.path())),
        max_connections: Some(20),
        ..Default::default()
    };
    let c = load(&args).unwrap();
    assert_eq!(
        c.source_caps,
        SourceCaps {
            per_ip: 5,
            per_subnet: 10
        }
    );
    let args = ServeArgs {
        max_unauthenticated_per_ip: Some(3),
        max_unauthenticated_per_subnet: Some(7),
        ..args
    };
    let c = load(&args).unwrap();
    assert_eq!(
        c.source_caps,
        SourceCaps {
            per_ip: 3,
            per_subnet: 7
        }
    );
    assert_eq!(
        error_for("[server]\nmax_unauthenticated_per_ip = 0\n"),
        "samizdat: samizdat.toml:2: server.max_unauthenticated_per_ip: must be at least 1"
    );
}

/// Runs `samizdat CMD --config FILE` and returns its exit code and
/// output. A refused config ends it at once; one that is taken would start
/// a server (on a port of the kernel's choice), so it is stopped after 10 s
/// and the code is `None`.
fn run_on(cmd: &str, config: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_samizdat"))
        .arg(cmd)
        .arg("--config")
        .arg(config)
        // `link` needs a fixed port; `serve` must never get one here.
        .args([
            "--listen",
            if cmd == "link" {
                "127.0.0.1:443"
            } else {
                "127.0.0.1:0"
            },
        ])
        .args(["--state-dir"])
        .arg(config.with_extension("state"))
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (code, text)
}

/// The example config, copied and started unedited, is refused by `serve`
/// and `doctor` with the place, the user and how to make a key: its users'
/// keys are placeholders.
#[test]
fn the_unedited_example_is_refused_with_how_to_make_a_key() {
    for cmd in ["serve", "doctor"] {
        let (code, out) = run_on(cmd, &example(), &[]);
        assert_eq!(code, Some(1), "{cmd}: {out}");
        assert!(
            out.contains("samizdat.example.toml:")
                && out.contains("users.alice.secret: user alice: replace \"REPLACE_ME\" with")
                && out.contains("openssl rand -hex 16"),
            "{cmd}: {out}"
        );
    }
}

/// Keys published in samizdat's docs and example config (the example's
/// old keys, the README's) and patterned keys are refused by `serve`,
/// `doctor` and `link`, naming the user and how to make a key; a key from
/// a random generator is taken.
#[test]
fn published_and_patterned_keys_are_refused_and_random_ones_taken() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samizdat.toml");
    let cases = [
        (
            "00112233445566778899aabbccddeeff",
            "published in samizdat's README or example config",
        ),
        ("ffeeddccbbaa99887766554433221100", "published"),
        ("0123456789abcdef0123456789abcdef", "published"),
        (
            "77777777777777777777777777777777",
            "a short pattern repeated",
        ),
        (
            "cafebabecafebabecafebabecafebabe",
            "a short pattern repeated",
        ),
        ("0102030405060708090a0b0c0d0e0f10", "counting up or down"),
        (
            "a11ce000000000000000000000000001",
            "mostly the same few hex digits",
        ),
        (
            "19355391159313595195331939513591",
            "mostly the same few hex digits",
        ),
    ];
    for (key, why) in cases {
        std::fs::write(
            &path,
            format!("[users.alice]\nsecret = \"{BOB}\"\n[users.carol]\nsecret = \"{key}\"\n"),
        )
        .unwrap();
        for cmd in ["serve", "doctor", "link"] {
            let (code, out) = run_on(cmd, &path, &[]);
            assert_eq!(code, Some(1), "{cmd} took {key}: {out}");
            assert!(
                out.contains(&format!(
                    "samizdat.toml:4: users.carol.secret: user carol's key is {why}"
                )) && out.contains("openssl rand -hex 16"),
                "{cmd} {key}: {out}"
            );
            assert!(!out.contains(key), "the key is quoted: {out}");
        }
        // The same key as a full ee secret, and on the command line.
        let ee = format!("ee{key}{}", hex::encode("example.com"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_samizdat"))
            .args(["link", "--listen", "127.0.0.1:443", "--secret", &ee])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--secret {ee} taken");
        assert!(
            err.contains(&format!("user default's key is {why}")),
            "{err}"
        );
        // `users add --key` refuses it before reaching Redis (nothing
        // listens on port 1: the refusal must come first).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_samizdat"))
            .args(["users", "add", "carol", "--key", key])
            .args(["--redis", "redis://127.0.0.1:1/0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("--key: user carol's key is {why}"))
                && err.contains("leave out --key"),
            "{err}"
        );
    }
    // A key from `openssl rand -hex 16` is taken.
    std::fs::write(&path, format!("[users.alice]\nsecret = \"{ALICE}\"\n")).unwrap();
    let (code, out) = run_on("link", &path, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(ALICE), "{out}");
}
