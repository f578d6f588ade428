//! Negotiation: connect, accept, reject, offline, self, time-out, close, disconnect.

mod common;

use std::time::Duration;

use anyhow::{Result, bail};
use common::{TestServer, bounded};
use peerpipe_proto::signal::{ClientMessage, CloseReason, ErrorCode, ServerMessage, SessionId};

#[tokio::test]
async fn connect_and_accept() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let s = a.open_session(&mut b, 7).await?;
        assert_ne!(s.0, 0);
        assert_eq!(server.server.stats().sessions, 1);
        // Only the target may accept, and only once.
        a.client
            .send(&ClientMessage::Accept { req: 8, session: s })
            .await?;
        let m = a.client.expect_error(ErrorCode::NotFound).await?;
        assert!(matches!(m, ServerMessage::Error { req: Some(8), session: Some(x), .. } if x == s));
        b.client
            .send(&ClientMessage::Accept { req: 9, session: s })
            .await?;
        b.client.expect_error(ErrorCode::NotFound).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn resume_id_passes_through_to_the_target() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let resume = Some(SessionId(0x5a));
        a.client
            .send(&ClientMessage::Connect {
                req: 1,
                to: b.id,
                resume,
                service: None,
                door: None,
            })
            .await?;
        let ServerMessage::Incoming {
            resume: got, from, ..
        } = b.client.recv().await?
        else {
            bail!("expected incoming")
        };
        assert_eq!(got, resume);
        assert_eq!(from.id, a.id);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn reject_reaches_the_initiator() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        a.client
            .send(&ClientMessage::Connect {
                req: 3,
                to: b.id,
                resume: None,
                service: None,
                door: None,
            })
            .await?;
        let ServerMessage::Incoming { session, .. } = b.client.recv().await? else {
            bail!("expected incoming")
        };
        b.client.send(&ClientMessage::Reject { session }).await?;
        let m = a.client.expect_error(ErrorCode::Rejected).await?;
        assert!(
            matches!(m, ServerMessage::Error { req: Some(3), session: Some(s), .. } if s == session)
        );
        assert_eq!(server.server.stats().sessions, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn offline_and_self_are_refused() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let b_id = b.id;
        drop(b);
        assert_eq!(
            a.client.recv().await?,
            ServerMessage::PeerOffline { id: b_id }
        );
        a.client
            .send(&ClientMessage::Connect {
                req: 1,
                to: b_id,
                resume: None,
                service: None,
                door: None,
            })
            .await?;
        let m = a.client.expect_error(ErrorCode::PeerOffline).await?;
        assert!(matches!(m, ServerMessage::Error { req: Some(1), .. }));
        a.client
            .send(&ClientMessage::Connect {
                req: 2,
                to: a.id,
                resume: None,
                service: None,
                door: None,
            })
            .await?;
        let m = a.client.expect_error(ErrorCode::Forbidden).await?;
        assert!(matches!(m, ServerMessage::Error { req: Some(2), .. }));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unanswered_connect_times_out() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| c.accept_timeout = Duration::from_millis(300)).await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        a.client
            .send(&ClientMessage::Connect {
                req: 5,
                to: b.id,
                resume: None,
                service: None,
                door: None,
            })
            .await?;
        let ServerMessage::Incoming { session, .. } = b.client.recv().await? else {
            bail!("expected incoming")
        };
        let m = a.client.expect_error(ErrorCode::Timeout).await?;
        assert!(
            matches!(m, ServerMessage::Error { req: Some(5), session: Some(s), .. } if s == session)
        );
        assert_eq!(
            b.client.recv().await?,
            ServerMessage::Closed {
                session,
                reason: CloseReason::Timeout
            }
        );
        // Too late to accept now.
        b.client
            .send(&ClientMessage::Accept { req: 6, session })
            .await?;
        b.client.expect_error(ErrorCode::NotFound).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn close_reaches_the_other_party() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let mut c = server.device("alice", "c").await?;
        for _ in 0..2 {
            let _ = a.client.recv().await?;
        }
        let _ = b.client.recv().await?;
        let s = a.open_session(&mut b, 1).await?;
        // A device that is no party cannot close it.
        c.client.send(&ClientMessage::Close { session: s }).await?;
        b.client.send(&ClientMessage::Close { session: s }).await?;
        assert_eq!(
            a.client.recv().await?,
            ServerMessage::Closed {
                session: s,
                reason: CloseReason::PeerClosed
            }
        );

        // The initiator withdraws a pending connect: the target hears `cancelled`.
        a.client
            .send(&ClientMessage::Connect {
                req: 2,
                to: b.id,
                resume: None,
                service: None,
                door: None,
            })
            .await?;
        let ServerMessage::Incoming { session, .. } = b.client.recv().await? else {
            bail!("expected incoming")
        };
        a.client.send(&ClientMessage::Close { session }).await?;
        assert_eq!(
            b.client.recv().await?,
            ServerMessage::Closed {
                session,
                reason: CloseReason::Cancelled
            }
        );
        assert_eq!(server.server.stats().sessions, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn disconnect_ends_sessions() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let s = a.open_session(&mut b, 1).await?;
        // A pending connect to b as well.
        a.client
            .send(&ClientMessage::Connect {
                req: 2,
                to: b.id,
                resume: None,
                service: None,
                door: None,
            })
            .await?;
        let ServerMessage::Incoming {
            session: pending, ..
        } = b.client.recv().await?
        else {
            bail!("expected incoming")
        };
        let b_id = b.id;
        drop(b);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(a.client.recv().await?);
        }
        assert!(
            got.contains(&ServerMessage::Closed {
                session: s,
                reason: CloseReason::PeerDisconnected
            }),
            "{got:?}"
        );
        assert!(
            got.contains(&ServerMessage::PeerOffline { id: b_id }),
            "{got:?}"
        );
        assert!(
            got.iter().any(|m| matches!(m, ServerMessage::Error {
            req: Some(2), session: Some(p), code: ErrorCode::PeerOffline, ..
        } if *p == pending)),
            "{got:?}"
        );

        // The initiator drops a pending connect: the target hears `cancelled`.
        let mut b = server.device("alice", "b2").await?;
        let _ = a.client.recv().await?;
        a.client
            .send(&ClientMessage::Connect {
                req: 3,
                to: b.id,
                resume: None,
                service: None,
                door: None,
            })
            .await?;
        let ServerMessage::Incoming { session, .. } = b.client.recv().await? else {
            bail!("expected incoming")
        };
        drop(a);
        let got = [b.client.recv().await?, b.client.recv().await?];
        assert!(
            got.contains(&ServerMessage::Closed {
                session,
                reason: CloseReason::Cancelled
            }),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|m| matches!(m, ServerMessage::PeerOffline { .. })),
            "{got:?}"
        );
        assert_eq!(server.server.stats().sessions, 0);
        Ok(())
    })
    .await
}
