//! A node that stops answering for longer than the heartbeat lease (SIGSTOP
//! for 5 s) is found gone by the others, which take its device offline; when
//! it goes on (SIGCONT), they see it back, reset what they share with it, and
//! presence is whole again on every node — its device, still connected to it
//! all along, is online everywhere again.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, client_at};
use common::{TempDir, device_id, run_ok};

/// Past the heartbeat lease (3 s), short of the devices' idle time-out (30 s).
const PAUSE: Duration = Duration::from_secs(5);
const BOUND: Duration = Duration::from_secs(15);

fn signal(name: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

#[test]
#[ignore = "needs redis-server and nginx (the cluster step of .ci/run)"]
fn a_paused_node_comes_back_whole() {
    let dir = TempDir::new("cluster-pause");
    let cluster = Cluster::start(&dir.0, 3);
    let alice = cluster.token("alice");
    let (a, b) = (dir.path("a.key"), dir.path("b.key"));
    let ids = [device_id(&a), device_id(&b)];
    let _online = [cluster.online(0, &alice, &a), cluster.online(1, &alice, &b)];
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + BOUND;
        while !done() {
            assert!(Instant::now() < deadline, "{what}{}", cluster.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("the two devices never met", &|| {
        cluster.stand_ins(0) == Some(1) && cluster.stand_ins(1) == Some(1)
    });

    let pid = cluster.nodes[1].pid().unwrap();
    signal("STOP", pid);
    let paused = Instant::now();
    wait("node 0 did not find node 1 gone", &|| {
        cluster.stand_ins(0) == Some(0)
    });
    let found_gone = paused.elapsed();
    std::thread::sleep(PAUSE.saturating_sub(paused.elapsed()));
    signal("CONT", pid);
    let resumed = Instant::now();
    wait("node 1's device did not come back on node 0", &|| {
        cluster.stand_ins(0) == Some(1) && cluster.stand_ins(1) == Some(1)
    });
    // A device on the third node sees both.
    let c = dir.path("c.key");
    wait("node 2 does not list both devices", &|| {
        let listed = run_ok(&mut client_at(
            "peers",
            &[],
            &cluster.nodes[2].url(),
            &alice,
            &c,
        ));
        ids.iter().all(|id| listed.contains(id.as_str()))
    });
    eprintln!(
        "node 1 paused: found gone after {found_gone:.2?}; after it went on, presence was \
         whole again within {:.2?}",
        resumed.elapsed()
    );
}
