//! A real nginx on 127.0.0.1, configured and run by scripts/nginx-cover.sh.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running nginx; stopped on drop.
pub struct Nginx {
    child: Child,
    /// Its TLS listener.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn script() -> String {
    format!(
        "{}/../../scripts/nginx-cover.sh",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn installed() -> bool {
    Command::new("sh")
        .args(["-c", "command -v nginx || test -x /usr/sbin/nginx"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Nginx {
    /// Starts nginx with `timers` ("default" or "short").
    pub async fn start(timers: &str) -> Nginx {
        assert!(
            installed(),
            "the differential prober needs a real nginx as cover site, and nginx is not \
             installed: apt-get install -y nginx openssl (Debian packages). This test does \
             not skip."
        );
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut child = Command::new("bash")
            .arg(script())
            .arg(dir.path())
            .arg(port.to_string())
            .arg(timers)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run scripts/nginx-cover.sh");
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                panic!("nginx-cover.sh exited with {status} before nginx listened:\n{log}");
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "nginx did not listen on {addr} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Nginx { child, addr, dir }
    }

    /// nginx's error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers.
        if !testkit::process::terminate(&mut self.child, Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
