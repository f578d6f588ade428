//! The signaling link actor: owns the WebSocket, pending requests, the routes of
//! connections over the relay and presence, and reconnects with exponential
//! backoff when the link drops. Connections outlive the link: when it is back,
//! the side that dialed routes each of them again.
//!
//! This module holds the link's life (connect, admission, reconnect, the read
//! loop, stop) and the commands from the node; [`routes`] the connections on
//! the relay and their resume, [`requests`] the table of requests out to the
//! server, [`codes`] what arrives for this node's nameplates.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use peerpipe_proto::code::CodeFrame;
use peerpipe_proto::door::Door;
use peerpipe_proto::id::DeviceId;
use peerpipe_proto::relay::RelayHeader;
use peerpipe_proto::session::handshake::Psk;
use peerpipe_proto::session::{PathId, Session};
use peerpipe_proto::signal::{
    self, ClientMessage, ErrorCode, Limits, PeerInfo, ServerMessage, SessionId,
};
use rand::Rng as _;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument as _;

use crate::command::{CODE_QUEUE, CODE_SERVICE, CodeSignal, CodeSlot, Command, Incoming};
use crate::config::Config;
use crate::connection::{
    ConnInner, INPUT_QUEUE, Input, REPORT_QUEUE, Report, Route, Waiter, drive, session_config,
};
use crate::direct::{DirectEnv, PathPolicy, QuicNode};
use crate::event::NodeEvent;
use crate::link::{Admitted, Ws, dial};
use crate::{AcceptError, CloseReason, CodeError, ConnectError, RequestError, StopError};

mod codes;
mod requests;
mod routes;

use self::requests::waiter_not_connected;
use self::routes::{deliver, wait_room};

/// Outgoing WebSocket messages queued per link before senders wait.
const OUT_QUEUE: usize = 64;
/// How often the actor sweeps abandoned requests.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// How long a stopping node lets its connections send their close.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

enum Pending {
    ListPeers(oneshot::Sender<Result<Vec<PeerInfo>, RequestError>>),
    Connect {
        reply: oneshot::Sender<Result<crate::Connection, ConnectError>>,
        service: Option<String>,
        psk: Option<Psk>,
    },
    /// Allocating a nameplate.
    CodeAllocate(oneshot::Sender<Result<CodeSlot, CodeError>>),
    /// Claiming a nameplate.
    CodeClaim(oneshot::Sender<Result<CodeSlot, CodeError>>),
    /// The application's accept of a new connection.
    Accept(SessionId),
    /// Routing connection `id` again (this side dialed it).
    Resume(SessionId),
    /// Accepting a new route (server session) for a connection the peer dialed.
    ResumeAccept(SessionId),
}

impl Pending {
    fn abandoned(&self) -> bool {
        match self {
            Self::ListPeers(r) => r.is_closed(),
            Self::Connect { reply, .. } => reply.is_closed(),
            Self::CodeAllocate(r) | Self::CodeClaim(r) => r.is_closed(),
            Self::Accept(_) | Self::Resume(_) | Self::ResumeAccept(_) => false,
        }
    }
}

/// A live connection, by the id of the server session it was set up on.
struct Conn {
    inner: Arc<ConnInner>,
    input: mpsc::Sender<Input>,
    task: JoinHandle<()>,
    /// The server session and path it is routed on now.
    route: Option<(SessionId, PathId)>,
    /// A request to route it again is out.
    resuming: bool,
    /// Made with a one-time code, so with a device of another user: the
    /// server routes it again only while the side that accepted it allows
    /// that ([`ClientMessage::AllowResume`]), and no presence says when that
    /// side is back, so the dialer retries on a timer.
    by_code: bool,
    /// When the dialer may try again to route it (after a "not yet").
    retry_at: Option<Instant>,
    /// Attempts to route it again that failed in a row, for the backoff.
    retries: u32,
}

/// Where what arrives for a nameplate of this node goes.
struct CodeRoute {
    tx: mpsc::Sender<CodeSignal>,
    /// The other device, once known.
    peer: Option<DeviceId>,
}

/// The live link's writer side and sizes.
struct Link {
    out: mpsc::Sender<Message>,
    max_frame: u32,
}

/// An input waiting for room in a connection's queue; the reader pauses meanwhile.
type Blocked = Option<(mpsc::Sender<Input>, Input)>;

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
    /// Handed to every connection, for what it reports.
    reports_tx: mpsc::Sender<Report>,
    reports_rx: mpsc::Receiver<Report>,
    events: mpsc::Sender<NodeEvent>,
    stop: watch::Receiver<bool>,
    next_req: u64,
    next_path: u64,
    pending: HashMap<u64, Pending>,
    conns: HashMap<SessionId, Conn>,
    /// Server session → the connection routed on it.
    routes: HashMap<SessionId, SessionId>,
    peers: HashMap<DeviceId, PeerInfo>,
    /// Nameplates this node allocated or claimed on the current link.
    codes: HashMap<u32, CodeRoute>,
    /// The doors this node opened, and the keys of their connections.
    doors: HashMap<Door, Psk>,
    link: Option<Link>,
    /// Where direct attempts bind, from the current server link.
    env: watch::Sender<DirectEnv>,
    /// The node's QUIC endpoint, bound at the first admission.
    quic: Option<Arc<QuicNode>>,
}

impl Actor {
    pub(crate) fn new(
        cfg: Arc<Config>,
        cmd_tx: mpsc::Sender<Command>,
        cmd_rx: mpsc::Receiver<Command>,
        events: mpsc::Sender<NodeEvent>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE);
        Self {
            cfg,
            cmd_tx,
            cmd_rx,
            reports_tx,
            reports_rx,
            events,
            stop,
            next_req: 1,
            next_path: 0,
            pending: HashMap::new(),
            conns: HashMap::new(),
            routes: HashMap::new(),
            peers: HashMap::new(),
            codes: HashMap::new(),
            doors: HashMap::new(),
            link: None,
            env: watch::Sender::new(DirectEnv::default()),
            quic: None,
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
                    self.drop_link_state(false);
                    self.emit(NodeEvent::Stopped {
                        error: StopError::Replaced,
                    });
                    break;
                }
                LinkEnd::Lost(error) => error,
            };
            tracing::warn!("server link lost: {error}");
            self.drop_link_state(false);
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
        self.drop_link_state(true);
        self.end_connections().await;
        tracing::debug!("node stopped");
    }

    /// Ends every connection and waits (briefly) for their drivers.
    async fn end_connections(&mut self) {
        let conns: Vec<Conn> = self.conns.drain().map(|(_, c)| c).collect();
        for conn in &conns {
            deliver(&conn.input, Input::Abort(CloseReason::NodeStopped));
        }
        for conn in conns {
            if tokio::time::timeout(CLOSE_GRACE, conn.task).await.is_err() {
                tracing::debug!(session = %conn.inner.id, "connection did not end in time");
            }
            conn.inner
                .lock()
                .closed
                .get_or_insert(CloseReason::NodeStopped);
        }
        while let Ok(report) = self.reports_rx.try_recv() {
            self.report(report).await;
        }
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
            // Open connections wait for the link only until their idle time-out:
            // keep attempts frequent enough to get back before that.
            let max = if self.conns.is_empty() {
                self.cfg.backoff_max
            } else {
                self.cfg
                    .backoff_max
                    .min(self.cfg.idle_timeout / 4)
                    .max(self.cfg.backoff_min)
            };
            let delay = backoff(attempt, self.cfg.backoff_min, max);
            tracing::debug!(attempt, ?delay, "reconnecting: {error}");
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
                Some(report) = self.reports_rx.recv() => self.report(report).await,
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
            Command::CodeAllocate { reply, .. } | Command::CodeClaim { reply, .. } => {
                let _ = reply.send(Err(CodeError::NotConnected));
            }
            Command::CodeRelease { nameplate } => {
                self.codes.remove(&nameplate);
            }
            // Opened at the server once the link is up.
            Command::OpenDoor { door, psk } => {
                self.doors.insert(door, psk);
            }
            Command::CloseDoor { door } => {
                self.doors.remove(&door);
            }
            Command::Reject { .. } | Command::CodeSend { .. } => {}
            Command::Slow { operation, elapsed } => {
                self.emit(NodeEvent::Slow { operation, elapsed });
            }
        }
    }

    /// What a connection reports: its end (the route closes at the server if
    /// the link is up), or news for the application.
    async fn report(&mut self, report: Report) {
        match report {
            Report::Ended {
                id,
                reason,
                established,
            } => {
                for msg in self.forgotten(id, reason, established) {
                    self.send_signal(msg).await;
                }
            }
            Report::Slow { operation, elapsed } => {
                self.emit(NodeEvent::Slow { operation, elapsed });
            }
            Report::PathChanged {
                session,
                peer,
                path,
                rtt,
            } => self.emit(NodeEvent::PathChanged {
                session,
                peer,
                path,
                rtt,
            }),
        }
    }

    /// Forgets what lived on the link that is gone: every route (the
    /// connections wait for a new one) and every request.
    fn drop_link_state(&mut self, stopped: bool) {
        self.link = None;
        self.routes.clear();
        // The server forgets a device's codes with its link: their owners hear
        // of it as their channel closes.
        self.codes.clear();
        for conn in self.conns.values_mut() {
            conn.resuming = false;
            conn.retry_at = None;
            conn.retries = 0;
            if let Some((_, path)) = conn.route.take() {
                deliver(&conn.input, Input::PathDown(path));
            }
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            match pending {
                Pending::ListPeers(reply) => {
                    let _ = reply.send(Err(if stopped {
                        RequestError::Stopped
                    } else {
                        RequestError::NotConnected
                    }));
                }
                Pending::Connect { reply, .. } => {
                    let _ = reply.send(Err(if stopped {
                        ConnectError::Stopped
                    } else {
                        ConnectError::NotConnected
                    }));
                }
                Pending::CodeAllocate(reply) | Pending::CodeClaim(reply) => {
                    let _ = reply.send(Err(if stopped {
                        CodeError::Stopped
                    } else {
                        CodeError::NotConnected
                    }));
                }
                Pending::Accept(id) => {
                    // The accept is lost with the link: the request is gone.
                    if let Some(conn) = self.conns.get(&id) {
                        deliver(&conn.input, Input::Abort(CloseReason::Cancelled));
                    }
                }
                Pending::Resume(_) | Pending::ResumeAccept(_) => {}
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

    /// Runs one admitted link until it ends.
    async fn run_link(&mut self, admitted: Admitted) -> LinkEnd {
        let Admitted {
            ws,
            limits,
            local,
            ice_servers,
            ..
        } = admitted;
        let ice_servers = self.cfg.ice_servers.as_ref().unwrap_or(&ice_servers);
        let mut env = DirectEnv::for_link(local, ice_servers);
        if self.cfg.quic && self.cfg.path_policy != PathPolicy::RelayOnly {
            if self.quic.is_none() {
                match QuicNode::bind(&env.hosts) {
                    Ok(node) => self.quic = Some(node),
                    Err(e) => tracing::warn!("no QUIC path: {e}"),
                }
            }
            env.quic = self.quic.clone();
        }
        self.env.send_replace(env);
        let (sink, mut stream) = ws.split();
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let mut writer = tokio::spawn(write_loop(sink, out_rx).in_current_span());
        self.link = Some(Link {
            out: out_tx.clone(),
            max_frame: limits.max_frame,
        });
        self.allow_resumes().await;
        self.open_doors().await;
        self.resume_all().await;
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
                Some(report) = self.reports_rx.recv() => self.report(report).await,
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
                        Some(Ok(Message::Binary(frame))) => blocked = self.relay_frame(frame),
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
                    self.resume_all().await;
                }
                () = tokio::time::sleep_until(last_rx + idle), if blocked.is_none() => {
                    break LinkEnd::Lost(format!("no traffic from the server for {idle:?}"));
                }
                _ = &mut writer => break LinkEnd::Lost("writing to the server failed".into()),
            }
        };
        if matches!(end, LinkEnd::Stop) {
            // What the application asked for before it stopped the node still goes
            // out (a code's key confirmation, say, which the other device needs to
            // tell a wrong code from a device that left).
            while let Ok(cmd) = self.cmd_rx.try_recv() {
                self.command(cmd).await;
            }
            while let Ok(report) = self.reports_rx.try_recv() {
                self.report(report).await;
            }
            // Let the connections say goodbye on the link, then close it.
            self.end_connections().await;
            let _ = out_tx.try_send(Message::Close(None));
            drop(out_tx);
            self.link = None;
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
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
            Command::Connect {
                to,
                service,
                psk,
                door,
                reply,
            } => {
                let req = self.request_id();
                self.pending.insert(
                    req,
                    Pending::Connect {
                        reply,
                        service: service.clone(),
                        psk,
                    },
                );
                self.send_signal(ClientMessage::Connect {
                    req,
                    to,
                    resume: None,
                    service,
                    door,
                })
                .await;
            }
            Command::OpenDoor { door, psk } => {
                self.doors.insert(door, psk);
                self.send_signal(ClientMessage::OpenDoor { door }).await;
            }
            Command::CloseDoor { door } => {
                if self.doors.remove(&door).is_some() {
                    self.send_signal(ClientMessage::CloseDoor { door }).await;
                }
            }
            Command::CodeAllocate { chosen, reply } => {
                let req = self.request_id();
                self.pending.insert(req, Pending::CodeAllocate(reply));
                self.send_signal(ClientMessage::CodeAllocate {
                    req,
                    nameplate: chosen,
                })
                .await;
            }
            Command::CodeClaim { nameplate, reply } => {
                let req = self.request_id();
                self.pending.insert(req, Pending::CodeClaim(reply));
                self.send_signal(ClientMessage::CodeClaim { req, nameplate })
                    .await;
            }
            Command::CodeSend { nameplate, body } => {
                if self.codes.contains_key(&nameplate) {
                    let body = signal::encode_code_body(&body);
                    self.send_signal(ClientMessage::CodeMessage { nameplate, body })
                        .await;
                }
            }
            Command::CodeRelease { nameplate } => {
                if self.codes.remove(&nameplate).is_some() {
                    self.send_signal(ClientMessage::CodeRelease { nameplate })
                        .await;
                }
            }
            Command::Accept {
                session,
                peer,
                service,
                psk,
                reply,
            } => {
                let req = self.request_id();
                if self.link.is_none() {
                    let _ = reply.send(Err(AcceptError::NotConnected));
                    return;
                }
                // The accept goes out before the connection's driver exists, so
                // none of its packets can reach the server before the accept; the
                // route exists before this task reads the next relay frame.
                self.send_signal(ClientMessage::Accept { req, session })
                    .await;
                let waiter = Waiter::Accept(reply);
                let (peer_id, by_code) = (peer.id, psk.is_some());
                if self.start_conn(session, peer, false, service, psk.as_ref(), waiter) {
                    self.pending.insert(req, Pending::Accept(session));
                    if by_code {
                        self.send_signal(ClientMessage::AllowResume {
                            peer: peer_id,
                            connection: session,
                        })
                        .await;
                    }
                }
            }
            Command::Reject { session } => {
                self.send_signal(ClientMessage::Reject { session }).await;
            }
            Command::Slow { operation, elapsed } => {
                self.emit(NodeEvent::Slow { operation, elapsed });
            }
        }
    }

    async fn server_message(&mut self, msg: ServerMessage) -> Option<LinkEnd> {
        match msg {
            ServerMessage::Peers { req, peers } => match self.pending.remove(&req) {
                Some(Pending::ListPeers(reply)) => {
                    let _ = reply.send(Ok(peers));
                }
                _ => tracing::warn!(req, "unexpected peers answer"),
            },
            ServerMessage::PeerOnline { peer } => {
                self.peers.insert(peer.id, peer.clone());
                self.emit(NodeEvent::PeerOnline(peer));
                self.resume_all().await;
            }
            ServerMessage::PeerOffline { id } => {
                self.peers.remove(&id);
                self.emit(NodeEvent::PeerOffline(id));
            }
            ServerMessage::Incoming {
                session,
                from,
                resume: None,
                service,
                door,
            } => {
                tracing::debug!(%session, from = %from.id.short(), ?service, ?door, "incoming connection");
                // The connection of a code goes to the code's owner.
                let code = (service.as_deref() == Some(CODE_SERVICE))
                    .then(|| {
                        self.codes
                            .values()
                            .find(|c| c.peer == Some(from.id))
                            .map(|c| c.tx.clone())
                    })
                    .flatten();
                let incoming = Incoming::new(
                    session,
                    from,
                    service,
                    self.cfg.clone(),
                    self.cmd_tx.clone(),
                );
                let incoming = match door {
                    // A door closed since: dropping the request rejects it.
                    Some(door) => match self.doors.get(&door) {
                        Some(psk) => incoming.through_door(door, psk.clone()),
                        None => return None,
                    },
                    None => incoming,
                };
                match code {
                    Some(tx) => {
                        // Dropped (so rejected) if the owner is gone.
                        let _ = tx.try_send(CodeSignal::Incoming(incoming));
                    }
                    None => self.emit(NodeEvent::IncomingConnection(incoming)),
                }
            }
            ServerMessage::Incoming {
                session,
                from,
                resume: Some(id),
                ..
            } => self.incoming_resume(session, from, id).await,
            ServerMessage::CodeAllocated {
                req,
                nameplate,
                ttl_ms,
            } => match self.pending.remove(&req) {
                Some(Pending::CodeAllocate(reply)) if !reply.is_closed() => {
                    let (tx, rx) = mpsc::channel(CODE_QUEUE);
                    self.codes.insert(nameplate, CodeRoute { tx, peer: None });
                    let slot = CodeSlot {
                        nameplate,
                        ttl: Duration::from_millis(ttl_ms),
                        rx,
                    };
                    if reply.send(Ok(slot)).is_err() {
                        self.release_code(nameplate).await;
                    }
                }
                _ => {
                    tracing::debug!(nameplate, "code allocated after the caller gave up");
                    self.send_signal(ClientMessage::CodeRelease { nameplate })
                        .await;
                }
            },
            ServerMessage::CodeJoined { req, nameplate } => match self.pending.remove(&req) {
                Some(Pending::CodeClaim(reply)) if !reply.is_closed() => {
                    let (tx, rx) = mpsc::channel(CODE_QUEUE);
                    let route = CodeRoute { tx, peer: None };
                    self.codes.insert(nameplate, route);
                    let slot = CodeSlot {
                        nameplate,
                        ttl: Duration::ZERO,
                        rx,
                    };
                    if reply.send(Ok(slot)).is_err() {
                        self.release_code(nameplate).await;
                    }
                }
                _ => {
                    tracing::debug!(nameplate, "code claimed after the caller gave up");
                    self.send_signal(ClientMessage::CodeRelease { nameplate })
                        .await;
                }
            },
            ServerMessage::CodeClaimed { nameplate } => {
                self.code_signal(nameplate, CodeSignal::Claimed).await;
            }
            ServerMessage::CodeMessage { nameplate, body } => {
                match signal::decode_code_body(&body) {
                    Ok(body) => {
                        // The other device's introduction says which connection
                        // request will be the code's (checked by the exchange).
                        if let (Ok(CodeFrame::Hello { peer, .. }), Some(route)) =
                            (CodeFrame::decode(&body), self.codes.get_mut(&nameplate))
                        {
                            route.peer = Some(peer.id);
                        }
                        self.code_signal(nameplate, CodeSignal::Message(body)).await
                    }
                    Err(e) => tracing::warn!(nameplate, "bad code message: {e}"),
                }
            }
            ServerMessage::CodeClosed { nameplate } => {
                if let Some(route) = self.codes.remove(&nameplate) {
                    let _ = route.tx.try_send(CodeSignal::Closed);
                }
            }
            ServerMessage::Connected { req, session, peer } => match self.pending.remove(&req) {
                Some(Pending::Connect {
                    reply,
                    service,
                    psk,
                }) if !reply.is_closed() => {
                    tracing::debug!(%session, "connected; handshake");
                    let waiter = Waiter::Connect(reply);
                    self.start_conn(session, peer, true, service, psk.as_ref(), waiter);
                }
                Some(Pending::Resume(id)) => {
                    let link_ok = self.link.is_some();
                    if let Some(mut conn) = self.conns.remove(&id) {
                        conn.resuming = false;
                        conn.retries = 0;
                        tracing::debug!(session = %id, route = %session, "routed again");
                        self.route(&mut conn, session);
                        self.conns.insert(id, conn);
                    } else if link_ok {
                        self.send_signal(ClientMessage::Close { session }).await;
                    }
                }
                _ => {
                    tracing::debug!(%session, "connect answered after the caller gave up");
                    self.send_signal(ClientMessage::Close { session }).await;
                }
            },
            ServerMessage::Accepted { req, session } => match self.pending.remove(&req) {
                Some(Pending::Accept(_) | Pending::ResumeAccept(_)) => {
                    tracing::debug!(%session, "accept confirmed");
                }
                _ => tracing::debug!(%session, "unexpected accept confirmation"),
            },
            ServerMessage::Closed { session, reason } => {
                tracing::debug!(%session, "route closed by the server: {reason}");
                if let Some(id) = self.route_down(session) {
                    let end = match reason {
                        // The peer's node ended the connection (its close packet
                        // arrived before this on the relay, or is on its way on
                        // the direct path).
                        signal::CloseReason::PeerClosed => Some(Input::PeerLeft),
                        signal::CloseReason::Cancelled | signal::CloseReason::Timeout => {
                            Some(Input::Abort(CloseReason::Cancelled))
                        }
                        // The peer's link dropped or the server stops: the
                        // connection waits for a new route.
                        _ => None,
                    };
                    match (end, self.conns.get(&id)) {
                        (Some(end), Some(conn)) => deliver(&conn.input, end),
                        // A peer still online (on another node of a cluster,
                        // which said so before this route's node was found
                        // gone) is routed to again now.
                        (None, _) => self.resume_all().await,
                        (Some(_), None) => {}
                    }
                }
            }
            ServerMessage::Error {
                req: Some(req),
                code,
                message,
                ..
            } => self.request_failed(req, code, message),
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
                match session {
                    // Frames still in flight when a session ended are refused
                    // by the server: expected, and no one's problem.
                    Some(s) if !self.routes.contains_key(&s) => {
                        tracing::debug!(session = ?s, %code, "server error for an ended session: {message}");
                    }
                    _ => tracing::warn!(?session, %code, "server error: {message}"),
                }
            }
            other => tracing::warn!("unexpected message from the server: {other:?}"),
        }
        None
    }
}

/// Our ping interval and the silence after which the link counts as lost.
fn keepalive(limits: &Limits) -> (Duration, Duration) {
    let ping = if limits.ping_interval_ms == 0 {
        Duration::from_secs(15)
    } else {
        Duration::from_millis(limits.ping_interval_ms).max(Duration::from_millis(10))
    };
    let idle = if limits.idle_timeout_ms == 0 {
        ping * 3
    } else {
        Duration::from_millis(limits.idle_timeout_ms).max(ping + ping / 2)
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
}
