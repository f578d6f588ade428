//! A wrong code fails cleanly on both sides with `WrongCode` and uses the code
//! up: the right code no longer works. Malformed codes fail before any request.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use common::{TestServer, bounded, expect_none};
use peerpipe::{CodeError, NodeEvent};
use peerpipe_proto::code::{Code, CodeParseError};

#[tokio::test]
async fn a_wrong_code_fails_on_both_sides_and_burns_the_code() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let alice = server.node("alice", "alice").await?;
        let anon = server.anonymous("anon").await?;

        let offer = alice.offer_code().await?;
        let right = offer.code().to_owned();
        let parsed: Code = right.parse()?;
        let [first, second] = parsed.words();
        let other = if second == "zebra" { "yogurt" } else { "zebra" };
        let wrong = format!("{}-{first}-{other}", parsed.nameplate());
        ensure!(wrong != right);

        let started = Instant::now();
        let accepting = tokio::spawn(offer.accept());
        let claimed = anon.claim_code(&wrong).await;
        let accepted = accepting.await?;
        match (&claimed, &accepted) {
            (Err(CodeError::WrongCode), Err(CodeError::WrongCode)) => {}
            _ => bail!("expected WrongCode on both sides, got {claimed:?} and {accepted:?}"),
        }
        ensure!(
            started.elapsed() < Duration::from_secs(3),
            "failing took {:?}",
            started.elapsed()
        );
        // The code is used up: the right words do not help now.
        match anon.claim_code(&right).await {
            Err(CodeError::NotFound) => {}
            other => bail!("expected NotFound, got {other:?}"),
        }
        // Nothing leaked to the nodes' events.
        expect_none(&alice, Duration::from_millis(200), |e| {
            matches!(e, NodeEvent::IncomingConnection(_))
        })
        .await?;

        // Text that is not a code fails before asking the server.
        for bad in [
            "",
            "7",
            "seven-amber-falcon",
            "0-amber-falcon",
            "7-amber-nope",
        ] {
            match anon.claim_code(bad).await {
                Err(CodeError::Malformed(_)) => {}
                other => bail!("{bad:?}: expected Malformed, got {other:?}"),
            }
        }
        ensure!(matches!(
            anon.claim_code("7-amber").await,
            Err(CodeError::Malformed(CodeParseError::Shape))
        ));
        // A number nobody offered.
        match anon.claim_code("999-amber-falcon").await {
            Err(CodeError::NotFound) => {}
            other => bail!("expected NotFound, got {other:?}"),
        }
        Ok(())
    })
    .await
}
