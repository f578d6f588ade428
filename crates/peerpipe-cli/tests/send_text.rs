//! `peerpipe send --text`: the receiver prints the text on stdout, adds the
//! missing line break, writes nothing into its output directory, and the
//! sender hears that everything arrived; with `--json` the text comes as an
//! event.

mod common;

use std::time::Duration;

use common::{ServeProcess, TempDir, bin, receive, wait_bounded};

#[test]
fn a_text_is_printed_and_nothing_is_written() {
    let dir = TempDir::new("send-text");
    let server = ServeProcess::start(&dir.0);
    let text = "meet at the café at 8\tsharp";
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
    let mut sender = common::Sender::spawn(command);

    let out = dir.path("inbox");
    let received = receive(&server, &dir.path("receiver"), &sender.code, &out, &[]);
    let err = String::from_utf8_lossy(&received.stderr);
    assert!(received.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&received.stdout),
        format!("{text}\n")
    );
    assert!(!out.exists(), "a text touches no directory: {err}");

    let status = wait_bounded(&mut sender.child, Duration::from_secs(30));
    let sender_err = common::stderr_of(&mut sender.child);
    assert!(status.success(), "{sender_err}");
    assert!(sender_err.contains("a text, 28 B"), "{sender_err}");
    assert!(
        sender_err.contains("the receiver verified everything"),
        "{sender_err}"
    );
    assert!(
        sender.rest.next().is_none(),
        "the code is the only stdout line"
    );

    // With --json the text is an event, not a bare line among JSON lines.
    let mut command = bin();
    command
        .args([
            "send",
            "--text",
            "one\ntwo",
            "--server",
            &server.url,
            "--identity",
        ])
        .arg(dir.path("sender"))
        .env_remove("PEERPIPE_TOKEN");
    let mut sender = common::Sender::spawn(command);
    let received = receive(
        &server,
        &dir.path("receiver"),
        &sender.code,
        &out,
        &["--json"],
    );
    assert!(received.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&received.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "text" && e["text"] == "one\ntwo"),
        "{events:?}"
    );
    assert!(wait_bounded(&mut sender.child, Duration::from_secs(30)).success());
    assert!(!out.exists());
}
