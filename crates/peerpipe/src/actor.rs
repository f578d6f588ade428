//! The signaling link actor: owns the WebSocket, pending requests, sessions and
//! presence, and reconnects with exponential backoff when the link drops.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use peerpipe_proto::frame::Frame;
use peerpipe_proto::id::DeviceId;
use peerpipe_proto::relay::RelayHeader;
use peerpipe_proto::signal::{
    self, ClientMessage, ErrorCode, Limits, PeerInfo, ServerMessage, SessionId,
};
use rand::Rng as _;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument as _;

use peerpipe_proto::frame::CLOSE_PROTOCOL;

use crate::connection::{
    ConnShared, Connection, Inbound, Incoming, chunk_size, close_reason, millis, relay_message,
};
use crate::link::{Admitted, Ws, dial};
use crate::node::{Command, Config, NodeEvent};
use crate::{AcceptError, CloseReason, ConnectError, RequestError, StopError};

/// Outgoing WebSocket messages queued per link before senders wait.
const OUT_QUEUE: usize = 64;
/// How often the actor sweeps abandoned requests.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

enum Pending {
    ListPeers(oneshot::Sender<Result<Vec<PeerInfo>, RequestError>>),
    Connect(oneshot::Sender<Result<Connection, ConnectError>>),
    Accept {
        session: SessionId,
        reply: oneshot::Sender<Result<Connection, AcceptError>>,
    },
}

impl Pending {
    fn abandoned(&self) -> bool {
        match self {
            Self::ListPeers(r) => r.is_closed(),
            Self::Connect(r) => r.is_closed(),
            Self::Accept { reply, .. } => reply.is_closed(),
        }
    }
}

struct Session {
    shared: Arc<ConnShared>,
    inbox: mpsc::Sender<Inbound>,
    /// Accepted by the server (or connected); false while our accept is pending.
    open: bool,
}

/// The live link's writer side and sizes.
struct Link {
    out: mpsc::Sender<Message>,
    chunk: usize,
}

/// A chunk waiting for room in a connection's queue; the reader pauses meanwhile.
type Blocked = Option<(mpsc::Sender<Inbound>, Inbound)>;

enum LinkEnd {
    /// The node is shutting down.
    Stop,
    /// The link dropped; reconnect.
    Lost(String),
    /// Another connection took this device's place: stop.
    Replaced,
}

pub(crate) struct Actor {
    cfg: Arc<Config>,
    cmd_tx: mpsc::Sender<Command>,
    cmd_rx: mpsc::Receiver<Command>,
    events: mpsc::Sender<NodeEvent>,
    stop: watch::Receiver<bool>,
    next_req: u64,
    pending: HashMap<u64, Pending>,
    sessions: HashMap<SessionId, Session>,
    peers: HashMap<DeviceId, PeerInfo>,
    link: Option<Link>,
}

impl Actor {
    pub(crate) fn new(
        cfg: Arc<Config>,
        cmd_tx: mpsc::Sender<Command>,
        cmd_rx: mpsc::Receiver<Command>,
        events: mpsc::Sender<NodeEvent>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            cfg,
            cmd_tx,
            cmd_rx,
            events,
            stop,
            next_req: 1,
            pending: HashMap::new(),
            sessions: HashMap::new(),
            peers: HashMap::new(),
            link: None,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    /// Runs the node until it stops.
    pub(crate) async fn run(mut self, first: Admitted) {
        self.peers = first.peers.iter().map(|p| (p.id, p.clone())).collect();
        let mut admitted = first;
        loop {
            let error = match self.run_link(admitted).await {
                LinkEnd::Stop => break,
                LinkEnd::Replaced => {
                    self.drop_link_state(CloseReason::SignalingLost);
                    self.emit(NodeEvent::Stopped {
                        error: StopError::Replaced,
                    });
                    break;
                }
                LinkEnd::Lost(error) => error,
            };
            tracing::warn!("server link lost: {error}");
            self.drop_link_state(CloseReason::SignalingLost);
            match self.reconnect(error).await {
                Some(next) => {
                    tracing::info!("server link back");
                    self.emit(NodeEvent::Reconnected);
                    self.announce(&next.peers);
                    admitted = next;
                }
                None => break,
            }
        }
        self.drop_link_state(CloseReason::NodeStopped);
        tracing::debug!("node stopped");
    }

    /// After a reconnect: who left while the link was down, and who is online now.
    fn announce(&mut self, now: &[PeerInfo]) {
        let fresh: HashMap<DeviceId, PeerInfo> = now.iter().map(|p| (p.id, p.clone())).collect();
        let gone: Vec<DeviceId> = self
            .peers
            .keys()
            .filter(|id| !fresh.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.emit(NodeEvent::PeerOffline(id));
        }
        for peer in now {
            self.emit(NodeEvent::PeerOnline(peer.clone()));
        }
        self.peers = fresh;
    }

    /// Reconnects with backoff; `None` if the node stops instead.
    async fn reconnect(&mut self, mut error: String) -> Option<Admitted> {
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let delay = backoff(attempt, self.cfg.backoff_min, self.cfg.backoff_max);
            tracing::info!(attempt, ?delay, "reconnecting: {error}");
            self.emit(NodeEvent::Reconnecting {
                attempt,
                delay,
                error: error.clone(),
            });
            self.offline(tokio::time::sleep(delay)).await?;
            let cfg = self.cfg.clone();
            match self.offline(dial(&cfg)).await? {
                Ok(admitted) => return Some(admitted),
                Err(e) if e.is_fatal() => {
                    tracing::error!("reconnect refused: {e}");
                    self.emit(NodeEvent::Stopped {
                        error: StopError::Admission(e),
                    });
                    return None;
                }
                Err(e) => error = e.to_string(),
            }
        }
    }

    /// Drives `fut` while answering commands as "not connected"; `None` on stop.
    async fn offline<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            if self.stopping() {
                return None;
            }
            tokio::select! {
                out = &mut fut => return Some(out),
                _ = self.stop.changed() => return None,
                Some(cmd) = self.cmd_rx.recv() => self.command_offline(cmd),
            }
        }
    }

    fn command_offline(&mut self, cmd: Command) {
        match cmd {
            Command::ListPeers { reply } => {
                let _ = reply.send(Err(RequestError::NotConnected));
            }
            Command::Connect { reply, .. } => {
                let _ = reply.send(Err(ConnectError::NotConnected));
            }
            Command::Accept { reply, .. } => {
                let _ = reply.send(Err(AcceptError::NotConnected));
            }
            Command::Reject { .. } | Command::CloseSession { .. } => {}
            Command::Emit(event) => self.emit(event),
        }
    }

    /// Ends every session and request of the link that is gone.
    fn drop_link_state(&mut self, reason: CloseReason) {
        self.link = None;
        for (session, entry) in std::mem::take(&mut self.sessions) {
            entry.shared.finish(reason.clone());
            if entry.open {
                self.emit(NodeEvent::ConnectionClosed {
                    peer: entry.shared.peer().id,
                    session,
                    reason: reason.clone(),
                });
            }
        }
        let stopped = reason == CloseReason::NodeStopped;
        for (_, pending) in std::mem::take(&mut self.pending) {
            match pending {
                Pending::ListPeers(reply) => {
                    let _ = reply.send(Err(if stopped {
                        RequestError::Stopped
                    } else {
                        RequestError::NotConnected
                    }));
                }
                Pending::Connect(reply) => {
                    let _ = reply.send(Err(if stopped {
                        ConnectError::Stopped
                    } else {
                        ConnectError::NotConnected
                    }));
                }
                Pending::Accept { reply, .. } => {
                    let _ = reply.send(Err(if stopped {
                        AcceptError::Stopped
                    } else {
                        AcceptError::NotConnected
                    }));
                }
            }
        }
    }

    fn emit(&self, event: NodeEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            // Dropping an unread IncomingConnection rejects it (Incoming's Drop).
            Err(TrySendError::Full(event)) => {
                tracing::warn!("event queue full, dropping {event:?}");
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    async fn send_signal(&self, msg: ClientMessage) {
        if let Some(link) = &self.link {
            let _ = link.out.send(Message::Text(msg.encode().into())).await;
        }
    }

    fn request_id(&mut self) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        req
    }

    /// Runs one admitted link until it ends.
    async fn run_link(&mut self, admitted: Admitted) -> LinkEnd {
        let Admitted { ws, limits, .. } = admitted;
        let (sink, mut stream) = ws.split();
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let mut writer = tokio::spawn(write_loop(sink, out_rx).in_current_span());
        self.link = Some(Link {
            out: out_tx.clone(),
            chunk: chunk_size(limits.max_frame),
        });
        let (ping_every, idle) = keepalive(&limits);
        tracing::debug!(?limits, "server link up");
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut last_rx = Instant::now();
        let mut blocked: Blocked = None;
        let end = loop {
            if self.stopping() {
                break LinkEnd::Stop;
            }
            tokio::select! {
                _ = self.stop.changed() => break LinkEnd::Stop,
                Some(cmd) = self.cmd_rx.recv() => self.command(cmd).await,
                msg = stream.next(), if blocked.is_none() => {
                    last_rx = Instant::now();
                    match msg {
                        None => break LinkEnd::Lost("the server closed the connection".into()),
                        Some(Err(e)) => break LinkEnd::Lost(e.to_string()),
                        Some(Ok(Message::Text(text))) => match ServerMessage::decode(text.as_str()) {
                            Ok(msg) => {
                                if let Some(end) = self.server_message(msg).await {
                                    break end;
                                }
                            }
                            Err(e) => tracing::warn!("undecodable message from the server: {e}"),
                        },
                        Some(Ok(Message::Binary(frame))) => blocked = self.relay_frame(frame).await,
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame.map(|f| format!(": {}", f.reason)).unwrap_or_default();
                            break LinkEnd::Lost(format!("the server closed the connection{why}"));
                        }
                        Some(Ok(_)) => {}
                    }
                }
                permit = wait_room(&blocked), if blocked.is_some() => {
                    if let (Some(permit), Some((_, item))) = (permit, blocked.take()) {
                        permit.send(item);
                    }
                    last_rx = Instant::now();
                }
                _ = ping.tick() => {
                    let _ = out_tx.try_send(Message::Ping(Bytes::new()));
                }
                _ = housekeeping.tick() => {
                    self.pending.retain(|_, p| !p.abandoned());
                }
                () = tokio::time::sleep_until(last_rx + idle), if blocked.is_none() => {
                    break LinkEnd::Lost(format!("no traffic from the server for {idle:?}"));
                }
                _ = &mut writer => break LinkEnd::Lost("writing to the server failed".into()),
            }
        };
        if matches!(end, LinkEnd::Stop) {
            // Say goodbye; give the writer a moment to flush it.
            let _ = out_tx.try_send(Message::Close(None));
            drop(out_tx);
            self.link = None;
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut writer).await;
        }
        writer.abort();
        end
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::ListPeers { reply } => {
                let req = self.request_id();
                self.pending.insert(req, Pending::ListPeers(reply));
                self.send_signal(ClientMessage::ListPeers { req }).await;
            }
            Command::Connect { to, reply } => {
                let req = self.request_id();
                self.pending.insert(req, Pending::Connect(reply));
                self.send_signal(ClientMessage::Connect { req, to }).await;
            }
            Command::Accept {
                session,
                peer,
                reply,
            } => {
                let req = self.request_id();
                // Register now so relay frames that race the Accepted are kept.
                if !self.sessions.contains_key(&session) {
                    if let Some(entry) = self.new_session(session, peer) {
                        self.sessions.insert(session, entry);
                    }
                }
                self.pending.insert(req, Pending::Accept { session, reply });
                self.send_signal(ClientMessage::Accept { req, session })
                    .await;
            }
            Command::Reject { session } => {
                self.send_signal(ClientMessage::Reject { session }).await;
            }
            Command::CloseSession { session, reason } => {
                if let Some(entry) = self.sessions.remove(&session) {
                    entry.shared.finish(reason.clone());
                    self.send_signal(ClientMessage::Close { session }).await;
                    if entry.open {
                        self.emit(NodeEvent::ConnectionClosed {
                            peer: entry.shared.peer().id,
                            session,
                            reason,
                        });
                    }
                }
            }
            Command::Emit(event) => self.emit(event),
        }
    }

    fn new_session(&self, session: SessionId, peer: PeerInfo) -> Option<Session> {
        let link = self.link.as_ref()?;
        let (shared, inbox) = ConnShared::new(
            session,
            peer,
            self.cfg.clone(),
            link.chunk,
            link.out.clone(),
            self.cmd_tx.clone(),
        );
        Some(Session {
            shared,
            inbox,
            open: false,
        })
    }

    /// Withdraws a session nobody will use (the caller gave up).
    async fn abandon(&mut self, session: SessionId) {
        if let Some(entry) = self.sessions.remove(&session) {
            entry.shared.finish(CloseReason::Local);
        }
        self.send_signal(ClientMessage::Close { session }).await;
    }

    async fn server_message(&mut self, msg: ServerMessage) -> Option<LinkEnd> {
        match msg {
            ServerMessage::Peers { req, peers } => match self.pending.remove(&req) {
                Some(Pending::ListPeers(reply)) => {
                    let _ = reply.send(Ok(peers));
                }
                other => self.unexpected(req, other, "peers"),
            },
            ServerMessage::PeerOnline { peer } => {
                self.peers.insert(peer.id, peer.clone());
                self.emit(NodeEvent::PeerOnline(peer));
            }
            ServerMessage::PeerOffline { id } => {
                self.peers.remove(&id);
                self.emit(NodeEvent::PeerOffline(id));
            }
            ServerMessage::Incoming { session, from } => {
                tracing::debug!(%session, from = %from.id.short(), "incoming connection");
                let incoming = Incoming::new(session, from, self.cfg.clone(), self.cmd_tx.clone());
                self.emit(NodeEvent::IncomingConnection(incoming));
            }
            ServerMessage::Connected { req, session, peer } => match self.pending.remove(&req) {
                Some(Pending::Connect(reply)) if !reply.is_closed() => {
                    let mut entry = self.new_session(session, peer)?;
                    entry.open = true;
                    let conn = Connection::new(entry.shared.clone());
                    self.sessions.insert(session, entry);
                    tracing::debug!(%session, "connected");
                    if reply.send(Ok(conn)).is_err() {
                        self.abandon(session).await;
                    }
                }
                _ => {
                    tracing::debug!(%session, "connect answered after the caller gave up");
                    self.abandon(session).await;
                }
            },
            ServerMessage::Accepted { req, session } => match self.pending.remove(&req) {
                Some(Pending::Accept { reply, .. }) if !reply.is_closed() => {
                    let Some(entry) = self.sessions.get_mut(&session) else {
                        let _ = reply.send(Err(AcceptError::Expired));
                        return None;
                    };
                    entry.open = true;
                    let conn = Connection::new(entry.shared.clone());
                    tracing::debug!(%session, "accepted");
                    if reply.send(Ok(conn)).is_err() {
                        self.abandon(session).await;
                    }
                }
                _ => {
                    tracing::debug!(%session, "accept confirmed after the caller gave up");
                    self.abandon(session).await;
                }
            },
            ServerMessage::Closed { session, reason } => {
                let reason = match reason {
                    signal::CloseReason::PeerClosed => CloseReason::PeerClosed,
                    signal::CloseReason::ShuttingDown => CloseReason::ServerShutdown,
                    signal::CloseReason::Cancelled | signal::CloseReason::Timeout => {
                        CloseReason::Cancelled
                    }
                    _ => CloseReason::PeerDisconnected,
                };
                // The server queues `closed` behind every frame it relayed for the
                // session, and a paused reader reads nothing else: all the peer's
                // data is in the inbox already, so the end goes in right behind it.
                if let Some(entry) = self.sessions.remove(&session) {
                    tracing::debug!(%session, "closed by the server: {reason}");
                    entry.shared.finish(reason.clone());
                    if entry.open {
                        self.emit(NodeEvent::ConnectionClosed {
                            peer: entry.shared.peer().id,
                            session,
                            reason: reason.clone(),
                        });
                    }
                    if let Err(TrySendError::Full(end)) =
                        entry.inbox.try_send(Inbound::End(Some(reason)))
                    {
                        let inbox = entry.inbox.clone();
                        tokio::spawn(async move {
                            let _ = inbox.send(end).await;
                        });
                    }
                }
            }
            ServerMessage::Error {
                req: Some(req),
                code,
                message,
                ..
            } => match self.pending.remove(&req) {
                Some(Pending::ListPeers(reply)) => {
                    let _ = reply.send(Err(RequestError::Server { code, message }));
                }
                Some(Pending::Connect(reply)) => {
                    let _ = reply.send(Err(connect_error(code, message, self.cfg.connect_timeout)));
                }
                Some(Pending::Accept { session, reply }) => {
                    if let Some(entry) = self.sessions.remove(&session) {
                        entry.shared.finish(CloseReason::Cancelled);
                    }
                    let error = match code {
                        ErrorCode::NotFound | ErrorCode::Timeout | ErrorCode::PeerOffline => {
                            AcceptError::Expired
                        }
                        code => AcceptError::Server { code, message },
                    };
                    let _ = reply.send(Err(error));
                }
                None => {
                    tracing::debug!(req, %code, "error for a request nobody waits for: {message}")
                }
            },
            ServerMessage::Error {
                req: None,
                code,
                message,
                session,
            } => {
                if code == ErrorCode::Replaced {
                    tracing::error!("another connection with this device id replaced this one");
                    return Some(LinkEnd::Replaced);
                }
                if code.is_fatal() {
                    return Some(LinkEnd::Lost(format!("server error {code}: {message}")));
                }
                tracing::warn!(?session, %code, "server error: {message}");
            }
            other => tracing::warn!("unexpected message from the server: {other:?}"),
        }
        None
    }

    fn unexpected(&self, req: u64, pending: Option<Pending>, what: &str) {
        tracing::warn!(req, "unexpected {what} answer");
        drop(pending);
    }

    /// Handles one relay frame; returns a chunk that must wait for queue room.
    async fn relay_frame(&mut self, mut frame: Bytes) -> Blocked {
        let header = match RelayHeader::decode(&mut frame) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("bad relay frame from the server: {e}");
                return None;
            }
        };
        let session = header.session;
        let Some(entry) = self.sessions.get_mut(&session) else {
            tracing::trace!(%session, "relay frame for an unknown session");
            return None;
        };
        match Frame::decode(frame) {
            Ok(Frame::Msg { flags, id, chunk }) => {
                match entry.inbox.try_send(Inbound::Chunk { flags, id, chunk }) {
                    Ok(()) => None,
                    Err(TrySendError::Full(item)) => Some((entry.inbox.clone(), item)),
                    Err(TrySendError::Closed(_)) => None,
                }
            }
            Ok(Frame::Ack { id }) => {
                entry.shared.acked(id);
                None
            }
            Ok(Frame::Close { code, reason }) => {
                let reason = close_reason(code, &reason);
                let entry = self.sessions.remove(&session)?;
                tracing::debug!(%session, "peer closed: {reason}");
                entry.shared.finish(reason.clone());
                let end = Inbound::End((code != 0).then(|| reason.clone()));
                if entry.open {
                    self.emit(NodeEvent::ConnectionClosed {
                        peer: entry.shared.peer().id,
                        session,
                        reason,
                    });
                }
                match entry.inbox.try_send(end) {
                    Err(TrySendError::Full(item)) => Some((entry.inbox.clone(), item)),
                    _ => None,
                }
            }
            Err(e) => {
                let text = format!("bad frame: {e}");
                tracing::warn!(%session, "{text}");
                let reason = CloseReason::Protocol(text.clone());
                let entry = self.sessions.remove(&session)?;
                if entry.shared.finish(reason.clone()) {
                    let close = Frame::Close {
                        code: CLOSE_PROTOCOL,
                        reason: text,
                    };
                    if let Some(link) = &self.link {
                        let _ = link.out.send(relay_message(session, &close)).await;
                    }
                    self.send_signal(ClientMessage::Close { session }).await;
                }
                let _ = entry.inbox.try_send(Inbound::End(Some(reason.clone())));
                if entry.open {
                    self.emit(NodeEvent::ConnectionClosed {
                        peer: entry.shared.peer().id,
                        session,
                        reason,
                    });
                }
                None
            }
        }
    }
}

fn connect_error(code: ErrorCode, message: String, limit: Duration) -> ConnectError {
    match code {
        ErrorCode::PeerOffline => ConnectError::PeerOffline,
        ErrorCode::NotFound => ConnectError::NotFound,
        ErrorCode::Forbidden => ConnectError::Forbidden,
        ErrorCode::Rejected => ConnectError::Rejected,
        ErrorCode::Timeout => ConnectError::TimedOut(limit),
        code => ConnectError::Server { code, message },
    }
}

/// Waits for room in the blocked connection's queue (`None`: it went away).
fn wait_room(
    blocked: &Blocked,
) -> impl Future<Output = Option<mpsc::OwnedPermit<Inbound>>> + use<> {
    let tx = blocked.as_ref().map(|(tx, _)| tx.clone());
    async move {
        match tx {
            Some(tx) => tx.reserve_owned().await.ok(),
            None => std::future::pending().await,
        }
    }
}

/// Our ping interval and the silence after which the link counts as lost.
fn keepalive(limits: &Limits) -> (Duration, Duration) {
    let ping = if limits.ping_interval_ms == 0 {
        Duration::from_secs(15)
    } else {
        millis(limits.ping_interval_ms).max(Duration::from_millis(10))
    };
    let idle = if limits.idle_timeout_ms == 0 {
        ping * 3
    } else {
        millis(limits.idle_timeout_ms).max(ping + ping / 2)
    };
    (ping, idle)
}

/// The wait before reconnect `attempt` (from 1): doubling from `min`, ±50 % jitter,
/// never more than `max`.
pub(crate) fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << exp).min(max);
    let jitter: f64 = rand::thread_rng().gen_range(0.5..1.5);
    base.mul_f64(jitter).min(max)
}

async fn write_loop(mut sink: SplitSink<Ws, Message>, mut rx: mpsc::Receiver<Message>) {
    while let Some(msg) = rx.recv().await {
        let mut close = matches!(msg, Message::Close(_));
        if let Err(e) = sink.feed(msg).await {
            tracing::debug!("writing to the server: {e}");
            return;
        }
        // Batch what is already queued into one flush.
        for _ in 0..OUT_QUEUE {
            if close {
                break;
            }
            let Ok(msg) = rx.try_recv() else { break };
            close = matches!(msg, Message::Close(_));
            if let Err(e) = sink.feed(msg).await {
                tracing::debug!("writing to the server: {e}");
                return;
            }
        }
        if let Err(e) = sink.flush().await {
            tracing::debug!("writing to the server: {e}");
            return;
        }
        if close {
            return;
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_cap() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for _ in 0..100 {
            let d1 = backoff(1, min, max);
            assert!(d1 >= min / 2 && d1 <= min * 3 / 2, "{d1:?}");
            let d3 = backoff(3, min, max);
            assert!(d3 >= min * 2 && d3 <= min * 6, "{d3:?}");
            assert!(backoff(40, min, max) <= max);
            assert!(backoff(u32::MAX, min, max) <= max);
        }
    }

    #[test]
    fn chunks_fit_the_frame_limit() {
        assert_eq!(chunk_size(128 * 1024), 64 * 1024);
        assert_eq!(chunk_size(1000), 1000 - 19);
        assert_eq!(chunk_size(5), 1);
    }

    #[test]
    fn close_codes_are_typed() {
        assert_eq!(close_reason(0, ""), CloseReason::PeerClosed);
        assert_eq!(
            close_reason(1, "1024"),
            CloseReason::MessageTooLarge { max: 1024 }
        );
        assert!(matches!(close_reason(2, "x"), CloseReason::Protocol(_)));
        assert!(matches!(close_reason(99, "x"), CloseReason::Protocol(_)));
    }
}
