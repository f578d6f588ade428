//! A receiver busy creating 10,000 small files keeps its direct path: the
//! path is never declared silent and rebuilt while it writes (it once was, 5 s
//! after it opened, at the first keepalive), and every file arrives.
//!
//! Loopback; about 10 s in a debug build.

mod common;

use std::fs;
use std::time::Duration;

use common::{ServeProcess, TempDir, receive, spawn_send, wait_bounded};

const FILES: usize = 10_000;

#[test]
fn a_receiver_writing_ten_thousand_files_keeps_its_path() {
    let dir = TempDir::new("busy-receiver");
    let server = ServeProcess::start(&dir.0);
    let tree = dir.path("many");
    for i in 0..FILES {
        let sub = tree.join(format!("d{:02}", i % 100));
        fs::create_dir_all(&sub).unwrap();
        let body: Vec<u8> = (0..4096u32).map(|j| (j as usize * 31 + i) as u8).collect();
        fs::write(sub.join(format!("f{i:05}")), body).unwrap();
    }
    let mut sender = spawn_send(&server, &dir.path("a"), &[&tree]);
    let code = sender.code.clone();
    let out = dir.path("out");
    let receiver = receive(&server, &dir.path("b"), &code, &out, &["-v"]);
    let log = String::from_utf8_lossy(&receiver.stderr);
    assert!(receiver.status.success(), "receive failed:\n{log}");
    assert!(wait_bounded(&mut sender.child, Duration::from_secs(30)).success());
    for needle in ["went silent", "direct attempt attempt=2"] {
        assert!(
            !log.contains(needle),
            "the receiver's path was lost while it wrote ({needle:?}):\n{log}"
        );
    }
    assert!(
        log.contains("path to") || log.contains("sending on the quic path"),
        "no direct path came up:\n{log}"
    );
    let mut count = 0;
    for i in 0..FILES {
        let got = fs::read(
            out.join("many")
                .join(format!("d{:02}", i % 100))
                .join(format!("f{i:05}")),
        )
        .unwrap();
        assert!(
            got.len() == 4096
                && got
                    .iter()
                    .enumerate()
                    .all(|(j, b)| *b == (j * 31 + i) as u8)
        );
        count += 1;
    }
    assert_eq!(count, FILES);
}
