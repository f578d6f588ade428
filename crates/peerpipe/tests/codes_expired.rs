//! An offered code nobody claims ends with `Expired` when the server's code
//! time-out runs out.

mod common;

use std::time::Duration;

use anyhow::{Result, bail};
use common::{TestServer, bounded};
use peerpipe::CodeError;

#[tokio::test]
async fn an_unclaimed_offer_expires() -> Result<()> {
    bounded(async {
        let server = TestServer::start_with(|c| c.code_ttl = Duration::from_millis(300)).await?;
        let alice = server.node("alice", "a").await?;
        let offer = alice.offer_code().await?;
        let code = offer.code().to_owned();
        match tokio::time::timeout(Duration::from_secs(5), offer.accept()).await? {
            Err(CodeError::Expired) => {}
            other => bail!("expected Expired, got {other:?}"),
        }
        let bob = server.node("bob", "b").await?;
        match bob.claim_code(&code).await {
            Err(CodeError::NotFound) => {}
            other => bail!("expected NotFound, got {other:?}"),
        }
        Ok(())
    })
    .await
}
