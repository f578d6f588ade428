//! A wrong code fails cleanly on both sides: `peerpipe receive` with the right
//! number but wrong words exits non-zero saying the codes do not match, the
//! waiting `peerpipe send` does too, nothing is written, and the code is used up.

mod common;

use std::fs;
use std::time::Duration;

use common::{ServeProcess, TempDir, receive, spawn_send, stderr_of, wait_bounded};

#[test]
fn a_wrong_guess_fails_both_sides_and_burns_the_code() {
    let dir = TempDir::new("wrong-code");
    let server = ServeProcess::start(&dir.0);
    let file = dir.path("secret.txt");
    fs::write(&file, b"not for guessers").unwrap();
    let mut sender = spawn_send(&server, &dir.path("a"), &[&file]);
    let code = sender.code.clone();
    let (number, words) = code.split_once('-').unwrap();
    let guess = if words == "amber-falcon" {
        format!("{number}-falcon-amber")
    } else {
        format!("{number}-amber-falcon")
    };
    let out = dir.path("out");

    let wrong = receive(&server, &dir.path("b"), &guess, &out, &[]);
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(stderr.contains("codes do not match"), "receiver: {stderr}");
    let status = wait_bounded(&mut sender.child, Duration::from_secs(20));
    let sender_err = stderr_of(&mut sender.child);
    assert!(!status.success(), "the sender gave up");
    assert!(
        sender_err.contains("codes do not match"),
        "sender: {sender_err}"
    );
    assert!(!out.join("secret.txt").exists(), "nothing was written");

    let late = receive(&server, &dir.path("c"), &code, &out, &[]);
    let stderr = String::from_utf8_lossy(&late.stderr);
    assert!(!late.status.success());
    assert!(
        stderr.contains("no such code"),
        "the code is used up: {stderr}"
    );
}
