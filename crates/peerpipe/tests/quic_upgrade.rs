//! Two native devices: the connection starts on the relay and moves to a direct
//! QUIC connection (pinned through the session); a stream then flows on it and
//! the server relays only the signaling bytes.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{TestServer, bounded, pair, quic_pair, stream_transfer};
use peerpipe::{Connection, PathKind};

const LEN: usize = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_peers_move_to_quic() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let (_a, _b, to_b, from_a) = quic_pair(&server).await?;
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

/// Several connections between the same two nodes (one certificate each) at
/// once: every one gets its own QUIC connection, none is crossed with another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_between_two_nodes_each_get_their_own_quic_path() -> Result<()> {
    const N: usize = 8;
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server.node("alice", "b").await?;
        let mut conns = Vec::new();
        for _ in 0..N {
            conns.push(pair(&a, &b).await?);
        }
        // (Node events name one connection each: poll the paths instead.)
        let all_quic = |conns: &[(Connection, Connection)]| {
            conns
                .iter()
                .all(|(x, y)| x.path() == PathKind::Quic && y.path() == PathKind::Quic)
        };
        for _ in 0..500 {
            if all_quic(&conns) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ensure!(
            all_quic(&conns),
            "not every connection reached the QUIC path"
        );
        for (i, (to_b, from_a)) in conns.iter().enumerate() {
            let text = format!("connection {i}");
            let (sent, received) = tokio::join!(to_b.send_confirmed(text.clone()), from_a.recv());
            sent?;
            ensure!(
                received?.as_deref() == Some(text.as_bytes()),
                "connection {i} crossed"
            );
            ensure!(to_b.path() == PathKind::Quic && from_a.path() == PathKind::Quic);
        }
        Ok(())
    })
    .await
}
