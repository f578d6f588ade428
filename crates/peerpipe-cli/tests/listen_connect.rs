//! `peerpipe connect ID < file` and `peerpipe listen > file` move bytes like `nc`,
//! through a real `peerpipe serve`.

mod common;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use common::{
    ServeProcess, TempDir, bin, device_id, spawn_connect, spawn_listen, wait_bounded, wait_online,
};
use rand::RngCore as _;

#[test]
fn stdin_of_connect_arrives_on_stdout_of_listen() {
    let dir = TempDir::new("pipe");
    let server = ServeProcess::start(&dir.0);
    let token = server.token("alice");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let listener_id = device_id(&b);

    let mut listen = spawn_listen(&server, &token, &b);
    let mut stdout = listen.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        stdout.read_to_end(&mut got).unwrap();
        got
    });

    let mut data = vec![0u8; 3 * 1024 * 1024 + 17];
    rand::thread_rng().fill_bytes(&mut data);
    wait_online(&server, &token, &a, &listener_id);
    let mut connect = spawn_connect(&server, &token, &a, &listener_id);
    let mut stdin = connect.stdin.take().unwrap();
    let payload = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&payload));
    assert!(wait_bounded(&mut connect, Duration::from_secs(60)).success());
    writer.join().unwrap().unwrap();
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
