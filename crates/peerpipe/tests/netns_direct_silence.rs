//! A direct path (WebRTC, then QUIC) that goes silent mid-transfer (every UDP datagram dropped by
//! iptables, nothing closed, nobody told): within the path time-out both sides
//! move back to the relay, the stream completes byte-identical, and once UDP
//! flows again a new direct path takes over.
//!
//! Runs in a network namespace of its own (`unshare -rn`, loopback only), so the
//! firewall rule touches nothing else. Opt-in (`--ignored`); `.ci/run` runs it as
//! its own step and installs `iptables` first.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{
    TestServer, block_on_bounded, direct_pair, quic_pair, rerun_in_netns, run, wait_path,
};
use peerpipe::PathKind;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const LEN: u64 = 64 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn byte(i: u64) -> u8 {
    (i.wrapping_mul(0x9e37_79b9) >> 11) as u8
}

/// Drops (or, with `false`, lets through again) every UDP datagram.
fn block_udp(block: bool) -> Result<()> {
    let op = if block { "-A" } else { "-D" };
    run("iptables", &[op, "INPUT", "-p", "udp", "-j", "DROP"])
}

#[test]
#[ignore = "needs unshare and iptables: its own step of .ci/run"]
fn a_silent_direct_path_falls_back_to_the_relay_and_recovers() -> Result<()> {
    if rerun_in_netns("a_silent_direct_path_falls_back_to_the_relay_and_recovers")? {
        return Ok(());
    }
    block_on_bounded(Duration::from_secs(120), inside(PathKind::WebRtc))
}

#[test]
#[ignore = "needs unshare and iptables: its own step of .ci/run"]
fn a_silent_quic_path_falls_back_to_the_relay_and_recovers() -> Result<()> {
    if rerun_in_netns("a_silent_quic_path_falls_back_to_the_relay_and_recovers")? {
        return Ok(());
    }
    block_on_bounded(Duration::from_secs(120), inside(PathKind::Quic))
}

/// The scenario on a direct path of `kind` (WebRTC or QUIC).
async fn inside(kind: PathKind) -> Result<()> {
    let server = TestServer::start().await?;
    let (a, _b, to_b, from_a) = if kind == PathKind::Quic {
        quic_pair(&server).await?
    } else {
        direct_pair(&server).await?
    };

    let mut out = to_b.open_stream().await?;
    let writer = tokio::spawn(async move {
        let mut buf = vec![0; CHUNK];
        let mut at = 0u64;
        while at < LEN {
            let n = CHUNK.min((LEN - at) as usize);
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = byte(at + k as u64);
            }
            out.write_all(&buf[..n]).await?;
            at += n as u64;
            // Slow enough that the outage falls in the middle of the stream.
            if at.is_multiple_of(4 * 1024 * 1024) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        out.shutdown().await?;
        anyhow::Ok(())
    });
    let mut stream = from_a.accept_stream().await?;
    let mut buf = vec![0; CHUNK];
    let mut got = 0u64;
    let mut blocked_at = None;
    let mut fallback = None;
    while got < LEN {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            if *b != byte(got + k as u64) {
                bail!("byte {} differs", got + k as u64);
            }
        }
        got += n as u64;
        if blocked_at.is_none() && got >= LEN / 4 {
            block_udp(true)?;
            blocked_at = Some(got);
            let (a, to_b) = (a.clone(), to_b.clone());
            fallback = Some(tokio::spawn(async move {
                wait_path(&a, &to_b, PathKind::Relay).await
            }));
        }
    }
    writer.await??;
    ensure!(got == LEN, "got {got} of {LEN} bytes");
    let fell_back_after = fallback.context("the outage never started")?.await??;
    tracing::info!(?fell_back_after, "moved to the relay");
    // The path time-out is 2 s; the first unanswered packet may be a moment late.
    ensure!(
        fell_back_after < Duration::from_secs(5),
        "moved to the relay only after {fell_back_after:?}"
    );
    assert_eq!(from_a.path(), PathKind::Relay);
    block_udp(false)?;
    let back_after = wait_path(&a, &to_b, kind).await?;
    tracing::info!(?back_after, "back on a direct path");
    // The connection still works, on the new direct path.
    let (sent, received) = tokio::join!(to_b.send_confirmed("after"), from_a.recv());
    sent?;
    ensure!(received?.as_deref() == Some(&b"after"[..]));
    Ok(())
}
