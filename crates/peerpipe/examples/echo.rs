//! The smallest peerpipe program: two devices of one user, one echoes what the
//! other sends.
//!
//! ```text
//! cargo run -p peerpipe --example echo                     # embedded server
//! PEERPIPE_SERVER=ws://127.0.0.1:7878/v1/signal PEERPIPE_TOKEN=pp1... \
//!     cargo run -p peerpipe --example echo                 # a running server
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use peerpipe::{Node, NodeEvent};

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // A server URL and token from the environment, or an embedded server.
    let mut embedded = None;
    let (url, token) = match (
        std::env::var("PEERPIPE_SERVER"),
        std::env::var("PEERPIPE_TOKEN"),
    ) {
        (Ok(url), Ok(token)) => (url, token),
        _ => {
            let secret: [u8; 32] = rand::random();
            let mut config = peerpipe_server::Config::new(secret.to_vec());
            config.listen = "127.0.0.1:0".parse()?;
            let server = peerpipe_server::Server::bind(config).await?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let token = peerpipe_proto::token::mint(&secret, "echo-demo", now + 3600)?;
            let url = server.url();
            embedded = Some(server);
            (url, token)
        }
    };

    let echo = Node::builder()
        .server(url.clone())
        .token(token.clone())
        .label("echo")
        .bind()
        .await
        .context("binding the echo node")?;
    let client = Node::builder()
        .server(url)
        .token(token)
        .label("client")
        .bind()
        .await
        .context("binding the client node")?;

    // The echo side: accept one connection and send every message back.
    let echo_task = tokio::spawn({
        let echo = echo.clone();
        async move {
            while let Some(event) = echo.next_event().await {
                if let NodeEvent::IncomingConnection(incoming) = event {
                    let conn = incoming.accept().await?;
                    while let Some(message) = conn.recv().await? {
                        conn.send(message).await?;
                    }
                    break;
                }
            }
            anyhow::Ok(())
        }
    });

    let conn = client.connect(echo.id()).await?;
    for text in ["hello", "peer", "to peer"] {
        conn.send_confirmed(text).await?;
        let back = conn.recv().await?.context("the echo side closed")?;
        println!(
            "sent {text:?}, got back {:?}",
            String::from_utf8_lossy(&back)
        );
    }
    conn.close().await;
    echo_task.await??;
    client.shutdown().await;
    echo.shutdown().await;
    if let Some(server) = embedded {
        server.shutdown().await;
    }
    Ok(())
}
