//! Several commands with one identity at once: `listen` holds it, `peers` and
//! `connect` run beside it as short-lived devices of the same user, a second
//! `listen` is refused at once with the holder named, and two `send`s get two
//! live codes.

mod common;

use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::time::Duration;

use common::{
    KillOnDrop, ServeProcess, TempDir, client, device_id, receive, run_ok, same_bytes,
    spawn_connect, spawn_send, wait_bounded, wait_online,
};

#[test]
fn peers_and_connect_run_beside_a_listen_of_the_same_identity() {
    let dir = TempDir::new("one-id");
    let server = ServeProcess::start(&dir.0);
    let token = server.token("alice");
    let key = dir.path("key");
    let id = device_id(&key);

    let mut listen = KillOnDrop(
        client("listen", &["-q"], &server, &token, &key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // `peers` with the very identity the listener holds sees the listener...
    wait_online(&server, &token, &key, &id);
    for _ in 0..3 {
        let listed = run_ok(&mut client("peers", &[], &server, &token, &key));
        assert!(listed.lines().any(|l| l.starts_with(&id)), "{listed}");
    }
    // ...and the listener is still there.
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = listen.try_wait().unwrap() {
        panic!(
            "the listener exited ({status}): {}",
            common::stderr_of(&mut listen)
        );
    }

    // A second listener on that identity is refused at once, naming the first.
    let second = client("listen", &["-q"], &server, &token, &key)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by `peerpipe listen` (pid"), "{err}");
    assert!(err.contains("--identity"), "{err}");

    // `connect` with the same identity reaches the listener.
    let mut connect = spawn_connect(&server, &token, &key, &id);
    let mut stdin = connect.stdin.take().unwrap();
    stdin.write_all(b"hello from the same identity\n").unwrap();
    drop(stdin);
    assert!(wait_bounded(&mut connect, Duration::from_secs(30)).success());
    assert!(wait_bounded(&mut listen, Duration::from_secs(30)).success());
    let mut got = String::new();
    listen
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    assert_eq!(got, "hello from the same identity\n");
}

#[test]
fn two_sends_with_one_identity_get_two_live_codes() {
    let dir = TempDir::new("two-sends");
    let server = ServeProcess::start(&dir.0);
    let key = dir.path("key");
    let (a, b) = (dir.path("a.txt"), dir.path("b.txt"));
    std::fs::write(&a, b"first file\n").unwrap();
    std::fs::write(&b, b"second file\n").unwrap();

    let mut first = spawn_send(&server, &key, &[&a]);
    let mut second = spawn_send(&server, &key, &[&b]);
    let number = |code: &str| code.split('-').next().unwrap().to_string();
    assert_ne!(number(&first.code), number(&second.code));

    for (sender, source, out) in [
        (&mut first, &a, dir.path("out-a")),
        (&mut second, &b, dir.path("out-b")),
    ] {
        let got = receive(&server, &dir.path("receiver"), &sender.code, &out, &[]);
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        let name = source.file_name().unwrap();
        assert!(same_bytes(source, &out.join(name)));
        assert!(wait_bounded(&mut sender.child, Duration::from_secs(30)).success());
    }
}
