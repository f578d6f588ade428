//! Connection limits (issue 19, findings 1 and 3): a cap per address and a
//! global cap below the open-file limit; connections over them get a clean
//! HTTP refusal while `/health` keeps answering, and the places come back.

mod common;

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use common::{TestServer, bounded, http_get};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The status line a new connection gets for `GET /v1/signal` (no upgrade).
async fn status_of_new(addr: SocketAddr) -> Result<u16> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /v1/signal HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(common::RECV_LIMIT, s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()
        .map_err(Into::into)
}

/// Waits until the server counts `n` open connections (the accept loop runs
/// on its own task).
async fn until_open(addr: SocketAddr, n: usize) -> Result<()> {
    for _ in 0..100 {
        let (_, text) = http_get(addr, "/metrics").await?;
        // The scrape's own connection counts as one.
        if text.contains(&format!("peerpipe_tcp_connections {}\n", n + 1)) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    anyhow::bail!("the server never counted {n} open connections")
}

#[tokio::test]
async fn an_address_over_its_cap_gets_429_and_the_place_comes_back() -> Result<()> {
    bounded(async {
        let t = TestServer::with(|c| c.max_connections_per_ip = 4).await?;
        let addr = t.server.local_addr();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(addr).await?);
        }
        until_open(addr, 3).await?;
        // Connections are admitted in the order they arrive: with a fourth
        // held, a fifth is refused.
        held.push(TcpStream::connect(addr).await?);
        assert_eq!(status_of_new(addr).await?, 429);
        drop(held.pop());
        // Places are given back when sockets close.
        let mut ok = false;
        for _ in 0..50 {
            if status_of_new(addr).await? != 429 {
                ok = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(ok, "a place came back after a connection closed");
        let (_, metrics) = http_get(addr, "/metrics").await?;
        assert!(
            !metrics.contains("peerpipe_refused_connections_total{reason=\"per_address\"} 0\n"),
            "{metrics}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_full_server_refuses_with_503_and_still_answers_health() -> Result<()> {
    bounded(async {
        let t = TestServer::with(|c| c.max_connections = 8).await?;
        let addr = t.server.local_addr();
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(TcpStream::connect(addr).await?);
        }
        assert_eq!(status_of_new(addr).await?, 503);
        assert_eq!(http_get(addr, "/health").await?, (200, "ok\n".into()));
        // A device cannot join now, and says why; once others leave it can.
        let url = t.server.url();
        let refused = common::Client::connect(&url).await;
        assert!(refused.is_err(), "a WebSocket over the limit is refused");
        held.clear();
        let mut joined = None;
        for _ in 0..50 {
            if let Ok(d) = t.device("alice", "a").await {
                joined = Some(d);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(joined.is_some(), "a device joins once connections closed");
        Ok(())
    })
    .await
}
