//! With `PathPolicy::DirectOnly` the relay is dropped once the direct path is up:
//! after the upgrade not a single byte of the connection crosses the server, and
//! when the direct path goes away there is no relay to fall back to, so the
//! connection ends at its idle time-out.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{TestServer, bounded, pair, wait_for};
use peerpipe::{CloseReason, NodeEvent, PathKind, PathPolicy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const LEN: usize = 8 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_crosses_the_relay_after_the_upgrade() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let node = |label| {
            server
                .builder("alice", label)
                .path_policy(PathPolicy::DirectOnly)
                .idle_timeout(Duration::from_secs(2))
                .bind()
        };
        let (a, b) = (node("a").await?, node("b").await?);
        let (to_b, from_a) = pair(&a, &b).await?;
        for (n, conn) in [(&a, &to_b), (&b, &from_a)] {
            let session = conn.session_id();
            wait_for(n, "the direct path", |e| match e {
                NodeEvent::PathChanged {
                    path: PathKind::Direct,
                    session: s,
                    ..
                } if s == session => Some(()),
                _ => None,
            })
            .await?;
        }
        // Let packets that were already on the relay drain.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let relayed_before = server.server.stats().relay_bytes;
        let data: Vec<u8> = (0..LEN).map(|i| (i % 239) as u8).collect();
        let mut out = to_b.open_stream().await?;
        let writer = tokio::spawn(async move {
            out.write_all(&data).await?;
            out.shutdown().await?;
            anyhow::Ok(data)
        });
        let mut stream = from_a.accept_stream().await?;
        let mut got = Vec::with_capacity(LEN);
        stream.read_to_end(&mut got).await?;
        let data = writer.await??;
        ensure!(got == data, "the received bytes differ");
        let (sent, received) = tokio::join!(to_b.send_confirmed("direct"), from_a.recv());
        sent?;
        ensure!(received?.as_deref() == Some(&b"direct"[..]));
        let relayed = server.server.stats().relay_bytes - relayed_before;
        ensure!(relayed == 0, "the relay carried {relayed} bytes");

        // Without the relay, a lost direct path cannot be negotiated again.
        to_b.restart_direct();
        let reason = wait_for(&b, "the connection to end", |e| match e {
            NodeEvent::ConnectionClosed { reason, .. } => Some(reason),
            _ => None,
        })
        .await?;
        ensure!(
            matches!(reason, CloseReason::TimedOut(_)),
            "ended with {reason:?}"
        );
        Ok(())
    })
    .await
}
