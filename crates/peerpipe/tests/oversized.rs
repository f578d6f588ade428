//! Oversized messages: refused at once by the sender; a receiver with a smaller
//! limit closes the connection with a typed reason on both sides.

mod common;

use anyhow::Result;
use common::{TestServer, bounded, pair, wait_for};
use peerpipe::{CloseReason, NodeEvent, RecvError, SendError};

#[tokio::test]
async fn send_over_the_limit_fails_at_once() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server
            .builder("alice", "a")
            .max_message_size(1024)
            .bind()
            .await?;
        let b = server.node("alice", "b").await?;
        let (tx, rx) = pair(&a, &b).await?;
        let err = tx.send(vec![0u8; 1025]).await.expect_err("too large");
        assert_eq!(
            err,
            SendError::MessageTooLarge {
                size: 1025,
                max: 1024
            }
        );
        let err = tx
            .send_confirmed(vec![0u8; 4096])
            .await
            .expect_err("too large");
        assert!(matches!(err, SendError::MessageTooLarge { .. }), "{err:?}");
        // The connection is still fine.
        tx.send(vec![1u8; 1024]).await?;
        assert_eq!(rx.recv().await?.map(|m| m.len()), Some(1024));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn receiver_with_smaller_limit_closes_with_typed_reason() -> Result<()> {
    bounded(async {
        const MAX: usize = 64 * 1024;
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server
            .builder("alice", "b")
            .max_message_size(MAX)
            .bind()
            .await?;
        let (tx, rx) = pair(&a, &b).await?;
        let expected = CloseReason::MessageTooLarge { max: MAX };

        tx.send(vec![7u8; MAX]).await?;
        assert_eq!(
            rx.recv().await?.map(|m| m.len()),
            Some(MAX),
            "at the limit is fine"
        );

        let (sent, got) = tokio::join!(tx.send_confirmed(vec![7u8; MAX + 1]), rx.recv());
        assert_eq!(got, Err(RecvError::Closed(expected.clone())));
        assert_eq!(sent, Err(SendError::Closed(expected.clone())));
        assert_eq!(
            tx.send("more").await,
            Err(SendError::Closed(expected.clone()))
        );
        assert_eq!(rx.recv().await, Err(RecvError::Closed(expected.clone())));

        for (node, name) in [(&a, "a"), (&b, "b")] {
            let reason = wait_for(node, &format!("ConnectionClosed on {name}"), |e| match e {
                NodeEvent::ConnectionClosed { reason, .. } => Some(reason),
                _ => None,
            })
            .await?;
            assert_eq!(reason, expected, "on {name}");
        }
        Ok(())
    })
    .await
}
