//! Replays the fuzz corpus kept in `fuzz/corpus/` (seeds from the vectors
//! plus what the fuzzer found) through the same entry points the fuzz
//! targets use, so every run of the test suite re-checks them.

use std::path::Path;

/// A fuzz target's name and entry point.
type Target = (&'static str, fn(&[u8]));

#[test]
fn corpus_replays_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let targets: [Target; 13] = [
        ("client_hello", wire::fuzzing::client_hello),
        ("obfuscated2_init", wire::fuzzing::obfuscated2_init),
        ("framing", wire::fuzzing::framing),
        ("records", wire::fuzzing::records),
        ("classify", wire::fuzzing::classify),
        ("secret", wire::fuzzing::secret),
        ("browser_hello", wire::fuzzing::browser_hello),
        ("proxy_requests", wire::fuzzing::proxy_requests),
        ("tunnel_frames", wire::fuzzing::tunnel_frames),
        ("tunnel_accept", wire::fuzzing::tunnel_accept),
        ("server_list", wire::fuzzing::server_list),
        ("tunnel_lanes", wire::fuzzing::tunnel_lanes),
        ("http1", wire::fuzzing::http1),
    ];
    for (name, run) in targets {
        let dir = root.join(name);
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!entries.is_empty(), "{name}: empty corpus");
        for path in entries {
            run(&std::fs::read(&path).unwrap());
        }
    }
}
