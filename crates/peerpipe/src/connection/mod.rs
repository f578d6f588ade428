//! Connections: the tokio shell that drives a sans-IO [`Session`] over its paths,
//! and the handles the application holds.
//!
//! Each connection has a driver task that owns the paths and does the I/O: it
//! feeds the session what the node's link reader hands it ([`Input`]), sends
//! what the session wants sent (only as fast as the link's bounded queue takes
//! it), runs the timers and turns session events into wakeups. Handles lock the
//! session briefly to read, write or queue, then wake the driver.
//!
//! A turn of the driver ([`Driver`]) is six phases, in this order: take the
//! inputs, take the direct attempts' events, run the timers, flush (actions,
//! packets onto routes, session events, the orderly close, until nothing
//! changes), notify (outside the lock), wait. The routes — where each path's
//! packets go, and the one queue slot the driver may hold — are in [`route`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use peerpipe_proto::relay::HEADER_LEN;
use peerpipe_proto::session::{
    self, CLOSE_INTEGRITY, CLOSE_PROTOCOL, Event, MessageId, PathId, ProtocolError,
    SendMessageError, Session, StreamId,
};
use peerpipe_proto::signal::{PeerInfo, SessionId};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

mod route;
mod stream;

pub(crate) use self::route::Route;
use self::route::{Full, Paths, reserve};
pub use self::stream::Stream;
use self::stream::StreamWakers;
use crate::config::Config;
use crate::direct::{self, Action, Direct, DirectEnv, DirectEvent, PathKind, PathPolicy};
use crate::op::{Operation, wait_op};
use crate::{AcceptError, CloseReason, ConnectError, RecvError, SendError, StreamError};

/// Inputs queued per connection before the link reader waits.
pub(crate) const INPUT_QUEUE: usize = 64;
/// `CLOSE` code of an orderly close.
const CLOSE_NORMAL: u32 = 0;
/// `CLOSE` code of a node that stops or gives the connection up.
const CLOSE_GOING_AWAY: u32 = 1;
/// How long an ended connection waits for room to send its close packet.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// How long a connection on a direct path waits for the peer's close packet
/// after the server said the peer left.
const PEER_LEFT_GRACE: Duration = Duration::from_secs(2);

/// What the node actor hands a connection's driver.
#[derive(Debug)]
pub(crate) enum Input {
    /// A packet arrived on a path.
    Packet(PathId, Bytes),
    /// A path came up; its packets go out by `route`.
    PathUp(PathId, Route),
    /// A path went down with whatever it had in flight.
    PathDown(PathId),
    /// The node ends the connection for this reason.
    Abort(CloseReason),
    /// The server says the peer ended the connection: its close packet may
    /// still be on the direct path.
    PeerLeft,
}

/// The session settings for a node and a relay that carries frames of up to
/// `max_frame` bytes. Packets also fit every direct path.
pub(crate) fn session_config(cfg: &Config, max_frame: u32) -> session::Config {
    let max_packet = usize::try_from(max_frame)
        .unwrap_or(usize::MAX)
        .saturating_sub(HEADER_LEN)
        .min(direct::MAX_PACKET);
    session::Config {
        max_frame_payload: session::frame_payload_for(max_packet).max(1),
        max_message_size: u32::try_from(cfg.max_message_size).unwrap_or(u32::MAX),
        slow_after: cfg.slow_threshold,
        idle_timeout: cfg.idle_timeout,
        keepalive_interval: cfg.idle_timeout / 6,
        ..session::Config::default()
    }
}

/// Who waits for the handshake to finish.
pub(crate) enum Waiter {
    /// [`Node::connect`](crate::Node::connect).
    Connect(oneshot::Sender<Result<Connection, ConnectError>>),
    /// [`Incoming::accept`].
    Accept(oneshot::Sender<Result<Connection, AcceptError>>),
}

impl Waiter {
    fn is_closed(&self) -> bool {
        match self {
            Self::Connect(tx) => tx.is_closed(),
            Self::Accept(tx) => tx.is_closed(),
        }
    }

    /// Hands over the connection; false if nobody waits any more.
    fn succeed(self, conn: Connection) -> bool {
        match self {
            Self::Connect(tx) => tx.send(Ok(conn)).is_ok(),
            Self::Accept(tx) => tx.send(Ok(conn)).is_ok(),
        }
    }

    fn fail(self, reason: CloseReason) {
        match self {
            Self::Connect(tx) => {
                let _ = tx.send(Err(match reason {
                    CloseReason::NodeStopped => ConnectError::Stopped,
                    reason => ConnectError::Handshake(reason),
                }));
            }
            Self::Accept(tx) => {
                let _ = tx.send(Err(match reason {
                    CloseReason::NodeStopped => AcceptError::Stopped,
                    CloseReason::Cancelled | CloseReason::PeerDisconnected => AcceptError::Expired,
                    reason => AcceptError::Handshake(reason),
                }));
            }
        }
    }
}

/// The typed reason for a session that ended.
fn close_reason(reason: session::CloseReason, idle: Duration, max_message: usize) -> CloseReason {
    use session::CloseReason as S;
    match reason {
        S::Local { .. } => CloseReason::Local,
        S::Remote { code, reason } => match code {
            CLOSE_NORMAL => CloseReason::PeerClosed,
            CLOSE_GOING_AWAY => CloseReason::PeerDisconnected,
            CLOSE_INTEGRITY => CloseReason::Integrity,
            CLOSE_PROTOCOL => CloseReason::Protocol(format!("the peer says: {reason}")),
            code => CloseReason::Protocol(format!("the peer closed with code {code}: {reason}")),
        },
        S::IdleTimeout => CloseReason::TimedOut(idle),
        S::Integrity => CloseReason::Integrity,
        S::Handshake(e) => CloseReason::Handshake(e.to_string()),
        S::Protocol(ProtocolError::MessageTooLarge { .. }) => {
            CloseReason::MessageTooLarge { max: max_message }
        }
        S::Protocol(e) => CloseReason::Protocol(e.to_string()),
        other => CloseReason::Protocol(other.to_string()),
    }
}

/// The session and everything waiting on it.
pub(crate) struct State {
    pub session: Session,
    /// Why the connection ended, once it has.
    pub closed: Option<CloseReason>,
    /// An orderly close was asked for: close once everything is acknowledged.
    closing: bool,
    waiter: Option<Waiter>,
    /// The application got the connection (so it hears of the close).
    established: bool,
    confirms: HashMap<MessageId, oneshot::Sender<Result<(), CloseReason>>>,
    pub wakers: StreamWakers,
    /// The kind of path the traffic takes now.
    path: PathKind,
    /// The application asked for a new direct path.
    restart_direct: bool,
}

/// What a connection (its handles and its driver) tells the node's actor.
pub(crate) enum Report {
    /// The driver ended (its close packet is already queued).
    Ended {
        id: SessionId,
        reason: CloseReason,
        /// The application had the connection: it hears of the close.
        established: bool,
    },
    /// An operation waited past the slow threshold.
    Slow {
        operation: Operation,
        elapsed: Duration,
    },
    /// The connection's traffic moved to another kind of path.
    PathChanged {
        session: SessionId,
        peer: peerpipe_proto::id::DeviceId,
        path: PathKind,
        rtt: Duration,
    },
}

/// Reports queued per node before connections wait (an ending driver) or
/// drop them (slow and path reports).
pub(crate) const REPORT_QUEUE: usize = 256;

/// State shared by the connection's handles, its driver and the node actor.
pub(crate) struct ConnInner {
    /// The server session the connection was set up on: its name for good.
    pub id: SessionId,
    pub peer: PeerInfo,
    /// This side asked for the connection (and routes it again after a loss).
    pub dialer: bool,
    /// The service label the connection was asked for with.
    pub service: Option<String>,
    cfg: Arc<Config>,
    reports: mpsc::Sender<Report>,
    state: Mutex<State>,
    /// Wakes the driver.
    wake: Notify,
    /// Wakes tasks waiting on messages, message room, incoming streams or the end.
    changed: Notify,
}

impl ConnInner {
    // Crate-private: one call site, in the actor.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: SessionId,
        peer: PeerInfo,
        dialer: bool,
        service: Option<String>,
        session: Session,
        waiter: Waiter,
        cfg: Arc<Config>,
        reports: mpsc::Sender<Report>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            peer,
            dialer,
            service,
            cfg,
            reports,
            state: Mutex::new(State {
                session,
                closed: None,
                closing: false,
                waiter: Some(waiter),
                established: false,
                confirms: HashMap::new(),
                wakers: StreamWakers::default(),
                path: PathKind::Relay,
                restart_direct: false,
            }),
            wake: Notify::new(),
            changed: Notify::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it; the session itself
        // stays consistent between calls: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the driver there is work (data written, read, or a close asked).
    pub(crate) fn wake_driver(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn closed(&self) -> Option<CloseReason> {
        self.lock().closed.clone()
    }

    /// Waits until `check` gives an answer, re-checking on every change.
    async fn wait_for<T>(&self, mut check: impl FnMut(&mut State) -> Option<T>) -> T {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(out) = check(&mut self.lock()) {
                return out;
            }
            changed.await;
        }
    }

    /// Asks for an orderly close: the driver closes once all sent data is
    /// acknowledged.
    pub(crate) fn close_gracefully(&self) {
        self.lock().closing = true;
        self.wake_driver();
    }

    async fn send(&self, data: Bytes, confirm: bool) -> Result<(), SendError> {
        let local_max = self.cfg.max_message_size;
        if data.len() > local_max {
            return Err(SendError::MessageTooLarge {
                size: data.len(),
                max: local_max,
            });
        }
        let size = data.len();
        let waiter = self
            .wait_for(|st| {
                if let Some(reason) = &st.closed {
                    return Some(Err(SendError::Closed(reason.clone())));
                }
                match st.session.send_message(data.clone(), confirm) {
                    Ok(id) => {
                        let waiter = confirm.then(|| {
                            let (tx, rx) = oneshot::channel();
                            st.confirms.insert(id, tx);
                            (id, rx)
                        });
                        Some(Ok(waiter))
                    }
                    Err(SendMessageError::Blocked) => None,
                    Err(SendMessageError::TooLarge { max }) => {
                        Some(Err(SendError::MessageTooLarge {
                            size,
                            max: usize::try_from(max).unwrap_or(usize::MAX),
                        }))
                    }
                    Err(_) => Some(Err(SendError::Closed(
                        st.closed.clone().unwrap_or(CloseReason::Local),
                    ))),
                }
            })
            .await?;
        self.wake_driver();
        let Some((id, rx)) = waiter else {
            return Ok(());
        };
        let op = Operation::SendConfirmed {
            session: self.id,
            peer: self.peer.id,
        };
        let limit = self.cfg.confirm_timeout;
        let reports = self.reports.clone();
        let on_slow = move |operation, elapsed| {
            let _ = reports.try_send(Report::Slow { operation, elapsed });
        };
        match wait_op(op, limit, self.cfg.slow_threshold, rx, on_slow).await {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(reason))) => Err(SendError::Closed(reason)),
            Ok(None) => Err(SendError::Closed(
                self.closed().unwrap_or(CloseReason::NodeStopped),
            )),
            Err(()) => {
                self.lock().confirms.remove(&id);
                Err(SendError::ConfirmTimeout(limit))
            }
        }
    }

    async fn recv(&self) -> Result<Option<Bytes>, RecvError> {
        let out = self
            .wait_for(|st| {
                if let Some(msg) = st.session.recv_message() {
                    return Some(Ok(Some(msg.data)));
                }
                match &st.closed {
                    Some(CloseReason::PeerClosed) => Some(Ok(None)),
                    Some(reason) => Some(Err(RecvError::Closed(reason.clone()))),
                    None => None,
                }
            })
            .await;
        // Taking a message grants credit (and may confirm it).
        self.wake_driver();
        out
    }

    async fn open_stream(&self) -> Result<StreamId, StreamError> {
        self.wait_for(|st| {
            if let Some(reason) = &st.closed {
                return Some(Err(StreamError::Closed(reason.clone())));
            }
            match st.session.open_stream() {
                Ok(id) => Some(Ok(id)),
                Err(session::OpenError::Limit) => None,
                Err(_) => Some(Err(StreamError::Closed(
                    st.closed.clone().unwrap_or(CloseReason::Local),
                ))),
            }
        })
        .await
    }

    async fn accept_stream(&self) -> Result<StreamId, StreamError> {
        self.wait_for(|st| {
            if let Some(id) = st.session.accept_stream() {
                return Some(Ok(id));
            }
            st.closed.clone().map(|r| Err(StreamError::Closed(r)))
        })
        .await
    }

    /// Acts on the session's events; false when there were none.
    fn dispatch(
        &self,
        st: &mut State,
        now: std::time::Instant,
        direct: &mut Direct,
        actions: &mut Vec<Action>,
        after: &mut Vec<After>,
    ) -> bool {
        let mut any = false;
        while let Some(event) = st.session.poll_event() {
            any = true;
            match event {
                Event::Connected => {
                    direct.connected(now);
                    if let Some(waiter) = st.waiter.take() {
                        st.established = true;
                        after.push(After::Hand(waiter));
                    }
                }
                Event::StreamOpened(_)
                | Event::StreamOpenable
                | Event::MessageReceived
                | Event::MessageWritable => {
                    after.push(After::Changed);
                }
                Event::StreamReadable(id) => st.wakers.wake_reader(id),
                Event::StreamWritable(id) => st.wakers.wake_writer(id),
                Event::MessageConfirmed(id) => {
                    if let Some(tx) = st.confirms.remove(&id) {
                        let _ = tx.send(Ok(()));
                    }
                }
                Event::Slow => after.push(After::Slow),
                Event::PathChanged(path) => {
                    let kind = direct::path_kind(path);
                    tracing::debug!(session = %self.id, ?path, "sending on the {kind} path");
                    if kind != st.path {
                        st.path = kind;
                        after.push(After::PathChanged(kind, st.session.rtt()));
                    }
                }
                Event::PathFailed(path) => {
                    tracing::debug!(session = %self.id, ?path, "path went silent, left it");
                    direct.path_failed(now, path, actions);
                }
                Event::PathSignal => {
                    while let Some(signal) = st.session.recv_path_signal() {
                        direct.handle_signal(now, &signal, actions);
                    }
                }
                Event::Closed { reason } => {
                    let reason = st.closed.get_or_insert_with(|| {
                        close_reason(reason, self.cfg.idle_timeout, self.cfg.max_message_size)
                    });
                    let reason = reason.clone();
                    for (_, tx) in st.confirms.drain() {
                        let _ = tx.send(Err(reason.clone()));
                    }
                    st.wakers.wake_all();
                    if let Some(waiter) = st.waiter.take() {
                        after.push(After::Fail(waiter, reason));
                    }
                    after.push(After::Changed);
                }
            }
        }
        any
    }

    /// Carries out what the direct-path negotiator asked for.
    fn act(&self, st: &mut State, paths: &mut Paths, now: std::time::Instant, action: Action) {
        match action {
            Action::Signal(signal) => {
                if st.session.send_path_signal(signal.encode().into()).is_err() {
                    tracing::debug!(session = %self.id, "path signal not sent: queue full or closed");
                }
            }
            Action::Up(path, out) => {
                paths.routes.insert(path, Route::Direct { out });
                if direct::path_kind(path) == PathKind::Quic {
                    // Encrypted by QUIC, both certificates pinned through
                    // this session: no second encryption.
                    st.session.trust_path(path);
                }
                st.session.handle_path_up(now, path);
                if self.cfg.path_policy == PathPolicy::DirectOnly {
                    paths.relay_forbidden = true;
                    let relays: Vec<PathId> = paths
                        .routes
                        .iter()
                        .filter(|(_, r)| matches!(r, Route::Relay { .. }))
                        .map(|(p, _)| *p)
                        .collect();
                    for relay in relays {
                        paths.routes.remove(&relay);
                        st.session.handle_path_down(now, relay);
                    }
                }
            }
            Action::Down(path) => {
                if paths.routes.remove(&path).is_some() {
                    st.session.handle_path_down(now, path);
                }
            }
        }
    }

    fn apply(
        &self,
        st: &mut State,
        paths: &mut Paths,
        direct: &Direct,
        now: std::time::Instant,
        input: Input,
    ) {
        match input {
            Input::Packet(path, packet) => st.session.handle_packet(now, path, packet),
            Input::PathUp(path, route) => {
                if paths.relay_forbidden {
                    return;
                }
                tracing::debug!(session = %self.id, ?path, "relay path up");
                paths.routes.insert(path, route);
                let direct_current = st.session.current_path().is_some_and(|p| direct.is_up(p));
                if direct_current {
                    st.session.handle_path_standby(now, path);
                } else {
                    st.session.handle_path_up(now, path);
                }
            }
            Input::PathDown(path) => {
                if paths.routes.remove(&path).is_some() {
                    tracing::debug!(session = %self.id, ?path, "relay path down");
                    st.session.handle_path_down(now, path);
                }
            }
            Input::Abort(reason) => Self::abort(self.id, st, reason),
            Input::PeerLeft => {
                let direct_up = paths.routes.keys().any(|p| direct.is_up(*p));
                if direct_up {
                    paths.peer_left = Some(now + PEER_LEFT_GRACE);
                } else {
                    Self::abort(self.id, st, CloseReason::PeerDisconnected);
                }
            }
        }
    }

    fn abort(id: SessionId, st: &mut State, reason: CloseReason) {
        // A close that arrived in-band just before keeps its own reason.
        if st.closed.is_none() && st.session.close_reason().is_none() {
            tracing::debug!(session = %id, "ending: {reason}");
            let text = reason.to_string();
            st.closed = Some(reason);
            st.session.close(CLOSE_GOING_AWAY, &text);
        }
    }
}

/// Work for after the state lock is released.
enum After {
    Hand(Waiter),
    Fail(Waiter, CloseReason),
    Changed,
    Slow,
    PathChanged(PathKind, Duration),
}

/// Drives a connection until it ends, then tells the node.
pub(crate) async fn drive(
    inner: Arc<ConnInner>,
    input: mpsc::Receiver<Input>,
    env: watch::Receiver<DirectEnv>,
) {
    let (direct, direct_rx) = Direct::new(inner.cfg.path_policy, inner.dialer, env);
    let mut driver = Driver {
        inner,
        input,
        direct,
        direct_rx,
        paths: Paths::default(),
        next: None,
        next_direct: None,
        actions: Vec::new(),
        ended_at: None,
    };
    let reason = loop {
        let now = Instant::now();
        let turn = driver.turn(now.into_std());
        driver.notify(turn.after);
        if let Some(reason) = turn.ended {
            // The close packet waits for room on its path, but not for ever: a
            // direct path whose peer is gone never drains.
            let flush_by = *driver.ended_at.get_or_insert(now + CLOSE_FLUSH);
            if turn.full.is_none() || now >= flush_by {
                break reason;
            }
        }
        driver.wait(turn.deadline, turn.full, turn.full_path).await;
    };
    let inner = driver.inner;
    tracing::debug!(session = %inner.id, "connection ended: {reason}");
    let established = inner.lock().established;
    let _ = inner
        .reports
        .send(Report::Ended {
            id: inner.id,
            reason,
            established,
        })
        .await;
}

/// A connection's driver: the session (behind the lock), its paths and the
/// direct-path shell.
///
/// Each turn runs these phases in order, the first four with the state locked:
///
/// 1. [`Driver::take_inputs`]: what the node's link reader handed over
///    (packets, relay routes up and down, aborts, the peer leaving);
/// 2. [`Driver::take_direct_events`]: what the direct attempts reported
///    (packets go to the session, the rest to the negotiator);
/// 3. [`Driver::run_timers`]: the session's and the negotiator's timers, the
///    peer-left deadline, a requested restart, a waiter that gave up;
/// 4. [`Driver::flush`]: until nothing changes, the negotiator's actions, the
///    session's packets onto the current path's route, the session's events,
///    the orderly close;
/// 5. [`Driver::notify`]: unlocked, wake handles and emit node events;
/// 6. [`Driver::wait`]: sleep until an input, a direct event, a wakeup, the
///    next deadline or room in a full route queue.
struct Driver {
    inner: Arc<ConnInner>,
    input: mpsc::Receiver<Input>,
    direct: Direct,
    direct_rx: mpsc::Receiver<DirectEvent>,
    paths: Paths,
    /// An input or direct event that woke the last wait.
    next: Option<Input>,
    next_direct: Option<DirectEvent>,
    actions: Vec<Action>,
    /// When the connection ended (its close packet is being flushed).
    ended_at: Option<Instant>,
}

/// What one turn leaves for the wait and the end.
struct Turn {
    deadline: Option<std::time::Instant>,
    /// The route queue that was full, and the path it belongs to.
    full: Option<Full>,
    full_path: Option<PathId>,
    ended: Option<CloseReason>,
    after: Vec<After>,
}

impl Driver {
    /// Phases 1 to 4, with the state locked.
    fn turn(&mut self, now: std::time::Instant) -> Turn {
        let inner = self.inner.clone();
        let mut st = inner.lock();
        let st = &mut *st;
        self.take_inputs(st, now);
        self.take_direct_events(st, now);
        self.run_timers(st, now);
        let mut after = Vec::new();
        let full = self.flush(st, now, &mut after);
        let deadline = [
            st.session.poll_timeout(),
            self.direct.poll_timeout(),
            self.paths.peer_left,
        ]
        .into_iter()
        .flatten()
        .min();
        Turn {
            deadline,
            full,
            full_path: st.session.current_path(),
            ended: st.closed.clone(),
            after,
        }
    }

    fn take_inputs(&mut self, st: &mut State, now: std::time::Instant) {
        let (inner, paths, direct) = (&self.inner, &mut self.paths, &self.direct);
        if let Some(i) = self.next.take() {
            inner.apply(st, paths, direct, now, i);
        }
        for _ in 0..INPUT_QUEUE {
            match self.input.try_recv() {
                Ok(i) => inner.apply(st, paths, direct, now, i),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let abort = Input::Abort(CloseReason::NodeStopped);
                    inner.apply(st, paths, direct, now, abort);
                    break;
                }
            }
        }
    }

    fn take_direct_events(&mut self, st: &mut State, now: std::time::Instant) {
        let mut event = self.next_direct.take();
        for _ in 0..direct::EVENT_QUEUE {
            let Some(e) = event.take().or_else(|| self.direct_rx.try_recv().ok()) else {
                break;
            };
            match e {
                // Late packets of a path already gone (its task had them
                // queued) are dropped: the peer resends what they carried,
                // and a QUIC path's unencrypted packets are no longer
                // trusted once it is down.
                DirectEvent::Packet(path, packet) => {
                    if self.paths.routes.contains_key(&path) {
                        st.session.handle_packet(now, path, packet);
                    }
                }
                e => {
                    self.direct.handle_event(now, e, &mut self.actions);
                    // At once: packets after an `Up` in this batch may
                    // need the path it sets up (a trusted QUIC path).
                    for action in self.actions.drain(..) {
                        self.inner.act(st, &mut self.paths, now, action);
                    }
                }
            }
        }
    }

    fn run_timers(&mut self, st: &mut State, now: std::time::Instant) {
        st.session.handle_timeout(now);
        self.direct.handle_timeout(now, &mut self.actions);
        if self.paths.peer_left.is_some_and(|at| at <= now) {
            self.paths.peer_left = None;
            ConnInner::abort(self.inner.id, st, CloseReason::PeerDisconnected);
        }
        if std::mem::take(&mut st.restart_direct) {
            self.direct.restart(now, &mut self.actions);
        }
        if st.waiter.as_ref().is_some_and(Waiter::is_closed) {
            // Whoever waited for the handshake gave up.
            st.waiter = None;
            st.session
                .close(CLOSE_GOING_AWAY, "the other side gave up waiting");
        }
    }

    /// Runs until nothing changes; returns the route queue that was full.
    fn flush(
        &mut self,
        st: &mut State,
        now: std::time::Instant,
        after: &mut Vec<After>,
    ) -> Option<Full> {
        loop {
            for action in self.actions.drain(..) {
                self.inner.act(st, &mut self.paths, now, action);
            }
            let full = self.paths.transmit(&mut st.session, now);
            if full.is_some() {
                st.session.handle_path_full();
            }
            let mut again =
                self.inner
                    .dispatch(st, now, &mut self.direct, &mut self.actions, after);
            again |= !self.actions.is_empty();
            // An orderly close waits until everything queued went out and
            // was acknowledged (confirmations of taken messages included).
            if full.is_none()
                && st.closing
                && st.session.close_reason().is_none()
                && (st.session.send_buffered() == 0 || !st.session.is_connected())
            {
                st.session.close(CLOSE_NORMAL, "");
                again = true;
            }
            if !again {
                return full;
            }
        }
    }

    /// Phase 5: what the turn found, told outside the lock.
    fn notify(&self, after: Vec<After>) {
        let inner = &self.inner;
        for item in after {
            match item {
                After::Hand(waiter) => {
                    // If nobody takes it, dropping the handle closes the connection.
                    let _ = waiter.succeed(Connection::new(inner.clone()));
                }
                After::Fail(waiter, reason) => waiter.fail(reason),
                After::Changed => inner.changed.notify_waiters(),
                After::Slow => {
                    let _ = inner.reports.try_send(Report::Slow {
                        operation: Operation::Transfer {
                            session: inner.id,
                            peer: inner.peer.id,
                        },
                        elapsed: inner.cfg.slow_threshold,
                    });
                }
                After::PathChanged(path, rtt) => {
                    let _ = inner.reports.try_send(Report::PathChanged {
                        session: inner.id,
                        peer: inner.peer.id,
                        path,
                        rtt,
                    });
                }
            }
        }
    }

    /// Phase 6: sleeps until there is something to do.
    async fn wait(
        &mut self,
        deadline: Option<std::time::Instant>,
        full: Option<Full>,
        full_path: Option<PathId>,
    ) {
        let deadline = match self.ended_at {
            Some(at) => Some(deadline.map_or(at.into_std(), |d| d.min(at.into_std()))),
            None => deadline,
        };
        let sleep = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            i = self.input.recv() => {
                self.next = Some(i.unwrap_or(Input::Abort(CloseReason::NodeStopped)));
            }
            Some(event) = self.direct_rx.recv() => self.next_direct = Some(event),
            () = self.inner.wake.notified() => {}
            () = sleep => {}
            permit = reserve(full) => self.paths.held = full_path.zip(permit),
        }
    }
}

/// Closes the connection in order when the last handle (connection or stream)
/// goes away.
pub(crate) struct Handle(pub Arc<ConnInner>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close_gracefully();
    }
}

/// An end-to-end encrypted connection to another device of this user (or to
/// any device met through a one-time code: see [`Node::offer_code`](crate::Node::offer_code)).
///
/// It starts on the relay path through the server and survives the loss of that
/// path (a server restart, a dropped link): both nodes route it again when they
/// are back, and nothing sent is lost or repeated. Messages ([`Connection::send`],
/// [`Connection::send_confirmed`]) and any number of byte streams
/// ([`Connection::open_stream`]) share it, each stream with its own flow control.
///
/// Cheap to clone; all methods take `&self`. Dropping the last handle (streams
/// included) closes the connection like [`Connection::close`], without waiting.
#[derive(Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("session", &self.handle.0.id)
            .field("peer", &self.handle.0.peer.id)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(inner: Arc<ConnInner>) -> Self {
        Self {
            handle: Arc::new(Handle(inner)),
        }
    }

    fn inner(&self) -> &Arc<ConnInner> {
        &self.handle.0
    }

    /// The device at the other end (authenticated end to end).
    pub fn peer(&self) -> &PeerInfo {
        &self.inner().peer
    }

    /// The id of the server session the connection was set up on; it names the
    /// connection for good, also after it was routed again.
    pub fn session_id(&self) -> SessionId {
        self.inner().id
    }

    /// The service label the connection was opened with
    /// ([`Node::connect_service`](crate::Node::connect_service)); `"code"` for
    /// connections made by a one-time code, `None` for [`Node::connect`](crate::Node::connect).
    pub fn service(&self) -> Option<&str> {
        self.inner().service.as_deref()
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner().closed()
    }

    /// The kind of path the connection's traffic takes now
    /// ([`NodeEvent::PathChanged`](crate::NodeEvent::PathChanged) reports changes).
    pub fn path(&self) -> PathKind {
        self.inner().lock().path
    }

    /// Leaves the current direct path and negotiates a new one at once, staying
    /// on the relay meanwhile; nothing sent is lost or repeated. Call it when the
    /// device's network changed (another Wi-Fi, a VPN came up).
    pub fn restart_direct(&self) {
        self.inner().lock().restart_direct = true;
        self.inner().wake_driver();
    }

    /// The smoothed round-trip time to the peer.
    pub fn rtt(&self) -> Duration {
        self.inner().lock().session.rtt()
    }

    /// Sends one message. Resolves once it is queued in the connection; waits while
    /// the queue is full (backpressure from the peer's application).
    ///
    /// Messages larger than this node's or the peer's
    /// [`max_message_size`](crate::NodeBuilder::max_message_size) fail at once
    /// with [`SendError::MessageTooLarge`].
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.inner().send(data.into(), false).await
    }

    /// Sends one message and resolves once the remote application has taken it
    /// with [`Connection::recv`], or fails with [`SendError::ConfirmTimeout`]
    /// after the confirm time-out.
    pub async fn send_confirmed(&self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.inner().send(data.into(), true).await
    }

    /// Receives the next message. `Ok(None)`: the peer closed the connection in
    /// order after everything it sent was received.
    pub async fn recv(&self) -> Result<Option<Bytes>, RecvError> {
        self.inner().recv().await
    }

    /// Opens a byte stream to the peer. The peer learns of it with the first
    /// bytes written (or the finish). While the peer has as many of this side's
    /// streams open as it allows, waits until one of them ends.
    pub async fn open_stream(&self) -> Result<Stream, StreamError> {
        let id = self.inner().open_stream().await?;
        Ok(Stream::new(self.handle.clone(), id))
    }

    /// Waits for the next stream the peer opened.
    pub async fn accept_stream(&self) -> Result<Stream, StreamError> {
        let id = self.inner().accept_stream().await?;
        Ok(Stream::new(self.handle.clone(), id))
    }

    /// Closes the connection in order: waits until the peer has received
    /// everything sent before (on every stream), then ends it; the peer's
    /// [`Connection::recv`] returns `Ok(None)` after its last message. Bounded
    /// by the idle time-out if the peer is gone.
    pub async fn close(&self) {
        let inner = self.inner();
        inner.close_gracefully();
        inner.wait_for(|st| st.closed.as_ref().map(|_| ())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_close_codes_are_typed() {
        let idle = Duration::from_secs(30);
        let remote = |code| session::CloseReason::Remote {
            code,
            reason: "why".into(),
        };
        assert_eq!(close_reason(remote(0), idle, 1), CloseReason::PeerClosed);
        assert_eq!(
            close_reason(remote(1), idle, 1),
            CloseReason::PeerDisconnected
        );
        assert_eq!(
            close_reason(remote(CLOSE_INTEGRITY), idle, 1),
            CloseReason::Integrity
        );
        assert!(matches!(
            close_reason(remote(CLOSE_PROTOCOL), idle, 1),
            CloseReason::Protocol(_)
        ));
        assert!(matches!(
            close_reason(remote(77), idle, 1),
            CloseReason::Protocol(_)
        ));
        assert_eq!(
            close_reason(session::CloseReason::IdleTimeout, idle, 1),
            CloseReason::TimedOut(idle)
        );
        assert_eq!(
            close_reason(
                session::CloseReason::Protocol(ProtocolError::MessageTooLarge { max: 5 }),
                idle,
                1024
            ),
            CloseReason::MessageTooLarge { max: 1024 }
        );
    }

    #[test]
    fn packets_fit_the_relay_frame_limit() {
        let cfg = Config::for_tests();
        for max_frame in [4096, 64 * 1024, 128 * 1024, 1 << 20] {
            let sc = session_config(&cfg, max_frame);
            assert!(
                sc.max_packet_len() + HEADER_LEN <= max_frame as usize,
                "{max_frame}"
            );
        }
    }
}
