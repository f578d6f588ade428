//! Devices of different users, and anonymous devices, connect by one-time code
//! and move a stream: the offer consumes the code's incoming connection, the
//! connection is an ordinary one (service "code", direct path when ready).

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use common::{TestServer, bounded, expect_none, stream_transfer, wait_path};
use peerpipe::{CodeOffer, Connection, Node, NodeEvent, PathKind};

const LEN: usize = 1024 * 1024;

/// `offerer` offers a code, `claimer` claims it: (offerer's end, claimer's end).
async fn connect_by_code(offerer: &Node, claimer: &Node) -> Result<(Connection, Connection)> {
    let offer = offerer.offer_code().await.context("offering a code")?;
    let code = offer.code().to_owned();
    tracing::info!(%code, "offered");
    ensure!(offer.nameplate() < 1000, "a short code: {code}");
    ensure!(code.starts_with(&format!("{}-", offer.nameplate())));
    ensure!(offer.valid_for() > Duration::ZERO);
    let accepting = tokio::spawn(offer.accept());
    let claimed = claimer.claim_code(&code).await.context("claiming")?;
    let accepted = accepting.await?.context("accepting")?;
    ensure!(claimed.session_id() == accepted.session_id());
    ensure!(claimed.peer().id == offerer.id());
    ensure!(accepted.peer().id == claimer.id());
    ensure!(claimed.service() == Some(CodeOffer::SERVICE));
    ensure!(accepted.service() == Some(CodeOffer::SERVICE));
    Ok((accepted, claimed))
}

#[tokio::test]
async fn devices_of_different_users_and_anonymous_ones_connect_by_code() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let alice = server.node("alice", "alice").await?;
        let bob = server.node("bob", "bob").await?;
        let anon = server.anonymous("anon").await?;

        // A device with a token offers, an anonymous device claims.
        let (from_alice, to_alice) = connect_by_code(&alice, &anon).await?;
        stream_transfer(&from_alice, &to_alice, LEN).await?;
        stream_transfer(&to_alice, &from_alice, LEN).await?;
        // It moves to the direct path like any connection.
        wait_path(&anon, &to_alice, PathKind::Quic).await?;
        stream_transfer(&from_alice, &to_alice, LEN).await?;

        // An anonymous device offers, a device of another user claims; and two
        // users' devices.
        let (from_anon, to_anon) = connect_by_code(&anon, &bob).await?;
        stream_transfer(&to_anon, &from_anon, LEN).await?;
        let (from_bob, to_bob) = connect_by_code(&bob, &alice).await?;
        stream_transfer(&from_bob, &to_bob, LEN).await?;

        // The offers took the code connections: no node saw them as events.
        for node in [&alice, &bob, &anon] {
            expect_none(node, Duration::from_millis(200), |e| {
                matches!(e, NodeEvent::IncomingConnection(_))
            })
            .await?;
        }
        // Nobody sees anybody: the code gave no presence.
        ensure!(alice.online_peers().await?.is_empty());
        ensure!(anon.online_peers().await?.is_empty());
        Ok(())
    })
    .await
}
