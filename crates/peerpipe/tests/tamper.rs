//! A byte flipped on the relay path (by a WebSocket proxy between one device and
//! the real server) ends the connection with the typed integrity error on both
//! sides; what was delivered before is an uncorrupted prefix. Both devices keep
//! to the relay (`PathPolicy::RelayOnly`) so that the data crosses the proxy.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result, bail};
use common::{TestServer, bounded, builder, pair, wait_for};
use futures_util::{SinkExt as _, StreamExt as _};
use peerpipe::{CloseReason, NodeEvent, PathPolicy, StreamError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const TOTAL: usize = 8 * 1024 * 1024;

fn pattern(offset: usize) -> u8 {
    (offset.wrapping_mul(31) % 251) as u8
}

/// A WebSocket proxy to `upstream` that flips one byte of the next large binary
/// frame from the server once `armed` is set. Returns its URL.
async fn tampering_proxy(upstream: String, armed: Arc<AtomicBool>) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/v1/signal", listener.local_addr()?);
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(client) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let Ok((server, _)) = tokio_tungstenite::connect_async(upstream.as_str()).await else {
            return;
        };
        let (mut client_tx, mut client_rx) = client.split();
        let (mut server_tx, mut server_rx) = server.split();
        let up = async {
            while let Some(Ok(msg)) = client_rx.next().await {
                if server_tx.send(msg).await.is_err() {
                    break;
                }
            }
        };
        let down = async {
            while let Some(Ok(msg)) = server_rx.next().await {
                let msg = match msg {
                    Message::Binary(frame)
                        if frame.len() > 1024 && armed.swap(false, Ordering::SeqCst) =>
                    {
                        let mut bytes = frame.to_vec();
                        let i = bytes.len() / 2;
                        bytes[i] ^= 0x01;
                        Message::Binary(bytes.into())
                    }
                    other => other,
                };
                if client_tx.send(msg).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = up => {}
            () = down => {}
        }
    });
    Ok(url)
}

#[tokio::test]
async fn a_flipped_byte_in_the_relay_is_an_integrity_error() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let armed = Arc::new(AtomicBool::new(false));
        let proxy = tampering_proxy(server.url(), armed.clone()).await?;
        let a = server
            .builder("alice", "a")
            .path_policy(PathPolicy::RelayOnly)
            .bind()
            .await?;
        let b = builder(&proxy, &server.token("alice"), "b")
            .path_policy(PathPolicy::RelayOnly)
            .bind()
            .await
            .context("binding b through the proxy")?;
        let (to_b, from_a) = pair(&a, &b).await?;

        let writer = tokio::spawn(async move {
            let mut stream = to_b.open_stream().await?;
            let data: Vec<u8> = (0..TOTAL).map(pattern).collect();
            let result = stream.write_all(&data).await;
            anyhow::Ok((result, to_b))
        });
        let mut stream = from_a.accept_stream().await?;
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let error = loop {
            match stream.read(&mut buf).await {
                Ok(0) => bail!("the stream ended normally after {got} bytes"),
                Ok(n) => {
                    for (i, byte) in buf[..n].iter().enumerate() {
                        assert_eq!(*byte, pattern(got + i), "corrupted byte {}", got + i);
                    }
                    got += n;
                    if got >= 1024 * 1024 {
                        armed.store(true, Ordering::SeqCst);
                    }
                }
                Err(e) => break e,
            }
        };
        assert!(got < TOTAL, "everything arrived despite the tampering");
        assert_eq!(
            StreamError::of(&error),
            Some(&StreamError::Closed(CloseReason::Integrity)),
            "{error}"
        );
        assert_eq!(from_a.close_reason(), Some(CloseReason::Integrity));

        // The sender learns why over the authenticated channel.
        let (write_result, to_b) = writer.await??;
        let reason = wait_for(&a, "ConnectionClosed on a", |e| match e {
            NodeEvent::ConnectionClosed { reason, .. } => Some(reason),
            _ => None,
        })
        .await?;
        assert_eq!(reason, CloseReason::Integrity);
        assert_eq!(to_b.close_reason(), Some(CloseReason::Integrity));
        if let Err(e) = write_result {
            assert_eq!(
                StreamError::of(&e),
                Some(&StreamError::Closed(CloseReason::Integrity))
            );
        }
        let reason = wait_for(&b, "ConnectionClosed on b", |e| match e {
            NodeEvent::ConnectionClosed { reason, .. } => Some(reason),
            _ => None,
        })
        .await?;
        assert_eq!(reason, CloseReason::Integrity);
        Ok(())
    })
    .await
}
