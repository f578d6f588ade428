//! Ctrl-C (SIGINT) in `receive` mid-transfer stops it as a failure would: it
//! says what stays and how to resume, and the sender hears at once that the
//! receiver was interrupted (before, the receiver just died and the sender
//! waited out the 30 s idle time-out, saying "nothing heard from the peer").

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{ServeProcess, TempDir, receive_command, spawn_send, wait_bounded};

#[test]
fn ctrl_c_in_receive_tells_the_sender_and_says_how_to_resume() {
    let dir = TempDir::new("recv-ctrl-c");
    // About 2 MB/s through the relay: the transfer outlasts the signal below.
    let server = ServeProcess::start_with(&dir.0, &["--relay-rate", "40"]);
    let source = dir.path("big.bin");
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&source, &data).unwrap();
    let out = dir.path("out");

    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);
    let mut receiving = common::KillOnDrop(
        receive_command(
            &server,
            &dir.path("receiver"),
            &sender.code,
            &out,
            &["--json", "--relay-only"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    common::wait_json_progress(receiving.stdout.take().unwrap(), 1 << 20);
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &receiving.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());

    let status = wait_bounded(&mut receiving, Duration::from_secs(20));
    let err = common::stderr_of(&mut receiving);
    assert!(!status.success(), "an interrupted receive fails");
    assert!(
        err.contains("interrupted; what arrived verified stays in")
            && err.contains(&format!("-o {}", out.display())),
        "{err}"
    );
    // Well inside the 30 s idle time-out the sender used to wait for.
    let sent = wait_bounded(&mut sender.child, Duration::from_secs(15));
    let sender_err = common::stderr_of(&mut sender.child);
    assert!(!sent.success(), "the send fails: {sender_err}");
    assert!(
        sender_err.contains("the receiver stopped: interrupted (Ctrl-C)"),
        "{sender_err}"
    );
}
