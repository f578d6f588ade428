//! A burst of presence (issue 19, finding 4): 200 devices of one user join at
//! once; every one stays admitted and learns of all the others. (With
//! presence on the 32-frame control queue, most were dropped as slow
//! consumers: 100 joined, 8 survived.)

mod common;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, bail};
use common::{Device, TestServer, bounded};
use futures_util::future::try_join_all;
use peerpipe_proto::signal::{ClientMessage, ServerMessage};

const DEVICES: usize = 200;

/// Reads `d`'s presence news until it knows all the others (its welcome's
/// list and the online events since), within a bound; fails on anything else.
async fn learn_everyone(mut d: Device, all: &HashSet<String>) -> Result<Device> {
    let me = d.id.to_string();
    let mut known: HashSet<String> = d.peers.iter().map(|p| p.id.to_string()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while known.len() < all.len() - 1 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, d.client.recv()).await {
            Err(_) => bail!("{me} knew {} of {} after 20 s", known.len(), all.len() - 1),
            Ok(Ok(ServerMessage::PeerOnline { peer })) => {
                known.insert(peer.id.to_string());
            }
            Ok(other) => bail!("{me}: expected presence news, got {other:?}"),
        }
    }
    Ok(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_of_one_user_join_at_once_and_all_stay() -> Result<()> {
    bounded(async {
        let t = TestServer::with(|c| c.max_devices_per_user = DEVICES).await?;
        let t = &t;
        // Labels of the longest kind: the later welcomes list more than a
        // client's 16 KiB text frame holds.
        let join = |i: usize| async move { t.device("alice", &format!("{i:0>64}")).await };
        let joined = try_join_all((0..DEVICES).map(join)).await?;
        let all: HashSet<String> = joined.iter().map(|d| d.id.to_string()).collect();
        assert_eq!(all.len(), DEVICES);
        let mut devices = try_join_all(joined.into_iter().map(|d| learn_everyone(d, &all))).await?;
        // Every one is still admitted: it answers, and lists all the others.
        for d in devices.iter_mut().step_by(20) {
            d.client.send(&ClientMessage::ListPeers { req: 9 }).await?;
            loop {
                match d.client.recv().await? {
                    ServerMessage::Peers { req: 9, peers } => {
                        assert_eq!(peers.len(), DEVICES - 1);
                        break;
                    }
                    ServerMessage::PeerOnline { .. } => {}
                    other => bail!("expected the peer list, got {other:?}"),
                }
            }
        }
        assert_eq!(t.server.stats().devices_online, DEVICES as u64);
        assert!(
            !t.server.stats().errors.contains_key("slow_consumer"),
            "{:?}",
            t.server.stats().errors
        );
        Ok(())
    })
    .await
}
