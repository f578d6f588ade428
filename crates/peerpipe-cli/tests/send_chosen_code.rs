//! `peerpipe send --code CODE`: the chosen code is the one printed and the one
//! the receiver uses; a second send with the same number fails at once with a
//! sentence, and a malformed or too-large code is refused before anything runs.

mod common;

use std::time::Duration;

use common::{ServeProcess, TempDir, bin, receive, same_bytes, spawn_send_with, wait_bounded};

#[test]
fn a_chosen_code_is_offered_and_received() {
    let dir = TempDir::new("send-chosen-code");
    let server = ServeProcess::start(&dir.0);
    let file = dir.path("notes.txt");
    std::fs::write(&file, b"agreed on the phone beforehand\n").unwrap();

    let mut sender = spawn_send_with(
        &server,
        &dir.path("sender"),
        &[&file],
        &["--code", "4711-Amber-Falcon"],
    );
    assert_eq!(
        sender.code, "4711-amber-falcon",
        "printed as chosen, words in lower case"
    );

    // The number is taken while the first send waits: a second one says so.
    let second = bin()
        .arg("send")
        .arg(&file)
        .args([
            "--code",
            "4711-falcon-amber",
            "--server",
            &server.url,
            "--identity",
        ])
        .arg(dir.path("second"))
        .env_remove("PEERPIPE_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains("this code's number is in use: choose another code"),
        "{err}"
    );
    assert!(
        second.stdout.is_empty(),
        "no code printed for a failed send"
    );

    let out = dir.path("inbox");
    let received = receive(
        &server,
        &dir.path("receiver"),
        "4711-amber-falcon",
        &out,
        &["--yes"],
    );
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert!(same_bytes(&file, &out.join("notes.txt")));
    let status = wait_bounded(&mut sender.child, Duration::from_secs(30));
    assert!(status.success(), "{}", common::stderr_of(&mut sender.child));
}

#[test]
fn a_malformed_chosen_code_is_refused_at_once() {
    let dir = TempDir::new("send-chosen-code-bad");
    let file = dir.path("f");
    std::fs::write(&file, b"x").unwrap();
    for (code, says) in [
        ("4711-amber", "a code looks like 7-amber-falcon"),
        ("4711-amber-notaword", "is not a code word"),
        (
            "1000000-amber-falcon",
            "the number of a chosen code is 1 to 999999",
        ),
    ] {
        // No server runs: the code is checked before anything else.
        let out = bin()
            .arg("send")
            .arg(&file)
            .args(["--code", code, "--server", "ws://127.0.0.1:9/v1/signal"])
            .env_remove("PEERPIPE_TOKEN")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "a usage error for {code}: {err}"
        );
        assert!(err.contains(says), "{code}: {err}");
    }
}
