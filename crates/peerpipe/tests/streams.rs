//! Streams over the real server: half-close both ways, reset and stop carry their
//! codes, a stream nobody reads does not hold up another one, and messages flow
//! beside streams.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{TestServer, bounded, pair};
use peerpipe::StreamError;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn half_close_both_ways() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server.node("alice", "b").await?;
        let (to_b, from_a) = pair(&a, &b).await?;

        let mut s = to_b.open_stream().await?;
        s.write_all(b"ping").await?;
        s.shutdown().await?;
        let mut t = from_a.accept_stream().await?;
        let mut got = Vec::new();
        t.read_to_end(&mut got).await?;
        assert_eq!(got, b"ping");
        // The other direction is still open after the first one ended.
        t.write_all(b"pong").await?;
        t.shutdown().await?;
        let mut back = Vec::new();
        s.read_to_end(&mut back).await?;
        assert_eq!(back, b"pong");
        assert_eq!(s.id(), t.id());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn reset_and_stop_carry_their_codes() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server.node("alice", "b").await?;
        let (to_b, from_a) = pair(&a, &b).await?;

        let mut reset = to_b.open_stream().await?;
        reset.write_all(b"partial").await?;
        reset.reset(7)?;
        let mut r = from_a.accept_stream().await?;
        let mut buf = Vec::new();
        let err = r.read_to_end(&mut buf).await.expect_err("reset");
        assert_eq!(StreamError::of(&err), Some(&StreamError::Reset(7)), "{err}");
        let err = reset.write_all(b"more").await.expect_err("finished");
        assert_eq!(StreamError::of(&err), Some(&StreamError::Finished));

        let mut stopped = to_b.open_stream().await?;
        stopped.write_all(b"first").await?;
        let mut s = from_a.accept_stream().await?;
        s.stop(9);
        let chunk = vec![0u8; 64 * 1024];
        let err = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = stopped.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await?;
        assert_eq!(
            StreamError::of(&err),
            Some(&StreamError::Stopped(9)),
            "{err}"
        );
        // The connection itself is fine.
        let (sent, got) = tokio::join!(to_b.send_confirmed("still here"), from_a.recv());
        sent?;
        assert_eq!(got?.as_deref(), Some(&b"still here"[..]));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_stream_nobody_reads_does_not_hold_up_another() -> Result<()> {
    bounded(async {
        const BIG: usize = 32 * 1024 * 1024;
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server.node("alice", "b").await?;
        let (to_b, from_a) = pair(&a, &b).await?;

        let mut stalled = to_b.open_stream().await?;
        stalled.write_all(b"x").await?;
        let _unread = from_a.accept_stream().await?;
        let stalled_writer = tokio::spawn(async move {
            let chunk = vec![1u8; 64 * 1024];
            let mut written = 0usize;
            while written < BIG {
                stalled.write_all(&chunk).await?;
                written += chunk.len();
            }
            anyhow::Ok(written)
        });

        let mut live = to_b.open_stream().await?;
        let live_writer = tokio::spawn(async move {
            let data = vec![2u8; 8 * 1024 * 1024];
            live.write_all(&data).await?;
            live.shutdown().await?;
            anyhow::Ok(())
        });
        let mut reader = from_a.accept_stream().await?;
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await?;
        ensure!(got.len() == 8 * 1024 * 1024 && got.iter().all(|b| *b == 2));
        live_writer.await??;
        // The unread stream's writer is held back by its credit window.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !stalled_writer.is_finished(),
            "the unread stream took 32 MiB"
        );
        stalled_writer.abort();
        Ok(())
    })
    .await
}
