//! An IP address where a TLS server name belongs (`serve --domain`, a
//! link's `sni=`) is refused at start with an error that says a domain name
//! is needed. It used to pass validation and panic in the hello builder.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_samizdat")
}

/// Runs the binary and waits at most 30 s for it to exit (it must refuse
/// to start, not serve).
fn run(args: &[&str], state: &std::path::Path) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("SAMIZDAT_STATE_DIR", state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("samizdat {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn serve_refuses_an_ip_domain() {
    let state = tempfile::tempdir().unwrap();
    for ip in ["10.0.0.1", "127.0.0.1"] {
        let out = run(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--domain",
                ip,
                "--secret",
                "dd3f9a1c7e52b84d06e1a7c3952f8b0d4e",
            ],
            state.path(),
        );
        let err = refused(&out);
        assert!(err.contains(ip), "{err}");
        assert!(err.contains("a domain name is needed"), "{err}");
    }
}

#[test]
fn the_client_refuses_a_link_with_an_ip_sni() {
    let state = tempfile::tempdir().unwrap();
    let link = "samizdat://BwcHBwcHBwcHBwcHBwcHBw@127.0.0.1:9?pk=CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk&sni=10.0.0.1";
    let out = run(
        &[
            "client",
            link,
            "--socks",
            "127.0.0.1:0",
            "--http",
            "off",
            "--telegram",
            "off",
        ],
        state.path(),
    );
    let err = refused(&out);
    assert!(err.contains("sni= is an IP address"), "{err}");
    assert!(err.contains("domain name"), "{err}");
    // The same link with a domain name gets past the link check (it then
    // fails to reach 127.0.0.1:9 or keeps running; either way, no link
    // error).
    let good = link.replace("sni=10.0.0.1", "sni=www.example.com");
    let mut child = Command::new(bin())
        .args(["client", &good, "--socks", "127.0.0.1:0"])
        .args(["--http", "off", "--telegram", "off"])
        .env("SAMIZDAT_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("sni="), "{err}");
}
