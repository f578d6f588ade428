//! One `peerpipe serve` node behind a real nginx: the WebSocket upgrade and the
//! relayed stream pass through the proxy. Two devices of one user, `listen` and
//! `connect --relay-only`, know only nginx's URL; 8 MiB of random bytes arrive
//! byte-exact, and the node's metrics show that they were relayed.
//!
//! Opt-in (`--ignored`): needs nginx; `.ci/run` runs it in its cluster step.

mod common;

use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{
    Nginx, NodeProcess, client_at, have_cluster_tools, metric, token, wait_online_at,
};
use common::{KillOnDrop, TempDir, device_id, wait_bounded};
use rand::RngCore as _;

#[test]
#[ignore = "needs nginx (the cluster step of .ci/run)"]
fn a_relayed_stream_passes_through_nginx() {
    have_cluster_tools().unwrap_or_else(|e| panic!("{e}"));
    let dir = TempDir::new("nginx-one-node");
    let secret = dir.path("secret");
    let node = NodeProcess::start(&dir.0, &secret, None, &[]);
    let nginx = Nginx::start(&dir.0, &[node.port()]);
    let url = nginx.url();
    let token = token(&secret, "alice");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let listener_id = device_id(&b);
    let started = Instant::now();

    let mut listen = KillOnDrop(
        client_at("listen", &["-q", "--relay-only"], &url, &token, &b)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = listen.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        stdout.read_to_end(&mut got).unwrap();
        got
    });

    let mut data = vec![0u8; (8 << 20) + 13];
    rand::thread_rng().fill_bytes(&mut data);
    wait_online_at(&url, &token, &a, &listener_id);
    let mut connect = KillOnDrop(
        client_at(
            "connect",
            &["-q", "--relay-only", &listener_id],
            &url,
            &token,
            &a,
        )
        .stdin(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let mut stdin = connect.stdin.take().unwrap();
    let payload = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&payload));
    assert!(
        wait_bounded(&mut connect, Duration::from_secs(60)).success(),
        "connect failed; node log:\n{}\n{}",
        node.log(),
        nginx.logs()
    );
    writer.join().unwrap().unwrap();
    assert!(wait_bounded(&mut listen, Duration::from_secs(30)).success());
    let got = reader.join().unwrap();
    eprintln!(
        "{} bytes through nginx in {:.2?}",
        got.len(),
        started.elapsed()
    );
    assert_eq!(got.len(), data.len());
    assert!(got == data, "received bytes differ");

    let relayed = metric(&node.metrics(), "peerpipe_relay_bytes_total").unwrap();
    assert!(
        relayed >= data.len() as u64,
        "only {relayed} bytes relayed by the node"
    );
}
