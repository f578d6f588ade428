//! Graceful shutdown: clients hear `shutting_down`, and the port can be bound again.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{TestServer, bounded};
use peerpipe_proto::signal::{ErrorCode, ServerMessage};
use peerpipe_server::{Config, Server};

#[tokio::test]
async fn shutdown_tells_clients_and_frees_the_port() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let addr = server.server.local_addr();
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        a.open_session(&mut b, 1).await?;
        // One more connection still in its handshake.
        let mut pending = common::Client::connect(&server.server.url()).await?;

        let started = tokio::time::Instant::now();
        let stopping = tokio::spawn(server.server.shutdown());
        for client in [&mut a.client, &mut b.client, &mut pending] {
            // Presence and session events of devices closed first may come before.
            loop {
                match client.recv().await? {
                    ServerMessage::Error { code, .. } => {
                        assert_eq!(code, ErrorCode::ShuttingDown);
                        break;
                    }
                    ServerMessage::PeerOffline { .. } | ServerMessage::Closed { .. } => {}
                    m => anyhow::bail!("unexpected {m:?}"),
                }
            }
            client.expect_close().await?;
        }
        stopping.await?;
        assert!(started.elapsed() < Duration::from_secs(5));

        let mut config = Config::new(server.secret.clone());
        config.listen = addr;
        let again = Server::bind(config).await?;
        assert_eq!(again.local_addr(), addr);
        let _c = TestServer {
            server: again,
            secret: server.secret,
        }
        .device("alice", "c")
        .await?;
        Ok(())
    })
    .await
}
