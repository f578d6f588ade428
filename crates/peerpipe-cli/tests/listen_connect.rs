//! `peerpipe connect ID < file` and `peerpipe listen > file` move bytes like `nc`,
//! through a real `peerpipe serve`.

mod common;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use common::{
    ServeProcess, TempDir, device_id, spawn_connect, spawn_listen, wait_bounded, wait_online,
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
fn connect_to_an_unknown_name_fails_with_what_is_online() {
    let dir = TempDir::new("unknown-name");
    let server = ServeProcess::start(&dir.0);
    let token = server.token("alice");
    let out = common::client("connect", &["not-an-id"], &server, &token, &dir.path("a"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a device id"), "{err}");
    assert!(err.contains("online: none"), "{err}");
}

#[test]
fn connect_takes_the_short_id_or_the_label() {
    let dir = TempDir::new("short-id");
    let server = ServeProcess::start(&dir.0);
    let token = server.token("alice");
    let key = dir.path("b.key");
    let id = device_id(&key);
    for (round, name) in [id[..10].to_string(), "the-listener".to_string()]
        .into_iter()
        .enumerate()
    {
        let mut listen = common::client(
            "listen",
            &["-q", "--label", "the-listener"],
            &server,
            &token,
            &key,
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        wait_online(&server, &token, &dir.path("a.key"), &id);
        let mut connect = spawn_connect(&server, &token, &dir.path("a.key"), &name);
        let mut stdin = connect.stdin.take().unwrap();
        stdin
            .write_all(format!("round {round}\n").as_bytes())
            .unwrap();
        drop(stdin);
        assert!(
            wait_bounded(&mut connect, Duration::from_secs(30)).success(),
            "connect {name}"
        );
        assert!(wait_bounded(&mut listen, Duration::from_secs(30)).success());
        let mut got = String::new();
        listen
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, format!("round {round}\n"));
    }
}
