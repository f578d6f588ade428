//! A server that admits no anonymous devices refuses a node without a token
//! with a typed error, and a server with codes off refuses code requests.

mod common;

use anyhow::{Result, bail};
use common::{TestServer, bounded};
use peerpipe::{BindError, CodeError};

#[tokio::test]
async fn anonymous_nodes_and_codes_can_be_refused() -> Result<()> {
    bounded(async {
        let server = TestServer::start_with(|c| c.allow_anonymous = false).await?;
        match server.anonymous_builder("anon").bind().await {
            Err(e @ BindError::AnonymousRefused(_)) => assert!(e.is_fatal()),
            other => bail!("expected AnonymousRefused, got {other:?}"),
        }
        // Devices with a token still get in, and may use codes.
        let alice = server.node("alice", "a").await?;
        drop(alice.offer_code().await?);

        let server = TestServer::start_with(|c| c.allow_codes = false).await?;
        let alice = server.node("alice", "a").await?;
        match alice.offer_code().await {
            Err(CodeError::Forbidden(_)) => {}
            other => bail!("expected Forbidden, got {other:?}"),
        }
        match alice.claim_code("1-amber-falcon").await {
            Err(CodeError::Forbidden(_)) => {}
            other => bail!("expected Forbidden, got {other:?}"),
        }
        Ok(())
    })
    .await
}
