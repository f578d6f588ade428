//! Relay: frames forwarded unchanged, unknown sessions refused, oversized frames fatal.

mod common;

use anyhow::Result;
use common::{TestServer, bounded};
use peerpipe_proto::relay::encode_frame;
use peerpipe_proto::signal::{ClientMessage, ErrorCode, ServerMessage, SessionId};

#[tokio::test]
async fn frames_are_forwarded_byte_identical() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let s = a.open_session(&mut b, 1).await?;
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let frame = encode_frame(s, &payload);
        a.client.send_binary(frame.clone()).await?;
        assert_eq!(b.client.recv_binary().await?, frame);
        let back = encode_frame(s, b"");
        b.client.send_binary(back.clone()).await?;
        assert_eq!(a.client.recv_binary().await?, back);
        let stats = server.server.stats();
        assert_eq!(stats.relay_frames, 2);
        assert_eq!(stats.relay_bytes, (frame.len() + back.len()) as u64);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unknown_or_foreign_sessions_are_forbidden() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let s = a.open_session(&mut b, 1).await?;
        let mut c = server.device("alice", "c").await?;

        c.client.send_binary(encode_frame(s, b"sneaky")).await?;
        let m = c.client.expect_error(ErrorCode::Forbidden).await?;
        assert!(matches!(m, ServerMessage::Error { session: Some(x), .. } if x == s));
        // Too short for a header, or the wrong version: bad request, not fatal.
        c.client.send_binary(vec![1, 2, 3]).await?;
        c.client.expect_error(ErrorCode::BadRequest).await?;
        c.client
            .send_binary(encode_frame(SessionId(42), b"x"))
            .await?;
        c.client.expect_error(ErrorCode::Forbidden).await?;
        c.client.send_binary(vec![9; 20]).await?;
        c.client.expect_error(ErrorCode::BadRequest).await?;
        // A run of refused frames of one session gets one error, not one each.
        for _ in 0..50 {
            c.client
                .send_binary(encode_frame(SessionId(43), b"x"))
                .await?;
        }
        c.client.expect_error(ErrorCode::Forbidden).await?;
        c.client.send(&ClientMessage::ListPeers { req: 1 }).await?;
        assert!(matches!(
            c.client.recv().await?,
            ServerMessage::Peers { req: 1, .. }
        ));
        assert_eq!(server.server.stats().relay_frames, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn oversized_frame_closes_the_connection() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| c.max_frame = 1024).await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let s = a.open_session(&mut b, 1).await?;
        a.client
            .send_binary(encode_frame(s, &[0; 1024 - 9]))
            .await?;
        assert_eq!(b.client.recv_binary().await?.len(), 1024);
        a.client
            .send_binary(encode_frame(s, &[0; 1024 - 8]))
            .await?;
        a.client.expect_fatal(ErrorCode::FrameTooLarge).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn closed_comes_after_every_frame_relayed_before_it() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| c.outbound_queue = 2).await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let s = a.open_session(&mut b, 1).await?;
        // b does not read while a sends and closes, so frames queue up at the server.
        let frames: Vec<Vec<u8>> = (0..20u8).map(|i| encode_frame(s, &[i; 1000])).collect();
        let sender = tokio::spawn(async move {
            for f in frames {
                a.client.send_binary(f).await?;
            }
            a.client.send(&ClientMessage::Close { session: s }).await?;
            anyhow::Ok(a)
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        for i in 0..20u8 {
            assert_eq!(b.client.recv_binary().await?, encode_frame(s, &[i; 1000]));
        }
        let closed = b.client.recv().await?;
        assert!(
            matches!(closed, ServerMessage::Closed { session, .. } if session == s),
            "{closed:?}"
        );
        sender.await??;
        Ok(())
    })
    .await
}
