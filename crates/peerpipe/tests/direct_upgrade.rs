//! Two devices on one machine: the connection starts on the relay, moves to a
//! direct WebRTC data channel, and a stream then flows direct — the server relays
//! only the signaling bytes (handshake, offer, answer, keepalives), not the data.

mod common;

use anyhow::{Result, ensure};
use common::{TestServer, bounded, pair, wait_for};
use peerpipe::{NodeEvent, PathKind};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const LEN: usize = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_moves_direct_once_the_channel_opens() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server.node("alice", "b").await?;
        let (to_b, from_a) = pair(&a, &b).await?;
        assert_eq!(to_b.path(), PathKind::Relay);
        for node in [&a, &b] {
            let rtt = wait_for(node, "the move to the direct path", |e| match e {
                NodeEvent::PathChanged {
                    path: PathKind::Direct,
                    session,
                    rtt,
                    ..
                } if session == to_b.session_id() => Some(rtt),
                _ => None,
            })
            .await?;
            ensure!(rtt < std::time::Duration::from_secs(1), "rtt {rtt:?}");
        }
        assert_eq!(to_b.path(), PathKind::Direct);
        assert_eq!(from_a.path(), PathKind::Direct);

        let relayed_before = server.server.stats().relay_bytes;
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
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
        let relayed = server.server.stats().relay_bytes - relayed_before;
        // Keepalives and nothing else: far below one percent of the data.
        ensure!(relayed < 64 * 1024, "the relay carried {relayed} bytes");
        assert_eq!(to_b.path(), PathKind::Direct);
        Ok(())
    })
    .await
}
