//! Relay benchmark: messages/s and MB/s between two `peerpipe` nodes through the
//! server on loopback, next to a raw WebSocket on loopback in the same run.
//!
//! `cargo bench -p peerpipe-cli --bench relay` prints a table. Scale with
//! `PEERPIPE_BENCH_MIB` (bulk MiB, default 512) and `PEERPIPE_BENCH_MSGS`
//! (small messages, default 200000).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use peerpipe::{Connection, Identity, Node, NodeEvent};
use peerpipe_server::{Config, Server};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const BULK_MSG: usize = 64 * 1024;
const SMALL_MSG: usize = 64;

struct Row {
    name: &'static str,
    count: u64,
    bytes: u64,
    elapsed: Duration,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<()> {
    let bulk_mib = env_u64("PEERPIPE_BENCH_MIB", 512);
    let small = env_u64("PEERPIPE_BENCH_MSGS", 200_000);
    let bulk_count = bulk_mib * 1024 * 1024 / BULK_MSG as u64;
    let confirmed = (small / 20).max(1);

    let mut rows = Vec::new();
    rows.push(raw_ws("raw WebSocket, 64 KiB messages", bulk_count, BULK_MSG).await?);
    rows.push(raw_ws("raw WebSocket, 64 B messages", small, SMALL_MSG).await?);

    let (server, nodes, a, b) = pair().await?;
    rows.push(relay("relay, 64 KiB messages", &a, &b, bulk_count, BULK_MSG).await?);
    rows.push(relay("relay, 64 B messages", &a, &b, small, SMALL_MSG).await?);
    rows.push(relay_confirmed("relay, 64 B confirmed one by one", &a, &b, confirmed).await?);
    a.close().await;
    for node in nodes {
        node.shutdown().await;
    }
    server.shutdown().await;

    println!(
        "\n{:<36} {:>10} {:>12} {:>10} {:>10}",
        "scenario", "messages", "msg/s", "MB/s", "seconds"
    );
    for r in &rows {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<36} {:>10} {:>12.0} {:>10.1} {:>10.2}",
            r.name,
            r.count,
            r.count as f64 / secs,
            r.bytes as f64 / secs / 1e6,
            secs
        );
    }
    let ratio = |relay: usize, raw: usize| {
        rows[raw].elapsed.as_secs_f64() / rows[relay].elapsed.as_secs_f64().max(1e-9)
    };
    println!(
        "\nrelay / raw WebSocket: {:.2}x for bulk MB/s, {:.2}x for small msg/s",
        ratio(2, 0),
        ratio(3, 1)
    );
    Ok(())
}

/// One client streams `count` binary messages to a plain WebSocket sink on loopback.
async fn raw_ws(name: &'static str, count: u64, size: usize) -> Result<Row> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut ws = tokio_tungstenite::accept_async(tcp).await?;
        let mut got = 0u64;
        while got < count {
            match ws.next().await {
                Some(Ok(Message::Binary(_))) => got += 1,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("client went away after {got} messages"),
            }
        }
        ws.send(Message::text("done")).await?;
        anyhow::Ok(())
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
    let payload = Bytes::from(vec![7u8; size]);
    let started = Instant::now();
    for _ in 0..count {
        ws.feed(Message::Binary(payload.clone())).await?;
    }
    ws.flush().await?;
    while let Some(msg) = ws.next().await {
        if matches!(msg?, Message::Text(_)) {
            break;
        }
    }
    let elapsed = started.elapsed();
    sink.await??;
    Ok(Row {
        name,
        count,
        bytes: count * size as u64,
        elapsed,
    })
}

/// A server, two nodes of one user (kept alive by the caller) and a connection between them.
async fn pair() -> Result<(Server, Vec<Node>, Connection, Connection)> {
    let secret: [u8; 32] = rand::random();
    let mut config = Config::new(secret.to_vec());
    config.listen = "127.0.0.1:0".parse()?;
    config.relay_rate = u32::MAX;
    let server = Server::bind(config).await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = peerpipe_proto::token::mint(&secret, "bench", now + 3600)?;
    let mut nodes = Vec::new();
    for label in ["a", "b"] {
        nodes.push(
            Node::builder()
                .server(server.url())
                .token(token.clone())
                .identity(Identity::from_secret_bytes(rand::random()))
                .label(label.to_string())
                .bind()
                .await?,
        );
    }
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let accept = tokio::spawn(async move {
        loop {
            match b.next_event().await {
                Some(NodeEvent::IncomingConnection(i)) => {
                    return i.accept().await.context("accept");
                }
                Some(_) => {}
                None => bail!("node b stopped"),
            }
        }
    });
    let conn_a = a.connect(nodes[1].id()).await?;
    let conn_b = accept.await??;
    Ok((server, nodes, conn_a, conn_b))
}

async fn relay(
    name: &'static str,
    a: &Connection,
    b: &Connection,
    count: u64,
    size: usize,
) -> Result<Row> {
    let b = b.clone();
    let started = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        while got < count {
            match b.recv().await? {
                Some(_) => got += 1,
                None => bail!("closed after {got} messages"),
            }
        }
        anyhow::Ok(())
    });
    let payload = Bytes::from(vec![7u8; size]);
    for _ in 0..count {
        a.send(payload.clone()).await?;
    }
    receiver.await??;
    Ok(Row {
        name,
        count,
        bytes: count * size as u64,
        elapsed: started.elapsed(),
    })
}

async fn relay_confirmed(
    name: &'static str,
    a: &Connection,
    b: &Connection,
    count: u64,
) -> Result<Row> {
    let b = b.clone();
    let started = Instant::now();
    let receiver = tokio::spawn(async move {
        for _ in 0..count {
            b.recv().await?.context("closed early")?;
        }
        anyhow::Ok(())
    });
    let payload = Bytes::from(vec![7u8; SMALL_MSG]);
    for _ in 0..count {
        a.send_confirmed(payload.clone()).await?;
    }
    receiver.await??;
    Ok(Row {
        name,
        count,
        bytes: count * SMALL_MSG as u64,
        elapsed: started.elapsed(),
    })
}
