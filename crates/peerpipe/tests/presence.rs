//! Presence: PeerOnline / PeerOffline events and online_peers.

mod common;

use anyhow::Result;
use common::{TestServer, bounded, wait_for};
use peerpipe::NodeEvent;

#[tokio::test]
async fn peers_come_and_go() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "laptop").await?;
        assert!(a.online_peers().await?.is_empty());

        let b = server.node("alice", "phone").await?;
        let online = wait_for(&a, "PeerOnline(b)", |e| match e {
            NodeEvent::PeerOnline(p) if p.id == b.id() => Some(p),
            _ => None,
        })
        .await?;
        assert_eq!(online.label, "phone");
        let peers = a.online_peers().await?;
        assert_eq!(peers.len(), 1);
        assert_eq!((peers[0].id, peers[0].label.as_str()), (b.id(), "phone"));
        let from_b: Vec<_> = b.online_peers().await?.into_iter().map(|p| p.id).collect();
        assert_eq!(from_b, vec![a.id()]);

        let b_id = b.id();
        b.shutdown().await;
        wait_for(&a, "PeerOffline(b)", |e| match e {
            NodeEvent::PeerOffline(id) if id == b_id => Some(()),
            _ => None,
        })
        .await?;
        assert!(a.online_peers().await?.is_empty());

        // Dropping the last handle stops a node just like shutdown.
        let c = server.node("alice", "tablet").await?;
        let c_id = c.id();
        wait_for(&a, "PeerOnline(c)", |e| match e {
            NodeEvent::PeerOnline(p) if p.id == c_id => Some(()),
            _ => None,
        })
        .await?;
        drop(c);
        wait_for(&a, "PeerOffline(c)", |e| match e {
            NodeEvent::PeerOffline(id) if id == c_id => Some(()),
            _ => None,
        })
        .await?;
        Ok(())
    })
    .await
}
