//! Connections between two devices and incoming connection requests.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use peerpipe_proto::frame::{
    CLOSE_MESSAGE_TOO_LARGE, CLOSE_NORMAL, CLOSE_PROTOCOL, Frame, Reassembler, ReassemblyError,
    split_message,
};
use peerpipe_proto::relay::RelayHeader;
use peerpipe_proto::signal::{PeerInfo, SessionId};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::node::{Command, Config, Operation, wait_op};
use crate::{AcceptError, CloseReason, RecvError, SendError};

/// Chunks of incoming messages queued per connection before the reader waits.
pub(crate) const INBOX_CHUNKS: usize = 64;

/// The typed reason for an in-band `CLOSE` frame from the peer.
pub(crate) fn close_reason(code: u16, text: &str) -> CloseReason {
    match code {
        CLOSE_NORMAL => CloseReason::PeerClosed,
        CLOSE_MESSAGE_TOO_LARGE => CloseReason::MessageTooLarge {
            max: text.parse().unwrap_or(0),
        },
        CLOSE_PROTOCOL => CloseReason::Protocol(text.to_string()),
        code => CloseReason::Protocol(format!("peer closed with code {code}: {text}")),
    }
}

/// A relay frame carrying one connection frame.
pub(crate) fn relay_message(session: SessionId, frame: &Frame) -> Message {
    let mut buf = BytesMut::with_capacity(peerpipe_proto::relay::HEADER_LEN + frame.encoded_len());
    RelayHeader { session }.encode(&mut buf);
    frame.encode(&mut buf);
    Message::Binary(buf.freeze())
}

/// What the actor's reader hands a connection, in order.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A message chunk.
    Chunk { flags: u8, id: u64, chunk: Bytes },
    /// The peer ended the connection: `None` in order, else why.
    End(Option<CloseReason>),
}

#[derive(Default)]
struct State {
    closed: Option<CloseReason>,
    acks: HashMap<u64, oneshot::Sender<Result<(), CloseReason>>>,
}

struct RecvState {
    rx: mpsc::Receiver<Inbound>,
    reassembler: Reassembler,
    done: Option<Result<(), CloseReason>>,
}

/// State shared by the connection handles and the node actor.
pub(crate) struct ConnShared {
    session: SessionId,
    peer: PeerInfo,
    cfg: Arc<Config>,
    chunk: usize,
    out: mpsc::Sender<Message>,
    cmd: mpsc::Sender<Command>,
    state: Mutex<State>,
    send_lock: tokio::sync::Mutex<u64>,
    recv: tokio::sync::Mutex<RecvState>,
}

impl ConnShared {
    /// A new connection and the sender its incoming chunks go to.
    pub(crate) fn new(
        session: SessionId,
        peer: PeerInfo,
        cfg: Arc<Config>,
        chunk: usize,
        out: mpsc::Sender<Message>,
        cmd: mpsc::Sender<Command>,
    ) -> (Arc<Self>, mpsc::Sender<Inbound>) {
        let (tx, rx) = mpsc::channel(INBOX_CHUNKS);
        let reassembler = Reassembler::new(cfg.max_message_size);
        let shared = Arc::new(Self {
            session,
            peer,
            cfg,
            chunk,
            out,
            cmd,
            state: Mutex::default(),
            send_lock: tokio::sync::Mutex::new(0),
            recv: tokio::sync::Mutex::new(RecvState {
                rx,
                reassembler,
                done: None,
            }),
        });
        (shared, tx)
    }

    pub(crate) fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it, which cannot leave the
        // plain data inside inconsistent: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Why the connection ended, if it has.
    pub(crate) fn closed(&self) -> Option<CloseReason> {
        self.state().closed.clone()
    }

    /// Marks the connection ended; fails waiting confirmations. True the first time.
    pub(crate) fn finish(&self, reason: CloseReason) -> bool {
        let mut state = self.state();
        if state.closed.is_some() {
            return false;
        }
        for (_, waiter) in state.acks.drain() {
            let _ = waiter.send(Err(reason.clone()));
        }
        state.closed = Some(reason);
        true
    }

    /// The peer's application took message `id`.
    pub(crate) fn acked(&self, id: u64) {
        if let Some(waiter) = self.state().acks.remove(&id) {
            let _ = waiter.send(Ok(()));
        }
    }

    fn closed_error(&self) -> CloseReason {
        self.closed().unwrap_or(CloseReason::SignalingLost)
    }

    /// Ends the connection from this side with an in-band close, then signaling close.
    async fn close_with(&self, reason: CloseReason, code: u16, text: String) {
        if self.finish(reason.clone()) {
            let frame = Frame::Close { code, reason: text };
            let _ = self.out.send(relay_message(self.session, &frame)).await;
            let _ = self
                .cmd
                .send(Command::CloseSession {
                    session: self.session,
                    reason,
                })
                .await;
        }
    }

    async fn send(&self, data: Bytes, confirm: bool) -> Result<(), SendError> {
        let max = self.cfg.max_message_size;
        if data.len() > max {
            return Err(SendError::MessageTooLarge {
                size: data.len(),
                max,
            });
        }
        let ack = {
            let mut next = self.send_lock.lock().await;
            if let Some(reason) = self.closed() {
                return Err(SendError::Closed(reason));
            }
            let id = *next;
            *next += 1;
            let ack = confirm.then(|| {
                let (tx, rx) = oneshot::channel();
                self.state().acks.insert(id, tx);
                (id, rx)
            });
            for frame in split_message(id, &data, confirm, self.chunk) {
                if self
                    .out
                    .send(relay_message(self.session, &frame))
                    .await
                    .is_err()
                {
                    return Err(SendError::Closed(self.closed_error()));
                }
                if let Some(reason) = self.closed() {
                    return Err(SendError::Closed(reason));
                }
            }
            ack
        };
        let Some((id, rx)) = ack else {
            return Ok(());
        };
        let op = Operation::SendConfirmed {
            session: self.session,
            peer: self.peer.id,
        };
        let limit = self.cfg.confirm_timeout;
        match wait_op(&self.cmd, op, limit, self.cfg.slow_threshold, rx).await {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(reason))) => Err(SendError::Closed(reason)),
            Ok(None) => Err(SendError::Closed(self.closed_error())),
            Err(()) => {
                self.state().acks.remove(&id);
                Err(SendError::ConfirmTimeout(limit))
            }
        }
    }

    async fn recv(&self) -> Result<Option<Bytes>, RecvError> {
        let mut rs = self.recv.lock().await;
        let rs = &mut *rs;
        if let Some(done) = &rs.done {
            return done.clone().map(|()| None).map_err(RecvError::Closed);
        }
        loop {
            let (result, done) = match rs.rx.recv().await {
                Some(Inbound::Chunk { flags, id, chunk }) => {
                    match rs.reassembler.push(flags, id, chunk) {
                        Ok(None) => continue,
                        Ok(Some(msg)) => {
                            if msg.confirm {
                                let ack = relay_message(self.session, &Frame::Ack { id: msg.id });
                                let _ = self.out.send(ack).await;
                            }
                            return Ok(Some(msg.data));
                        }
                        Err(e) => {
                            let (reason, code, text) = match e {
                                ReassemblyError::TooLarge { max } => (
                                    CloseReason::MessageTooLarge { max },
                                    CLOSE_MESSAGE_TOO_LARGE,
                                    max.to_string(),
                                ),
                                e => (
                                    CloseReason::Protocol(e.to_string()),
                                    CLOSE_PROTOCOL,
                                    e.to_string(),
                                ),
                            };
                            tracing::warn!(session = %self.session, "closing: {reason}");
                            self.close_with(reason.clone(), code, text).await;
                            (Err(RecvError::Closed(reason.clone())), Err(reason))
                        }
                    }
                }
                Some(Inbound::End(None)) => (Ok(None), Ok(())),
                Some(Inbound::End(Some(reason))) => {
                    (Err(RecvError::Closed(reason.clone())), Err(reason))
                }
                None => {
                    let reason = self.closed_error();
                    (Err(RecvError::Closed(reason.clone())), Err(reason))
                }
            };
            rs.done = Some(done);
            return result;
        }
    }

    async fn close(&self) {
        let _in_order = self.send_lock.lock().await;
        self.close_with(CloseReason::Local, CLOSE_NORMAL, String::new())
            .await;
    }
}

/// Ends the connection when the last user handle goes away.
struct Handle(Arc<ConnShared>);

impl Drop for Handle {
    fn drop(&mut self) {
        let shared = &self.0;
        if shared.finish(CloseReason::Local) {
            let frame = Frame::Close {
                code: CLOSE_NORMAL,
                reason: String::new(),
            };
            let _ = shared.out.try_send(relay_message(shared.session, &frame));
            let _ = shared.cmd.try_send(Command::CloseSession {
                session: shared.session,
                reason: CloseReason::Local,
            });
        }
    }
}

/// A connection to another device of this user, relayed through the server.
///
/// Cheap to clone; all methods take `&self`, so one task may send while another
/// receives. Messages arrive whole and in order. Dropping the last handle closes
/// the connection like [`Connection::close`] (without waiting).
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Handle>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("session", &self.inner.0.session)
            .field("peer", &self.inner.0.peer.id)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(shared: Arc<ConnShared>) -> Self {
        Self {
            inner: Arc::new(Handle(shared)),
        }
    }

    /// The device at the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.inner.0.peer
    }

    /// The server's id for this connection.
    pub fn session_id(&self) -> SessionId {
        self.inner.0.session
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.0.closed()
    }

    /// Sends one message. Resolves once it is handed to the server link; waits while
    /// the link's bounded queue is full (backpressure).
    ///
    /// Messages larger than [`NodeBuilder::max_message_size`](crate::NodeBuilder::max_message_size)
    /// fail at once with [`SendError::MessageTooLarge`].
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.inner.0.send(data.into(), false).await
    }

    /// Sends one message and resolves once the remote application has taken it
    /// with [`Connection::recv`], or fails with [`SendError::ConfirmTimeout`]
    /// after the confirm time-out.
    pub async fn send_confirmed(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.inner.0.send(data.into(), true).await
    }

    /// Receives the next message. `Ok(None)`: the peer closed the connection in
    /// order after everything it sent was received.
    pub async fn recv(&self) -> Result<Option<Bytes>, RecvError> {
        self.inner.0.recv().await
    }

    /// Closes the connection in order: the peer receives everything sent before,
    /// then sees the end (`Ok(None)` from `recv`).
    pub async fn close(&self) {
        self.inner.0.close().await;
    }
}

/// A connection request from another device of this user, from
/// [`NodeEvent::IncomingConnection`](crate::NodeEvent::IncomingConnection).
///
/// Answer with [`Incoming::accept`] or [`Incoming::reject`]; dropping it rejects.
pub struct Incoming {
    session: SessionId,
    peer: PeerInfo,
    cfg: Arc<Config>,
    cmd: mpsc::Sender<Command>,
    answered: bool,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("session", &self.session)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    pub(crate) fn new(
        session: SessionId,
        peer: PeerInfo,
        cfg: Arc<Config>,
        cmd: mpsc::Sender<Command>,
    ) -> Self {
        Self {
            session,
            peer,
            cfg,
            cmd,
            answered: false,
        }
    }

    /// The device that asks to connect.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The server's id for the requested connection.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// Accepts the connection; the server must confirm within the request time-out.
    pub async fn accept(mut self) -> Result<Connection, AcceptError> {
        self.answered = true;
        let (reply, rx) = oneshot::channel();
        let command = Command::Accept {
            session: self.session,
            peer: self.peer.clone(),
            reply,
        };
        self.cmd
            .send(command)
            .await
            .map_err(|_| AcceptError::Stopped)?;
        let op = Operation::Accept {
            session: self.session,
            peer: self.peer.id,
        };
        let limit = self.cfg.request_timeout;
        match wait_op(&self.cmd, op, limit, self.cfg.slow_threshold, rx).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(AcceptError::Stopped),
            Err(()) => Err(AcceptError::TimedOut(limit)),
        }
    }

    /// Rejects the connection: the other device's `connect` fails with
    /// [`ConnectError::Rejected`](crate::ConnectError::Rejected).
    pub async fn reject(mut self) {
        self.answered = true;
        let _ = self
            .cmd
            .send(Command::Reject {
                session: self.session,
            })
            .await;
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.cmd.try_send(Command::Reject {
                session: self.session,
            });
        }
    }
}

/// Helper for the actor: the chunk size for a relay limit.
pub(crate) fn chunk_size(max_frame: u32) -> usize {
    let max_frame = usize::try_from(max_frame).unwrap_or(usize::MAX);
    max_frame
        .saturating_sub(peerpipe_proto::relay::HEADER_LEN + peerpipe_proto::frame::MSG_HEADER_LEN)
        .clamp(1, 64 * 1024)
}

/// Helper for tests and the actor: a duration in milliseconds from the wire.
pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerpipe_proto::id::Identity;

    fn cfg(max_message_size: usize) -> Arc<Config> {
        Arc::new(Config {
            server: String::new(),
            token: String::new(),
            identity: Identity::from_secret_bytes([1; 32]),
            label: String::new(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(2),
            max_message_size,
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            slow_threshold: Duration::from_secs(1),
        })
    }

    /// One direction of a fake relay: what `from` writes reaches `to` the way the
    /// actor would hand it over.
    async fn relay(
        mut out: mpsc::Receiver<Message>,
        to: Arc<ConnShared>,
        inbox: mpsc::Sender<Inbound>,
    ) {
        while let Some(Message::Binary(mut b)) = out.recv().await {
            RelayHeader::decode(&mut b).unwrap();
            match Frame::decode(b).unwrap() {
                Frame::Msg { flags, id, chunk } => {
                    let _ = inbox.send(Inbound::Chunk { flags, id, chunk }).await;
                }
                Frame::Ack { id } => to.acked(id),
                Frame::Close { code, reason } => {
                    let reason = close_reason(code, &reason);
                    to.finish(reason.clone());
                    let _ = inbox
                        .send(Inbound::End((code != 0).then_some(reason)))
                        .await;
                    return;
                }
            }
        }
    }

    fn pair(max_a: usize, max_b: usize, chunk: usize) -> (Connection, Connection) {
        let peer = PeerInfo {
            id: Identity::from_secret_bytes([2; 32]).device_id(),
            label: String::new(),
        };
        let (cmd, _cmd_rx) = mpsc::channel(16);
        std::mem::forget(_cmd_rx);
        let (a_out, a_rx) = mpsc::channel(4);
        let (b_out, b_rx) = mpsc::channel(4);
        let s = SessionId(9);
        let (a, a_in) = ConnShared::new(s, peer.clone(), cfg(max_a), chunk, a_out, cmd.clone());
        let (b, b_in) = ConnShared::new(s, peer, cfg(max_b), chunk, b_out, cmd);
        tokio::spawn(relay(a_rx, b.clone(), b_in));
        tokio::spawn(relay(b_rx, a.clone(), a_in));
        (Connection::new(a), Connection::new(b))
    }

    #[tokio::test]
    async fn messages_confirm_and_close_in_order() {
        let (a, b) = pair(1 << 20, 1 << 20, 7);
        let data = Bytes::from((0..1000u32).map(|i| i as u8).collect::<Vec<_>>());
        let (sent, got) = tokio::join!(a.send_confirmed(data.clone()), b.recv());
        sent.unwrap();
        assert_eq!(got.unwrap(), Some(data));
        a.send("tail").await.unwrap();
        a.close().await;
        assert_eq!(b.recv().await.unwrap().as_deref(), Some(&b"tail"[..]));
        assert_eq!(b.recv().await.unwrap(), None);
        assert_eq!(
            a.send("x").await,
            Err(SendError::Closed(CloseReason::Local))
        );
        assert_eq!(
            b.send("x").await,
            Err(SendError::Closed(CloseReason::PeerClosed))
        );
    }

    #[tokio::test]
    async fn too_large_closes_both_sides_with_the_limit() {
        let (a, b) = pair(1 << 20, 100, 30);
        assert!(matches!(
            a.send(vec![0u8; (1 << 20) + 1]).await,
            Err(SendError::MessageTooLarge { .. })
        ));
        let (sent, got) = tokio::join!(a.send_confirmed(vec![0u8; 101]), b.recv());
        let reason = CloseReason::MessageTooLarge { max: 100 };
        assert_eq!(got, Err(RecvError::Closed(reason.clone())));
        assert_eq!(sent, Err(SendError::Closed(reason)));
    }

    #[tokio::test]
    async fn unconfirmed_message_times_out() {
        let (a, _b) = pair(1 << 20, 1 << 20, 1024);
        let err = a.send_confirmed("nobody reads").await.unwrap_err();
        assert_eq!(err, SendError::ConfirmTimeout(Duration::from_secs(2)));
    }
}
