//! Three `peerpipe serve --redis` nodes sharing one redis-server, behind nginx:
//! two devices of one user admitted by different nodes see each other online,
//! then offline; a third device of the user through nginx sees them too; a
//! device of another user gets `not_found` for them whichever node it is on.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, client_at, wait_online_at};
use common::{TempDir, device_id, run_ok};

/// How long a device that left may still be listed on another node: its
/// node tells the others at once; the bound is for a loaded machine.
const OFFLINE_BOUND: Duration = Duration::from_secs(10);

#[test]
#[ignore = "needs redis-server and nginx (the cluster step of .ci/run)"]
fn presence_is_the_same_on_every_node() {
    let dir = TempDir::new("cluster-presence");
    let cluster = Cluster::start(&dir.0, 3);
    let alice = cluster.token("alice");
    let eve = cluster.token("eve");
    let (a, b, c, e) = (
        dir.path("a.key"),
        dir.path("b.key"),
        dir.path("c.key"),
        dir.path("e.key"),
    );
    let a_id = device_id(&a);

    // Device a stays online on node 0.
    let mut listen = cluster.online(0, &alice, &a);
    // b asks node 1, c asks through nginx.
    wait_online_at(&cluster.nodes[1].url(), &alice, &b, &a_id);
    wait_online_at(&cluster.nginx.url(), &alice, &c, &a_id);
    let on_2 = run_ok(&mut client_at(
        "peers",
        &[],
        &cluster.nodes[2].url(),
        &alice,
        &c,
    ));
    assert!(
        on_2.lines().any(|l| l.starts_with(&a_id)),
        "node 2 does not list the device of node 0: {on_2:?}"
    );

    // Another user's device: the same answer as for a random id, on every node
    // (on node 0 the device is local; on the others its session would live there).
    for node in &cluster.nodes {
        let out = client_at("connect", &["--relay-only", &a_id], &node.url(), &eve, &e)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("no such device"),
            "eve's connect through {} did not get not_found: {stderr}",
            node.url()
        );
    }
    assert!(
        cluster.nodes[0]
            .metrics()
            .contains("peerpipe_errors_total{code=\"not_found\"} 3"),
        "node 0, where the device is, answered all three not_found"
    );

    // a goes offline: node 1 stops listing it.
    listen.kill().unwrap();
    listen.wait().unwrap();
    let gone = Instant::now();
    loop {
        let out = run_ok(&mut client_at(
            "peers",
            &[],
            &cluster.nodes[1].url(),
            &alice,
            &b,
        ));
        if !out.lines().any(|l| l.starts_with(&a_id)) {
            break;
        }
        assert!(
            gone.elapsed() < OFFLINE_BOUND,
            "node 1 still lists the device {OFFLINE_BOUND:?} after it left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "the device's departure from node 0 showed on node 1 within {:.2?}",
        gone.elapsed()
    );
}
