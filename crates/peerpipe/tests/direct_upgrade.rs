//! Two devices on one machine with QUIC off: the connection starts on the relay,
//! moves to a direct WebRTC data channel, and a stream then flows direct — the server relays
//! only the signaling bytes (handshake, offer, answer, keepalives), not the data.

mod common;

use anyhow::{Result, ensure};
use common::{TestServer, bounded, pair, stream_transfer, wait_for};
use peerpipe::{NodeEvent, PathKind};

const LEN: usize = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_moves_direct_once_the_channel_opens() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        // QUIC off: this is the WebRTC path (native peers would take QUIC).
        let a = server.builder("alice", "a").quic(false).bind().await?;
        let b = server.builder("alice", "b").quic(false).bind().await?;
        let (to_b, from_a) = pair(&a, &b).await?;
        assert_eq!(to_b.path(), PathKind::Relay);
        for node in [&a, &b] {
            let rtt = wait_for(node, "the move to the direct path", |e| match e {
                NodeEvent::PathChanged {
                    path: PathKind::WebRtc,
                    session,
                    rtt,
                    ..
                } if session == to_b.session_id() => Some(rtt),
                _ => None,
            })
            .await?;
            ensure!(rtt < std::time::Duration::from_secs(1), "rtt {rtt:?}");
        }
        assert_eq!(to_b.path(), PathKind::WebRtc);
        assert_eq!(from_a.path(), PathKind::WebRtc);

        let relayed_before = server.server.stats().relay_bytes;
        stream_transfer(&to_b, &from_a, LEN).await?;
        let relayed = server.server.stats().relay_bytes - relayed_before;
        // Keepalives and nothing else: far below one percent of the data.
        ensure!(relayed < 64 * 1024, "the relay carried {relayed} bytes");
        assert_eq!(to_b.path(), PathKind::WebRtc);
        Ok(())
    })
    .await
}
