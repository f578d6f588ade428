//! Backpressure: a receiver that stops reading stalls its sender with bounded
//! server memory, and is disconnected as a slow consumer after the time-out.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use common::{TestServer, bounded};
use futures_util::{SinkExt, StreamExt};
use peerpipe_proto::relay::encode_frame;
use peerpipe_proto::signal::{CloseReason, ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

const FRAME: usize = 64 * 1024;
const QUEUE: usize = 4;

/// The largest a TCP send or receive buffer may grow to on this host.
fn max_socket_buffer() -> usize {
    ["/proc/sys/net/ipv4/tcp_wmem", "/proc/sys/net/ipv4/tcp_rmem"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|t| t.split_whitespace().nth(2)?.parse::<usize>().ok())
        .max()
        .unwrap_or(8 << 20)
}

#[tokio::test]
async fn stalled_receiver_stalls_sender_then_is_dropped() -> Result<()> {
    bounded(async {
        let slow = Duration::from_secs(3);
        let server = TestServer::with(|c| {
            c.outbound_queue = QUEUE;
            c.max_frame = FRAME + 9;
            c.slow_consumer_timeout = slow;
            c.relay_rate = u32::MAX;
        })
        .await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let session = a.open_session(&mut b, 1).await?;

        // `b` stops reading. `a` writes as fast as it can.
        let (mut a_sink, mut a_stream) = a.client.ws.split();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let frame = encode_frame(session, &vec![0xa5; FRAME]);
        let writer = tokio::spawn(async move {
            while a_sink.send(Message::binary(frame.clone())).await.is_ok() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });

        // Wait until the sender makes no progress for a while.
        let mut last = 0;
        let mut still = 0;
        while still < 5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = sent.load(Ordering::Relaxed);
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        // Everything accepted from the sender sits in the receiver's queue, a frame
        // or two in the server's hands, and the socket buffers on both paths
        // (sender -> server, server -> receiver: a send and a receive buffer each).
        let socket_frames = 4 * max_socket_buffer() / FRAME + 4;
        let bound = (QUEUE + 4 + socket_frames) as u64;
        assert!(last <= bound, "sender got {last} frames out; bound {bound}");
        let relayed = server.server.stats().relay_frames;
        let relay_bound = (QUEUE + 2 + 2 * max_socket_buffer() / FRAME + 2) as u64;
        assert!(
            relayed <= relay_bound,
            "server relayed {relayed}; bound {relay_bound}"
        );
        tracing::info!(sent = last, relayed, bound, "sender stalled");

        // After the slow-consumer time-out the receiver is dropped; the sender hears so.
        let closed = tokio::time::timeout(slow + Duration::from_secs(3), async {
            while let Some(m) = a_stream.next().await {
                if let Message::Text(t) = m?
                    && ServerMessage::decode(t.as_str())?
                        == (ServerMessage::Closed {
                            session,
                            reason: CloseReason::PeerDisconnected,
                        })
                {
                    return Ok(());
                }
            }
            bail!("sender's connection closed")
        })
        .await;
        closed??;
        // The frames still in flight from the sender now get `forbidden`: keep
        // reading them, as a real client does.
        writer.abort();
        let drain = tokio::spawn(async move { while a_stream.next().await.is_some() {} });

        // The receiver, reading again, finds the relayed frames, then the error, then the close.
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
        b.client.expect_close().await?;
        assert_eq!(server.server.stats().errors.get("slow_consumer"), Some(&1));
        drain.abort();
        Ok(())
    })
    .await
}
