//! Two native devices: the connection starts on the relay and moves to a direct
//! QUIC connection (pinned through the session); a stream then flows on it and
//! the server relays only the signaling bytes.

mod common;

use anyhow::{Result, ensure};
use common::{TestServer, bounded, pair, stream_transfer, wait_path};
use peerpipe::PathKind;

const LEN: usize = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_peers_move_to_quic() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server.node("alice", "b").await?;
        let (to_b, from_a) = pair(&a, &b).await?;
        wait_path(&a, &to_b, PathKind::Quic).await?;
        wait_path(&b, &from_a, PathKind::Quic).await?;
        assert_eq!(to_b.path(), PathKind::Quic);
        assert_eq!(from_a.path(), PathKind::Quic);

        let relayed_before = server.server.stats().relay_bytes;
        stream_transfer(&to_b, &from_a, LEN).await?;
        let relayed = server.server.stats().relay_bytes - relayed_before;
        ensure!(relayed < 64 * 1024, "the relay carried {relayed} bytes");
        assert_eq!(to_b.path(), PathKind::Quic);
        let (sent, received) = tokio::join!(to_b.send_confirmed("on quic"), from_a.recv());
        sent?;
        ensure!(received?.as_deref() == Some(&b"on quic"[..]));
        Ok(())
    })
    .await
}
