//! peerpipe: move data between the devices of a user, peer to peer.
//!
//! A [`Node`] is one device on a peerpipe network. It holds a link to the
//! signaling server (reconnecting with backoff when it drops), sees which of the
//! user's other devices are online, and opens [`Connection`]s to them.
//!
//! A connection is an end-to-end encrypted session (a Noise handshake between the
//! two device keys, then ChaCha20-Poly1305): the server relays ciphertext it can
//! neither read nor alter unnoticed ([`CloseReason::Integrity`]). It carries
//! messages ([`Connection::send_confirmed`] resolves once the remote application
//! took the message) and any number of byte [`Stream`]s (tokio `AsyncRead` +
//! `AsyncWrite`), each with credit flow control: a slow reader slows its writer,
//! with bounded memory on both devices, and does not hold up other streams.
//! A connection starts on the server's relay and moves to a direct path between
//! the devices as soon as one opens — QUIC between native nodes, a WebRTC data
//! channel otherwise, both negotiated inside the encrypted session and pinned
//! to the keys it delivered — and back to the relay when it fails
//! ([`NodeEvent::PathChanged`], [`PathPolicy`]). Connections survive the loss
//! of any path: when the server restarts or a link drops, the nodes route them
//! again and nothing is lost or repeated.
//!
//! ```
//! use std::time::{SystemTime, UNIX_EPOCH};
//! use peerpipe::{Node, NodeEvent};
//! use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! // A server to talk to (normally `peerpipe serve` somewhere).
//! let secret = [7u8; 32];
//! let mut config = peerpipe_server::Config::new(secret.to_vec());
//! config.listen = "127.0.0.1:0".parse()?;
//! let server = peerpipe_server::Server::bind(config).await?;
//! let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
//! let token = peerpipe_proto::token::mint(&secret, "alice", now + 3600)?;
//!
//! // Two devices of the same user.
//! let laptop = Node::builder().server(server.url()).token(token.clone()).label("laptop").bind().await?;
//! let phone = Node::builder().server(server.url()).token(token).label("phone").bind().await?;
//!
//! let phone_id = phone.id();
//! let receiving = tokio::spawn(async move {
//!     loop {
//!         if let Some(NodeEvent::IncomingConnection(incoming)) = phone.next_event().await {
//!             let conn = incoming.accept().await?;
//!             let message = conn.recv().await?;
//!             let mut stream = conn.accept_stream().await?;
//!             let mut bytes = Vec::new();
//!             stream.read_to_end(&mut bytes).await?;
//!             return anyhow::Ok((message, bytes));
//!         }
//!     }
//! });
//! let conn = laptop.connect(phone_id).await?;
//! conn.send_confirmed("hello").await?; // resolves once the phone's app took it
//! let mut stream = conn.open_stream().await?;
//! stream.write_all(b"a byte stream").await?;
//! stream.shutdown().await?;
//! let (message, bytes) = receiving.await??;
//! assert_eq!(message.as_deref(), Some(&b"hello"[..]));
//! assert_eq!(bytes, b"a byte stream");
//! # laptop.shutdown().await;
//! # server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Devices of different users (or anonymous ones, bound without a token) meet
//! through one-time codes: [`Node::offer_code`] shows a short code such as
//! `7-amber-falcon`, [`Node::claim_code`] on the other device takes it; a PAKE
//! (SPAKE2) through the server turns it into a key that authenticates the
//! connection's end-to-end handshake, so the server learns nothing it could
//! test a guess against, and a wrong code fails on both sides
//! ([`CodeError::WrongCode`]).
//!
//! Everything that can fail has its own error type ([`BindError`], [`ConnectError`],
//! [`SendError`], [`StreamError`], ...) whose variants say what to do; [`NodeEvent`]s report what
//! happens in the background (incoming connections, presence, reconnects, slow
//! operations).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod actor;
mod code;
mod command;
mod config;
mod connection;
mod direct;
mod error;
mod event;
mod link;
mod node;
mod op;
pub mod share;
mod tls;

pub use code::CodeOffer;
pub use command::Incoming;
pub use connection::{Connection, Stream};
pub use direct::{PathKind, PathPolicy};
pub use error::{
    AcceptError, BindError, CloseReason, CodeError, ConnectError, RecvError, RequestError,
    SendError, StopError, StreamError,
};
pub use event::NodeEvent;
pub use node::{Node, NodeBuilder};
pub use op::Operation;
pub use peerpipe_proto::door::{Door, DoorKey};
pub use peerpipe_proto::id::{DeviceId, Identity};
pub use peerpipe_proto::signal::{IceServer, PeerInfo, SessionId};
pub use tls::{CertificateDer, certificates_from_pem};
