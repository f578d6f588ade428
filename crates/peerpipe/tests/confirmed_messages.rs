//! 10,000 confirmed messages arrive complete and in order.

mod common;

use anyhow::{Result, ensure};
use common::{TestServer, bounded, pair};

const COUNT: u32 = 10_000;

fn message(i: u32) -> Vec<u8> {
    let mut m = i.to_be_bytes().to_vec();
    m.extend(std::iter::repeat_n((i % 251) as u8, (i % 97) as usize));
    m
}

#[tokio::test]
async fn ten_thousand_confirmed_messages_in_order() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = server.node("alice", "a").await?;
        let b = server.node("alice", "b").await?;
        let (tx, rx) = pair(&a, &b).await?;

        let receiver = tokio::spawn(async move {
            let mut n = 0u32;
            while let Some(m) = rx.recv().await? {
                ensure!(m[..] == message(n)[..], "message {n} differs");
                n += 1;
            }
            anyhow::Ok(n)
        });
        for i in 0..COUNT {
            tx.send_confirmed(message(i)).await?;
        }
        tx.close().await;
        assert_eq!(receiver.await??, COUNT);
        Ok(())
    })
    .await
}
