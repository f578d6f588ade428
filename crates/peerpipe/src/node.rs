//! The node: a device's handle on the server link, its events and connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerpipe_proto::door::{Door, DoorKey};
use peerpipe_proto::id::{DeviceId, Identity};
use peerpipe_proto::session::handshake::Psk;
use peerpipe_proto::signal::{IceServer, MAX_LABEL_LEN, PeerInfo, truncate_utf8, valid_service};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::actor::Actor;
use crate::command::{CodeSlot, Command};
use crate::config::Config;
use crate::connection::Connection;
use crate::direct::PathPolicy;
use crate::event::NodeEvent;
use crate::link::dial;
use crate::op::{Operation, wait_op};
use crate::{BindError, CodeError, ConnectError, RequestError};

const COMMAND_QUEUE: usize = 256;

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
    trusted: Vec<crate::CertificateDer<'static>>,
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
            trusted: Vec::new(),
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
    /// [`Incoming::accept`](crate::Incoming::accept)). Default 10 s.
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

    /// Certificates to trust for a `wss://` server besides the system's roots:
    /// a private CA, or the server's own self-signed certificate (read them
    /// with [`certificates_from_pem`](crate::certificates_from_pem)). Default none.
    pub fn trust_certificates(mut self, certs: Vec<crate::CertificateDer<'static>>) -> Self {
        self.trusted = certs;
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
        let tls = if server.starts_with("wss://") {
            Some(crate::tls::client_config(&self.trusted)?)
        } else {
            None
        };
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
            tls,
        });
        let id = cfg.identity.device_id();
        let me = PeerInfo {
            id,
            label: cfg.label.clone(),
        };
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
                me,
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
    /// This device, as others see it.
    me: PeerInfo,
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
        f.debug_struct("Node")
            .field("id", &self.inner.me.id)
            .finish()
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
        self.inner.me.id
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
        match self.wait(op, limit, rx).await {
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
    /// for ([`Incoming::service`](crate::Incoming::service), like ALPN): 1 to 32 bytes of `a-z`, `0-9` and
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

    /// Like [`Node::connect_service`], to a device of *any* user that opened
    /// the door of `key` ([`Node::open_door`]): the server lets the request
    /// through by the door, and the end-to-end handshake proves that both
    /// devices hold `key` (besides their device keys). A device that has not
    /// opened that door is `NotFound`, as any device of another user is.
    pub async fn connect_door(
        &self,
        peer: DeviceId,
        service: &str,
        key: &DoorKey,
    ) -> Result<Connection, ConnectError> {
        if !valid_service(service) {
            return Err(ConnectError::InvalidService(service.to_owned()));
        }
        let (psk, door) = (Some(key.psk()), Some(key.door()));
        self.connect_with_door(peer, Some(service.to_owned()), psk, door)
            .await
    }

    /// Lets devices of any user (and anonymous ones) that hold `key` connect to
    /// this device with [`Node::connect_door`]: their requests arrive as
    /// [`NodeEvent::IncomingConnection`] like any other, with
    /// [`Incoming::door`](crate::Incoming::door) set; accepting one succeeds
    /// only if the other device proves the key. The door stays open (again
    /// after every reconnect to the server) until [`Node::close_door`]. The
    /// server lets a device hold up to 16 doors.
    pub async fn open_door(&self, key: &DoorKey) -> Result<(), RequestError> {
        let command = Command::OpenDoor {
            door: key.door(),
            psk: key.psk(),
        };
        self.inner
            .cmd
            .send(command)
            .await
            .map_err(|_| RequestError::Stopped)
    }

    /// Closes the door of `key`: new requests through it are refused;
    /// connections made through it go on.
    pub async fn close_door(&self, key: &DoorKey) -> Result<(), RequestError> {
        let command = Command::CloseDoor { door: key.door() };
        self.inner
            .cmd
            .send(command)
            .await
            .map_err(|_| RequestError::Stopped)
    }

    pub(crate) async fn connect_with(
        &self,
        peer: DeviceId,
        service: Option<String>,
        psk: Option<Psk>,
    ) -> Result<Connection, ConnectError> {
        self.connect_with_door(peer, service, psk, None).await
    }

    async fn connect_with_door(
        &self,
        peer: DeviceId,
        service: Option<String>,
        psk: Option<Psk>,
        door: Option<Door>,
    ) -> Result<Connection, ConnectError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Connect {
            to: peer,
            service,
            psk,
            door,
            reply,
        };
        self.inner
            .cmd
            .send(command)
            .await
            .map_err(|_| ConnectError::Stopped)?;
        let limit = self.inner.connect_timeout;
        let op = Operation::Connect { peer };
        match self.wait(op, limit, rx).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(ConnectError::Stopped),
            Err(()) => Err(ConnectError::TimedOut(limit)),
        }
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
        match self.wait(op, limit, rx).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(CodeError::Stopped),
            Err(()) => Err(CodeError::TimedOut(limit)),
        }
    }

    /// Waits for the actor's answer `rx` to `op` within `limit`, reporting it
    /// slow past the slow threshold.
    async fn wait<T>(
        &self,
        op: Operation,
        limit: Duration,
        rx: oneshot::Receiver<T>,
    ) -> Result<Option<T>, ()> {
        let cmd = self.inner.cmd.clone();
        let on_slow = move |operation, elapsed| {
            let _ = cmd.try_send(Command::Slow { operation, elapsed });
        };
        wait_op(op, limit, self.inner.slow_threshold, rx, on_slow).await
    }

    pub(crate) fn command_sender(&self) -> &mpsc::Sender<Command> {
        &self.inner.cmd
    }

    /// This device's id and label, as a code exchange introduces it.
    pub(crate) fn info(&self) -> &PeerInfo {
        &self.inner.me
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
