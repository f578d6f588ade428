//! With `PathPolicy::DirectOnly` the relay is dropped once the direct path is up:
//! after the upgrade not a single byte of the connection crosses the server, and
//! when the direct path goes away there is no relay to fall back to, so the
//! connection ends at its idle time-out.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{TestServer, bounded, pair, stream_transfer, wait_for, wait_path};
use peerpipe::{CloseReason, NodeEvent, PathKind, PathPolicy};

const LEN: usize = 8 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_crosses_the_relay_after_the_upgrade() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let node = |label| {
            server
                .builder("alice", label)
                .path_policy(PathPolicy::DirectOnly)
                .quic(false)
                .idle_timeout(Duration::from_secs(2))
                .bind()
        };
        let (a, b) = (node("a").await?, node("b").await?);
        let (to_b, from_a) = pair(&a, &b).await?;
        wait_path(&a, &to_b, PathKind::WebRtc).await?;
        wait_path(&b, &from_a, PathKind::WebRtc).await?;
        // Let packets that were already on the relay drain.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let relayed_before = server.server.stats().relay_bytes;
        stream_transfer(&to_b, &from_a, LEN).await?;
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
