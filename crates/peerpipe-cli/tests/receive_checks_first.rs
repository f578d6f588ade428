//! `receive -o FILE` is refused before the code is used: the same code then
//! works with a directory.

mod common;

use std::time::Duration;

use common::{ServeProcess, TempDir, receive, same_bytes, spawn_send, wait_bounded};

#[test]
fn an_out_that_is_a_file_is_refused_without_burning_the_code() {
    let dir = TempDir::new("recv-checks");
    let server = ServeProcess::start(&dir.0);
    let source = dir.path("letter.txt");
    std::fs::write(&source, b"dear receiver\n").unwrap();
    let not_a_dir = dir.path("not-a-dir");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);

    let refused = receive(
        &server,
        &dir.path("receiver"),
        &sender.code,
        &not_a_dir,
        &[],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("is a file, not a directory"), "{err}");

    let out = dir.path("inbox");
    let got = receive(&server, &dir.path("receiver"), &sender.code, &out, &[]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(same_bytes(&source, &out.join("letter.txt")));
    assert!(wait_bounded(&mut sender.child, Duration::from_secs(30)).success());
}
