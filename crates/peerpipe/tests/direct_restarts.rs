//! A 500 MiB stream while the direct path is torn down and rebuilt several times
//! mid-transfer, from either side: every move (direct → relay → new direct path)
//! loses and repeats nothing, so the receiver ends byte-identical.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use common::{TestServer, direct_pair, fill_pattern, spawn_pattern_writer};
use peerpipe::PathKind;
use tokio::io::AsyncReadExt as _;

const LEN: u64 = 500 * 1024 * 1024;
const RESTARTS: usize = 4;
const CHUNK: usize = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "500 MiB: runs in release as its own step of .ci/run"]
async fn a_stream_survives_direct_path_rebuilds() -> Result<()> {
    common::init_tracing();
    tokio::time::timeout(Duration::from_secs(600), async {
        let server = TestServer::start().await?;
        let (_a, _b, to_b, from_a) = direct_pair(&server).await?;

        let out = to_b.open_stream().await?;
        let writer = spawn_pattern_writer(out, LEN, CHUNK);
        let mut stream = from_a.accept_stream().await?;
        let mut buf = vec![0; CHUNK];
        let mut expected = vec![0; CHUNK];
        let mut got = 0u64;
        let mut restarts = 0;
        let relayed_start = server.server.stats().relay_bytes;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            fill_pattern(&mut expected[..n], got);
            ensure!(
                buf[..n] == expected[..n],
                "bytes differ in {got}..{}",
                got + n as u64
            );
            got += n as u64;
            // Tear the direct path down every LEN / (RESTARTS + 1) bytes, from
            // alternating sides, once the previous rebuild is done.
            let due = (restarts as u64 + 1) * LEN / (RESTARTS as u64 + 1);
            if restarts < RESTARTS && got >= due && to_b.path() == PathKind::WebRtc {
                let conn = if restarts % 2 == 0 { &to_b } else { &from_a };
                conn.restart_direct();
                restarts += 1;
                tracing::info!(restarts, got, "direct path restarted");
            }
        }
        writer.await??;
        ensure!(got == LEN, "got {got} of {LEN} bytes");
        ensure!(restarts == RESTARTS, "only {restarts} restarts");
        let relayed = server.server.stats().relay_bytes - relayed_start;
        // The relay carried the stream while each new path was negotiated (on
        // loopback it is the faster path); the rest went direct.
        tracing::info!(relayed, "bytes through the relay");
        ensure!(
            relayed < LEN,
            "the relay carried {relayed} bytes: nothing went direct"
        );
        // The last rebuild may finish after the stream did.
        for _ in 0..100 {
            if to_b.path() == PathKind::WebRtc && from_a.path() == PathKind::WebRtc {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("not back on the direct path 10 s after the stream ended")
    })
    .await
    .context("the test timed out")?
}
