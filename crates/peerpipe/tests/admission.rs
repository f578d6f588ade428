//! Admission: a good token binds; bad, expired and foreign tokens are typed errors.

mod common;

use anyhow::Result;
use common::{TestServer, bounded, builder, token_with, unix_now};
use peerpipe::{BindError, Identity};

#[tokio::test]
async fn good_token_binds() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let identity = Identity::from_secret_bytes([5; 32]);
        let node = server
            .builder("alice", "laptop")
            .identity(identity.clone())
            .bind()
            .await?;
        assert_eq!(node.id(), identity.device_id());
        assert!(node.online_peers().await?.is_empty());
        node.shutdown().await;
        assert!(
            node.next_event().await.is_none(),
            "no events after shutdown"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn malformed_token_is_bad_token() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let err = builder(&server.url(), "pp1.not-a-token", "x")
            .bind()
            .await
            .expect_err("a malformed token must be refused");
        assert!(matches!(err, BindError::BadToken), "{err:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn expired_token_is_token_expired() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let token = token_with(&server.secret, "alice", unix_now() - 10);
        let err = builder(&server.url(), &token, "x")
            .bind()
            .await
            .expect_err("an expired token must be refused");
        assert!(matches!(err, BindError::TokenExpired), "{err:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn token_of_another_secret_is_bad_token() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let token = token_with(&[0x55; 32], "alice", unix_now() + 3600);
        let err = builder(&server.url(), &token, "x")
            .bind()
            .await
            .expect_err("a foreign token must be refused");
        assert!(matches!(err, BindError::BadToken), "{err:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn no_server_is_unreachable() -> Result<()> {
    bounded(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        drop(listener);
        let token = token_with(&[1; 32], "alice", unix_now() + 3600);
        let err = builder(&format!("ws://{addr}/v1/signal"), &token, "x")
            .bind()
            .await
            .expect_err("nothing listens there");
        assert!(matches!(err, BindError::Unreachable(_)), "{err:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn missing_settings_are_config_errors() -> Result<()> {
    bounded(async {
        let err = peerpipe::Node::builder()
            .token("t")
            .bind()
            .await
            .expect_err("no server URL");
        assert!(matches!(err, BindError::Config(_)), "{err:?}");
        Ok(())
    })
    .await
}
