//! `connect -v` reports the move to the QUIC path; with `--no-quic` on the
//! listener it reports the WebRTC path instead; with `--relay-only` the transfer
//! completes on the relay and no direct path is reported.

mod common;

use std::io::{Read as _, Write as _};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{ServeProcess, TempDir, client, device_id, wait_bounded, wait_online};

/// Runs listen (with `listen_flags`) and `connect -v` moving `len` bytes;
/// returns connect's stderr after checking the bytes arrived.
fn transfer(listen_flags: &[&str], len: usize) -> String {
    let dir = TempDir::new("paths");
    let server = ServeProcess::start(&dir.0);
    let token = server.token("alice");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let listener_id = device_id(&b);
    let mut args = vec!["-q"];
    args.extend_from_slice(listen_flags);
    let mut listen: Child = client("listen", &args, &server, &token, &b)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = listen.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        stdout.read_to_end(&mut got).unwrap();
        got
    });
    wait_online(&server, &token, &a, &listener_id);
    let data: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
    let mut connect = client("connect", &["-v", &listener_id], &server, &token, &a)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = connect.stdin.take().unwrap();
    let mut stderr = connect.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let payload = data.clone();
    let writer = std::thread::spawn(move || {
        // Give the direct path time to open before the stream ends.
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(&payload)
    });
    let status = wait_bounded(&mut connect, Duration::from_secs(60));
    let err = err_reader.join().unwrap();
    assert!(status.success(), "{err}");
    writer.join().unwrap().unwrap();
    assert!(wait_bounded(&mut listen, Duration::from_secs(30)).success());
    let got = reader.join().unwrap();
    assert!(got == data, "received bytes differ");
    err
}

#[test]
fn connect_v_reports_the_quic_path() {
    let err = transfer(&[], 4 * 1024 * 1024);
    assert!(err.contains(": quic (rtt"), "{err}");
}

#[test]
fn no_quic_on_one_side_gives_the_webrtc_path() {
    let err = transfer(&["--no-quic"], 4 * 1024 * 1024);
    assert!(err.contains(": direct (rtt"), "{err}");
    assert!(!err.contains(": quic (rtt"), "{err}");
}

#[test]
fn relay_only_keeps_the_transfer_on_the_relay() {
    let err = transfer(&["--relay-only"], 4 * 1024 * 1024);
    assert!(!err.contains(": direct (rtt"), "{err}");
    assert!(!err.contains(": quic (rtt"), "{err}");
    assert!(err.contains("sent 4194304 bytes"), "{err}");
}
