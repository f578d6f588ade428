//! Shared server state: who is online, the sessions between them, and the rules of
//! presence and negotiation. Every method takes the state lock briefly and never
//! awaits; messages to connections go out with `try_send` on their bounded control
//! queues, and a connection whose queue is full is disconnected as a slow consumer.
//!
//! One-time codes are in [`codes`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use peerpipe_proto::id::DeviceId;
use peerpipe_proto::signal::{
    ClientMessage, CloseReason, ErrorCode, MAX_REASON_LEN, PeerInfo, ServerMessage, SessionId,
    truncate_utf8, valid_service,
};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

mod codes;

use self::codes::CodeEntry;
use crate::Config;
use crate::limit::TokenBucket;
use crate::metrics::{Metrics, Stats};

/// The answer to a connect whose target this user cannot reach: the same text for
/// a random id and for another user's device, so that nothing leaks across users.
const NOT_FOUND: &str = "no such device";
/// Offline devices remembered per user (to answer `peer_offline` rather than `not_found`).
const KNOWN_PER_USER: usize = 256;
/// Connection requests one connection may have waiting for an answer at once.
const MAX_PENDING_PER_CONN: usize = 16;

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

/// What goes through a connection's ordered data queue.
#[derive(Debug)]
pub(crate) enum Data {
    /// A relayed binary frame.
    Relay(Bytes),
    /// An encoded `closed` message for an established session, queued behind the
    /// frames relayed for it so that the device sees them first.
    Closed(String),
}

/// The ways to reach one connection.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    /// Unique per connection (a device that reconnects gets a new one).
    pub(crate) conn: u64,
    /// Encoded control frames; drained first by the writer.
    pub(crate) ctrl: mpsc::Sender<String>,
    /// Relayed binary frames, and the ends of established sessions behind them.
    pub(crate) data: mpsc::Sender<Data>,
    /// Set once to close the connection with an error.
    pub(crate) kill: Arc<watch::Sender<Option<Fatal>>>,
}

impl Handle {
    /// Closes the connection with `fatal`, unless it is already closing.
    pub(crate) fn kill(&self, fatal: Fatal) {
        self.kill.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(fatal);
                true
            } else {
                false
            }
        });
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
    pub(crate) label: String,
    pub(crate) handle: Handle,
}

impl Member {
    fn info(&self) -> PeerInfo {
        PeerInfo {
            id: self.device,
            label: self.label.clone(),
        }
    }
}

#[derive(Debug)]
struct Session {
    initiator: Member,
    target: Member,
    /// The initiator's connect request.
    req: u64,
    established: bool,
    timer: Option<AbortHandle>,
}

impl Session {
    fn stop_timer(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }
}

/// An allocated nameplate.
#[derive(Debug, Default)]
struct State {
    /// Online devices.
    devices: HashMap<DeviceId, Member>,
    /// Online devices per user.
    users: HashMap<Arc<str>, BTreeSet<DeviceId>>,
    /// Devices admitted since start, with their (latest) user: the newest
    /// [`KNOWN_PER_USER`] of each user, so a user minting keys cannot grow it without bound.
    known: HashMap<DeviceId, Arc<str>>,
    /// Per user, the order its devices were first admitted in, to forget the oldest.
    known_order: HashMap<Arc<str>, VecDeque<DeviceId>>,
    sessions: HashMap<SessionId, Session>,
    /// Sessions per connection id, to clean up on disconnect.
    by_conn: HashMap<u64, HashSet<SessionId>>,
    /// Allocated nameplates.
    codes: BTreeMap<u32, CodeEntry>,
    /// Nameplates per connection id (allocated or claimed).
    codes_by_conn: HashMap<u64, BTreeSet<u32>>,
    next_code_id: u64,
    /// Code operations of anonymous devices, per source address.
    code_rate_ip: HashMap<IpAddr, TokenBucket>,
    /// Code operations of devices with a token, per user.
    code_rate_user: HashMap<Arc<str>, TokenBucket>,
}

impl State {
    /// Records that `device` belongs to `user`, forgetting the user's oldest
    /// offline device past [`KNOWN_PER_USER`].
    fn remember(&mut self, device: DeviceId, user: &Arc<str>) {
        if self.known.insert(device, user.clone()).as_ref() == Some(user) {
            return;
        }
        let order = self.known_order.entry(user.clone()).or_default();
        order.push_back(device);
        while order.len() > KNOWN_PER_USER {
            let Some(pos) = order.iter().position(|d| !self.devices.contains_key(d)) else {
                break;
            };
            if let Some(old) = order.remove(pos)
                && self.known.get(&old) == Some(user)
            {
                self.known.remove(&old);
            }
        }
    }

    /// Takes `device` out of `user`'s online set; returns the connections of the
    /// user's other online devices, which must hear that it went offline.
    fn leave(&mut self, user: &Arc<str>, device: DeviceId) -> Vec<Handle> {
        if let Some(set) = self.users.get_mut(user) {
            set.remove(&device);
            if set.is_empty() {
                self.users.remove(user);
            }
        }
        self.others_of(user, device)
    }

    /// Pending sessions that connection `conn` initiated.
    fn pending_from(&self, conn: u64) -> usize {
        self.by_conn.get(&conn).map_or(0, |ids| {
            ids.iter()
                .filter_map(|id| self.sessions.get(id))
                .filter(|s| !s.established && s.initiator.handle.conn == conn)
                .count()
        })
    }

    /// The online devices of `user` but `except`.
    fn members_of<'a>(&'a self, user: &str, except: DeviceId) -> impl Iterator<Item = &'a Member> {
        self.users
            .get(user)
            .into_iter()
            .flatten()
            .filter(move |d| **d != except)
            .filter_map(|d| self.devices.get(d))
    }

    fn peers_of(&self, user: &str, except: DeviceId) -> Vec<PeerInfo> {
        self.members_of(user, except).map(Member::info).collect()
    }

    fn others_of(&self, user: &str, except: DeviceId) -> Vec<Handle> {
        self.members_of(user, except)
            .map(|m| m.handle.clone())
            .collect()
    }

    fn remove_session(&mut self, id: SessionId) -> Option<Session> {
        let mut s = self.sessions.remove(&id)?;
        s.stop_timer();
        for conn in [s.initiator.handle.conn, s.target.handle.conn] {
            if let Some(set) = self.by_conn.get_mut(&conn) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_conn.remove(&conn);
                }
            }
        }
        Some(s)
    }
}

/// Everything the connections share.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    pub(crate) next_conn: AtomicU64,
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
        match to.ctrl.try_send(msg.encode()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(conn = to.conn, "control queue full: slow consumer");
                to.kill(Fatal::new(
                    ErrorCode::SlowConsumer,
                    "this connection did not read its control messages in time",
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
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
        self.metrics.render(devices, sessions)
    }

    fn counts(&self) -> (u64, u64) {
        let st = self.lock();
        (st.devices.len() as u64, st.sessions.len() as u64)
    }

    /// Admits `me`: replaces an older connection of the same device, enforces the
    /// per-user device limit, queues the welcome and tells the user's other devices.
    pub(crate) fn register(
        &self,
        me: &Member,
        welcome: impl FnOnce(Vec<PeerInfo>) -> ServerMessage,
    ) -> Result<(), Fatal> {
        let mut st = self.lock();
        let replacing = st.devices.get(&me.device).map(|m| m.user.clone());
        let online = st.users.get(&me.user).map_or(0, BTreeSet::len);
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
        if let Some(old) = st.devices.remove(&me.device) {
            tracing::info!(
                old_conn = old.handle.conn,
                "device reconnected: replacing its older connection"
            );
            old.handle.kill(Fatal::new(
                ErrorCode::Replaced,
                "the same device connected again; this connection is replaced",
            ));
            if old.user != me.user {
                let offline = ServerMessage::PeerOffline { id: me.device };
                for h in st.leave(&old.user, me.device) {
                    self.deliver(&h, &offline);
                }
            }
        }
        let peers = st.peers_of(&me.user, me.device);
        self.deliver(&me.handle, &welcome(peers));
        st.devices.insert(me.device, me.clone());
        st.users
            .entry(me.user.clone())
            .or_default()
            .insert(me.device);
        if !me.anonymous {
            st.remember(me.device, &me.user);
        }
        let online = ServerMessage::PeerOnline { peer: me.info() };
        for h in st.others_of(&me.user, me.device) {
            self.deliver(&h, &online);
        }
        Ok(())
    }

    /// Forgets a connection: presence (if it is still the device's registered
    /// connection) and every session it is a party of.
    pub(crate) fn unregister(&self, me: &Member) {
        let mut st = self.lock();
        let current = st
            .devices
            .get(&me.device)
            .is_some_and(|m| m.handle.conn == me.handle.conn);
        if current {
            st.devices.remove(&me.device);
            let offline = ServerMessage::PeerOffline { id: me.device };
            for h in st.leave(&me.user, me.device) {
                self.deliver(&h, &offline);
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
            }
        }
        let ids: Vec<SessionId> = st
            .by_conn
            .get(&me.handle.conn)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            let Some(s) = st.remove_session(id) else {
                continue;
            };
            let i_am_initiator = s.initiator.handle.conn == me.handle.conn;
            match (s.established, i_am_initiator) {
                (true, true) => {
                    self.closed_in_order(&s.target.handle, id, CloseReason::PeerDisconnected)
                }
                (true, false) => {
                    self.closed_in_order(&s.initiator.handle, id, CloseReason::PeerDisconnected)
                }
                (false, true) => self.closed(&s.target.handle, id, CloseReason::Cancelled),
                (false, false) => self.send_error(
                    &s.initiator.handle,
                    Some(s.req),
                    Some(id),
                    ErrorCode::PeerOffline,
                    "the device went offline before it answered",
                ),
            }
        }
    }

    /// Tells `to` that a pending session ended (no relayed frames can precede it).
    fn closed(&self, to: &Handle, session: SessionId, reason: CloseReason) {
        self.deliver(to, &ServerMessage::Closed { session, reason });
    }

    /// Tells `to` that an established session ended, behind every frame already
    /// relayed to it: the other party's reader queued those before it could send its
    /// close or drop. The data queue may be full (that is backpressure, not a fault),
    /// so a task waits for room up to the slow-consumer time-out.
    fn closed_in_order(&self, to: &Handle, session: SessionId, reason: CloseReason) {
        let msg = Data::Closed(ServerMessage::Closed { session, reason }.encode());
        let to = to.clone();
        let wait = self.config.slow_consumer_timeout;
        tokio::spawn(async move {
            if let Err(mpsc::error::SendTimeoutError::Timeout(_)) =
                to.data.send_timeout(msg, wait).await
            {
                to.kill(Fatal::new(
                    ErrorCode::SlowConsumer,
                    "this connection did not read relayed data in time",
                ));
            }
        });
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
                let peers = self.lock().peers_of(&me.user, me.device);
                self.deliver(&me.handle, &ServerMessage::Peers { req, peers });
            }
            ClientMessage::Connect {
                req,
                to,
                resume,
                service,
            } => self.connect(me, req, to, resume, service),
            ClientMessage::CodeAllocate { req } => self.code_allocate(me, req),
            ClientMessage::CodeClaim { req, nameplate } => self.code_claim(me, req, nameplate),
            ClientMessage::CodeMessage { nameplate, body } => {
                self.code_message(me, nameplate, body)
            }
            ClientMessage::CodeRelease { nameplate } => self.code_release(me, nameplate),
            ClientMessage::Accept { req, session } => self.accept(me, req, session),
            ClientMessage::Reject { session } => {
                let mut st = self.lock();
                let mine = st
                    .sessions
                    .get(&session)
                    .is_some_and(|s| !s.established && s.target.handle.conn == me.handle.conn);
                if let Some(s) = mine.then(|| st.remove_session(session)).flatten() {
                    self.send_error(
                        &s.initiator.handle,
                        Some(s.req),
                        Some(session),
                        ErrorCode::Rejected,
                        "the device rejected the connection",
                    );
                }
            }
            ClientMessage::Close { session } => {
                let mut st = self.lock();
                let party = st.sessions.get(&session).is_some_and(|s| {
                    s.initiator.handle.conn == me.handle.conn
                        || s.target.handle.conn == me.handle.conn
                });
                if let Some(s) = party.then(|| st.remove_session(session)).flatten() {
                    let by_initiator = s.initiator.handle.conn == me.handle.conn;
                    match (s.established, by_initiator) {
                        (true, true) => {
                            self.closed_in_order(&s.target.handle, session, CloseReason::PeerClosed)
                        }
                        (true, false) => self.closed_in_order(
                            &s.initiator.handle,
                            session,
                            CloseReason::PeerClosed,
                        ),
                        (false, true) => {
                            self.closed(&s.target.handle, session, CloseReason::Cancelled)
                        }
                        // The initiator has no session id yet, only its request:
                        // a target that closes a pending session refuses it.
                        (false, false) => self.send_error(
                            &s.initiator.handle,
                            Some(s.req),
                            Some(session),
                            ErrorCode::Rejected,
                            "the device rejected the connection",
                        ),
                    }
                }
            }
            _ => self.send_error(
                &me.handle,
                None,
                None,
                ErrorCode::BadRequest,
                "unsupported message",
            ),
        }
    }

    fn connect(
        self: &Arc<Self>,
        me: &Member,
        req: u64,
        to: DeviceId,
        resume: Option<SessionId>,
        service: Option<String>,
    ) {
        if service.as_deref().is_some_and(|s| !valid_service(s)) {
            self.send_error(
                &me.handle,
                Some(req),
                None,
                ErrorCode::BadRequest,
                "a service label is 1 to 32 bytes of a-z, 0-9 and -",
            );
            return;
        }
        if to == me.device {
            self.send_error(
                &me.handle,
                Some(req),
                None,
                ErrorCode::Forbidden,
                "a device cannot connect to itself",
            );
            return;
        }
        let mut st = self.lock();
        // Devices of the same user, or the two devices of a live code (and only
        // these two connections: no other device of either user).
        let target = st
            .devices
            .get(&to)
            .filter(|t| {
                (t.user == me.user && !me.anonymous) || st.code_grant(me.handle.conn, t.handle.conn)
            })
            .cloned();
        let Some(target) = target else {
            let known = st.known.get(&to).is_some_and(|u| *u == me.user);
            drop(st);
            if known {
                self.send_error(
                    &me.handle,
                    Some(req),
                    None,
                    ErrorCode::PeerOffline,
                    "the device is not online",
                );
            } else {
                self.send_error(&me.handle, Some(req), None, ErrorCode::NotFound, NOT_FOUND);
            }
            return;
        };
        if st.pending_from(me.handle.conn) >= MAX_PENDING_PER_CONN {
            drop(st);
            self.send_error(
                &me.handle,
                Some(req),
                None,
                ErrorCode::RateLimited,
                "too many connection requests waiting for an answer",
            );
            return;
        }
        let id = loop {
            let id = SessionId(rand::random::<u64>());
            if id.0 != 0 && !st.sessions.contains_key(&id) {
                break id;
            }
        };
        let hub = Arc::downgrade(self);
        let timeout = self.config.accept_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(hub) = hub.upgrade() {
                hub.expire(id);
            }
        });
        self.deliver(
            &target.handle,
            &ServerMessage::Incoming {
                session: id,
                from: me.info(),
                resume,
                service,
            },
        );
        for conn in [me.handle.conn, target.handle.conn] {
            st.by_conn.entry(conn).or_default().insert(id);
        }
        st.sessions.insert(
            id,
            Session {
                initiator: me.clone(),
                target,
                req,
                established: false,
                timer: Some(timer.abort_handle()),
            },
        );
        tracing::debug!(session = %id, to = %to.short(), "connect: pending");
    }

    fn accept(&self, me: &Member, req: u64, session: SessionId) {
        let mut st = self.lock();
        let s = st
            .sessions
            .get_mut(&session)
            .filter(|s| !s.established && s.target.handle.conn == me.handle.conn);
        let Some(s) = s else {
            drop(st);
            self.send_error(
                &me.handle,
                Some(req),
                Some(session),
                ErrorCode::NotFound,
                "no such pending session for this device",
            );
            return;
        };
        s.established = true;
        s.stop_timer();
        self.deliver(
            &s.initiator.handle,
            &ServerMessage::Connected {
                req: s.req,
                session,
                peer: s.target.info(),
            },
        );
        self.deliver(&me.handle, &ServerMessage::Accepted { req, session });
        tracing::debug!(session = %session, "session established");
    }

    /// The accept time-out of a pending session ran out.
    fn expire(&self, id: SessionId) {
        let mut st = self.lock();
        if st.sessions.get(&id).is_none_or(|s| s.established) {
            return;
        }
        if let Some(s) = st.remove_session(id) {
            self.send_error(
                &s.initiator.handle,
                Some(s.req),
                Some(id),
                ErrorCode::Timeout,
                "the device did not answer in time",
            );
            self.closed(&s.target.handle, id, CloseReason::Timeout);
        }
    }

    /// The connection relayed frames of `session` from connection `conn` go to, if
    /// the session is established and `conn` is a party of it.
    pub(crate) fn relay_target(&self, conn: u64, session: SessionId) -> Option<Handle> {
        let st = self.lock();
        let s = st.sessions.get(&session).filter(|s| s.established)?;
        if s.initiator.handle.conn == conn {
            Some(s.target.handle.clone())
        } else if s.target.handle.conn == conn {
            Some(s.initiator.handle.clone())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerpipe_proto::id::Identity;

    fn device(n: u16) -> DeviceId {
        let mut seed = [0u8; 32];
        seed[..2].copy_from_slice(&n.to_be_bytes());
        Identity::from_secret_bytes(seed).device_id()
    }

    #[test]
    fn known_devices_per_user_are_bounded_keeping_the_newest() {
        let mut st = State::default();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        st.remember(device(0), &bob);
        for n in 1..=(KNOWN_PER_USER as u16 + 50) {
            st.remember(device(n), &alice);
        }
        assert_eq!(st.known.len(), KNOWN_PER_USER + 1);
        assert_eq!(st.known.get(&device(0)), Some(&bob));
        assert!(!st.known.contains_key(&device(1)));
        assert!(st.known.contains_key(&device(KNOWN_PER_USER as u16 + 50)));
        // Remembering a known device again does not grow anything.
        st.remember(device(KNOWN_PER_USER as u16 + 50), &alice);
        assert_eq!(st.known_order[&alice].len(), KNOWN_PER_USER);
    }
}
