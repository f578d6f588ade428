//! A sender killed mid-transfer: the receiver ends with an error that says the
//! sender is gone and how to resume, keeps what arrived verified, and a second
//! receive with a new code fetches only the rest.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ServeProcess, TempDir, receive, same_bytes, spawn_send, wait_bounded};

#[test]
fn a_killed_sender_leaves_a_resume_hint_and_the_resume_fetches_the_rest() {
    let dir = TempDir::new("recv-interrupted");
    // About 2 MB/s through the relay: the transfer outlasts the kill below.
    let server = ServeProcess::start_with(&dir.0, &["--relay-rate", "40"]);
    let source = dir.path("big.bin");
    let data: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&source, &data).unwrap();
    let out = dir.path("out");
    let receiver = dir.path("receiver");

    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);
    let code = sender.code.clone();
    let url = server.url.clone();
    let mut receiving = common::KillOnDrop(
        common::bin()
            .args([
                "receive",
                &code,
                "--json",
                "--server",
                &url,
                "--relay-only",
                "--identity",
            ])
            .arg(&receiver)
            .arg("-o")
            .arg(&out)
            .env_remove("PEERPIPE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Kill the sender once the receiver reports a few MiB verified.
    common::wait_json_progress(receiving.stdout.take().unwrap(), 2 << 20);
    sender.child.kill().unwrap();
    let started = Instant::now();
    let status = wait_bounded(&mut receiving, Duration::from_secs(90));
    let err = common::stderr_of(&mut receiving);
    let noticed = started.elapsed();
    assert!(!status.success());
    assert!(err.contains("ask the sender for a new code"), "{err}");
    assert!(err.contains(&format!("-o {}", out.display())), "{err}");
    eprintln!("the receiver noticed the sender was gone after {noticed:.1?}");

    let mut sender = spawn_send(&server, &dir.path("sender"), &[&source]);
    let resumed = receive(&server, &receiver, &sender.code, &out, &[]);
    let text = String::from_utf8_lossy(&resumed.stderr);
    if !resumed.status.success() {
        let _ = sender.child.kill();
        panic!("{text}\nsender: {}", common::stderr_of(&mut sender.child));
    }
    assert!(text.contains("resumed:"), "{text}");
    assert!(same_bytes(&source, &out.join("big.bin")));
    let mut child = sender.child;
    assert!(wait_bounded(&mut child, Duration::from_secs(30)).success());
}
