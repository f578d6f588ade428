//! Three `peerpipe serve --redis` nodes sharing one redis-server, behind nginx:
//! a 256 MiB relay-only stream from a device of node 1 to a device of the same
//! user on node 0 arrives byte for byte; a file sent with a code made through
//! node 0 is received through node 2.

mod common;

use std::fs::File;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, client_at, wait_online_at};
use common::pattern::{Logs, spawn_reader, spawn_writer};
use common::{KillOnDrop, TempDir, bin, device_id, wait_timeout};

const MIB: u64 = 1024 * 1024;
const TOTAL: u64 = 256 * MIB;
/// 256 MiB through two debug-build nodes (tens of MB/s at worst), with slack.
const STREAM_BOUND: Duration = Duration::from_secs(180);
const SEND_BOUND: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs redis-server and nginx (the cluster step of .ci/run)"]
fn streams_and_codes_cross_nodes() {
    let dir = TempDir::new("cluster-relay");
    let cluster = Cluster::start(&dir.0, 3);
    let alice = cluster.token("alice");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let a_id = device_id(&a);
    let logs = Logs {
        connect: dir.path("connect.log"),
        listen: dir.path("listen.log"),
    };

    let mut listen = KillOnDrop(
        client_at(
            "listen",
            &["--relay-only"],
            &cluster.nodes[0].url(),
            &alice,
            &a,
        )
        .stdout(Stdio::piped())
        .stderr(File::create(&logs.listen).unwrap())
        .spawn()
        .unwrap(),
    );
    let (reader, _received) = spawn_reader(listen.stdout.take().unwrap());
    wait_online_at(&cluster.nodes[1].url(), &alice, &b, &a_id);
    let started = Instant::now();
    let mut connect = KillOnDrop(
        client_at(
            "connect",
            &["--relay-only", &a_id],
            &cluster.nodes[1].url(),
            &alice,
            &b,
        )
        .stdin(Stdio::piped())
        .stderr(File::create(&logs.connect).unwrap())
        .spawn()
        .unwrap(),
    );
    let (writer, written) = spawn_writer(connect.stdin.take().unwrap(), TOTAL);
    for (child, what) in [(&mut connect, "connect"), (&mut listen, "listen")] {
        let status = wait_timeout(child, STREAM_BOUND)
            .unwrap_or_else(|| panic!("{what} did not finish in {STREAM_BOUND:?}{}", logs.show()));
        assert!(
            status.success(),
            "{what} exited with {status}{}",
            logs.show()
        );
    }
    let took = started.elapsed();
    writer.join().unwrap();
    let got = reader.join().unwrap();
    assert_eq!(written.load(std::sync::atomic::Ordering::Relaxed), TOTAL);
    assert_eq!(
        got.first_mismatch,
        None,
        "the stream differs{}",
        logs.show()
    );
    assert_eq!(got.total, TOTAL, "bytes lost or added{}", logs.show());
    let forwarded = common::cluster::metric(
        &cluster.nodes[1].metrics(),
        "peerpipe_cluster_forwarded_bytes_total",
    )
    .unwrap_or(0);
    assert!(
        forwarded >= TOTAL,
        "node 1 forwarded {forwarded} bytes to node 0, less than the stream"
    );
    eprintln!(
        "256 MiB from node 1 to node 0 relay-only in {took:.2?} ({:.0} MB/s)",
        TOTAL as f64 / took.as_secs_f64() / 1e6
    );

    // A code made through node 0, received through node 2.
    let file = dir.path("note.bin");
    std::fs::write(
        &file,
        (0..4 * MIB)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let mut send = KillOnDrop(
        bin()
            .args([
                "send",
                "--relay-only",
                "--server",
                &cluster.nodes[0].url(),
                "--identity",
            ])
            .arg(dir.path("s.key"))
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(File::create(dir.path("send.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut code = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(send.stdout.take().unwrap()),
        &mut code,
    )
    .unwrap();
    let inbox = dir.path("inbox");
    let mut receive = KillOnDrop(
        bin()
            .args([
                "receive",
                code.trim(),
                "--server",
                &cluster.nodes[2].url(),
                "-o",
            ])
            .arg(&inbox)
            .arg("--identity")
            .arg(dir.path("r.key"))
            .stderr(File::create(dir.path("receive.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    for (child, what) in [(&mut receive, "receive"), (&mut send, "send")] {
        let status = wait_timeout(child, SEND_BOUND)
            .unwrap_or_else(|| panic!("{what} did not finish in {SEND_BOUND:?}"));
        assert!(
            status.success(),
            "{what} exited with {status}: {}",
            std::fs::read_to_string(dir.path(&format!("{what}.log"))).unwrap_or_default()
        );
    }
    assert_eq!(
        std::fs::read(inbox.join("note.bin")).unwrap(),
        std::fs::read(&file).unwrap(),
        "the file received through node 2 differs"
    );
}
