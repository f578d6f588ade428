//! `peerpipe receive` on a terminal shows what is coming and asks; answering
//! no fetches nothing, and both sides exit non-zero: the receiver with a clean
//! message, the sender told that the receiver declined.

mod common;

use std::time::Duration;

use common::{
    ServeProcess, TempDir, in_pty, receive_command, run_in_pty, spawn_send, stderr_of, wait_bounded,
};

#[test]
fn a_declined_receive_fetches_nothing_and_tells_the_sender() {
    let dir = TempDir::new("recv-declined");
    let server = ServeProcess::start(&dir.0);
    let tree = dir.path("photos");
    std::fs::create_dir_all(tree.join("2024")).unwrap();
    std::fs::write(tree.join("2024/beach.jpg"), vec![7u8; 300_000]).unwrap();
    std::fs::write(tree.join("cat.jpg"), vec![8u8; 5_000]).unwrap();
    let note = dir.path("note.txt");
    std::fs::write(&note, b"hello\n").unwrap();
    let mut sender = spawn_send(&server, &dir.path("sender"), &[&tree, &note]);
    let out = dir.path("inbox");

    let receive = receive_command(&server, &dir.path("receiver"), &sender.code, &out, &[]);
    let (status, shown) = run_in_pty(in_pty(&receive), "n\n", Duration::from_secs(30));
    let status = status.unwrap_or_else(|| panic!("receive did not exit: {shown}"));
    assert!(!status.success(), "{shown}");
    assert!(
        shown.contains("the sender offers 3 files, 297.9 KiB in all"),
        "{shown}"
    );
    assert!(shown.contains("photos/ (2 files, 297.9 KiB)"), "{shown}");
    assert!(shown.contains("note.txt (6 B)"), "{shown}");
    assert!(shown.contains("Accept? [y/N]"), "{shown}");
    assert!(
        shown.contains("error: declined: nothing was received"),
        "{shown}"
    );
    assert!(!shown.contains("resume"), "no resume hint: {shown}");
    assert!(!out.exists(), "nothing written for a declined receive");

    let sent = wait_bounded(&mut sender.child, Duration::from_secs(30));
    let sender_err = stderr_of(&mut sender.child);
    assert!(!sent.success(), "{sender_err}");
    assert!(
        sender_err.contains("the receiver declined the files"),
        "{sender_err}"
    );
}
