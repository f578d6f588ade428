//! `peerpipe connect ID < file` and `peerpipe listen > file` move bytes like `nc`,
//! through a real `peerpipe serve`.

mod common;

use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::time::Duration;

use common::{ServeProcess, TempDir, bin, device_id, wait_bounded};
use rand::RngCore as _;

#[test]
fn stdin_of_connect_arrives_on_stdout_of_listen() {
    let dir = TempDir::new("pipe");
    let server = ServeProcess::start(&dir.0);
    let token = server.token("alice");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let listener_id = device_id(&b);

    let mut listen = bin()
        .args([
            "listen",
            "--server",
            &server.url,
            "--token",
            &token,
            "--identity",
        ])
        .arg(&b)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = listen.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        stdout.read_to_end(&mut got).unwrap();
        got
    });

    let mut data = vec![0u8; 3 * 1024 * 1024 + 17];
    rand::thread_rng().fill_bytes(&mut data);
    // The listener may still be joining: retry connect while the peer is offline.
    let mut sent = false;
    for _ in 0..50 {
        let mut connect = bin()
            .args([
                "connect",
                &listener_id,
                "--server",
                &server.url,
                "--identity",
            ])
            .arg(&a)
            .env("PEERPIPE_TOKEN", &token)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = connect.stdin.take().unwrap();
        let payload = data.clone();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&payload);
        });
        let status = wait_bounded(&mut connect, Duration::from_secs(60));
        writer.join().unwrap();
        if status.success() {
            sent = true;
            break;
        }
        let mut err = String::new();
        connect
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            err.contains("offline") || err.contains("not found"),
            "connect failed: {err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sent, "connect never succeeded");
    let status = wait_bounded(&mut listen, Duration::from_secs(30));
    assert!(status.success());
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "received bytes differ");
}

#[test]
fn connect_to_a_malformed_id_fails_with_a_clear_error() {
    let out = bin()
        .args(["connect", "not-an-id", "--token", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a device id"), "{err}");
}
