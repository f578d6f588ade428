//! Many idle connections between two nodes: opening them stays quick (an idle
//! connection holds no place in the node's queue to the server) and each one
//! still works.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result};
use common::{bounded, builder, pair, server_config, token_with, unix_now};
use peerpipe_server::Server;

const CONNECTIONS: usize = 150;

#[tokio::test]
async fn a_hundred_and_fifty_idle_connections() -> Result<()> {
    bounded(async {
        let secret: [u8; 32] = rand::random();
        let mut config = server_config(&secret, "127.0.0.1:0".parse()?);
        // Each connect is a control message on both links.
        config.control_rate = 10_000;
        config.control_burst = 10_000;
        let server = Server::bind(config).await?;
        let token = token_with(&secret, "alice", unix_now() + 3600);
        let a = builder(&server.url(), &token, "a").bind().await?;
        let b = builder(&server.url(), &token, "b").bind().await?;
        let mut conns = Vec::with_capacity(CONNECTIONS);
        for i in 0..CONNECTIONS {
            // Far more than any connect needs; a connection stuck behind idle ones
            // waits for a keepalive (seconds).
            let conn = tokio::time::timeout(Duration::from_secs(2), pair(&a, &b))
                .await
                .with_context(|| format!("connection {i} took over 2 s to open"))??;
            conns.push(conn);
        }
        for (to_b, from_a) in [&conns[0], &conns[CONNECTIONS - 1]] {
            let (sent, got) = tokio::join!(to_b.send_confirmed("still alive"), from_a.recv());
            sent?;
            assert_eq!(got?.as_deref(), Some(&b"still alive"[..]));
        }
        assert_eq!(server.stats().sessions as usize, CONNECTIONS);
        Ok(())
    })
    .await
}
