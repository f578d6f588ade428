//! Shared helpers: a real server on 127.0.0.1 port 0 and real WebSocket clients
//! speaking the peerpipe protocol.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use peerpipe_proto::id::{DeviceId, Identity};
use peerpipe_proto::signal::{
    ClientMessage, ErrorCode, NONCE_LEN, PeerInfo, ServerMessage, SessionId, hello_payload,
};
use peerpipe_server::{Config, Server};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The upper bound of any one test.
pub const TEST_LIMIT: Duration = Duration::from_secs(30);
/// How long a client waits for an expected frame.
pub const RECV_LIMIT: Duration = Duration::from_secs(5);

/// Installs a test subscriber (once) and runs `body` within [`TEST_LIMIT`].
pub async fn bounded<F: Future<Output = Result<()>>>(body: F) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "peerpipe_server=debug".into()),
        )
        .with_test_writer()
        .try_init();
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .context("the test timed out")?
}

/// A running server and its token secret.
pub struct TestServer {
    /// The server.
    pub server: Server,
    /// The token secret.
    pub secret: Vec<u8>,
}

impl TestServer {
    /// Starts a server with the defaults, on a free loopback port.
    pub async fn start() -> Result<Self> {
        Self::with(|_| {}).await
    }

    /// Starts a server after `tweak` adjusted its config.
    pub async fn with(tweak: impl FnOnce(&mut Config)) -> Result<Self> {
        let secret: [u8; 32] = rand::random();
        let mut config = Config::new(secret.to_vec());
        config.listen = "127.0.0.1:0".parse()?;
        tweak(&mut config);
        let server = Server::bind(config).await?;
        Ok(Self {
            server,
            secret: secret.to_vec(),
        })
    }

    /// A token for `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        peerpipe_proto::token::mint(&self.secret, user, unix_now() + 3600).expect("minting a token")
    }

    /// Connects a fresh device of `user` and completes the handshake.
    pub async fn device(&self, user: &str, label: &str) -> Result<Device> {
        self.device_with(&identity(), user, label).await
    }

    /// Connects a fresh anonymous device (no token) and completes the handshake.
    pub async fn anonymous(&self, label: &str) -> Result<Device> {
        self.admit(&identity(), "", label).await
    }

    /// Connects the device `id` of `user` and completes the handshake.
    pub async fn device_with(&self, id: &Identity, user: &str, label: &str) -> Result<Device> {
        self.admit(id, &self.token(user), label).await
    }

    /// Connects the device `id` with `token` and completes the handshake.
    pub async fn admit(&self, id: &Identity, token: &str, label: &str) -> Result<Device> {
        let mut client = Client::connect(&self.server.url()).await?;
        let welcome = client.hello(token, id, label).await?;
        let ServerMessage::Welcome { peers, .. } = welcome else {
            bail!("expected a welcome, got {welcome:?}");
        };
        Ok(Device {
            id: id.device_id(),
            client,
            peers,
        })
    }
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A fresh random device identity.
pub fn identity() -> Identity {
    Identity::from_secret_bytes(rand::random())
}

/// An admitted device.
pub struct Device {
    /// Its id.
    pub id: DeviceId,
    /// Its connection.
    pub client: Client,
    /// The peers its welcome listed.
    pub peers: Vec<PeerInfo>,
}

/// A raw protocol client.
pub struct Client {
    /// The WebSocket.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The challenge nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Client {
    /// Connects and reads the challenge.
    pub async fn connect(url: &str) -> Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let mut client = Self {
            ws,
            nonce: [0; NONCE_LEN],
        };
        let ServerMessage::Challenge { nonce } = client.recv().await? else {
            bail!("expected a challenge first");
        };
        client.nonce = URL_SAFE_NO_PAD
            .decode(nonce)?
            .try_into()
            .map_err(|_| anyhow!("nonce of the wrong length"))?;
        Ok(client)
    }

    /// Signs the challenge and sends a hello; returns the answer.
    pub async fn hello(
        &mut self,
        token: &str,
        id: &Identity,
        label: &str,
    ) -> Result<ServerMessage> {
        let signature = URL_SAFE_NO_PAD.encode(id.sign(&hello_payload(&self.nonce, token)));
        self.send(&ClientMessage::Hello {
            token: token.into(),
            device: id.device_id(),
            signature,
            label: label.into(),
        })
        .await?;
        self.recv().await
    }

    /// Sends a control message.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<()> {
        self.send_text(&msg.encode()).await
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, frame: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(frame)).await?;
        Ok(())
    }

    /// The next frame that is not a ping or pong, within [`RECV_LIMIT`]; `None` at
    /// the close.
    pub async fn next(&mut self) -> Result<Option<Message>> {
        loop {
            let m = tokio::time::timeout(RECV_LIMIT, self.ws.next())
                .await
                .context("no frame from the server in time")?;
            match m {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(m)) => return Ok(Some(m)),
            }
        }
    }

    /// The next control message.
    pub async fn recv(&mut self) -> Result<ServerMessage> {
        match self.next().await? {
            Some(Message::Text(t)) => Ok(ServerMessage::decode(t.as_str())?),
            Some(other) => bail!("expected a text frame, got {other:?}"),
            None => bail!("the server closed the connection"),
        }
    }

    /// The next binary frame.
    pub async fn recv_binary(&mut self) -> Result<Vec<u8>> {
        match self.next().await? {
            Some(Message::Binary(b)) => Ok(b.to_vec()),
            other => bail!("expected a binary frame, got {other:?}"),
        }
    }

    /// Expects an error frame with `code`; returns it whole.
    pub async fn expect_error(&mut self, code: ErrorCode) -> Result<ServerMessage> {
        let m = self.recv().await?;
        match &m {
            ServerMessage::Error { code: c, .. } if *c == code => Ok(m),
            _ => bail!("expected error {code}, got {m:?}"),
        }
    }

    /// Expects the connection to close next (after nothing but pings).
    pub async fn expect_close(&mut self) -> Result<()> {
        match self.next().await {
            Ok(None) => Ok(()),
            // A reset after the close frame also counts as closed.
            Err(e)
                if e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
                    .is_some() =>
            {
                Ok(())
            }
            Ok(Some(m)) => bail!("expected the close, got {m:?}"),
            Err(e) => Err(e),
        }
    }

    /// Expects error `code` then the close.
    pub async fn expect_fatal(&mut self, code: ErrorCode) -> Result<ServerMessage> {
        let m = self.expect_error(code).await?;
        self.expect_close().await?;
        Ok(m)
    }
}

impl Device {
    /// Connects to `to` (request `req`), has `target` accept; returns the session.
    pub async fn open_session(&mut self, target: &mut Device, req: u64) -> Result<SessionId> {
        self.client
            .send(&ClientMessage::Connect {
                req,
                to: target.id,
                resume: None,
                service: None,
                door: None,
            })
            .await?;
        let ServerMessage::Incoming { session, from, .. } = target.client.recv().await? else {
            bail!("expected incoming");
        };
        assert_eq!(from.id, self.id);
        target
            .client
            .send(&ClientMessage::Accept {
                req: req + 1000,
                session,
            })
            .await?;
        let m = target.client.recv().await?;
        assert_eq!(
            m,
            ServerMessage::Accepted {
                req: req + 1000,
                session
            }
        );
        let m = self.client.recv().await?;
        let ServerMessage::Connected {
            req: r,
            session: s,
            peer,
        } = m
        else {
            bail!("expected connected, got {m:?}");
        };
        assert_eq!((r, s, peer.id), (req, session, target.id));
        Ok(session)
    }
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(RECV_LIMIT, s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8(buf)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, body.to_owned()))
}

/// Asserts that nothing but pings arrives on `client` for `quiet`.
pub async fn expect_silence(client: &mut Client, quiet: Duration) -> Result<()> {
    match tokio::time::timeout(quiet, client.next()).await {
        Err(_) => Ok(()),
        Ok(m) => bail!("expected silence, got {m:?}"),
    }
}
