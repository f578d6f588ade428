//! User isolation: a device sees and reaches only its own user's devices.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{TestServer, bounded, expect_none};
use peerpipe::{ConnectError, Identity, NodeEvent};

#[tokio::test]
async fn other_users_devices_are_invisible_and_unreachable() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let bob = server.node("bob", "bob-phone").await?;
        let alice1 = server.node("alice", "alice-laptop").await?;
        let alice2 = server.node("alice", "alice-phone").await?;

        let seen: Vec<_> = alice1
            .online_peers()
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(seen, vec![alice2.id()]);
        assert!(
            bob.online_peers().await?.is_empty(),
            "bob sees alice's devices"
        );
        expect_none(&bob, Duration::from_millis(300), |e| {
            matches!(
                e,
                NodeEvent::PeerOnline(_) | NodeEvent::IncomingConnection(_)
            )
        })
        .await?;

        let to_alice = bob
            .connect(alice1.id())
            .await
            .expect_err("must not reach alice");
        assert_eq!(to_alice, ConnectError::NotFound);
        let random = Identity::from_secret_bytes(rand::random()).device_id();
        let to_random = bob.connect(random).await.expect_err("no such device");
        assert_eq!(
            to_random,
            ConnectError::NotFound,
            "same answer as for a random id"
        );

        let to_bob = alice1
            .connect(bob.id())
            .await
            .expect_err("must not reach bob");
        assert_eq!(to_bob, ConnectError::NotFound);
        expect_none(&alice1, Duration::from_millis(200), |e| {
            matches!(e, NodeEvent::IncomingConnection(_))
        })
        .await?;
        Ok(())
    })
    .await
}
