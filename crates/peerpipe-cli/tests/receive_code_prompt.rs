//! `peerpipe receive` without a code on a terminal asks `Code: ` and takes
//! the typed code; without a terminal it refuses at once, saying to pass the
//! code, before it reaches any server.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{
    ServeProcess, TempDir, bin, in_pty, run_in_pty, same_bytes, spawn_send, wait_bounded,
    wait_timeout,
};

#[test]
fn a_missing_code_is_asked_for_on_a_terminal_only() {
    let dir = TempDir::new("recv-prompt");
    let server = ServeProcess::start(&dir.0);
    let source = dir.path("letter.txt");
    std::fs::write(&source, b"typed, not pasted\n").unwrap();
    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);
    let out = dir.path("inbox");

    let mut receive = bin();
    receive
        .args(["receive", "-y", "--server", &server.url, "--identity"])
        .arg(dir.path("receiver"))
        .arg("-o")
        .arg(&out)
        .env_remove("PEERPIPE_TOKEN");
    let (status, shown) = run_in_pty(
        in_pty(&receive),
        &format!("{}\n", sender.code),
        Duration::from_secs(30),
    );
    let status = status.unwrap_or_else(|| panic!("receive did not exit: {shown}"));
    assert!(status.success(), "{shown}");
    assert!(shown.contains("Code: "), "{shown}");
    assert!(same_bytes(&source, &out.join("letter.txt")));
    assert!(wait_bounded(&mut sender.child, Duration::from_secs(30)).success());

    // No terminal: an error that says what to do, even with no server there.
    let mut child = bin()
        .args([
            "receive",
            "--server",
            "ws://127.0.0.1:9/v1/signal",
            "--identity",
        ])
        .arg(dir.path("receiver"))
        .env_remove("PEERPIPE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("exits at once");
    let err = common::stderr_of(&mut child);
    assert!(!status.success(), "{err}");
    assert!(err.contains("no code given: pass the code"), "{err}");
    assert!(err.contains("peerpipe receive 7-amber-falcon"), "{err}");
    assert!(!err.contains("Code: "), "{err}");
}
