//! redis-server is restarted (killed, then started empty) in the middle of a
//! 256 MiB relay-only stream through a cluster of three nodes behind nginx:
//! the stream goes on byte for byte (Redis is not on the path of relayed
//! bytes), and presence is whole again: every node lists both devices, also
//! the node that holds neither and knows them only from Redis.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, client_at};
use common::failover::stream_with;
use common::{TempDir, device_id, run_ok};

const MIB: u64 = 1024 * 1024;
/// From the restart until every node lists both devices: the nodes' next
/// heartbeat finds Redis back (1 s), then they write their entries again.
const WHOLE_BOUND: Duration = Duration::from_secs(15);

#[test]
#[ignore = "needs redis-server and nginx (the cluster step of .ci/run)"]
fn a_stream_survives_a_redis_restart_and_presence_heals() {
    let dir = TempDir::new("cluster-redis");
    let mut cluster = Cluster::start(&dir.0, 3);
    let outcome = stream_with(&mut cluster, &dir, 256 * MIB, 40 * MIB, |cluster| {
        cluster.redis.restart();
    });
    eprintln!(
        "redis-server was restarted at {:.1} MiB received; traffic stalled {:.2?}; \
         the 256 MiB took {:.2?}",
        outcome.at_event as f64 / MIB as f64,
        outcome.stalled,
        outcome.took
    );

    // After the restart, with two devices online on their nodes: every node,
    // asked by a third device, lists both.
    let alice = cluster.token("alice");
    let (a, b, c) = (dir.path("a2.key"), dir.path("b2.key"), dir.path("c2.key"));
    let ids = [device_id(&a), device_id(&b)];
    let _online = [cluster.online(0, &alice, &a), cluster.online(1, &alice, &b)];
    std::thread::sleep(Duration::from_millis(500));
    cluster.redis.restart();
    let restarted = Instant::now();
    for node in &cluster.nodes {
        loop {
            let out = run_ok(&mut client_at("peers", &[], &node.url(), &alice, &c));
            if ids
                .iter()
                .all(|id| out.lines().any(|l| l.starts_with(id.as_str())))
            {
                break;
            }
            assert!(
                restarted.elapsed() < WHOLE_BOUND,
                "{} lists {out:?} {WHOLE_BOUND:?} after the restart{}",
                node.url(),
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!(
        "presence was whole on all three nodes {:.2?} after the restart",
        restarted.elapsed()
    );
}
