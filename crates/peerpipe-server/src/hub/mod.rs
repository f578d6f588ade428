//! Shared server state: who is online, the sessions between them, and the rules of
//! presence and negotiation. Every method takes the state lock briefly and never
//! awaits; messages to connections go out with `try_send` on their bounded control
//! queues, and a connection whose queue is full is disconnected as a slow consumer.
//!
//! - this module: the connections as the hub knows them ([`Member`], [`Handle`]),
//!   admission and departure, and the dispatch of control messages;
//! - [`presence`]: who is online for which user;
//! - [`sessions`]: connection requests, their answers, and where relayed frames go;
//! - [`codes`]: one-time codes;
//! - [`relay_queue`]: relayed frames waiting for a connection, per session.
//!
//! The connection loop (`conn.rs`) reaches the hub only through
//! [`Hub::register`], [`Hub::unregister`], [`Hub::control`],
//! [`Hub::relay_target`] and [`Hub::deliver`]: that is the seam behind which a
//! cluster of nodes keeps presence and sessions in shared storage, and routes
//! a message for a device on another node to that node.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use peerpipe_proto::door::Door;
use peerpipe_proto::id::DeviceId;
use peerpipe_proto::signal::{
    ClientMessage, CloseReason, ErrorCode, MAX_REASON_LEN, PeerInfo, ServerMessage, SessionId,
    truncate_utf8, valid_service,
};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

mod codes;
mod control;
mod outbox;
mod presence;
mod relay_queue;
mod sessions;

use self::codes::CodeEntry;
pub(crate) use self::control::ControlQueue;
pub(crate) use self::outbox::Outbox;
use self::presence::Presence;
pub(crate) use self::relay_queue::{Overflow, RelayQueue};
use self::sessions::Sessions;
use crate::Config;
use crate::cluster::{Cluster, Remote};
use crate::limit::TokenBucket;
use crate::metrics::{Metrics, Stats};

/// Why a connection is being closed: the error frame to send before the close.
#[derive(Debug, Clone)]
pub(crate) struct Fatal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Fatal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What goes through a connection's relay queue, in order per session.
#[derive(Debug)]
pub(crate) enum Data {
    /// A relayed binary frame.
    Relay(Bytes),
    /// An encoded `closed` message for an established session, queued behind the
    /// frames relayed for it so that the device sees them first.
    Closed(String),
}

/// The ways to reach one connection: its queues on this node, or the link to
/// the node it is on (a device of another node that a session or a user's
/// presence here refers to).
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    /// Unique per connection on this node (a device that reconnects gets a new
    /// one; a connection on another node has one of this node's too).
    pub(crate) conn: u64,
    pub(crate) route: Route,
}

/// Where a [`Handle`]'s messages go.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// A connection of this node.
    Local(Local),
    /// A connection of another node of the cluster.
    Remote(Arc<Remote>),
}

/// The queues of a connection of this node, drained by its writer.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    /// Encoded control frames; drained first by the writer.
    pub(crate) ctrl: Arc<ControlQueue>,
    /// Relayed binary frames, and the ends of established sessions behind
    /// them, queued per session.
    pub(crate) relay: Arc<RelayQueue>,
    /// Presence news, coalesced per device; sent after the control frames.
    pub(crate) presence: Arc<Outbox>,
    /// Set once to close the connection with an error.
    pub(crate) kill: Arc<watch::Sender<Option<Fatal>>>,
}

impl Handle {
    /// Closes the connection with `fatal`, unless it is already closing.
    pub(crate) fn kill(&self, fatal: Fatal) {
        match &self.route {
            Route::Local(l) => {
                l.kill.send_if_modified(|slot| {
                    if slot.is_none() {
                        *slot = Some(fatal);
                        true
                    } else {
                        false
                    }
                });
            }
            Route::Remote(r) => r.kill(&fatal),
        }
    }

    /// Queues an encoded control frame.
    fn push_ctrl(&self, text: String) -> Result<(), control::Refused> {
        match &self.route {
            Route::Local(l) => l.ctrl.push(text),
            Route::Remote(r) => {
                r.ctrl(text);
                Ok(())
            }
        }
    }

    /// Queues presence news of `device`; false if the connection read none
    /// of it for many devices. A connection of another node hears it from its
    /// own node, which knows the same.
    fn push_presence(&self, device: DeviceId, online: Option<PeerInfo>) -> bool {
        match &self.route {
            Route::Local(l) => l.presence.push(device, online),
            Route::Remote(_) => true,
        }
    }

    /// Queues a relayed frame of `session`, unless it does not fit a bound.
    pub(crate) fn push_relay(&self, session: SessionId, frame: Bytes) -> Result<(), Overflow> {
        match &self.route {
            Route::Local(l) => l.relay.push(session, frame),
            Route::Remote(r) => r.relay(frame),
        }
    }

    /// Queues the encoded end of `session` behind its frames (with `discard`,
    /// instead of them).
    pub(crate) fn push_closed(&self, session: SessionId, text: String, discard: bool) {
        match &self.route {
            Route::Local(l) => l.relay.push_closed(session, text, discard),
            Route::Remote(r) => r.closed(session, text, discard),
        }
    }

    /// The node and connection a handle of another node stands for.
    pub(crate) fn remote(&self) -> Option<&Remote> {
        match &self.route {
            Route::Local(_) => None,
            Route::Remote(r) => Some(r.as_ref()),
        }
    }
}

/// An admitted connection, as the hub knows it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) device: DeviceId,
    /// The user; for an anonymous device a key of its own that no token's user
    /// can equal.
    pub(crate) user: Arc<str>,
    /// Admitted without a token.
    pub(crate) anonymous: bool,
    /// The source address of the connection.
    pub(crate) ip: IpAddr,
    pub(crate) label: Arc<str>,
    pub(crate) handle: Handle,
}

impl Member {
    fn info(&self) -> PeerInfo {
        PeerInfo {
            id: self.device,
            label: self.label.to_string(),
        }
    }
}

/// Everything behind the hub's lock.
#[derive(Debug, Default)]
struct State {
    presence: Presence,
    sessions: Sessions,
    /// Allocated nameplates.
    codes: BTreeMap<u32, CodeEntry>,
    /// Nameplates per connection id (allocated or claimed).
    codes_by_conn: HashMap<u64, BTreeSet<u32>>,
    next_code_id: u64,
    /// Code operations of anonymous devices, per source address.
    code_rate_ip: HashMap<IpAddr, TokenBucket>,
    /// Code operations of devices with a token, per user.
    code_rate_user: HashMap<Arc<str>, TokenBucket>,
    /// Per connection id: the (device, connection) pairs of another user it
    /// lets route a connection to it again ([`ClientMessage::AllowResume`]).
    resumable: HashMap<u64, HashSet<(DeviceId, SessionId)>>,
    /// Per connection id: the doors it opened to devices of any user
    /// ([`ClientMessage::OpenDoor`]).
    doors: HashMap<u64, HashSet<Door>>,
}

/// Everything the connections share.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    pub(crate) next_conn: AtomicU64,
    /// Set once when this node is one of a cluster (`--redis`).
    pub(crate) cluster: OnceLock<Arc<Cluster>>,
    state: Mutex<State>,
}

fn error(
    req: Option<u64>,
    session: Option<SessionId>,
    code: ErrorCode,
    msg: &str,
) -> ServerMessage {
    let mut message = msg.to_owned();
    truncate_utf8(&mut message, MAX_REASON_LEN);
    ServerMessage::Error {
        req,
        session,
        code,
        message,
    }
}

impl Hub {
    pub(crate) fn new(config: Config) -> Self {
        Self {
            config,
            metrics: Metrics::default(),
            next_conn: AtomicU64::new(1),
            cluster: OnceLock::new(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `msg` on `to`'s control queue; a full queue makes `to` a slow consumer.
    pub(crate) fn deliver(&self, to: &Handle, msg: &ServerMessage) {
        if let ServerMessage::Error { code, .. } = msg {
            self.metrics.error(*code);
        }
        self.deliver_text(to, msg.encode());
    }

    /// Queues an encoded control frame on `to`'s control queue; a full queue
    /// makes `to` a slow consumer.
    pub(crate) fn deliver_text(&self, to: &Handle, text: String) {
        match to.push_ctrl(text) {
            Ok(()) | Err(control::Refused::Closed) => {}
            Err(control::Refused::Full) => {
                tracing::debug!(conn = to.conn, "control queue full: slow consumer");
                to.kill(Fatal::new(
                    ErrorCode::SlowConsumer,
                    "this connection did not read its control messages in time",
                ));
            }
        }
    }

    /// Tells `to` that `device` is online (`Some`) or offline, coalesced with
    /// older news of it; a connection that read none of it for many devices is
    /// a slow consumer.
    fn tell_presence(&self, to: &Handle, device: DeviceId, online: Option<PeerInfo>) {
        if !to.push_presence(device, online) {
            tracing::debug!(conn = to.conn, "presence news not read: slow consumer");
            to.kill(Fatal::new(
                ErrorCode::SlowConsumer,
                "this connection did not read its presence news in time",
            ));
        }
    }

    /// Sends an error frame to `to`.
    pub(crate) fn send_error(
        &self,
        to: &Handle,
        req: Option<u64>,
        session: Option<SessionId>,
        code: ErrorCode,
        message: &str,
    ) {
        self.deliver(to, &error(req, session, code, message));
    }

    pub(crate) fn stats(&self) -> Stats {
        let (devices, sessions) = self.counts();
        self.metrics.snapshot(devices, sessions)
    }

    pub(crate) fn render_metrics(&self) -> String {
        let (devices, sessions) = self.counts();
        let mut text = self.metrics.render(devices, sessions);
        if let Some(cluster) = self.cluster.get() {
            cluster.render(&mut text);
        }
        text
    }

    fn counts(&self) -> (u64, u64) {
        let st = self.lock();
        (st.presence.local_len() as u64, st.sessions.len() as u64)
    }

    /// Admits `me`: replaces an older connection of the same device, enforces the
    /// per-user device limit, queues the welcome and tells the user's other devices.
    pub(crate) fn register(
        &self,
        me: &Member,
        welcome: impl FnOnce(Vec<PeerInfo>) -> ServerMessage,
    ) -> Result<(), Fatal> {
        let mut st = self.lock();
        let replacing = st.presence.get(&me.device).map(|m| m.user.clone());
        let online = st.presence.online_count(&me.user);
        let same_user = replacing.as_deref() == Some(&*me.user);
        if !same_user && online >= self.config.max_devices_per_user {
            return Err(Fatal::new(
                ErrorCode::TooManyDevices,
                format!(
                    "this user already has {} devices online, the most this server allows",
                    self.config.max_devices_per_user
                ),
            ));
        }
        if let Some(old) = st.presence.leave(&me.device) {
            tracing::info!(
                old_conn = old.handle.conn,
                "device reconnected: replacing its older connection"
            );
            old.handle.kill(Fatal::new(
                ErrorCode::Replaced,
                "the same device connected again; this connection is replaced",
            ));
            if old.user != me.user {
                for h in st.presence.others_of(&old.user, me.device) {
                    self.tell_presence(&h, me.device, None);
                }
            }
        }
        let peers = st.presence.peers_of(&me.user, me.device);
        self.deliver(&me.handle, &welcome(peers));
        st.presence.join(me, !me.anonymous);
        for h in st.presence.others_of(&me.user, me.device) {
            self.tell_presence(&h, me.device, Some(me.info()));
        }
        Ok(())
    }

    /// `proxy`, a connection of another node, is online for its user: it
    /// replaces the device's older connection (a connection of this node is
    /// closed as replaced: the device connected to another node) and the
    /// user's devices on this node hear of it.
    ///
    /// Without `replace` (the other node repeats what it has), a connection
    /// of the device on this node is kept: it may be the newer one.
    pub(crate) fn register_remote(&self, proxy: &Member, replace: bool) {
        let mut st = self.lock();
        if st.presence.is_current(proxy) {
            return;
        }
        let local = st
            .presence
            .get(&proxy.device)
            .is_some_and(|m| m.handle.remote().is_none());
        if local && !replace {
            return;
        }
        if let Some(old) = st.presence.leave(&proxy.device) {
            if old.handle.remote().is_none() {
                old.handle.kill(Fatal::new(
                    ErrorCode::Replaced,
                    "the same device connected again; this connection is replaced",
                ));
            }
            if old.user != proxy.user {
                for h in st.presence.others_of(&old.user, proxy.device) {
                    self.tell_presence(&h, proxy.device, None);
                }
            }
        }
        // Not remembered once offline (a connect to it from this node then
        // gets `not_found`, not `peer_offline`): a node would otherwise keep
        // every device its users ever had on any node.
        st.presence.join(proxy, false);
        for h in st.presence.others_of(&proxy.user, proxy.device) {
            self.tell_presence(&h, proxy.device, Some(proxy.info()));
        }
    }

    /// The name `user` as this node holds it for its online devices (shared
    /// by every member of the user rather than copied).
    pub(crate) fn shared_user(&self, user: &str) -> Option<Arc<str>> {
        self.lock().presence.user(user)
    }

    /// Where `device` is online as this node knows: `Some(None)` on this
    /// node, `Some(Some(node))` on another.
    pub(crate) fn locate(&self, device: &DeviceId) -> Option<Option<u32>> {
        let st = self.lock();
        let m = st.presence.get(device)?;
        Some(m.handle.remote().map(|r| r.node))
    }

    /// Forgets a connection: presence (if it is still the device's registered
    /// connection) and every session it is a party of.
    pub(crate) fn unregister(&self, me: &Member) {
        let mut st = self.lock();
        if st.presence.is_current(me) {
            st.presence.leave(&me.device);
            for h in st.presence.others_of(&me.user, me.device) {
                self.tell_presence(&h, me.device, None);
            }
        }
        let plates: Vec<u32> = st
            .codes_by_conn
            .get(&me.handle.conn)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for nameplate in plates {
            if let Some(code) = st.remove_code(nameplate) {
                self.code_closed(&code, Some(me.handle.conn));
                self.code_ended(nameplate);
            }
        }
        st.resumable.remove(&me.handle.conn);
        st.doors.remove(&me.handle.conn);
        self.end_sessions_of(&mut st, me);
    }

    /// Tells `to` that a pending session ended (no relayed frames can precede it).
    fn closed(&self, to: &Handle, session: SessionId, reason: CloseReason) {
        self.deliver(to, &ServerMessage::Closed { session, reason });
    }

    /// Tells `to` that an established session ended, behind every frame already
    /// relayed to it: the other party's reader queued those before it could send its
    /// close or drop. With `discard`, the frames still queued for it are dropped
    /// instead (a route that overflowed).
    fn closed_in_order(&self, to: &Handle, session: SessionId, reason: CloseReason, discard: bool) {
        let msg = ServerMessage::Closed { session, reason }.encode();
        to.push_closed(session, msg, discard);
    }

    /// Handles a decoded control message from an admitted connection.
    pub(crate) fn control(self: &Arc<Self>, me: &Member, msg: ClientMessage) {
        match msg {
            ClientMessage::Hello { .. } => self.send_error(
                &me.handle,
                None,
                None,
                ErrorCode::BadRequest,
                "already admitted: hello is only valid once",
            ),
            ClientMessage::ListPeers { req } => {
                let peers = self.lock().presence.peers_of(&me.user, me.device);
                self.deliver(&me.handle, &ServerMessage::Peers { req, peers });
            }
            ClientMessage::Connect {
                req,
                to,
                resume,
                service,
                door,
            } => self.connect(me, req, to, resume, service, door),
            ClientMessage::CodeAllocate { req, nameplate } => {
                self.code_allocate(me, req, nameplate);
            }
            ClientMessage::CodeClaim { req, nameplate } => self.code_claim(me, req, nameplate),
            ClientMessage::CodeMessage { nameplate, body } => {
                self.code_message(me, nameplate, body)
            }
            ClientMessage::CodeRelease { nameplate } => self.code_release(me, nameplate),
            ClientMessage::Accept { req, session } => self.accept(me, req, session),
            ClientMessage::Reject { session } => self.reject(me, session),
            ClientMessage::Close { session } => self.close(me, session),
            ClientMessage::AllowResume { peer, connection } => {
                self.allow_resume(me, peer, connection)
            }
            ClientMessage::RevokeResume { peer, connection } => {
                self.revoke_resume(me, peer, connection)
            }
            ClientMessage::OpenDoor { door } => self.open_door(me, door),
            ClientMessage::CloseDoor { door } => self.close_door(me, door),
            _ => self.send_error(
                &me.handle,
                None,
                None,
                ErrorCode::BadRequest,
                "unsupported message",
            ),
        }
    }
}
