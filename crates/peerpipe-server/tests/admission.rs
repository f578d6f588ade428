//! Admission: token, signature, decoding and the handshake time-out.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{Client, TestServer, bounded, identity, unix_now};
use peerpipe_proto::signal::{ErrorCode, IceServer, ServerMessage};

#[tokio::test]
async fn good_token_gets_welcome() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let id = identity();
        let mut c = Client::connect(&server.server.url()).await?;
        let m = c.hello(&server.token("alice"), &id, "laptop").await?;
        let ServerMessage::Welcome {
            device,
            user,
            peers,
            limits,
            ice_servers,
        } = m
        else {
            anyhow::bail!("expected welcome, got {m:?}");
        };
        assert_eq!(device, id.device_id());
        assert_eq!(user, "alice");
        assert!(peers.is_empty());
        assert_eq!(limits.max_frame, 128 * 1024);
        assert_eq!(limits.control_rate, 20);
        assert!(ice_servers.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_welcome_announces_the_ice_servers() -> Result<()> {
    bounded(async {
        let servers = vec![
            IceServer::stun("stun:127.0.0.1:3478")?,
            IceServer::turn("turn:127.0.0.1:3478?transport=udp,alice,secret")?,
        ];
        let announced = servers.clone();
        let server = TestServer::with(move |c| c.ice_servers = announced).await?;
        let mut c = Client::connect(&server.server.url()).await?;
        let m = c.hello(&server.token("alice"), &identity(), "").await?;
        let ServerMessage::Welcome { ice_servers, .. } = m else {
            anyhow::bail!("expected welcome, got {m:?}");
        };
        assert_eq!(ice_servers, servers);
        // A broken ICE server is refused at start, not sent to devices.
        let mut config = peerpipe_server::Config::new(vec![1; 32]);
        config.listen = "127.0.0.1:0".parse()?;
        config.ice_servers = vec![IceServer {
            url: "turn:127.0.0.1:3478".into(),
            username: None,
            credential: None,
        }];
        assert!(peerpipe_server::Server::bind(config).await.is_err());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn token_of_another_server_is_bad_token() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let other = peerpipe_proto::token::mint(&[7; 32], "alice", unix_now() + 60)?;
        let mut c = Client::connect(&server.server.url()).await?;
        let m = c.hello(&other, &identity(), "").await?;
        assert!(
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::BadToken,
                    req: None,
                    ..
                }
            ),
            "{m:?}"
        );
        c.expect_close().await
    })
    .await
}

#[tokio::test]
async fn expired_token_is_refused() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let old = peerpipe_proto::token::mint(&server.secret, "alice", unix_now() - 10)?;
        let mut c = Client::connect(&server.server.url()).await?;
        let m = c.hello(&old, &identity(), "").await?;
        assert!(
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::TokenExpired,
                    ..
                }
            ),
            "{m:?}"
        );
        c.expect_close().await
    })
    .await
}

#[tokio::test]
async fn signature_of_another_key_is_refused() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut c = Client::connect(&server.server.url()).await?;
        let token = server.token("alice");
        let claimed = identity();
        let signer = identity();
        let sig = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            signer.sign(&peerpipe_proto::signal::hello_payload(&c.nonce, &token)),
        );
        c.send(&peerpipe_proto::signal::ClientMessage::Hello {
            token,
            device: claimed.device_id(),
            signature: sig,
            label: String::new(),
        })
        .await?;
        c.expect_fatal(ErrorCode::BadSignature).await?;

        // A signature that is not even base64 of 64 bytes.
        let mut c = Client::connect(&server.server.url()).await?;
        c.send(&peerpipe_proto::signal::ClientMessage::Hello {
            token: server.token("alice"),
            device: claimed.device_id(),
            signature: "AAAA".into(),
            label: String::new(),
        })
        .await?;
        c.expect_fatal(ErrorCode::BadSignature).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn malformed_json_is_bad_request() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut c = Client::connect(&server.server.url()).await?;
        c.send_text("{not json").await?;
        c.expect_fatal(ErrorCode::BadRequest).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn wrong_version_is_unsupported() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let mut c = Client::connect(&server.server.url()).await?;
        c.send_text(r#"{"v":2,"type":"hello","token":"x","device":"y","signature":"z"}"#)
            .await?;
        c.expect_fatal(ErrorCode::UnsupportedVersion).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn silent_client_hits_handshake_timeout() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| c.handshake_timeout = Duration::from_millis(300)).await?;
        let mut c = Client::connect(&server.server.url()).await?;
        c.expect_fatal(ErrorCode::HandshakeTimeout).await?;
        assert_eq!(
            server.server.stats().errors.get("handshake_timeout"),
            Some(&1)
        );
        Ok(())
    })
    .await
}
