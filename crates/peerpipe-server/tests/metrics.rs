//! `/health` and `/metrics`.

mod common;

use anyhow::Result;
use common::{TestServer, bounded, http_get, identity};
use peerpipe_proto::relay::encode_frame;
use peerpipe_proto::signal::{ClientMessage, ErrorCode};

#[tokio::test]
async fn health_and_metrics() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let addr = server.server.local_addr();
        assert_eq!(http_get(addr, "/health").await?, (200, "ok\n".to_owned()));

        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let s = a.open_session(&mut b, 1).await?;
        let frame = encode_frame(s, b"hello");
        a.client.send_binary(frame.clone()).await?;
        assert_eq!(b.client.recv_binary().await?, frame);
        a.client
            .send(&ClientMessage::Connect {
                req: 2,
                to: identity().device_id(),
                resume: None,
                service: None,
                door: None,
            })
            .await?;
        a.client.expect_error(ErrorCode::NotFound).await?;

        let (status, body) = http_get(addr, "/metrics").await?;
        assert_eq!(status, 200);
        for line in [
            "peerpipe_connections 2",
            "peerpipe_devices_online 2",
            "peerpipe_sessions 1",
            "peerpipe_connections_total 2",
            &format!("peerpipe_relay_bytes_total {}", frame.len()),
            "peerpipe_relay_frames_total 1",
            "peerpipe_errors_total{code=\"not_found\"} 1",
            "peerpipe_errors_total{code=\"bad_token\"} 0",
            "# TYPE peerpipe_errors_total counter",
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in\n{body}"
            );
        }
        assert_eq!(http_get(addr, "/nope").await?.0, 404);
        Ok(())
    })
    .await
}
