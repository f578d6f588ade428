//! `peerpipe receive --yes` on a terminal shows what is coming but does not
//! ask: the files arrive without an answer typed.

mod common;

use std::time::Duration;

use common::{
    ServeProcess, TempDir, in_pty, receive_command, run_in_pty, same_bytes, spawn_send,
    wait_bounded,
};

#[test]
fn yes_accepts_on_a_terminal_without_asking() {
    let dir = TempDir::new("recv-yes");
    let server = ServeProcess::start(&dir.0);
    let source = dir.path("letter.txt");
    std::fs::write(&source, b"dear receiver\n").unwrap();
    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);
    let out = dir.path("inbox");

    let receive = receive_command(&server, &dir.path("receiver"), &sender.code, &out, &["-y"]);
    let (status, shown) = run_in_pty(in_pty(&receive), "", Duration::from_secs(30));
    let status = status.unwrap_or_else(|| panic!("receive did not exit: {shown}"));
    assert!(status.success(), "{shown}");
    assert!(
        shown.contains("the sender offers 1 file, 14 B in all"),
        "{shown}"
    );
    assert!(!shown.contains("Accept?"), "{shown}");
    assert!(same_bytes(&source, &out.join("letter.txt")));
    assert!(wait_bounded(&mut sender.child, Duration::from_secs(30)).success());
}
