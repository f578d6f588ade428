//! A stream through the cluster's nginx with something going wrong in its
//! middle: the shared part of the cluster failure tests.

use std::fs::File;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::cluster::{Cluster, client_at, wait_online_at};
use super::pattern::{Logs, finish, spawn_reader, spawn_writer, wait_progress};
use super::{KillOnDrop, TempDir, device_id};

const MIB: u64 = 1024 * 1024;
/// Until the event: set-up plus the bytes before it at debug-build speed.
const START_BOUND: Duration = Duration::from_secs(60);
/// From the event until bytes flow again: reconnecting through nginx,
/// admission on another node, the dead node found gone and the connection
/// routed again; below the 30 s idle time-out.
const RESUME_BOUND: Duration = Duration::from_secs(25);
/// After the event, the stall is measured until this much more arrived.
const AFTER: u64 = 16 * MIB;
/// The rest of the stream at debug-build speed, with slack.
const FINISH_BOUND: Duration = Duration::from_secs(120);

/// What a stream with an event in its middle measured.
pub struct Outcome {
    /// Bytes that had arrived once the event was over.
    pub at_event: u64,
    /// The longest time no byte arrived, from the event until 16 MiB more
    /// had.
    pub stalled: Duration,
    /// The whole stream.
    pub took: Duration,
}

/// Streams `total` bytes relay-only from one device to another of the same
/// user, both through nginx; once `at` bytes arrived, runs `event`; checks
/// that both ends finish and that every byte arrived once, in order.
pub fn stream_with(
    cluster: &mut Cluster,
    dir: &TempDir,
    total: u64,
    at: u64,
    event: impl FnOnce(&mut Cluster),
) -> Outcome {
    let alice = cluster.token("alice");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let a_id = device_id(&a);
    let logs = Logs {
        connect: dir.path("connect.log"),
        listen: dir.path("listen.log"),
    };
    let url = cluster.nginx.url();
    let mut listen = KillOnDrop(
        client_at("listen", &["--relay-only"], &url, &alice, &a)
            .stdout(Stdio::piped())
            .stderr(File::create(&logs.listen).unwrap())
            .spawn()
            .unwrap(),
    );
    let (reader, received) = spawn_reader(listen.stdout.take().unwrap());
    wait_online_at(&url, &alice, &b, &a_id);
    let mut connect = KillOnDrop(
        client_at("connect", &["--relay-only", &a_id], &url, &alice, &b)
            .stdin(Stdio::piped())
            .stderr(File::create(&logs.connect).unwrap())
            .spawn()
            .unwrap(),
    );
    let (writer, written) = spawn_writer(connect.stdin.take().unwrap(), total);
    let started = Instant::now();
    if let Err(e) = wait_progress(&received, at, START_BOUND, &mut [&mut connect, &mut listen]) {
        panic!("before the event: {e}{}", logs.show());
    }
    event(cluster);
    let at_event = received.load(Ordering::Relaxed);
    // The longest time without a byte arriving, until `AFTER` more arrived.
    let deadline = Instant::now() + RESUME_BOUND;
    let (mut last, mut last_change, mut stalled) = (at_event, Instant::now(), Duration::ZERO);
    while last < (at_event + AFTER).min(total) {
        for child in [&mut connect, &mut listen] {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "a client exited ({status}) after the event at {last} bytes{}{}",
                    logs.show(),
                    cluster.logs()
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "stuck at {last} bytes {RESUME_BOUND:?} after the event{}{}",
            logs.show(),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(5));
        let now = received.load(Ordering::Relaxed);
        if now != last {
            stalled = stalled.max(last_change.elapsed());
            (last, last_change) = (now, Instant::now());
        }
    }
    let connect_status = finish(
        &mut connect,
        "connect",
        FINISH_BOUND,
        &received,
        total,
        &logs,
    );
    let listen_status = finish(&mut listen, "listen", FINISH_BOUND, &received, total, &logs);
    let took = started.elapsed();
    writer.join().unwrap();
    let got = reader.join().unwrap();
    assert!(
        connect_status.success() && listen_status.success(),
        "connect exited with {connect_status}, listen with {listen_status}{}",
        logs.show()
    );
    assert_eq!(
        written.load(Ordering::Relaxed),
        total,
        "stdin closed early{}",
        logs.show()
    );
    assert_eq!(
        got.first_mismatch,
        None,
        "the stream differs{}",
        logs.show()
    );
    assert_eq!(got.total, total, "bytes lost or added{}", logs.show());
    Outcome {
        at_event,
        stalled,
        took,
    }
}
