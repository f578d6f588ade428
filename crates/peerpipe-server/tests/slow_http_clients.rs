//! Slow HTTP clients (issue 19, finding 1): TCP connections that send nothing
//! or half a request head are closed at the handshake time-out, and the server
//! keeps answering others meanwhile.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::{TestServer, bounded, http_get};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Waits until the server closes `s`; returns how long that took.
async fn closed_after(mut s: TcpStream, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Err(_) => bail!("still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return Ok(start.elapsed()),
            // A 408 or an error page before the close is fine.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn silent_and_half_header_connections_are_closed_at_the_time_out() -> Result<()> {
    bounded(async {
        let t = TestServer::with(|c| c.handshake_timeout = Duration::from_secs(1)).await?;
        let addr = t.server.local_addr();
        let mut silent = Vec::new();
        let mut half = Vec::new();
        for _ in 0..100 {
            silent.push(TcpStream::connect(addr).await?);
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(b"GET /v1/signal HTTP/1.1\r\nHost: x\r\nUpgrade: web")
                .await?;
            half.push(s);
        }
        // Kept alive after a good request, then silent: closed too.
        let mut kept = TcpStream::connect(addr).await?;
        kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        let mut first = [0u8; 256];
        let n = kept.read(&mut first).await?;
        assert!(first[..n].starts_with(b"HTTP/1.1 200"), "health answered");
        // Others are served meanwhile.
        assert_eq!(http_get(addr, "/health").await?, (200, "ok\n".into()));
        let limit = Duration::from_secs(5);
        let mut slowest = Duration::ZERO;
        for s in silent.into_iter().chain(half).chain([kept]) {
            slowest = slowest.max(closed_after(s, limit).await?);
        }
        assert!(
            slowest < limit,
            "all 201 closed, the last after {slowest:?}"
        );
        assert_eq!(http_get(addr, "/health").await?, (200, "ok\n".into()));
        Ok(())
    })
    .await
}
