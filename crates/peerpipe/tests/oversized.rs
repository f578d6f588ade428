//! Oversized messages: refused at once by the sender, against its own limit and
//! the peer's (announced in the handshake); the connection stays usable.

mod common;

use anyhow::Result;
use common::{TestServer, bounded, pair};
use peerpipe::SendError;

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
async fn the_peers_smaller_limit_is_known_before_sending() -> Result<()> {
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

        tx.send(vec![7u8; MAX]).await?;
        assert_eq!(
            rx.recv().await?.map(|m| m.len()),
            Some(MAX),
            "at the limit is fine"
        );
        // The limit travels in the handshake: the sender refuses at once and
        // nothing reaches the peer.
        let err = tx
            .send_confirmed(vec![7u8; MAX + 1])
            .await
            .expect_err("too large");
        assert_eq!(
            err,
            SendError::MessageTooLarge {
                size: MAX + 1,
                max: MAX
            }
        );
        // The connection is still fine.
        let (sent, got) = tokio::join!(tx.send_confirmed("small"), rx.recv());
        sent?;
        assert_eq!(got?.as_deref(), Some(&b"small"[..]));
        assert_eq!(tx.close_reason(), None);
        Ok(())
    })
    .await
}
