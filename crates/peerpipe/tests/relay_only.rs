//! With the direct path forbidden on either side, connections stay on the relay
//! and transfers complete there: a relay-only dialer never offers, and a
//! relay-only acceptor declines the offer so the dialer stops asking.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{TestServer, bounded, expect_none, pair, stream_transfer};
use peerpipe::{NodeEvent, PathKind, PathPolicy};

const LEN: usize = 8 * 1024 * 1024;

async fn transfer_stays_on_the_relay(relay_only_dialer: bool) -> Result<()> {
    let server = TestServer::start().await?;
    let policy = |relay_only| {
        if relay_only {
            PathPolicy::RelayOnly
        } else {
            PathPolicy::Any
        }
    };
    let a = server
        .builder("alice", "a")
        .path_policy(policy(relay_only_dialer))
        .bind()
        .await?;
    let b = server
        .builder("alice", "b")
        .path_policy(policy(!relay_only_dialer))
        .bind()
        .await?;
    let (to_b, from_a) = pair(&a, &b).await?;
    let relayed_before = server.server.stats().relay_bytes;
    stream_transfer(&to_b, &from_a, LEN).await?;
    let relayed = server.server.stats().relay_bytes - relayed_before;
    ensure!(
        relayed >= LEN as u64,
        "only {relayed} bytes went through the relay"
    );
    // No direct attempt succeeds later either.
    let direct = |e: &NodeEvent| {
        matches!(
            e,
            NodeEvent::PathChanged {
                path: PathKind::WebRtc | PathKind::Quic,
                ..
            }
        )
    };
    expect_none(&a, Duration::from_millis(500), direct).await?;
    expect_none(&b, Duration::from_millis(100), direct).await?;
    assert_eq!(to_b.path(), PathKind::Relay);
    assert_eq!(from_a.path(), PathKind::Relay);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_dialer_never_offers() -> Result<()> {
    bounded(transfer_stays_on_the_relay(true)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_acceptor_declines() -> Result<()> {
    bounded(transfer_stays_on_the_relay(false)).await
}
