//! Joining through a link that swallows the first connection: the node opens a
//! new one beside it instead of waiting out the connect time-out (a lost SYN or
//! upgrade request on a lossy link), and only one connection is admitted. The
//! first connection is never answered: a node that only waited on it would
//! fail with `TimedOut`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use common::{TestServer, bounded};
use tokio::net::{TcpListener, TcpStream};

/// A TCP forwarder to `to` that accepts its first `silent` connections and never
/// answers them (holding them open), and forwards every later one.
async fn swallowing_proxy(
    to: std::net::SocketAddr,
    silent: usize,
) -> Result<(String, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            if count.fetch_add(1, Ordering::SeqCst) < silent {
                held.push(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok((format!("ws://{addr}/v1/signal"), accepted))
}

#[tokio::test]
async fn a_swallowed_first_connection_is_retried_beside_it() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let (url, accepted) = swallowing_proxy(server.server.local_addr(), 1).await?;
        let node = peerpipe::Node::builder()
            .server(url)
            .token(server.token("alice"))
            .label("laptop")
            .connect_timeout(Duration::from_secs(20))
            .bind()
            .await
            .context("binding through a link that swallowed the first connection")?;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "one retry, not more");
        assert_eq!(server.server.stats().devices_online, 1);
        // The admitted connection is the one kept: nothing replaces it later.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(node.online_peers().await?.is_empty());
        assert_eq!(server.server.stats().devices_online, 1);
        node.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_refused_connection_fails_at_once() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        drop(listener);
        let err = peerpipe::Node::builder()
            .server(format!("ws://{addr}/v1/signal"))
            .connect_timeout(Duration::from_secs(20))
            .bind()
            .await
            .expect_err("nothing listens there");
        // Not `TimedOut`: a refusal ends the dial, it is not retried for the
        // whole time-out.
        assert!(
            matches!(err, peerpipe::BindError::Unreachable(_)),
            "{err:?}"
        );
        Ok(())
    })
    .await
}
