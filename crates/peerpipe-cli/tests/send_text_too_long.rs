//! `peerpipe send --text` longer than 64 KiB is refused before a code is
//! handed out, saying how to send it instead; exactly 64 KiB is taken.

mod common;

use std::time::Duration;

use common::{ServeProcess, TempDir, bin, receive, wait_bounded};

#[test]
fn a_text_over_the_limit_is_refused_before_the_code() {
    let dir = TempDir::new("send-text-long");
    let server = ServeProcess::start(&dir.0);
    let send = |text: &str| {
        let mut command = bin();
        command
            .args([
                "send",
                "--text",
                text,
                "--server",
                &server.url,
                "--identity",
            ])
            .arg(dir.path("sender"))
            .env_remove("PEERPIPE_TOKEN");
        command
    };

    let refused = send(&"x".repeat(64 * 1024 + 1)).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(refused.stdout.is_empty(), "no code: {err}");
    assert!(err.contains("--text takes at most 64.0 KiB"), "{err}");
    assert!(err.contains("peerpipe send -"), "{err}");

    let longest = "y".repeat(64 * 1024);
    let mut sender = common::Sender::spawn(send(&longest));
    let received = receive(
        &server,
        &dir.path("receiver"),
        &sender.code,
        &dir.path("o"),
        &[],
    );
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert_eq!(received.stdout, format!("{longest}\n").into_bytes());
    assert!(wait_bounded(&mut sender.child, Duration::from_secs(30)).success());
}
