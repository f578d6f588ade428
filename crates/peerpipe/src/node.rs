//! The node: a device's handle on the server link, its events and connections.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerpipe_proto::id::{DeviceId, Identity};
use peerpipe_proto::session::handshake::Psk;
use peerpipe_proto::signal::{
    IceServer, MAX_LABEL_LEN, PeerInfo, SessionId, truncate_utf8, valid_service,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::actor::Actor;
use crate::code::{CodeOffer, CodeSlot};
use crate::connection::{Connection, Incoming};
use crate::direct::{PathKind, PathPolicy};
use crate::link::dial;
use crate::{
    AcceptError, BindError, CloseReason, CodeError, ConnectError, RequestError, StopError,
};

const COMMAND_QUEUE: usize = 256;

/// Settings of a bound node.
#[derive(Debug)]
pub(crate) struct Config {
    pub server: String,
    /// Empty: the node is anonymous.
    pub token: String,
    pub identity: Identity,
    pub label: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub confirm_timeout: Duration,
    pub max_message_size: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub slow_threshold: Duration,
    pub idle_timeout: Duration,
    pub path_policy: PathPolicy,
    /// Whether direct paths may be QUIC (between native peers).
    pub quic: bool,
    /// STUN/TURN servers to use instead of the ones the server announces.
    pub ice_servers: Option<Vec<IceServer>>,
}

#[cfg(test)]
impl Config {
    /// Short time-outs and a fixed identity, for unit tests.
    pub(crate) fn for_tests() -> Self {
        Self {
            server: String::new(),
            token: String::new(),
            identity: Identity::from_secret_bytes([1; 32]),
            label: String::new(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(2),
            max_message_size: 1 << 20,
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            slow_threshold: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            path_policy: PathPolicy::Any,
            quic: true,
            ice_servers: None,
        }
    }
}

/// An operation that can be reported [`NodeEvent::Slow`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// [`Node::online_peers`].
    ListPeers,
    /// [`Node::connect`] to `peer`.
    Connect {
        /// The target device.
        peer: DeviceId,
    },
    /// [`Incoming::accept`].
    Accept {
        /// The session being accepted.
        session: SessionId,
        /// The device that asked.
        peer: DeviceId,
    },
    /// [`Connection::send_confirmed`] waiting for the remote application.
    SendConfirmed {
        /// The connection.
        session: SessionId,
        /// The device at the other end.
        peer: DeviceId,
    },
    /// A one-time code exchange ([`Node::offer_code`], [`CodeOffer::accept`],
    /// [`Node::claim_code`]) waiting for the server or the other device.
    Code {
        /// The code's number.
        nameplate: u32,
    },
    /// Data sent on a connection (messages or streams) that the peer has not
    /// acknowledged for the slow threshold: the path is stalled or being routed
    /// again. The connection keeps trying until its idle time-out.
    Transfer {
        /// The connection.
        session: SessionId,
        /// The device at the other end.
        peer: DeviceId,
    },
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ListPeers => f.write_str("listing peers"),
            Self::Connect { peer } => write!(f, "connecting to {}", peer.short()),
            Self::Accept { peer, .. } => write!(f, "accepting {}", peer.short()),
            Self::SendConfirmed { peer, .. } => {
                write!(f, "waiting for {} to take a message", peer.short())
            }
            Self::Transfer { peer, .. } => write!(f, "sending to {}", peer.short()),
            Self::Code { nameplate } => write!(f, "exchanging code {nameplate}"),
        }
    }
}

/// Something that happened to the node. Read them with [`Node::next_event`].
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeEvent {
    /// Another device of this user asks to connect: accept or reject it.
    /// (Connections made by a one-time code go to their [`CodeOffer`] instead.)
    IncomingConnection(Incoming),
    /// Another device of this user came online. After [`NodeEvent::Reconnected`],
    /// this is emitted again for every device online at that moment.
    PeerOnline(PeerInfo),
    /// Another device of this user went offline.
    PeerOffline(DeviceId),
    /// A connection ended (for any reason, including a local close).
    ConnectionClosed {
        /// The device at the other end.
        peer: DeviceId,
        /// The connection.
        session: SessionId,
        /// Why it ended.
        reason: CloseReason,
    },
    /// A connection's traffic moved to another kind of path: to the direct path
    /// when it opened, back to the relay when it failed.
    PathChanged {
        /// The device at the other end.
        peer: DeviceId,
        /// The connection.
        session: SessionId,
        /// The path the traffic takes now.
        path: PathKind,
        /// The round-trip time measured so far.
        rtt: Duration,
    },
    /// The server link dropped; the node tries again after `delay`.
    Reconnecting {
        /// 1 for the first attempt after a loss.
        attempt: u32,
        /// The wait before this attempt.
        delay: Duration,
        /// Why the link dropped or the previous attempt failed.
        error: String,
    },
    /// The server link is back and this device is announced again.
    Reconnected,
    /// An operation has been waiting for longer than the slow threshold
    /// (once per operation); it keeps waiting until its own time-out.
    Slow {
        /// The operation.
        operation: Operation,
        /// How long it has waited.
        elapsed: Duration,
    },
    /// The node stopped on its own and will emit nothing more.
    Stopped {
        /// Why.
        error: StopError,
    },
}

/// What the handles ask of the actor.
pub(crate) enum Command {
    ListPeers {
        reply: oneshot::Sender<Result<Vec<PeerInfo>, RequestError>>,
    },
    Connect {
        to: DeviceId,
        service: Option<String>,
        psk: Option<Psk>,
        reply: oneshot::Sender<Result<Connection, ConnectError>>,
    },
    Accept {
        session: SessionId,
        peer: PeerInfo,
        service: Option<String>,
        psk: Option<Psk>,
        reply: oneshot::Sender<Result<Connection, AcceptError>>,
    },
    /// Allocate a nameplate.
    CodeAllocate {
        reply: oneshot::Sender<Result<CodeSlot, CodeError>>,
    },
    /// Claim a nameplate.
    CodeClaim {
        nameplate: u32,
        reply: oneshot::Sender<Result<CodeSlot, CodeError>>,
    },
    /// Send a code message to the other device of a nameplate.
    CodeSend {
        nameplate: u32,
        body: Vec<u8>,
    },
    /// Forget a nameplate, and give it up at the server.
    CodeRelease {
        nameplate: u32,
    },
    Reject {
        session: SessionId,
    },
    /// A connection's driver ended (its close packet is already queued).
    Forget {
        id: SessionId,
        reason: CloseReason,
        /// The application had the connection: it hears of the close.
        established: bool,
    },
    Emit(NodeEvent),
}

/// Waits for an answer within `limit`, reporting [`NodeEvent::Slow`] after `slow`.
///
/// `Ok(None)`: the actor dropped the request (it stopped). `Err(())`: time-out.
pub(crate) async fn wait_op<T>(
    cmd: &mpsc::Sender<Command>,
    operation: Operation,
    limit: Duration,
    slow: Duration,
    rx: impl Future<Output = Result<T, oneshot::error::RecvError>>,
) -> Result<Option<T>, ()> {
    let started = Instant::now();
    let deadline = tokio::time::sleep(limit);
    let slow_timer = tokio::time::sleep(slow);
    tokio::pin!(rx, deadline, slow_timer);
    let mut reported = false;
    loop {
        tokio::select! {
            r = &mut rx => return Ok(r.ok()),
            () = &mut deadline => return Err(()),
            () = &mut slow_timer, if !reported => {
                reported = true;
                let event = NodeEvent::Slow { operation: operation.clone(), elapsed: started.elapsed() };
                let _ = cmd.try_send(Command::Emit(event));
            }
        }
    }
}

/// Builds a [`Node`]: the server URL is required; without a token the node is
/// anonymous ([`NodeBuilder::token`]).
#[derive(Debug)]
#[must_use = "call bind() to start the node"]
pub struct NodeBuilder {
    server: Option<String>,
    token: Option<String>,
    identity: Option<Identity>,
    label: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    confirm_timeout: Duration,
    max_message_size: usize,
    backoff_min: Duration,
    backoff_max: Duration,
    slow_threshold: Duration,
    idle_timeout: Duration,
    path_policy: PathPolicy,
    quic: bool,
    ice_servers: Option<Vec<IceServer>>,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self {
            server: None,
            token: None,
            identity: None,
            label: String::new(),
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(30),
            max_message_size: 16 * 1024 * 1024,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            slow_threshold: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            path_policy: PathPolicy::Any,
            quic: true,
            ice_servers: None,
        }
    }
}

impl NodeBuilder {
    /// The server's signaling URL, e.g. `ws://127.0.0.1:7878/v1/signal`. Required.
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.server = Some(url.into());
        self
    }

    /// The admission token for this user. Without one the node binds as an
    /// *anonymous* device (if the server admits them): it belongs to no user,
    /// sees no devices and no device sees it; it can only meet other devices
    /// through one-time codes ([`Node::claim_code`], [`Node::offer_code`]).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The device identity. Default: a fresh random one (a new device id per node).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// A label the user's other devices see (host name, "laptop"). Control
    /// characters are dropped and it is cut to 64 bytes. Default: empty.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Time for connecting and admission, and for the other device to answer a
    /// [`Node::connect`]. Default 15 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time for the server to answer a request ([`Node::online_peers`],
    /// [`Incoming::accept`]). Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time for the remote application to take a message sent with
    /// [`Connection::send_confirmed`]. Default 30 s.
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// The largest message this node sends or accepts. Default 16 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The first and the longest wait between reconnect attempts; the wait
    /// doubles per attempt with ±50 % jitter. While connections are open the
    /// longest wait is at most a quarter of the [idle time-out](Self::idle_timeout),
    /// so they are routed again before it. Default 250 ms and 30 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// How long an operation may wait before [`NodeEvent::Slow`] reports it. Default 2 s.
    pub fn slow_threshold(mut self, threshold: Duration) -> Self {
        self.slow_threshold = threshold;
        self
    }

    /// How long a connection lives without hearing from the peer (keepalives
    /// flow every sixth of it). It also bounds how long a connection waits for its
    /// path to come back after the server link dropped. Default 30 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// Which paths connections may take: by default they start on the relay
    /// and move to a direct path when one opens ([`PathPolicy`]).
    pub fn path_policy(mut self, policy: PathPolicy) -> Self {
        self.path_policy = policy;
        self
    }

    /// Whether a direct path between two native nodes may be QUIC (default
    /// yes). QUIC is tried first; WebRTC follows when it fails or the peer has
    /// it off. With `false`, direct paths are WebRTC data channels only.
    pub fn quic(mut self, enabled: bool) -> Self {
        self.quic = enabled;
        self
    }

    /// STUN and TURN servers for direct paths across NATs: STUN servers tell a
    /// device its public address, TURN servers relay the direct path when the
    /// devices cannot reach each other. They replace the ones the server
    /// announces. Default: the server's.
    pub fn ice_servers(mut self, servers: Vec<IceServer>) -> Self {
        self.ice_servers = Some(servers);
        self
    }

    /// Connects to the server and is admitted (anonymously without a token: a
    /// server that admits no anonymous devices answers
    /// [`BindError::AnonymousRefused`]); then the node runs until
    /// [`Node::shutdown`] or until its last handle is dropped, reconnecting as needed.
    pub async fn bind(self) -> Result<Node, BindError> {
        let server = self
            .server
            .ok_or(BindError::Config("the server URL is not set"))?;
        let token = self.token.unwrap_or_default();
        let identity = self
            .identity
            .unwrap_or_else(|| Identity::from_secret_bytes(rand::random()));
        let mut label: String = self.label.chars().filter(|c| !c.is_control()).collect();
        truncate_utf8(&mut label, MAX_LABEL_LEN);
        let cfg = Arc::new(Config {
            server,
            token,
            identity,
            label,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            confirm_timeout: self.confirm_timeout,
            max_message_size: self.max_message_size,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            slow_threshold: self.slow_threshold,
            idle_timeout: self.idle_timeout,
            path_policy: self.path_policy,
            quic: self.quic,
            ice_servers: self.ice_servers,
        });
        let id = cfg.identity.device_id();
        let span = tracing::info_span!("node", id = %id.short());
        if cfg.path_policy != PathPolicy::RelayOnly {
            crate::direct::warm_up();
        }
        let admitted = dial(&cfg).instrument(span.clone()).await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(Node::EVENT_QUEUE);
        let (stop_tx, stop_rx) = watch::channel(false);
        let actor = Actor::new(cfg, cmd_tx.clone(), cmd_rx, events_tx, stop_rx);
        let task = tokio::spawn(actor.run(admitted).instrument(span));
        Ok(Node {
            inner: Arc::new(NodeInner {
                id,
                cmd: cmd_tx,
                events: tokio::sync::Mutex::new(events_rx),
                stop: stop_tx,
                task: Mutex::new(Some(task)),
                request_timeout: self.request_timeout,
                connect_timeout: self.connect_timeout,
                slow_threshold: self.slow_threshold,
            }),
        })
    }
}

struct NodeInner {
    id: DeviceId,
    cmd: mpsc::Sender<Command>,
    events: tokio::sync::Mutex<mpsc::Receiver<NodeEvent>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    request_timeout: Duration,
    connect_timeout: Duration,
    slow_threshold: Duration,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// A device on the peerpipe network: its link to the server, its events and
/// connections to the user's other devices.
///
/// Cheap to clone. The node runs until [`Node::shutdown`] or until the last
/// handle is dropped; its connections end then too.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.inner.id).finish()
    }
}

impl Node {
    /// Events the node keeps before it drops new ones (see [`Node::next_event`]).
    pub const EVENT_QUEUE: usize = 1024;

    /// Starts building a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This device's id.
    pub fn id(&self) -> DeviceId {
        self.inner.id
    }

    /// Asks the server for this user's other online devices.
    pub async fn online_peers(&self) -> Result<Vec<PeerInfo>, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(Command::ListPeers { reply })
            .await
            .map_err(|_| RequestError::Stopped)?;
        let limit = self.inner.request_timeout;
        let op = Operation::ListPeers;
        match wait_op(&self.inner.cmd, op, limit, self.inner.slow_threshold, rx).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(RequestError::Stopped),
            Err(()) => Err(RequestError::TimedOut(limit)),
        }
    }

    /// Connects to another device of this user: it must accept, and the
    /// end-to-end handshake (which proves it holds the key of `peer`) must finish,
    /// within the connect time-out.
    pub async fn connect(&self, peer: DeviceId) -> Result<Connection, ConnectError> {
        self.connect_with(peer, None, None).await
    }

    /// Like [`Node::connect`], telling the other device what the connection is
    /// for ([`Incoming::service`], like ALPN): 1 to 32 bytes of `a-z`, `0-9` and
    /// `-`. `"code"` is what one-time code connections use.
    pub async fn connect_service(
        &self,
        peer: DeviceId,
        service: &str,
    ) -> Result<Connection, ConnectError> {
        if !valid_service(service) {
            return Err(ConnectError::InvalidService(service.to_owned()));
        }
        self.connect_with(peer, Some(service.to_owned()), None)
            .await
    }

    pub(crate) async fn connect_with(
        &self,
        peer: DeviceId,
        service: Option<String>,
        psk: Option<Psk>,
    ) -> Result<Connection, ConnectError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Connect {
            to: peer,
            service,
            psk,
            reply,
        };
        self.inner
            .cmd
            .send(command)
            .await
            .map_err(|_| ConnectError::Stopped)?;
        let limit = self.inner.connect_timeout;
        let op = Operation::Connect { peer };
        match wait_op(&self.inner.cmd, op, limit, self.inner.slow_threshold, rx).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(ConnectError::Stopped),
            Err(()) => Err(ConnectError::TimedOut(limit)),
        }
    }

    /// Offers a one-time code: allocates a number at the server and picks two
    /// secret words. Show [`CodeOffer::code`] to the person at the other device
    /// (of any user, or anonymous), who passes it to [`Node::claim_code`]; then
    /// [`CodeOffer::accept`] waits for that and returns the connection.
    ///
    /// Fails with [`CodeError::Forbidden`] when the server does not allow codes,
    /// [`CodeError::RateLimited`] after too many code operations.
    pub async fn offer_code(&self) -> Result<CodeOffer, CodeError> {
        let (reply, rx) = oneshot::channel();
        self.send_code_command(Command::CodeAllocate { reply })
            .await?;
        let slot = self.wait_code_request(0, rx).await?;
        Ok(CodeOffer::new(self.clone(), slot))
    }

    /// Connects to the device that offered `code` (`7-amber-falcon`, see
    /// [`Node::offer_code`]): claims the code (a code can be claimed once), runs
    /// the password-authenticated key exchange with the other device through
    /// the server, checks that both used the same code, and connects with the
    /// agreed key bound into the end-to-end handshake. The connection's
    /// [service](Connection::service) is `"code"`.
    ///
    /// Fails with [`CodeError::Malformed`] for text that is not a code,
    /// [`CodeError::NotFound`] for a code that does not exist (any more),
    /// [`CodeError::WrongCode`] when the words do not match (the code is used up
    /// then), and the errors of [`Node::offer_code`].
    pub async fn claim_code(&self, code: &str) -> Result<Connection, CodeError> {
        crate::code::claim(self, code).await
    }

    pub(crate) async fn send_code_command(&self, command: Command) -> Result<(), CodeError> {
        self.inner
            .cmd
            .send(command)
            .await
            .map_err(|_| CodeError::Stopped)
    }

    /// Waits for the server's answer to a code request, within the request time-out.
    pub(crate) async fn wait_code_request(
        &self,
        nameplate: u32,
        rx: oneshot::Receiver<Result<CodeSlot, CodeError>>,
    ) -> Result<CodeSlot, CodeError> {
        let limit = self.inner.request_timeout;
        let op = Operation::Code { nameplate };
        match wait_op(&self.inner.cmd, op, limit, self.inner.slow_threshold, rx).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(CodeError::Stopped),
            Err(()) => Err(CodeError::TimedOut(limit)),
        }
    }

    pub(crate) fn command_sender(&self) -> &mpsc::Sender<Command> {
        &self.inner.cmd
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.inner.connect_timeout
    }

    /// The next event; `None` once the node has stopped and all events are read.
    ///
    /// Read events steadily: the node keeps at most [`Node::EVENT_QUEUE`] unread events
    /// and drops newer ones (an incoming connection dropped that way is rejected).
    pub async fn next_event(&self) -> Option<NodeEvent> {
        self.inner.events.lock().await.recv().await
    }

    /// Stops the node: ends its connections and the server link, and waits for that.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
