//! Instruction counts of fixed workloads under callgrind: a figure that
//! stays put across noisy and different machines (valgrind presents the
//! same CPU features everywhere, AES-NI without VAES).
//!
//! Each workload runs in a fresh process with one runtime thread. The
//! count of a run that only starts and stops is subtracted, so what is
//! left is the cost of the work itself.

use crate::client::{self, Command, Op};
use crate::dc::Dc;
use crate::phases::{self, Dir};
use crate::system::{self, Env, Spec};
use std::path::Path;
use std::time::Duration;

/// A workload.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Start and stop.
    Idle,
    /// `n` sequential handshakes (closed after the DC's ack).
    Handshakes(u64),
    /// One connection moving `n` bytes up, then one moving `n` down.
    Bulk(u64),
}

/// Total instructions (Ir) of `spec` running `load`, or why not.
pub async fn count(env: &Env, dc: &Dc, spec: &Spec, tls: bool, load: Load) -> anyhow::Result<u64> {
    let out = env.scratch.join(format!(
        "callgrind-{}.out",
        std::process::id() as u64 * 1000 + seq()
    ));
    let mut env = env.clone();
    env.threads = Some(1);
    let (cover, _) = crate::dc::cover()?;
    let sys =
        tokio::task::block_in_place(|| system::start(&env, spec, dc.addr, cover, Some(&out)))?;
    let proto = system::proto(spec, tls);
    match load {
        Load::Idle => {}
        Load::Handshakes(n) => {
            for _ in 0..n {
                let c = client::open(sys.addr, &proto, Command::new(Op::Hold)).await?;
                c.reset();
            }
        }
        Load::Bulk(n) => {
            for dir in [Dir::Up, Dir::Down] {
                let w = phases::bulk(&sys, dc, &proto, 1, dir, n).await;
                if w.errors > 0 || w.count < n {
                    anyhow::bail!("bulk under callgrind failed: {w:?}");
                }
            }
        }
    }
    let stopped = tokio::task::block_in_place(|| sys.terminate(Duration::from_secs(60)));
    if !stopped {
        anyhow::bail!("the process under callgrind did not stop");
    }
    let text = std::fs::read_to_string(&out)?;
    let _ = std::fs::remove_file(&out);
    parse_total(&text).ok_or_else(|| anyhow::anyhow!("no totals in {}", out.display()))
}

fn seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The `summary:` (or `totals:`) instruction count of a callgrind file.
fn parse_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Whether valgrind can be run.
pub fn available() -> bool {
    std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Removes leftovers of an interrupted run.
pub fn cleanup(scratch: &Path) {
    if let Ok(dir) = std::fs::read_dir(scratch) {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with("callgrind-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn totals_are_read() {
        let f = "events: Ir\nsummary: 123456\n";
        assert_eq!(super::parse_total(f), Some(123_456));
        assert_eq!(super::parse_total("totals: 7 1\n"), Some(7));
    }
}
