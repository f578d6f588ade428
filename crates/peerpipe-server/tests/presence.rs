//! Presence: online and offline events, and silent connections timing out.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{TestServer, bounded};
use peerpipe_proto::signal::{ClientMessage, ServerMessage};
use tokio::time::Instant;

#[tokio::test]
async fn online_and_offline_events() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let b = server.device("alice", "b").await?;
        assert_eq!(b.peers.len(), 1);
        let m = a.client.recv().await?;
        let ServerMessage::PeerOnline { peer } = m else {
            anyhow::bail!("expected online, got {m:?}");
        };
        assert_eq!((peer.id, peer.label.as_str()), (b.id, "b"));
        let b_id = b.id;
        drop(b);
        assert_eq!(
            a.client.recv().await?,
            ServerMessage::PeerOffline { id: b_id }
        );
        a.client.send(&ClientMessage::ListPeers { req: 4 }).await?;
        assert_eq!(
            a.client.recv().await?,
            ServerMessage::Peers {
                req: 4,
                peers: vec![]
            }
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_silent_client_goes_offline_after_the_idle_timeout() -> Result<()> {
    bounded(async {
        let idle = Duration::from_millis(800);
        let server = TestServer::with(|c| {
            c.idle_timeout = idle;
            c.ping_interval = Duration::from_millis(200);
        })
        .await?;
        let mut a = server.device("alice", "a").await?;
        // `b` keeps its TCP socket open but is never polled again: it answers no ping.
        let b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?; // b online
        let start = Instant::now();
        // `a` keeps reading, so it answers pings and stays online.
        assert_eq!(
            a.client.recv().await?,
            ServerMessage::PeerOffline { id: b.id }
        );
        let took = start.elapsed();
        assert!(took <= idle + Duration::from_millis(500), "took {took:?}");
        assert!(took >= idle - Duration::from_millis(100), "took {took:?}");
        assert_eq!(server.server.stats().devices_online, 1);
        assert_eq!(server.server.stats().errors.get("idle_timeout"), Some(&1));
        drop(b);
        Ok(())
    })
    .await
}
