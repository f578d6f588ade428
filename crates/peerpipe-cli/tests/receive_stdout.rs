//! `peerpipe receive CODE -o -` writes the one offered file to stdout,
//! verified, byte for byte; nothing lands in the working directory.

mod common;

use std::time::Duration;

use common::{ServeProcess, TempDir, receive_command, spawn_send, wait_bounded};

#[test]
fn one_file_streams_to_stdout() {
    let dir = TempDir::new("recv-stdout");
    let server = ServeProcess::start(&dir.0);
    let source = dir.path("backup.tar");
    // Several 1 MiB pieces and an odd tail.
    common::files::write_input(&source, 5 * 1024 * 1024 + 4321, 11).unwrap();
    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);
    let cwd = dir.path("cwd");
    std::fs::create_dir_all(&cwd).unwrap();

    let received = receive_command(
        &server,
        &dir.path("receiver"),
        &sender.code,
        std::path::Path::new("-"),
        &[],
    )
    .current_dir(&cwd)
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&received.stderr);
    assert!(received.status.success(), "{err}");
    assert!(
        received.stdout == std::fs::read(&source).unwrap(),
        "stdout is the file ({} bytes): {err}",
        received.stdout.len()
    );
    assert!(err.contains("received 5.0 MiB to stdout"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
    assert!(left.is_empty(), "nothing written: {left:?}");

    let status = wait_bounded(&mut sender.child, Duration::from_secs(30));
    let sender_err = common::stderr_of(&mut sender.child);
    assert!(status.success(), "{sender_err}");
    assert!(
        sender_err.contains("the receiver verified everything"),
        "{sender_err}"
    );
}
