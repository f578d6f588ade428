//! Two machines, simulated as two network namespaces joined by a veth pair:
//! machine A (10.77.0.1) runs `serve` on every interface with TLS terminated by
//! itself (a self-signed certificate for its address), and says which URL
//! clients should use; machine B sends a file to a receiver on machine A
//! through `wss://`, trusting the certificate with `--ca-cert`. A client that
//! does not trust it is refused before anything is sent.
//!
//! Opt-in (`--ignored`); `.ci/run` runs it in its network-namespace step.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::machines::{on, ran_inside, two_machines};
use common::{KillOnDrop, Sender, TempDir, same_bytes, wait_bounded};

const TEST: &str = "a_file_crosses_two_machines_through_a_tls_server";
const SERVER: &str = "10.77.0.1";

#[test]
#[ignore = "needs unshare and nsenter: its own step of .ci/run"]
fn a_file_crosses_two_machines_through_a_tls_server() {
    // Outside, run this test again inside namespaces of its own, and only there.
    if ran_inside(TEST) {
        return;
    }
    two_machines();

    let dir = TempDir::new("netns-tls");
    let cert = rcgen::generate_simple_self_signed(vec![SERVER.into()]).unwrap();
    let (cert_pem, key_pem) = (dir.path("cert.pem"), dir.path("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();

    let mut serve = KillOnDrop(
        on("ma")
            .args(["serve", "--listen", "0.0.0.0:8443", "--tls-cert"])
            .arg(&cert_pem)
            .arg("--tls-key")
            .arg(&key_pem)
            .arg("--secret-file")
            .arg(dir.path("secret"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The URLs `serve` tells clients to use, read off its stderr (bounded: 20 s).
    let (tx, rx) = mpsc::channel();
    let stderr = serve.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("clients connect with: --server ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let mut urls = Vec::new();
    while let Ok(url) = rx.recv_timeout(Duration::from_secs(if urls.is_empty() { 20 } else { 1 })) {
        urls.push(url);
    }
    let url = format!("wss://{SERVER}:8443/v1/signal");
    assert!(urls.contains(&url), "serve told clients {urls:?}");
    assert!(!urls.iter().any(|u| u.contains("0.0.0.0")), "{urls:?}");

    // Machine B without the certificate: refused, nothing sent, no code.
    let source = dir.path("report.bin");
    let data: Vec<u8> = (0..5u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(&source, &data).unwrap();
    let untrusted = on("mb")
        .arg("send")
        .arg(&source)
        .args(["--server", &url, "--timeout", "5s"])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    assert!(untrusted.stdout.is_empty(), "a code was printed");
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        err.contains("certificate") && err.contains("--ca-cert"),
        "{err}"
    );

    // Machine B trusting it sends to a receiver on machine A.
    let mut send = on("mb");
    send.arg("send")
        .arg(&source)
        .args(["--server", &url, "--ca-cert"])
        .arg(&cert_pem);
    let Sender {
        mut child, code, ..
    } = Sender::spawn(send);
    let out = dir.path("received");
    let received = on("ma")
        .args(["receive", &code, "--server", &url, "--ca-cert"])
        .arg(&cert_pem)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        received.status.success(),
        "{}",
        String::from_utf8_lossy(&received.stderr)
    );
    assert!(same_bytes(&source, &out.join("report.bin")));
    assert!(wait_bounded(&mut child, Duration::from_secs(30)).success());
}
