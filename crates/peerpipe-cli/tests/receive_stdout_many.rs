//! `peerpipe receive CODE -o -` offered several files declines: the receiver
//! says to receive into a directory, the sender is told why, nothing is
//! written.

mod common;

use std::time::Duration;

use common::{ServeProcess, TempDir, receive_command, spawn_send, stderr_of, wait_bounded};

#[test]
fn several_files_are_declined_for_stdout() {
    let dir = TempDir::new("recv-stdout-many");
    let server = ServeProcess::start(&dir.0);
    let (a, b) = (dir.path("a.txt"), dir.path("b.txt"));
    std::fs::write(&a, b"first\n").unwrap();
    std::fs::write(&b, b"second\n").unwrap();
    let mut sender = spawn_send(&server, &dir.path("sender"), &[&a, &b]);
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
    assert!(!received.status.success(), "{err}");
    assert!(received.stdout.is_empty(), "nothing on stdout: {err}");
    assert!(
        err.contains("the sender offers 2 files; -o - writes exactly one file"),
        "{err}"
    );
    assert!(err.contains("-o DIR"), "{err}");
    assert!(std::fs::read_dir(&cwd).unwrap().next().is_none());

    let status = wait_bounded(&mut sender.child, Duration::from_secs(30));
    let sender_err = stderr_of(&mut sender.child);
    assert!(!status.success(), "{sender_err}");
    assert!(
        sender_err.contains(
            "the receiver takes one file only (to its standard output) and was offered 2 files"
        ),
        "{sender_err}"
    );
}
