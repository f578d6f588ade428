//! The per-user device limit across nodes: with `--max-devices-per-user 2`
//! and two devices of a user online on two nodes, a third device on the third
//! node is refused (`too_many_devices`), and no node lists it afterwards — its
//! admission was shared with the cluster before the limit refused it, and is
//! taken back.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, client_at};
use common::{TempDir, device_id, run_ok};

#[test]
#[ignore = "needs redis-server and nginx (the cluster step of .ci/run)"]
fn a_refused_device_is_listed_nowhere() {
    let dir = TempDir::new("cluster-limit");
    let cluster = Cluster::start_with(&dir.0, 3, &["--max-devices-per-user", "2"]);
    let alice = cluster.token("alice");
    let (a, b, c) = (dir.path("a.key"), dir.path("b.key"), dir.path("c.key"));
    let (a_id, b_id, c_id) = (device_id(&a), device_id(&b), device_id(&c));
    let mut online = vec![cluster.online(0, &alice, &a), cluster.online(1, &alice, &b)];
    // Each node stands in for the device of the other (asking with `peers`
    // as a or b would replace their connections).
    let stand_ins = |n: usize| cluster.stand_ins(n).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stand_ins(0) < 1 || stand_ins(1) < 1 {
        assert!(
            Instant::now() < deadline,
            "the two devices never met{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = client_at("peers", &[], &cluster.nodes[2].url(), &alice, &c)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("too many devices"),
        "the third device was not refused: {stderr}"
    );
    // Give a ghost time to show: nodes 0 and 1 stand in for each other's
    // device only, not for the refused one (node 2 learned of a and b while
    // it admitted c, and keeps them: they are online).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (stand_ins(0), stand_ins(1)),
        (1, 1),
        "stand-ins on nodes 0 and 1 (a ghost of the refused device would count){}",
        cluster.logs()
    );
    // And a fourth device, once b left, sees a alone.
    drop(online.pop());
    let d = dir.path("d.key");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = run_ok(&mut client_at(
            "peers",
            &[],
            &cluster.nodes[2].url(),
            &alice,
            &d,
        ));
        if !listed.contains(&b_id) {
            assert!(listed.contains(&a_id), "a is missing: {listed:?}");
            assert!(
                !listed.contains(&c_id),
                "the refused device is listed: {listed:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "b never left: {listed:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
