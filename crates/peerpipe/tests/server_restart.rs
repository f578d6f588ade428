//! A server restart: connections end, nodes reconnect, see each other again and
//! can connect anew.

mod common;

use anyhow::Result;
use common::{TestServer, bounded, pair, wait_for};
use peerpipe::{CloseReason, Node, NodeEvent, RecvError};

async fn sees_the_restart(node: &Node, other: &Node) -> Result<()> {
    let reason = wait_for(node, "ConnectionClosed", |e| match e {
        NodeEvent::ConnectionClosed { reason, .. } => Some(reason),
        _ => None,
    })
    .await?;
    assert!(
        matches!(
            reason,
            CloseReason::SignalingLost
                | CloseReason::ServerShutdown
                | CloseReason::PeerDisconnected
        ),
        "{reason:?}"
    );
    let attempt = wait_for(node, "Reconnecting", |e| match e {
        NodeEvent::Reconnecting { attempt, .. } => Some(attempt),
        _ => None,
    })
    .await?;
    assert_eq!(attempt, 1);
    wait_for(node, "Reconnected", |e| {
        matches!(e, NodeEvent::Reconnected).then_some(())
    })
    .await?;
    let other = other.id();
    wait_for(node, "PeerOnline(other)", |e| match e {
        NodeEvent::PeerOnline(p) if p.id == other => Some(()),
        _ => None,
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn nodes_recover_from_a_server_restart() -> Result<()> {
    bounded(async {
        let first = TestServer::start().await?;
        let addr = first.server.local_addr();
        let secret = first.secret.clone();
        let a = first.node("alice", "a").await?;
        let b = first.node("alice", "b").await?;
        let (to_b, to_a) = pair(&a, &b).await?;
        let (sent, got) = tokio::join!(to_b.send_confirmed("before"), to_a.recv());
        sent?;
        assert_eq!(got?.as_deref(), Some(&b"before"[..]));

        first.server.shutdown().await;
        let second = TestServer::start_at(secret, addr).await?;

        let (ra, rb) = tokio::join!(sees_the_restart(&a, &b), sees_the_restart(&b, &a));
        ra?;
        rb?;
        assert!(matches!(to_a.recv().await, Err(RecvError::Closed(_))));
        assert!(to_b.send("after").await.is_err());

        let (tx, rx) = pair(&a, &b).await?;
        let (sent, got) = tokio::join!(tx.send_confirmed("again"), rx.recv());
        sent?;
        assert_eq!(got?.as_deref(), Some(&b"again"[..]));
        assert!(a.online_peers().await?.iter().any(|p| p.id == b.id()));
        second.server.shutdown().await;
        Ok(())
    })
    .await
}
