//! With no server running, a client command fails at once and says what to check.

mod common;

use common::bin;

#[test]
fn send_without_a_server_names_the_url_and_what_to_check() {
    // Bind then drop a listener: nothing listens on that port now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = std::env::temp_dir().join(format!("pp-no-server-{port}.txt"));
    std::fs::write(&file, b"hello").unwrap();
    let out = bin()
        .arg("send")
        .arg(&file)
        .args(["--server", &format!("127.0.0.1:{port}"), "--timeout", "5s"])
        .env_remove("PEERPIPE_TOKEN")
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no code is printed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("ws://127.0.0.1:{port}/v1/signal")),
        "{err}"
    );
    assert!(err.contains("is `peerpipe serve` running there?"), "{err}");
}
