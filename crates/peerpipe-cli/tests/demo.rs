//! `peerpipe demo` moves a generated file between two embedded devices and says so.

mod common;

use std::time::Duration;

use common::{bin, wait_bounded};

#[test]
fn demo_moves_a_file_byte_identical() {
    let mut child = bin()
        .args(["demo", "--size", "4MiB"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("byte-identical"), "{err}");
    assert!(err.contains("MB/s"), "{err}");
}

#[test]
fn demo_is_silent_with_q_and_writes_no_carriage_returns_to_a_pipe() {
    let quiet = bin()
        .args(["demo", "--size", "1MiB", "-q"])
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let piped = bin().args(["demo", "--size", "1MiB"]).output().unwrap();
    assert!(piped.status.success());
    assert!(
        !piped.stderr.contains(&b'\r'),
        "progress rewritten in a pipe"
    );
    assert!(!piped.stderr.contains(&0x1b), "terminal escapes in a pipe");
}
