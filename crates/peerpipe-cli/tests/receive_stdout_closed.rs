//! `peerpipe receive CODE -o -` whose stdout reader goes away (like `| head
//! -c 10`) stops with "writing to stdout" instead of fetching on, and the
//! sender hears that the receiver ended the transfer.

mod common;

use std::io::Read as _;
use std::process::Stdio;
use std::time::Duration;

use common::{
    KillOnDrop, ServeProcess, TempDir, receive_command, spawn_send, stderr_of, wait_bounded,
};

#[test]
fn a_closed_stdout_ends_the_receive_on_both_sides() {
    let dir = TempDir::new("recv-stdout-closed");
    let server = ServeProcess::start(&dir.0);
    let source = dir.path("big.bin");
    common::files::write_input(&source, 8 << 20, 5).unwrap();
    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);

    let mut receiver = KillOnDrop(
        receive_command(
            &server,
            &dir.path("receiver"),
            &sender.code,
            std::path::Path::new("-"),
            &[],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let mut stdout = receiver.stdout.take().unwrap();
    let mut head = [0u8; 10];
    stdout.read_exact(&mut head).unwrap();
    assert_eq!(head.as_slice(), &std::fs::read(&source).unwrap()[..10]);
    drop(stdout);

    let status = wait_bounded(&mut receiver, Duration::from_secs(30));
    let err = stderr_of(&mut receiver);
    assert!(!status.success(), "{err}");
    assert!(err.contains("writing to stdout"), "{err}");
    assert!(err.contains("Broken pipe"), "{err}");

    let status = wait_bounded(&mut sender.child, Duration::from_secs(30));
    let sender_err = stderr_of(&mut sender.child);
    assert!(!status.success(), "{sender_err}");
    assert!(
        sender_err.contains("the receiver ended the transfer"),
        "{sender_err}"
    );
}
