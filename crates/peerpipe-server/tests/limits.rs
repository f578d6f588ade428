//! Limits: control rate, devices per user, a device replacing its own connection.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{Client, TestServer, bounded, expect_silence, identity};
use peerpipe_proto::signal::{ClientMessage, ErrorCode, ServerMessage};

#[tokio::test]
async fn control_flood_is_rate_limited_then_closed() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| {
            c.control_rate = 1;
            c.control_burst = 2;
        })
        .await?;
        let mut a = server.device("alice", "a").await?;
        for req in 0..4 {
            a.client.send(&ClientMessage::ListPeers { req }).await?;
        }
        assert!(matches!(
            a.client.recv().await?,
            ServerMessage::Peers { req: 0, .. }
        ));
        assert!(matches!(
            a.client.recv().await?,
            ServerMessage::Peers { req: 1, .. }
        ));
        // The refusals answer the dropped requests, so their senders fail at once.
        for req in [2, 3] {
            let refusal = a.client.expect_error(ErrorCode::RateLimited).await?;
            assert!(
                matches!(refusal, ServerMessage::Error { req: Some(r), .. } if r == req),
                "{refusal:?}"
            );
        }
        // Persistent abuse (more than 4 x burst refused frames) closes the connection.
        for req in 10..20 {
            a.client.send(&ClientMessage::ListPeers { req }).await?;
        }
        let mut refused = 0;
        while let Some(m) = a.client.next().await? {
            let tokio_tungstenite::tungstenite::Message::Text(t) = m else {
                anyhow::bail!("unexpected {m:?}");
            };
            match ServerMessage::decode(t.as_str())? {
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                } => refused += 1,
                // A token may have come back in the meantime.
                ServerMessage::Peers { .. } => {}
                m => anyhow::bail!("unexpected {m:?}"),
            }
        }
        assert!(refused >= 5, "{refused} refusals before the close");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn too_many_devices_is_refused() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| c.max_devices_per_user = 2).await?;
        let _a = server.device("alice", "a").await?;
        let _b = server.device("alice", "b").await?;
        let mut c = Client::connect(&server.server.url()).await?;
        let m = c.hello(&server.token("alice"), &identity(), "c").await?;
        assert!(
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::TooManyDevices,
                    ..
                }
            ),
            "{m:?}"
        );
        c.expect_close().await?;
        // Other users are not affected.
        server.device("bob", "b").await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn reconnect_of_the_same_device_replaces_the_old_connection() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| c.max_devices_per_user = 2).await?;
        let mut watcher = server.device("alice", "w").await?;
        let id = identity();
        let mut old = server.device_with(&id, "alice", "old").await?;
        let _ = watcher.client.recv().await?;
        // At the device limit, the same device may still come back.
        let mut new = server.device_with(&id, "alice", "new").await?;
        old.client.expect_fatal(ErrorCode::Replaced).await?;
        let m = watcher.client.recv().await?;
        assert!(
            matches!(&m, ServerMessage::PeerOnline { peer } if peer.label == "new"),
            "{m:?}"
        );
        // The old connection's end does not mark the device offline.
        expect_silence(&mut watcher.client, Duration::from_millis(300)).await?;
        new.client
            .send(&ClientMessage::ListPeers { req: 1 })
            .await?;
        let ServerMessage::Peers { peers, .. } = new.client.recv().await? else {
            anyhow::bail!("expected peers");
        };
        assert_eq!(peers.len(), 1);
        assert_eq!(server.server.stats().devices_online, 2);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unanswered_connect_requests_are_capped_per_connection() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| c.control_burst = 100).await?;
        let mut a = server.device("alice", "a").await?;
        let b = server.device("alice", "b").await?;
        a.client.recv().await?; // b online
        // b never answers: sixteen requests wait, the seventeenth is refused.
        for req in 0..17 {
            a.client
                .send(&ClientMessage::Connect {
                    req,
                    to: b.id,
                    resume: None,
                    service: None,
                    door: None,
                })
                .await?;
        }
        match a.client.expect_error(ErrorCode::RateLimited).await? {
            ServerMessage::Error { req, .. } => assert_eq!(req, Some(16)),
            m => anyhow::bail!("unexpected {m:?}"),
        }
        drop(b);
        Ok(())
    })
    .await
}
