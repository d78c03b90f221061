//! The production binary links neither the censor lab nor the test doubles
//! (issue 15): `samizdat lab` runs the separate `samizdat-lab` program.

use std::process::Command;

/// Looks for the mangled names of the lab's and the test kit's functions
/// in the binary under test (a debug build keeps its symbols). The
/// binary that linked the lab for `samizdat lab` had both.
#[test]
fn the_production_binary_links_no_lab_and_no_test_doubles() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_samizdat")).unwrap();
    let has = |needle: &[u8]| bin.windows(needle.len()).any(|w| w == needle);
    for (crate_path, what) in [
        (&b"3lab9scorecard"[..], "the censor lab (lab::scorecard)"),
        (&b"3lab9middlebox"[..], "the censor lab (lab::middlebox)"),
        (&b"7testkit"[..], "the test doubles (testkit)"),
    ] {
        assert!(!has(crate_path), "samizdat links {what}");
    }
}

/// `samizdat lab ARGS` runs `samizdat-lab ARGS` from beside it when it was
/// built (as `scripts/test` does), and otherwise says how to build it.
#[test]
fn samizdat_lab_points_to_the_lab_program() {
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_samizdat"));
    let lab_built = bin.with_file_name("samizdat-lab").is_file();
    let out = Command::new(&bin)
        .args(["lab", "scorecard", "--help"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if lab_built {
        assert!(out.status.success(), "{stderr}");
        assert!(
            stdout.contains("Usage: samizdat-lab scorecard") && stdout.contains("--out"),
            "{stdout}"
        );
    } else {
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("cargo build --release -p samizdat-lab"),
            "{stderr}"
        );
    }
}
