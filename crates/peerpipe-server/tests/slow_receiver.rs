//! A slow receiver costs only its own session (issue 19, finding 2): device `a`
//! has a session to `b`, which never reads (it only pings to stay online), and
//! one to `c`, which reads. `a` puts a window's worth of data into the session
//! to `b`, then streams to `c`: that session keeps flowing, and `a`'s link keeps
//! being read, so its pongs keep it online past the idle time-out. (Before, the
//! server stopped reading `a` while it waited for room in `b`'s queue: `a` was
//! dropped as `idle_timeout` and its session to `c` stalled.)

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{TestServer, bounded};
use futures_util::{SinkExt, StreamExt};
use peerpipe_proto::relay::encode_frame;
use peerpipe_proto::signal::{ClientMessage, ServerMessage};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const FRAME: usize = 64 * 1024;
/// What `a` puts into the session `b` never reads: more than the socket
/// buffers between the server and `b` hold, within a session's bound.
const STALLED_BYTES: usize = 12 << 20;
/// What `a` streams to `c`, in each phase.
const FLOWING_BYTES: usize = 16 << 20;
const IDLE: Duration = Duration::from_secs(1);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Pings every fifth of the idle time-out on `sink`, so that the server keeps
/// its device online whether or not it reads.
fn keep_pinging(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(IDLE / 5).await;
            if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                return;
            }
        }
    })
}

/// The next binary frame on `stream`, skipping pings and pongs.
async fn next_binary(stream: &mut futures_util::stream::SplitStream<Ws>) -> Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = tokio::time::timeout_at(deadline, stream.next())
            .await
            .context("no frame in time")?
            .context("the link ended")??;
        match m {
            Message::Binary(f) => return Ok(f.to_vec()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => bail!("expected a binary frame, got {other:?}"),
        }
    }
}

/// Sends `bytes` on `session` and waits until `c` has read them all; returns MB/s.
async fn stream_to_c(
    a: &mut (impl SinkExt<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin),
    c: &mut futures_util::stream::SplitStream<Ws>,
    session: peerpipe_proto::signal::SessionId,
    bytes: usize,
) -> Result<f64> {
    let frames = bytes / FRAME;
    let frame = encode_frame(session, &vec![0xc5; FRAME - 9]);
    let start = Instant::now();
    let send = async {
        for _ in 0..frames {
            a.send(Message::binary(frame.clone())).await?;
        }
        anyhow::Ok(())
    };
    let recv = async {
        for i in 0..frames {
            let got = next_binary(c).await.with_context(|| format!("frame {i}"))?;
            assert_eq!(got.len(), frame.len());
        }
        anyhow::Ok(())
    };
    tokio::try_join!(send, recv)?;
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e6)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_reads_costs_only_its_own_session() -> Result<()> {
    bounded(async {
        let server = TestServer::with(|c| {
            c.idle_timeout = IDLE;
            c.ping_interval = IDLE / 4;
            // `b` is never dropped within the test: what is shown is that
            // nothing happens to `a`.
            c.slow_consumer_timeout = Duration::from_secs(120);
            c.relay_rate = u32::MAX;
            c.max_frame = FRAME;
        })
        .await?;
        let mut a = server.device("alice", "a").await?;
        let mut b = server.device("alice", "b").await?;
        let _ = a.client.recv().await?; // b online
        let mut c = server.device("alice", "c").await?;
        let _ = a.client.recv().await?; // c online
        let _ = b.client.recv().await?; // c online
        let to_b = a.open_session(&mut b, 1).await?;
        let to_c = a.open_session(&mut c, 2).await?;

        // `b` reads nothing from now on; its pings keep it online (and `c`'s,
        // which reads only while `a` streams to it).
        let (b_sink, mut b_stream) = b.client.ws.split();
        let b_pinger = keep_pinging(b_sink);
        let (c_sink, mut c_stream) = c.client.ws.split();
        let c_pinger = keep_pinging(c_sink);

        // `a` reads everything (and so answers the server's pings), reporting
        // the control messages.
        let (mut a_sink, mut a_stream) = a.client.ws.split();
        let (texts_tx, mut texts) = mpsc::unbounded_channel();
        let a_reader = tokio::spawn(async move {
            while let Some(m) = a_stream.next().await {
                match m {
                    Ok(Message::Text(t)) => {
                        let _ = texts_tx.send(ServerMessage::decode(t.as_str()));
                    }
                    Ok(Message::Close(f)) => bail!("a was closed: {f:?}"),
                    Ok(_) => {}
                    Err(e) => bail!("a's link failed: {e}"),
                }
            }
            anyhow::Result::<()>::Err(anyhow::anyhow!("a's link ended"))
        });

        let before = stream_to_c(&mut a_sink, &mut c_stream, to_c, FLOWING_BYTES).await?;

        // A window's worth into the session `b` never reads: the server takes
        // it all without waiting for `b`.
        let stalled = encode_frame(to_b, &vec![0xb5; FRAME - 9]);
        tokio::time::timeout(Duration::from_secs(10), async {
            for _ in 0..STALLED_BYTES / FRAME {
                a_sink.send(Message::binary(stalled.clone())).await?;
            }
            anyhow::Ok(())
        })
        .await
        .context("the server stopped reading a while b does not read")??;

        // The session to `c` keeps flowing.
        let after = stream_to_c(&mut a_sink, &mut c_stream, to_c, FLOWING_BYTES).await?;
        tracing::info!(
            before_mb_s = before,
            after_mb_s = after,
            "a to c, before and after b stopped reading"
        );

        // `a` sends nothing for three idle time-outs: its pongs keep it online.
        tokio::time::sleep(3 * IDLE).await;
        a_sink
            .send(Message::text(ClientMessage::ListPeers { req: 7 }.encode()))
            .await?;
        let answer = tokio::time::timeout(Duration::from_secs(5), texts.recv())
            .await
            .context("no answer to a's list_peers")?
            .context("a's reader ended")??;
        let ServerMessage::Peers {
            req: 7,
            peers: answer,
        } = answer
        else {
            bail!("a got {answer:?}");
        };
        assert_eq!(answer.len(), 2, "b and c are both online: {answer:?}");
        assert!(!a_reader.is_finished(), "a's link is up");
        // The session to `b` is still there: a frame on it is taken, not refused.
        a_sink.send(Message::binary(stalled.clone())).await?;
        let stats = server.server.stats();
        assert!(
            stats.errors.is_empty(),
            "no error frames: {:?}",
            stats.errors
        );
        assert_eq!(stats.relay_overflows, 0);
        assert_eq!(stats.devices_online, 3);

        // `b`, reading at last, finds everything `a` sent it, in order.
        for i in 0..STALLED_BYTES / FRAME + 1 {
            let f = next_binary(&mut b_stream)
                .await
                .with_context(|| format!("b's frame {i}"))?;
            assert_eq!(f, stalled);
        }
        b_pinger.abort();
        c_pinger.abort();
        assert!(texts.try_recv().is_err(), "a heard nothing else");
        a_reader.abort();
        Ok(())
    })
    .await
}
