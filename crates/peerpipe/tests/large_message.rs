//! A 5 MiB message is split into frames and rejoined byte-identical.

mod common;

use anyhow::Result;
use bytes::Bytes;
use common::{TestServer, bounded, pair};

#[tokio::test]
async fn five_mib_message_round_trips() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server.node("alice", "b").await?;
        let (tx, rx) = pair(&a, &b).await?;

        let data: Bytes = (0..5 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>()
            .into();
        let sent = data.clone();
        let sending = tokio::spawn(async move {
            tx.send(sent.clone()).await?;
            tx.send_confirmed(sent).await?;
            anyhow::Ok(())
        });
        for _ in 0..2 {
            let got = rx.recv().await?.expect("a message");
            assert_eq!(got.len(), data.len());
            assert!(got == data, "the message differs");
        }
        sending.await??;
        Ok(())
    })
    .await
}
