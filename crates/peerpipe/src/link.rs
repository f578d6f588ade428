//! Dialing the server: WebSocket connect, challenge, hello, welcome.

use std::io;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt as _, StreamExt as _};
use peerpipe_proto::signal::{
    ClientMessage, IceServer, Limits, NONCE_LEN, PeerInfo, ServerMessage, hello_payload,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::BindError;
use crate::config::Config;

/// The WebSocket to the server.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A link the server has admitted this device on.
pub(crate) struct Admitted {
    pub ws: Ws,
    /// The local address of the link's TCP connection.
    pub local: Option<std::net::SocketAddr>,
    pub peers: Vec<PeerInfo>,
    pub limits: Limits,
    /// The STUN/TURN servers the server announced.
    pub ice_servers: Vec<IceServer>,
}

/// How long one connection attempt may go without the server's challenge before
/// another attempt starts beside it (doubling each time): on a lossy link a
/// lost SYN or upgrade request costs the kernel's retransmission back-off
/// (1 s, 3 s, 7 s, 15 s), and a fresh connection is often through sooner.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Connection attempts made at once at most.
const MAX_ATTEMPTS: usize = 4;

/// Connects and runs the admission handshake within the connect time-out.
pub(crate) async fn dial(cfg: &Config) -> Result<Admitted, BindError> {
    let admission = async {
        let (ws, nonce) = open_racing(cfg).await?;
        admit(cfg, ws, nonce).await
    };
    tokio::time::timeout(cfg.connect_timeout, admission)
        .await
        .map_err(|_| BindError::TimedOut(cfg.connect_timeout))?
}

/// Opens the WebSocket and reads the challenge, starting a new attempt beside
/// the ones still waiting after [`RETRY_AFTER`], 2 × that, ...: the first to
/// hear the challenge wins and the others are dropped before any of them sent
/// a hello, so only one connection is ever admitted. An attempt that fails
/// while others still run is forgotten; a refusal that retrying cannot help
/// (TLS, protocol) ends the dial at once.
async fn open_racing(cfg: &Config) -> Result<(Ws, [u8; NONCE_LEN]), BindError> {
    let mut attempts = FuturesUnordered::new();
    attempts.push(Box::pin(open(cfg)));
    let mut started = 1;
    let mut wait = RETRY_AFTER;
    let next = tokio::time::sleep(wait);
    tokio::pin!(next);
    loop {
        tokio::select! {
            Some(result) = attempts.next() => match result {
                Ok(opened) => return Ok(opened),
                Err(e @ BindError::Unreachable(_)) if !attempts.is_empty() => {
                    tracing::debug!("a connection attempt failed, others still run: {e}");
                }
                Err(e) => return Err(e),
            },
            () = &mut next, if started < MAX_ATTEMPTS => {
                tracing::debug!(attempt = started + 1, "no challenge from the server yet: trying a new connection");
                attempts.push(Box::pin(open(cfg)));
                started += 1;
                wait *= 2;
                next.as_mut().reset(tokio::time::Instant::now() + wait);
            }
        }
    }
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> BindError {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        // tokio-rustls reports a failed handshake as an I/O error around rustls's.
        E::Io(e) => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => BindError::Tls(tls.to_string()),
            None => BindError::Unreachable(e),
        },
        E::Tls(e) => BindError::Tls(e.to_string()),
        e => BindError::Unreachable(io::Error::other(e)),
    }
}

/// Connects the WebSocket and reads the server's challenge.
async fn open(cfg: &Config) -> Result<(Ws, [u8; NONCE_LEN]), BindError> {
    let connector = cfg
        .tls
        .clone()
        .map(tokio_tungstenite::Connector::Rustls)
        .unwrap_or(tokio_tungstenite::Connector::Plain);
    let (mut ws, _response) = tokio_tungstenite::connect_async_tls_with_config(
        cfg.server.as_str(),
        None,
        true,
        Some(connector),
    )
    .await
    .map_err(ws_error)?;
    let nonce = match next_message(&mut ws).await? {
        ServerMessage::Challenge { nonce } => nonce,
        ServerMessage::Error { code, message, .. } => {
            return Err(BindError::from_code(code, message, cfg.token.is_empty()));
        }
        other => {
            return Err(BindError::Protocol(format!(
                "expected a challenge, got {other:?}"
            )));
        }
    };
    let nonce: [u8; NONCE_LEN] = URL_SAFE_NO_PAD
        .decode(nonce.trim_end_matches('='))
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            BindError::Protocol("the challenge nonce is not 32 base64url bytes".into())
        })?;
    Ok((ws, nonce))
}

/// Answers the challenge and reads the welcome.
async fn admit(cfg: &Config, mut ws: Ws, nonce: [u8; NONCE_LEN]) -> Result<Admitted, BindError> {
    let signature = cfg.identity.sign(&hello_payload(&nonce, &cfg.token));
    let hello = ClientMessage::Hello {
        token: cfg.token.clone(),
        device: cfg.identity.device_id(),
        signature: URL_SAFE_NO_PAD.encode(signature),
        label: cfg.label.clone(),
    };
    ws.send(Message::Text(hello.encode().into()))
        .await
        .map_err(ws_error)?;
    match next_message(&mut ws).await? {
        ServerMessage::Welcome {
            device,
            peers,
            limits,
            ice_servers,
            ..
        } => {
            if device != cfg.identity.device_id() {
                return Err(BindError::Protocol(format!(
                    "the server admitted {device:?} instead of this device"
                )));
            }
            let local = match ws.get_ref() {
                MaybeTlsStream::Plain(tcp) => tcp.local_addr().ok(),
                MaybeTlsStream::Rustls(tls) => tls.get_ref().0.local_addr().ok(),
                _ => None,
            };
            Ok(Admitted {
                ws,
                local,
                peers,
                limits,
                ice_servers,
            })
        }
        ServerMessage::Error { code, message, .. } => {
            Err(BindError::from_code(code, message, cfg.token.is_empty()))
        }
        other => Err(BindError::Protocol(format!(
            "expected a welcome, got {other:?}"
        ))),
    }
}

async fn next_message(ws: &mut Ws) -> Result<ServerMessage, BindError> {
    loop {
        match ws.next().await {
            None => {
                return Err(BindError::Unreachable(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the handshake",
                )));
            }
            Some(Err(e)) => return Err(ws_error(e)),
            Some(Ok(Message::Text(text))) => {
                return ServerMessage::decode(text.as_str())
                    .map_err(|e| BindError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(BindError::Unreachable(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("the server closed the connection during the handshake {why}"),
                )));
            }
            Some(Ok(Message::Binary(_))) => {
                return Err(BindError::Protocol(
                    "binary frame during the handshake".into(),
                ));
            }
            Some(Ok(_)) => {}
        }
    }
}
