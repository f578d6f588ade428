//! Connecting: accept, reject, offline target, and a target that never answers.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{TestServer, bounded, pair, wait_for};
use peerpipe::{CloseReason, ConnectError, NodeEvent, Operation};

#[tokio::test]
async fn accepted_connection_carries_messages_both_ways_and_closes_in_order() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server.node("alice", "b").await?;
        let (to_b, to_a) = pair(&a, &b).await?;
        assert_eq!(to_b.peer().id, b.id());
        assert_eq!(to_a.peer().id, a.id());
        assert_eq!(to_a.peer().label, "a");

        to_b.send("ping").await?;
        assert_eq!(to_a.recv().await?.as_deref(), Some(&b"ping"[..]));
        let (confirmed, got) = tokio::join!(to_a.send_confirmed("pong"), to_b.recv());
        confirmed?;
        assert_eq!(got?.as_deref(), Some(&b"pong"[..]));
        to_b.send(Vec::new()).await?;
        assert_eq!(to_a.recv().await?.as_deref(), Some(&b""[..]));

        to_b.send("last").await?;
        to_b.close().await;
        assert_eq!(to_a.recv().await?.as_deref(), Some(&b"last"[..]));
        assert_eq!(to_a.recv().await?, None, "orderly close");
        assert_eq!(to_a.recv().await?, None, "stays closed");
        assert_eq!(
            to_a.send("x").await,
            Err(peerpipe::SendError::Closed(CloseReason::PeerClosed))
        );
        let session = to_a.session_id();
        let reason = wait_for(&b, "ConnectionClosed on b", |e| match e {
            NodeEvent::ConnectionClosed {
                session: s,
                reason,
                peer,
            } if s == session => {
                assert_eq!(peer, a.id());
                Some(reason)
            }
            _ => None,
        })
        .await?;
        assert_eq!(reason, CloseReason::PeerClosed);
        let reason = wait_for(&a, "ConnectionClosed on a", |e| match e {
            NodeEvent::ConnectionClosed {
                session: s, reason, ..
            } if s == session => Some(reason),
            _ => None,
        })
        .await?;
        assert_eq!(reason, CloseReason::Local);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn rejected_connection_is_rejected() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server.node("alice", "b").await?;
        let target = b.id();
        let connecting = tokio::spawn({
            let a = a.clone();
            async move { a.connect(target).await }
        });
        let incoming = wait_for(&b, "incoming", |e| match e {
            NodeEvent::IncomingConnection(i) => Some(i),
            _ => None,
        })
        .await?;
        assert_eq!(incoming.peer().id, a.id());
        incoming.reject().await;
        let err = connecting.await?.expect_err("rejected");
        assert_eq!(err, ConnectError::Rejected);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn offline_device_is_peer_offline() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let c = server.node("alice", "c").await?;
        let c_id = c.id();
        c.shutdown().await;
        wait_for(&a, "PeerOffline(c)", |e| match e {
            NodeEvent::PeerOffline(id) if id == c_id => Some(()),
            _ => None,
        })
        .await?;
        let err = a.connect(c_id).await.expect_err("c is offline");
        assert_eq!(err, ConnectError::PeerOffline);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn silent_target_times_out_and_is_reported_slow() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server
            .builder("alice", "a")
            .connect_timeout(Duration::from_millis(800))
            .slow_threshold(Duration::from_millis(200))
            .bind()
            .await?;
        // b never reads its events, so it never answers.
        let b = server.node("alice", "b").await?;
        let err = a.connect(b.id()).await.expect_err("b never answers");
        assert_eq!(err, ConnectError::TimedOut(Duration::from_millis(800)));
        let (operation, elapsed) = wait_for(&a, "Slow", |e| match e {
            NodeEvent::Slow { operation, elapsed } => Some((operation, elapsed)),
            _ => None,
        })
        .await?;
        assert_eq!(operation, Operation::Connect { peer: b.id() });
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        Ok(())
    })
    .await
}
