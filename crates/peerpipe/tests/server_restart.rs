//! A server restart mid-connection: the nodes reconnect, route their connection
//! again and carry on; nothing sent before, during or after is lost or repeated.

mod common;

use anyhow::Result;
use common::{TestServer, bounded, pair, wait_for};
use peerpipe::{Node, NodeEvent};

async fn sees_the_restart(node: &Node, other: &Node) -> Result<()> {
    let attempt = wait_for(node, "Reconnecting", |e| match e {
        NodeEvent::Reconnecting { attempt, .. } => Some(attempt),
        NodeEvent::ConnectionClosed { reason, .. } => {
            panic!("the connection ended instead of surviving: {reason}")
        }
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
async fn connections_survive_a_server_restart() -> Result<()> {
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
        // Sent while no server runs: kept until the connection is routed again.
        to_b.send("while down").await?;
        let second = TestServer::start_at(secret, addr).await?;

        let (ra, rb) = tokio::join!(sees_the_restart(&a, &b), sees_the_restart(&b, &a));
        ra?;
        rb?;
        let (sent, got) = tokio::join!(to_b.send_confirmed("after"), async {
            let first = to_a.recv().await?;
            let second = to_a.recv().await?;
            anyhow::Ok((first, second))
        });
        sent?;
        let (during, after) = got?;
        assert_eq!(during.as_deref(), Some(&b"while down"[..]));
        assert_eq!(after.as_deref(), Some(&b"after"[..]));
        assert_eq!(to_a.close_reason(), None);
        assert_eq!(to_b.close_reason(), None);

        // New connections work too.
        let (tx, rx) = pair(&a, &b).await?;
        let (sent, got) = tokio::join!(tx.send_confirmed("again"), rx.recv());
        sent?;
        assert_eq!(got?.as_deref(), Some(&b"again"[..]));
        second.server.shutdown().await;
        Ok(())
    })
    .await
}
