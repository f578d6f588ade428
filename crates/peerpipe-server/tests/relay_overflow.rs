//! A sender that ignores flow control overflows its session's queue at the
//! server: that session alone ends, for both devices, with reason
//! `relay_overflow`; both links stay up and the sender's other session keeps
//! relaying.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::{TestServer, bounded};
use futures_util::{SinkExt, StreamExt};
use peerpipe_proto::relay::encode_frame;
use peerpipe_proto::signal::{ClientMessage, CloseReason, ErrorCode, ServerMessage};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const FRAME: usize = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_session_ends_alone() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| {
            c.relay_session_queue = 1 << 20;
            c.relay_rate = u32::MAX;
        })
        .await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?;
        let mut c = server.device("alice", "c").await?;
        let _ = a.client.recv().await?;
        let _ = b.client.recv().await?;
        let to_b = a.open_session(&mut b, 1).await?;
        let to_c = a.open_session(&mut c, 2).await?;

        // `a` reads everything, reporting the control messages.
        let (mut a_sink, mut a_stream) = a.client.ws.split();
        let (texts_tx, mut texts) = mpsc::unbounded_channel();
        let a_reader = tokio::spawn(async move {
            while let Some(Ok(m)) = a_stream.next().await {
                if let Message::Text(t) = m {
                    let _ = texts_tx.send(ServerMessage::decode(t.as_str()));
                }
            }
        });

        // `b` never reads; `a` floods the session to it until the server ends
        // it. The frames that follow are refused, once (that error comes on the
        // control queue, so it may overtake the end, which comes behind the
        // frames relayed to `a`).
        let flood = encode_frame(to_b, &[0xb5; FRAME]);
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                a_sink.send(Message::binary(flood.clone())).await?;
                if let Ok(m) = texts.try_recv() {
                    return anyhow::Ok(m?);
                }
            }
        })
        .await
        .context("the flooded session did not end")??;
        a_sink.send(Message::binary(flood.clone())).await?;
        let second = tokio::time::timeout(Duration::from_secs(5), texts.recv())
            .await?
            .context("a's link ended")??;
        let ended = ServerMessage::Closed {
            session: to_b,
            reason: CloseReason::RelayOverflow,
        };
        let refused = |m: &ServerMessage| {
            matches!(
                m,
                ServerMessage::Error { code: ErrorCode::Forbidden, session: Some(s), .. } if *s == to_b
            )
        };
        assert!(
            (first == ended && refused(&second)) || (refused(&first) && second == ended),
            "{first:?}, {second:?}"
        );

        // The session to `c` still relays, and `a` is still served.
        let frame = encode_frame(to_c, &[0xc5; FRAME]);
        for _ in 0..16 {
            a_sink.send(Message::binary(frame.clone())).await?;
        }
        for _ in 0..16 {
            assert_eq!(c.client.recv_binary().await?, frame);
        }
        a_sink
            .send(Message::text(ClientMessage::ListPeers { req: 7 }.encode()))
            .await?;
        match tokio::time::timeout(Duration::from_secs(5), texts.recv())
            .await?
            .context("a's link ended")??
        {
            ServerMessage::Peers { req: 7, peers } => assert_eq!(peers.len(), 2),
            other => bail!("a got {other:?}"),
        }

        // `b`, reading at last, finds frames that were already on its socket,
        // then the end of the session (the rest was dropped), and nothing else.
        let mut frames = 0;
        let end = loop {
            match b.client.next().await?.context("b's link ended")? {
                Message::Binary(f) => {
                    assert_eq!(f, flood);
                    frames += 1;
                }
                Message::Text(t) => break ServerMessage::decode(t.as_str())?,
                other => bail!("b got {other:?}"),
            }
        };
        assert_eq!(
            end,
            ServerMessage::Closed {
                session: to_b,
                reason: CloseReason::RelayOverflow
            }
        );
        tracing::info!(frames, "b read frames before the end");
        common::expect_silence(&mut b.client, Duration::from_millis(200)).await?;

        let stats = server.server.stats();
        assert_eq!(stats.relay_overflows, 1);
        assert_eq!(stats.devices_online, 3);
        assert_eq!(stats.sessions, 1);
        a_reader.abort();
        Ok(())
    })
    .await
}
