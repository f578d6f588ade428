//! `peerpipe receive CODE -o - --json` is refused before the code is used
//! (both would write to stdout): the same code then still works.

mod common;

use std::time::Duration;

use common::{ServeProcess, TempDir, receive, receive_command, spawn_send, wait_bounded};

#[test]
fn json_with_stdout_is_refused_and_the_code_survives() {
    let dir = TempDir::new("recv-stdout-json");
    let server = ServeProcess::start(&dir.0);
    let source = dir.path("f.bin");
    std::fs::write(&source, vec![3u8; 40_000]).unwrap();
    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);

    let refused = receive_command(
        &server,
        &dir.path("receiver"),
        &sender.code,
        std::path::Path::new("-"),
        &["--json"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(refused.stdout.is_empty(), "{err}");
    assert!(err.contains("-o - writes the file to stdout"), "{err}");
    assert!(err.contains("the code is not used up"), "{err}");

    let out = dir.path("inbox");
    let received = receive(&server, &dir.path("receiver"), &sender.code, &out, &[]);
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), vec![3u8; 40_000]);
    assert!(wait_bounded(&mut sender.child, Duration::from_secs(30)).success());
}
