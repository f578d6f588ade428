//! Doors: a device of another user (or an anonymous one) reaches a device only
//! through a door that device opened, and only while it is open; the target
//! hears which door; a connection holds a bounded number of doors, and forgets
//! them with its link.

mod common;

use std::time::Duration;

use anyhow::{Result, bail};
use common::{Client, TestServer, bounded, expect_silence};
use peerpipe_proto::door::{Door, DoorKey};
use peerpipe_proto::id::DeviceId;
use peerpipe_proto::signal::{ClientMessage, ErrorCode, MAX_DOORS, ServerMessage};

fn door(n: u8) -> Door {
    DoorKey([n; 32]).door()
}

async fn connect(from: &mut Client, req: u64, to: DeviceId, door: Option<Door>) -> Result<()> {
    from.send(&ClientMessage::Connect {
        req,
        to,
        resume: None,
        service: Some("share".into()),
        door,
    })
    .await
}

/// Opens `door` on `client` and waits until the server has taken it (a
/// request behind it is answered).
async fn open(client: &mut Client, door: Door) -> Result<()> {
    client.send(&ClientMessage::OpenDoor { door }).await?;
    client.send(&ClientMessage::ListPeers { req: 99 }).await?;
    match client.recv().await? {
        ServerMessage::Peers { req: 99, .. } => Ok(()),
        m => bail!("expected the peers answer, got {m:?}"),
    }
}

#[tokio::test]
async fn another_user_comes_in_only_by_an_open_door() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("bob", "b").await?;
        let mut anon = server.anonymous("anon").await?;
        open(&mut a.client, door(1)).await?;

        // The wrong door and no door: as for any device of another user.
        connect(&mut b.client, 1, a.id, Some(door(2))).await?;
        b.client.expect_error(ErrorCode::NotFound).await?;
        connect(&mut b.client, 2, a.id, None).await?;
        b.client.expect_error(ErrorCode::NotFound).await?;
        expect_silence(&mut a.client, Duration::from_millis(200)).await?;

        // The open door, from bob and from an anonymous device.
        for (req, from) in [(3, &mut b), (4, &mut anon)] {
            connect(&mut from.client, req, a.id, Some(door(1))).await?;
            let m = a.client.recv().await?;
            let ServerMessage::Incoming {
                session,
                from: who,
                door: came_by,
                service,
                ..
            } = m
            else {
                bail!("expected an incoming connection, got {m:?}");
            };
            assert_eq!((who.id, came_by), (from.id, Some(door(1))));
            assert_eq!(service.as_deref(), Some("share"));
            a.client
                .send(&ClientMessage::Accept { req: 10, session })
                .await?;
            assert!(matches!(
                a.client.recv().await?,
                ServerMessage::Accepted { req: 10, .. }
            ));
            assert!(matches!(
                from.client.recv().await?,
                ServerMessage::Connected { req: r, .. } if r == req
            ));
        }

        // Closed: not found again; a door of a's is no door of b's.
        a.client
            .send(&ClientMessage::CloseDoor { door: door(1) })
            .await?;
        open(&mut b.client, door(1)).await?;
        connect(&mut anon.client, 5, a.id, Some(door(1))).await?;
        anon.client.expect_error(ErrorCode::NotFound).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn doors_are_bounded_and_forgotten_with_the_link() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let identity = common::identity();
        let mut a = server.device_with(&identity, "alice", "a").await?;
        let mut b = server.device("bob", "b").await?;
        for n in 0..MAX_DOORS {
            open(&mut a.client, door(n as u8)).await?;
        }
        // Opening one held already is no new door.
        open(&mut a.client, door(0)).await?;
        a.client
            .send(&ClientMessage::OpenDoor { door: door(200) })
            .await?;
        a.client.expect_error(ErrorCode::RateLimited).await?;
        connect(&mut b.client, 1, a.id, Some(door(200))).await?;
        b.client.expect_error(ErrorCode::NotFound).await?;

        // The same device on a new link has no doors until it opens them.
        drop(a);
        let mut again = server.device_with(&identity, "alice", "a").await?;
        connect(&mut b.client, 2, again.id, Some(door(0))).await?;
        b.client.expect_error(ErrorCode::NotFound).await?;
        open(&mut again.client, door(0)).await?;
        connect(&mut b.client, 3, again.id, Some(door(0))).await?;
        assert!(matches!(
            again.client.recv().await?,
            ServerMessage::Incoming { door: Some(d), .. } if d == door(0)
        ));
        Ok(())
    })
    .await
}
