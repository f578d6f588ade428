//! Backpressure: a receiver that stops reading never stalls its sender (its
//! frames wait in the server's queue for their session, bounded by the
//! session's flow control), and it is disconnected as a slow consumer once its
//! socket has taken nothing for the time-out; the sender only hears that the
//! session ended.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::{TestServer, bounded};
use futures_util::{SinkExt, StreamExt};
use peerpipe_proto::relay::encode_frame;
use peerpipe_proto::signal::{CloseReason, ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

const FRAME: usize = 64 * 1024;
/// More than the socket buffers between the server and the receiver hold.
const FRAMES: u64 = 256;

#[tokio::test]
async fn stalled_receiver_is_dropped_and_its_sender_is_not_stalled() -> Result<()> {
    bounded(async {
        let slow = Duration::from_secs(3);
        let server = TestServer::with(|c| {
            c.max_frame = FRAME + 9;
            c.slow_consumer_timeout = slow;
            c.relay_rate = u32::MAX;
        })
        .await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let session = a.open_session(&mut b, 1).await?;

        // `b` stops reading. `a` writes 16 MiB, a full window, within the session's bound:
        // the server takes it all at once.
        let (mut a_sink, mut a_stream) = a.client.ws.split();
        let frame = encode_frame(session, &vec![0xa5; FRAME]);
        tokio::time::timeout(Duration::from_secs(10), async {
            for _ in 0..FRAMES {
                a_sink.send(Message::binary(frame.clone())).await?;
            }
            anyhow::Ok(())
        })
        .await
        .context("the sender was stalled by its receiver")??;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while server.server.stats().relay_frames < FRAMES {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the server relayed {} of {FRAMES}",
                    server.server.stats().relay_frames
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // After the slow-consumer time-out the receiver is dropped; the sender hears so.
        let closed = tokio::time::timeout(slow + Duration::from_secs(3), async {
            while let Some(m) = a_stream.next().await {
                if let Message::Text(t) = m? {
                    let m = ServerMessage::decode(t.as_str())?;
                    if m == (ServerMessage::Closed {
                        session,
                        reason: CloseReason::PeerDisconnected,
                    }) {
                        return Ok(());
                    }
                    if !matches!(m, ServerMessage::PeerOffline { .. }) {
                        bail!("the sender got {m:?}");
                    }
                }
            }
            bail!("sender's connection closed")
        })
        .await;
        closed??;

        // The receiver, reading again, finds relayed frames, then the error, then the close.
        let mut frames = 0;
        loop {
            match b.client.next().await? {
                Some(Message::Binary(_)) => frames += 1,
                Some(Message::Text(t)) => {
                    let m = ServerMessage::decode(t.as_str())?;
                    assert!(
                        matches!(
                            m,
                            ServerMessage::Error {
                                code: ErrorCode::SlowConsumer,
                                ..
                            }
                        ),
                        "{m:?}"
                    );
                    break;
                }
                other => {
                    bail!("expected frames then slow_consumer, got {other:?} after {frames} frames")
                }
            }
        }
        assert!(frames < FRAMES, "the rest stayed in the server's queue");
        b.client.expect_close().await?;
        let stats = server.server.stats();
        assert_eq!(stats.errors.get("slow_consumer"), Some(&1));
        assert_eq!(stats.errors.len(), 1, "{:?}", stats.errors);
        assert_eq!(stats.devices_online, 1, "the sender is still online");
        Ok(())
    })
    .await
}
