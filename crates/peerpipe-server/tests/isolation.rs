//! A device sees and reaches only its own user's devices.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{TestServer, bounded, expect_silence, identity};
use peerpipe_proto::signal::{ClientMessage, ErrorCode, ServerMessage};

#[tokio::test]
async fn other_users_devices_are_invisible() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a1 = server.device("alice", "a1").await?;
        let a2 = server.device("alice", "a2").await?;
        assert_eq!(a2.peers.len(), 1);
        assert_eq!(a2.peers[0].id, a1.id);
        let ServerMessage::PeerOnline { peer } = a1.client.recv().await? else {
            anyhow::bail!("expected a2 online");
        };
        assert_eq!(peer.id, a2.id);

        let mut b = server.device("bob", "b").await?;
        assert!(b.peers.is_empty(), "bob's welcome lists {:?}", b.peers);
        b.client.send(&ClientMessage::ListPeers { req: 1 }).await?;
        assert_eq!(
            b.client.recv().await?,
            ServerMessage::Peers {
                req: 1,
                peers: vec![]
            }
        );
        // Alice's devices hear nothing of bob.
        expect_silence(&mut a1.client, Duration::from_millis(200)).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn connect_to_other_users_device_is_not_found_like_a_random_id() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a1 = server.device("alice", "a1").await?;
        let gone = server.device("alice", "gone").await?;
        let _ = a1.client.recv().await?; // gone online
        let gone_id = gone.id;
        drop(gone);
        let m = a1.client.recv().await?;
        assert_eq!(m, ServerMessage::PeerOffline { id: gone_id });

        let mut b = server.device("bob", "b").await?;
        let mut answers = Vec::new();
        for (req, to) in [(1, a1.id), (2, gone_id), (3, identity().device_id())] {
            b.client
                .send(&ClientMessage::Connect {
                    req,
                    to,
                    resume: None,
                    service: None,
                    door: None,
                })
                .await?;
            let m = b.client.recv().await?;
            let ServerMessage::Error {
                req: r,
                session,
                code,
                message,
            } = m
            else {
                anyhow::bail!("expected an error, got {m:?}");
            };
            assert_eq!((r, session, code), (Some(req), None, ErrorCode::NotFound));
            answers.push(message);
        }
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[1], answers[2]);
        // Alice's device got no incoming connection.
        expect_silence(&mut a1.client, Duration::from_millis(200)).await?;

        // Alice herself learns her device is offline rather than unknown.
        a1.client
            .send(&ClientMessage::Connect {
                req: 9,
                to: gone_id,
                resume: None,
                service: None,
                door: None,
            })
            .await?;
        a1.client.expect_error(ErrorCode::PeerOffline).await?;
        Ok(())
    })
    .await
}
