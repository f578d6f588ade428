//! `serve --tls-cert/--tls-key` terminates TLS; clients reach it at `wss://`
//! with `--ca-cert` trusting its self-signed certificate, and one that does not
//! trust it is refused with a clear error (nothing goes out in clear).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Sender, ServeProcess, TempDir, bin, same_bytes, wait_bounded};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM.
fn write_certificate(dir: &Path) -> (String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

#[test]
fn send_and_receive_through_a_tls_server() {
    let dir = TempDir::new("tls");
    let (cert, key) = write_certificate(&dir.0);
    let server = ServeProcess::start_with(&dir.0, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(server.url.starts_with("wss://127.0.0.1:"), "{}", server.url);
    let url = format!(
        "wss://localhost:{}",
        server.addr().rsplit(':').next().unwrap()
    );

    let source = dir.path("secret-plans.txt");
    std::fs::write(&source, "sent over wss\n".repeat(1000)).unwrap();
    let mut send = bin();
    send.arg("send")
        .arg(&source)
        .args(["--server", &url, "--ca-cert", &cert])
        .env_remove("PEERPIPE_TOKEN");
    let Sender {
        mut child, code, ..
    } = Sender::spawn(send);

    let out = dir.path("out");
    let received = bin()
        .args(["receive", &code, "--server", &url, "--ca-cert", &cert])
        .arg("-o")
        .arg(&out)
        .env_remove("PEERPIPE_TOKEN")
        .output()
        .unwrap();
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert!(same_bytes(&source, &out.join("secret-plans.txt")));
    assert!(wait_bounded(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn an_untrusted_certificate_is_refused_clearly() {
    let dir = TempDir::new("tls-untrusted");
    let (cert, key) = write_certificate(&dir.0);
    let server = ServeProcess::start_with(&dir.0, &["--tls-cert", &cert, "--tls-key", &key]);
    let token = server.token("alice");
    let out = bin()
        .args(["peers", "--server", &server.url, "--token", &token])
        .args(["--timeout", "5s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains("--ca-cert"), "{err}");
}

#[test]
fn serve_refuses_a_key_that_is_not_pem() {
    let dir = TempDir::new("tls-bad-key");
    let (cert, _) = write_certificate(&dir.0);
    let bad = dir.path("bad.pem");
    std::fs::write(&bad, "not a key").unwrap();
    let out = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
        ])
        .arg(&bad)
        .arg("--secret-file")
        .arg(dir.path("secret"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.pem"), "{err}");
}
