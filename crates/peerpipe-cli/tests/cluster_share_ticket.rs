//! A `share` ticket across the nodes of a cluster: alice shares through node 0;
//! bob, another user, gets the files through node 1 and an anonymous device
//! through node 2, by the sharing device's door (the connect request goes to
//! the node the sharing device is on, found in Redis).

mod common;

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use common::cluster::{Cluster, client_at};
use common::{TempDir, bin, same_bytes, spawn_share, wait_bounded};

#[test]
#[ignore = "needs redis-server and nginx (the cluster step of .ci/run)"]
fn a_ticket_shared_on_one_node_is_fetched_through_the_others() {
    let dir = TempDir::new("cluster-share-ticket");
    let cluster = Cluster::start(&dir.0, 3);
    let (alice, bob) = (cluster.token("alice"), cluster.token("bob"));
    let file = dir.path("data.bin");
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i * 13 % 251) as u8)
        .collect();
    fs::write(&file, &data).unwrap();

    let (_sharer, ticket) = spawn_share(client_at(
        "share",
        &[file.to_str().unwrap(), "--relay-only"],
        &cluster.nodes[0].url(),
        &alice,
        &dir.path("alice.key"),
    ));

    for (node, token) in [(1, Some(bob.as_str())), (2, None)] {
        let out = dir.path(&format!("out-{node}"));
        let mut get = bin();
        get.args(["get", &ticket, "--relay-only", "-o"])
            .arg(&out)
            .args(["--server", &cluster.nodes[node].url()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            get.args(["--token", token]);
        }
        let mut get = get.spawn().unwrap();
        let status = wait_bounded(&mut get, Duration::from_secs(120));
        let err = common::stderr_of(&mut get);
        assert!(status.success(), "get through node {node}: {err}");
        assert!(same_bytes(&file, &out.join("data.bin")), "node {node}");
    }
}
