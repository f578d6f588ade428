//! One-time codes: nameplates, the one claim, the messages between the two
//! devices, the grant to connect, anonymous devices and the rate limits.

mod common;

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use common::{Client, Device, TestServer, bounded, expect_silence, identity};
use peerpipe_proto::signal::{
    ClientMessage, ErrorCode, MAX_CODE_BODY, MAX_CODE_MESSAGES, ServerMessage, SessionId,
    encode_code_body,
};

const QUIET: Duration = Duration::from_millis(200);

async fn allocate(d: &mut Device, req: u64) -> Result<u32> {
    allocate_chosen(d, req, None).await
}

async fn allocate_chosen(d: &mut Device, req: u64, nameplate: Option<u32>) -> Result<u32> {
    d.client
        .send(&ClientMessage::CodeAllocate { req, nameplate })
        .await?;
    match d.client.recv().await? {
        ServerMessage::CodeAllocated {
            req: r,
            nameplate,
            ttl_ms,
        } if r == req => {
            ensure!(ttl_ms > 0, "a ttl");
            Ok(nameplate)
        }
        m => bail!("expected code_allocated, got {m:?}"),
    }
}

/// `claimer` claims `nameplate` of `allocator`; both hear of it, and neither
/// hears who the other is (that is said inside the exchange, once the code
/// is proven).
async fn claim(allocator: &mut Device, claimer: &mut Device, nameplate: u32) -> Result<()> {
    claimer
        .client
        .send(&ClientMessage::CodeClaim { req: 9, nameplate })
        .await?;
    match claimer.client.recv().await? {
        ServerMessage::CodeJoined {
            req: 9,
            nameplate: n,
        } if n == nameplate => {}
        m => bail!("expected code_joined, got {m:?}"),
    }
    match allocator.client.recv().await? {
        ServerMessage::CodeClaimed { nameplate: n } if n == nameplate => Ok(()),
        m => bail!("expected code_claimed, got {m:?}"),
    }
}

/// Claims `nameplate` and expects `not_found`; returns the message.
async fn claim_not_found(d: &mut Device, nameplate: u32) -> Result<String> {
    d.client
        .send(&ClientMessage::CodeClaim { req: 5, nameplate })
        .await?;
    match d.client.expect_error(ErrorCode::NotFound).await? {
        ServerMessage::Error {
            req: Some(5),
            message,
            ..
        } => Ok(message),
        m => bail!("unexpected {m:?}"),
    }
}

/// Connects `from` to `to`; returns the error code and message, or `None` if
/// `to` got the incoming connection (with its service).
async fn try_connect(
    from: &mut Device,
    to: &mut Device,
    req: u64,
) -> Result<Result<Option<String>, (ErrorCode, String)>> {
    try_connect_resuming(from, to, req, None).await
}

/// Like [`try_connect`], routing connection `resume` again if given.
async fn try_connect_resuming(
    from: &mut Device,
    to: &mut Device,
    req: u64,
    resume: Option<SessionId>,
) -> Result<Result<Option<String>, (ErrorCode, String)>> {
    from.client
        .send(&ClientMessage::Connect {
            req,
            to: to.id,
            resume,
            service: Some("code".into()),
            door: None,
        })
        .await?;
    tokio::select! {
        m = from.client.recv() => match m? {
            ServerMessage::Error { req: Some(r), code, message, .. } if r == req => Ok(Err((code, message))),
            m => bail!("unexpected {m:?}"),
        },
        m = to.client.recv() => match m? {
            ServerMessage::Incoming { from: f, service, .. } if f.id == from.id => Ok(Ok(service)),
            m => bail!("unexpected {m:?}"),
        },
    }
}

#[tokio::test]
async fn nameplates_are_short_and_cannot_be_predicted() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut got = Vec::new();
        // Eight codes a device at most; four devices of four users, kept
        // online so that their codes stay live.
        let mut devices = Vec::new();
        for user in ["alice", "bob", "carol", "dave"] {
            let mut d = server.device(user, "d").await?;
            for req in 1..=8 {
                got.push(allocate(&mut d, req).await?);
            }
            devices.push(d);
        }
        let distinct: std::collections::BTreeSet<u32> = got.iter().copied().collect();
        assert_eq!(distinct.len(), got.len(), "{got:?}");
        assert!(got.iter().all(|n| (1..=999).contains(n)), "short: {got:?}");
        // Not the smallest free numbers in order (a squatter's guess of the
        // next code): 32 draws from 999 are 1..=32 in order with odds of none.
        assert_ne!(got, (1..=32).collect::<Vec<u32>>());
        assert!(
            got.windows(2).filter(|w| w[1] == w[0] + 1).count() < 8,
            "not sequential: {got:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_claim_consumes_the_nameplate() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("bob", "b").await?;
        let mut c = server.anonymous("c").await?;
        let n = allocate(&mut a, 1).await?;
        claim(&mut a, &mut b, n).await?;
        let used = claim_not_found(&mut c, n).await?;
        let never = claim_not_found(&mut c, 4242).await?;
        assert_eq!(
            used, never,
            "the same answer for a used and an unknown code"
        );
        // Released, expired or claimed: the number is gone for claims.
        a.client
            .send(&ClientMessage::CodeRelease { nameplate: n })
            .await?;
        match b.client.recv().await? {
            ServerMessage::CodeClosed { nameplate } if nameplate == n => {}
            m => bail!("expected code_closed, got {m:?}"),
        }
        assert_eq!(claim_not_found(&mut c, n).await?, never);
        // A device cannot claim its own code.
        let n = allocate(&mut a, 2).await?;
        a.client
            .send(&ClientMessage::CodeClaim {
                req: 3,
                nameplate: n,
            })
            .await?;
        a.client.expect_error(ErrorCode::Forbidden).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_chosen_nameplate_is_allocated_once() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.anonymous("b").await?;
        let mut c = server.anonymous("c").await?;
        assert_eq!(allocate_chosen(&mut a, 1, Some(424_242)).await?, 424_242);
        // Taken, whoever asks: the holder keeps it.
        for d in [&mut a, &mut c] {
            d.client
                .send(&ClientMessage::CodeAllocate {
                    req: 2,
                    nameplate: Some(424_242),
                })
                .await?;
            match d.client.expect_error(ErrorCode::CodeTaken).await? {
                ServerMessage::Error { req: Some(2), .. } => {}
                m => bail!("expected the answer to request 2, got {m:?}"),
            }
        }
        claim(&mut a, &mut b, 424_242).await?;
        // Released, the number can be chosen again.
        a.client
            .send(&ClientMessage::CodeRelease { nameplate: 424_242 })
            .await?;
        match b.client.recv().await? {
            ServerMessage::CodeClosed { nameplate: 424_242 } => {}
            m => bail!("expected code_closed, got {m:?}"),
        }
        assert_eq!(allocate_chosen(&mut c, 3, Some(424_242)).await?, 424_242);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unclaimed_codes_expire() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| c.code_ttl = Duration::from_millis(300)).await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.anonymous("b").await?;
        let n = allocate(&mut a, 1).await?;
        match a.client.recv().await? {
            ServerMessage::CodeClosed { nameplate } if nameplate == n => {}
            m => bail!("expected code_closed, got {m:?}"),
        }
        claim_not_found(&mut b, n).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn code_messages_reach_the_counterpart_only_and_are_bounded() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut a2 = server.device("alice", "a2").await?;
        let _ = a.client.recv().await?; // a2 online
        let mut b = server.anonymous("b").await?;
        let n = allocate(&mut a, 1).await?;
        // Before the claim there is nobody to send to.
        let msg = |body: &[u8]| ClientMessage::CodeMessage {
            nameplate: n,
            body: encode_code_body(body),
        };
        a.client.send(&msg(b"early")).await?;
        a.client.expect_error(ErrorCode::NotFound).await?;
        claim(&mut a, &mut b, n).await?;
        for i in 0..MAX_CODE_MESSAGES {
            b.client.send(&msg(&[i; 40])).await?;
            assert_eq!(
                a.client.recv().await?,
                ServerMessage::CodeMessage {
                    nameplate: n,
                    body: encode_code_body(&[i; 40])
                }
            );
        }
        b.client.send(&msg(b"one too many")).await?;
        b.client.expect_error(ErrorCode::BadRequest).await?;
        // Too large a body is refused unparsed.
        a.client.send(&msg(&[1; MAX_CODE_BODY + 1])).await?;
        a.client.expect_error(ErrorCode::BadRequest).await?;
        a.client.send(&msg(&[1; MAX_CODE_BODY])).await?;
        match b.client.recv().await? {
            ServerMessage::CodeMessage { nameplate, .. } if nameplate == n => {}
            m => bail!("expected a code message, got {m:?}"),
        }
        // A third device (of the allocator's user) is no party.
        a2.client.send(&msg(b"me too")).await?;
        a2.client.expect_error(ErrorCode::NotFound).await?;
        expect_silence(&mut a.client, QUIET).await?;
        expect_silence(&mut b.client, QUIET).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_live_code_lets_exactly_its_two_devices_connect() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut a2 = server.device("alice", "a2").await?;
        let _ = a.client.recv().await?; // a2 online
        let mut b = server.device("bob", "b").await?;
        let mut b2 = server.device("bob", "b2").await?;
        let _ = b.client.recv().await?; // b2 online
        let mut anon = server.anonymous("anon").await?;

        // Without a code: not found, like a random id.
        let Err((code, not_found)) = try_connect(&mut b, &mut a, 1).await? else {
            bail!("connected without a code");
        };
        assert_eq!(code, ErrorCode::NotFound);
        b.client
            .send(&ClientMessage::Connect {
                req: 2,
                to: identity().device_id(),
                resume: None,
                service: Some("code".into()),
                door: None,
            })
            .await?;
        let ServerMessage::Error { message, .. } =
            b.client.expect_error(ErrorCode::NotFound).await?
        else {
            bail!("expected an error");
        };
        assert_eq!(not_found, message);

        let n = allocate(&mut a, 1).await?;
        claim(&mut a, &mut b, n).await?;
        assert_eq!(
            try_connect(&mut b, &mut a, 3).await?,
            Ok(Some("code".into()))
        );
        assert_eq!(
            try_connect(&mut a, &mut b, 4).await?,
            Ok(Some("code".into()))
        );
        // No other device of either user gains anything.
        let refused = Err((ErrorCode::NotFound, not_found.clone()));
        assert_eq!(try_connect(&mut b2, &mut a, 5).await?, refused);
        assert_eq!(try_connect(&mut a2, &mut b, 5).await?, refused);
        assert_eq!(try_connect(&mut b, &mut a2, 5).await?, refused);
        assert_eq!(try_connect(&mut a, &mut b2, 5).await?, refused);
        assert_eq!(try_connect(&mut anon, &mut a, 5).await?, refused);
        assert_eq!(try_connect(&mut a, &mut anon, 5).await?, refused);
        // A released code grants nothing any more.
        b.client
            .send(&ClientMessage::CodeRelease { nameplate: n })
            .await?;
        match a.client.recv().await? {
            ServerMessage::CodeClosed { nameplate } if nameplate == n => {}
            m => bail!("expected code_closed, got {m:?}"),
        }
        assert_eq!(
            try_connect(&mut b, &mut a, 6).await?,
            Err((ErrorCode::NotFound, not_found.clone()))
        );

        // An anonymous device and a device of a user, by code.
        let n = allocate(&mut anon, 1).await?;
        claim(&mut anon, &mut a2, n).await?;
        assert_eq!(
            try_connect(&mut a2, &mut anon, 7).await?,
            Ok(Some("code".into()))
        );
        assert_eq!(
            try_connect(&mut a, &mut anon, 8).await?,
            Err((ErrorCode::NotFound, not_found.clone()))
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bad_service_labels_are_refused() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?; // b online
        for bad in ["", "Code", "a_b", &"x".repeat(33)] {
            a.client
                .send(&ClientMessage::Connect {
                    req: 1,
                    to: b.id,
                    resume: None,
                    service: Some(bad.into()),
                    door: None,
                })
                .await?;
            let m = a.client.expect_error(ErrorCode::BadRequest).await?;
            ensure!(
                matches!(m, ServerMessage::Error { req: Some(1), .. }),
                "{m:?}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn anonymous_devices_are_alone() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut a = server.device("alice", "a").await?;
        let mut client = Client::connect(&server.server.url()).await?;
        let id = identity();
        let ServerMessage::Welcome { user, peers, .. } = client.hello("", &id, "x").await? else {
            bail!("anonymous devices are admitted by default");
        };
        assert_eq!(user, "");
        assert!(peers.is_empty());
        let mut x = Device {
            id: id.device_id(),
            client,
            peers,
        };
        let mut y = server.anonymous("y").await?;
        assert!(y.peers.is_empty());
        x.client.send(&ClientMessage::ListPeers { req: 1 }).await?;
        assert_eq!(
            x.client.recv().await?,
            ServerMessage::Peers {
                req: 1,
                peers: vec![]
            }
        );
        assert!(matches!(
            try_connect(&mut x, &mut y, 2).await?,
            Err((ErrorCode::NotFound, _))
        ));
        expect_silence(&mut a.client, QUIET).await?;
        expect_silence(&mut y.client, QUIET).await?;
        Ok(())
    })
    .await
}

/// After its code is gone (released, or lost in a server restart), a code's
/// connection may be routed again by the device that dialed it exactly while
/// the other device allows it: for that connection id, from that device.
#[tokio::test]
async fn only_an_allowed_resume_crosses_users() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut x = server.anonymous("x").await?;
        let mut y = server.anonymous("y").await?;
        let mut z = server.anonymous("z").await?;
        let conn = SessionId(0x5eed);
        let not_found = |r: &Result<Option<String>, (ErrorCode, String)>| {
            matches!(r, Err((ErrorCode::NotFound, _)))
        };
        // Not allowed yet: the same answer as for a device that does not exist.
        assert!(not_found(
            &try_connect_resuming(&mut x, &mut y, 1, Some(conn)).await?
        ));
        y.client
            .send(&ClientMessage::AllowResume {
                peer: x.id,
                connection: conn,
            })
            .await?;
        assert!(matches!(
            try_connect_resuming(&mut x, &mut y, 2, Some(conn)).await?,
            Ok(Some(_))
        ));
        // Another connection id, a fresh connect, another device: refused.
        let other = Some(SessionId(0x5eee));
        assert!(not_found(
            &try_connect_resuming(&mut x, &mut y, 3, other).await?
        ));
        assert!(not_found(&try_connect(&mut x, &mut y, 4).await?));
        assert!(not_found(
            &try_connect_resuming(&mut z, &mut y, 5, Some(conn)).await?
        ));
        y.client
            .send(&ClientMessage::RevokeResume {
                peer: x.id,
                connection: conn,
            })
            .await?;
        assert!(not_found(
            &try_connect_resuming(&mut x, &mut y, 6, Some(conn)).await?
        ));
        expect_silence(&mut y.client, QUIET).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn anonymous_hello_is_refused_when_disabled() -> Result<()> {
    bounded(async {
        for server in [
            TestServer::with(|c| c.allow_anonymous = false).await?,
            TestServer::with(|c| c.allow_codes = false).await?,
        ] {
            let mut client = Client::connect(&server.server.url()).await?;
            let m = client.hello("", &identity(), "x").await?;
            let ServerMessage::Error { code, message, .. } = m else {
                bail!("expected a refusal, got {m:?}");
            };
            assert_eq!(code, ErrorCode::Forbidden);
            assert!(message.contains("anonymous"), "{message}");
            client.expect_close().await?;
            // Devices with a token are still welcome.
            server.device("alice", "a").await?;
        }
        // With codes off, devices with a token get forbidden for code requests.
        let server = TestServer::with(|c| c.allow_codes = false).await?;
        let mut a = server.device("alice", "a").await?;
        a.client
            .send(&ClientMessage::CodeAllocate {
                req: 1,
                nameplate: None,
            })
            .await?;
        a.client.expect_error(ErrorCode::Forbidden).await?;
        a.client
            .send(&ClientMessage::CodeClaim {
                req: 2,
                nameplate: 1,
            })
            .await?;
        a.client.expect_error(ErrorCode::Forbidden).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn code_operations_are_rate_limited() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| {
            c.code_rate_per_ip = 1;
            c.code_burst_per_ip = 3;
            c.code_rate_per_user = 1;
            c.code_burst_per_user = 2;
        })
        .await?;
        // Anonymous devices share their address's budget.
        let mut x = server.anonymous("x").await?;
        let mut y = server.anonymous("y").await?;
        allocate(&mut x, 1).await?;
        allocate(&mut y, 1).await?;
        claim_not_found(&mut y, 4242).await?;
        x.client
            .send(&ClientMessage::CodeAllocate {
                req: 2,
                nameplate: None,
            })
            .await?;
        let m = x.client.expect_error(ErrorCode::RateLimited).await?;
        ensure!(
            matches!(m, ServerMessage::Error { req: Some(2), .. }),
            "{m:?}"
        );
        y.client
            .send(&ClientMessage::CodeClaim {
                req: 3,
                nameplate: 1,
            })
            .await?;
        y.client.expect_error(ErrorCode::RateLimited).await?;
        // Devices with a token have a budget per user, apart from it.
        let mut a = server.device("alice", "a").await?;
        let mut a2 = server.device("alice", "a2").await?;
        let _ = a.client.recv().await?;
        allocate(&mut a, 1).await?;
        allocate(&mut a2, 1).await?;
        a.client
            .send(&ClientMessage::CodeAllocate {
                req: 2,
                nameplate: None,
            })
            .await?;
        a.client.expect_error(ErrorCode::RateLimited).await?;
        let mut b = server.device("bob", "b").await?;
        allocate(&mut b, 1).await?;
        Ok(())
    })
    .await
}
