//! A code squatter (issue 19, finding 6): a device that claims someone's code
//! number without the words learns nothing of the device that offered it —
//! not its id, not its label — and the offer fails with `WrongCode`.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TestServer, bounded};
use futures_util::{SinkExt as _, StreamExt as _};
use peerpipe::CodeError;
use peerpipe_proto::code::{Code, CodeFrame, Pake, Side};
use peerpipe_proto::id::Identity;
use peerpipe_proto::signal::{
    ClientMessage, ServerMessage, decode_code_body, encode_code_body, hello_payload,
};
use tokio_tungstenite::tungstenite::Message;

const LABEL: &str = "alice's laptop, do not tell";

#[tokio::test]
async fn a_squatter_learns_nothing_of_the_offering_device() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let alice = server.node("alice", LABEL).await?;
        let offer = alice.offer_code().await?;
        let nameplate: Code = offer.code().parse()?;
        let accepting = tokio::spawn(offer.accept());

        // The squatter speaks the protocol itself, so it sees every byte.
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url()).await?;
        let mut seen = String::new();
        let mut recv =
            async |ws: &mut tokio_tungstenite::WebSocketStream<_>| -> Result<ServerMessage> {
                loop {
                    let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                        .await
                        .context("the server went quiet")?
                        .context("the server closed")??;
                    if let Message::Text(t) = m {
                        seen.push_str(&t);
                        return Ok(ServerMessage::decode(&t)?);
                    }
                }
            };
        let ServerMessage::Challenge { nonce } = recv(&mut ws).await? else {
            bail!("expected a challenge");
        };
        let nonce: [u8; 32] = URL_SAFE_NO_PAD
            .decode(nonce)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("nonce length"))?;
        let me = Identity::from_secret_bytes(rand::random());
        let hello = ClientMessage::Hello {
            token: String::new(),
            device: me.device_id(),
            signature: URL_SAFE_NO_PAD.encode(me.sign(&hello_payload(&nonce, ""))),
            label: "squatter".into(),
        };
        ws.send(Message::text(hello.encode())).await?;
        recv(&mut ws).await?;
        let claim = ClientMessage::CodeClaim {
            req: 1,
            nameplate: nameplate.nameplate(),
        };
        ws.send(Message::text(claim.encode())).await?;
        // Words guessed wrong: the number is right, the PAKE is not.
        let [first, second] = nameplate.words();
        let other = if second == "zebra" { "yogurt" } else { "zebra" };
        let guess: Code = format!("{}-{first}-{other}", nameplate.nameplate()).parse()?;
        let (pake, ours) = Pake::start(&guess, Side::Claimer, rand::random());
        let mut pake = Some(pake);
        let mut frames = Vec::new();
        loop {
            match recv(&mut ws).await {
                Ok(ServerMessage::CodeJoined { .. }) => {
                    let body = encode_code_body(&ours.encode());
                    let msg = ClientMessage::CodeMessage {
                        nameplate: nameplate.nameplate(),
                        body,
                    };
                    ws.send(Message::text(msg.encode())).await?;
                }
                Ok(ServerMessage::CodeMessage { body, .. }) => {
                    let frame = CodeFrame::decode(&decode_code_body(&body)?)?;
                    if let (CodeFrame::Pake(theirs), Some(p)) = (&frame, pake.take()) {
                        let (_, confirm) = p.finish(theirs)?;
                        let msg = ClientMessage::CodeMessage {
                            nameplate: nameplate.nameplate(),
                            body: encode_code_body(&confirm.encode()),
                        };
                        ws.send(Message::text(msg.encode())).await?;
                    }
                    frames.push(frame);
                }
                Ok(ServerMessage::CodeClosed { .. }) | Err(_) => break,
                Ok(_) => {}
            }
        }
        match accepting.await? {
            Err(CodeError::WrongCode) => {}
            other => bail!("expected WrongCode for the offer, got {other:?}"),
        }
        assert!(
            frames.iter().all(|f| !matches!(f, CodeFrame::Hello { .. })),
            "the offering device never introduced itself: {frames:?}"
        );
        assert_eq!(frames.len(), 2, "its SPAKE2 message and its confirmation");
        let id = alice.id().to_string();
        assert!(!seen.contains(&id), "its id reached the squatter: {seen}");
        assert!(!seen.contains(&id[..10]), "{seen}");
        assert!(
            !seen.contains(LABEL),
            "its label reached the squatter: {seen}"
        );
        Ok(())
    })
    .await
}
