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
