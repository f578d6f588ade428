//! A node of three behind nginx is killed (SIGKILL) in the middle of a 256 MiB
//! relay-only stream between two devices of one user: the devices it held
//! reconnect through nginx to the other nodes, the others find it gone, the
//! connection is routed again, and every byte arrives once, in order.

mod common;

use std::time::{Duration, Instant};

use common::TempDir;
use common::cluster::{Cluster, metric};
use common::failover::stream_with;

const MIB: u64 = 1024 * 1024;

#[test]
#[ignore = "needs redis-server and nginx (the cluster step of .ci/run)"]
fn a_stream_survives_the_death_of_a_node() {
    let dir = TempDir::new("cluster-kill");
    let mut cluster = Cluster::start(&dir.0, 3);
    let mut killed = None;
    let outcome = stream_with(&mut cluster, &dir, 256 * MIB, 40 * MIB, |cluster| {
        let holder = cluster
            .nodes
            .iter()
            .position(|n| metric(&n.metrics(), "peerpipe_devices_online").unwrap_or(0) > 0)
            .expect("a node holds the devices");
        cluster.nodes[holder].kill9();
        killed = Some(holder);
    });
    let holder = killed.unwrap();
    eprintln!(
        "node {holder} was killed at {:.1} MiB received; traffic stalled {:.2?}; \
         the 256 MiB took {:.2?}",
        outcome.at_event as f64 / MIB as f64,
        outcome.stalled,
        outcome.took
    );
    // The survivors find the node gone: at once when its link refuses them,
    // else when its heartbeat is older than the lease (3 s).
    let survivors: Vec<_> = (0..3).filter(|n| *n != holder).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let noticed = survivors.iter().all(|n| {
            metric(
                &cluster.nodes[*n].metrics(),
                "peerpipe_cluster_nodes_died_total",
            )
            .is_some_and(|d| d >= 1)
        });
        if noticed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the surviving nodes did not all notice the death of node {holder}{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(outcome.stalled < Duration::from_secs(25));
}
