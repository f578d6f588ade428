//! Sessions: connection requests between two devices, from `connect` through
//! `accept` (or reject, time-out, cancel) to `close`, and the route relayed
//! frames of an established session take; which connections of a device may
//! be routed to it again across users (a code's, after its code is gone), and
//! the doors through which devices of any user may connect to it.
//!
//! With [`super::presence`] this is the part that a cluster of server nodes
//! keeps in shared storage: the hub's connection loop asks only
//! [`Hub::relay_target`] where a frame goes.

use std::collections::{HashMap, HashSet};

use peerpipe_proto::signal::{MAX_DOORS, MAX_RESUMABLE};

use super::*;

/// The answer to a connect whose target this user cannot reach: the same text for
/// a random id and for another user's device, so that nothing leaks across users.
const NOT_FOUND: &str = "no such device";
/// Connection requests one connection may have waiting for an answer at once.
const MAX_PENDING_PER_CONN: usize = 16;

/// A session between two connections.
#[derive(Debug)]
pub(super) struct Session {
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

    fn is_party(&self, conn: u64) -> bool {
        self.initiator.handle.conn == conn || self.target.handle.conn == conn
    }
}

/// The sessions, and the ones each connection is a party of.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    map: HashMap<SessionId, Session>,
    /// Sessions per connection id, to clean up on disconnect.
    by_conn: HashMap<u64, HashSet<SessionId>>,
}

impl Sessions {
    /// Sessions pending or established.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// A fresh, non-zero session id; on a node of a cluster, its high 32 bits
    /// are the node's id (`node`), so that every node knows where a session lives.
    fn fresh_id(&self, node: Option<u32>) -> SessionId {
        loop {
            let id = SessionId(match node {
                Some(n) => u64::from(n) << 32 | u64::from(rand::random::<u32>()),
                None => rand::random::<u64>(),
            });
            if id.0 != 0 && !self.map.contains_key(&id) {
                return id;
            }
        }
    }

    fn insert(&mut self, id: SessionId, session: Session) {
        for conn in [session.initiator.handle.conn, session.target.handle.conn] {
            self.by_conn.entry(conn).or_default().insert(id);
        }
        self.map.insert(id, session);
    }

    fn remove(&mut self, id: SessionId) -> Option<Session> {
        let mut s = self.map.remove(&id)?;
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

    /// Pending sessions that connection `conn` initiated.
    fn pending_from(&self, conn: u64) -> usize {
        self.by_conn.get(&conn).map_or(0, |ids| {
            ids.iter()
                .filter_map(|id| self.map.get(id))
                .filter(|s| !s.established && s.initiator.handle.conn == conn)
                .count()
        })
    }

    /// Removes every session connection `conn` is a party of.
    fn remove_all_of(&mut self, conn: u64) -> Vec<(SessionId, Session)> {
        let ids: Vec<SessionId> = self
            .by_conn
            .get(&conn)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| Some((id, self.remove(id)?)))
            .collect()
    }
}

impl State {
    /// Whether connection `target` lets `from` route connection `id` to it again.
    fn resume_allowed(&self, target: u64, from: DeviceId, id: SessionId) -> bool {
        self.resumable
            .get(&target)
            .is_some_and(|set| set.contains(&(from, id)))
    }

    /// Whether connection `target` has `door` open.
    fn door_open(&self, target: u64, door: &Door) -> bool {
        self.doors
            .get(&target)
            .is_some_and(|set| set.contains(door))
    }
}

/// Adds `item` to what connection `me` holds, if that stays within `max`
/// (an item held already always fits); whether it is held.
fn hold<T: Eq + std::hash::Hash>(
    held: &mut HashMap<u64, HashSet<T>>,
    me: &Member,
    item: T,
    max: usize,
) -> bool {
    let set = held.entry(me.handle.conn).or_default();
    if set.len() >= max && !set.contains(&item) {
        return false;
    }
    set.insert(item);
    true
}

/// Removes `item` from what connection `me` holds.
fn release<T: Eq + std::hash::Hash>(held: &mut HashMap<u64, HashSet<T>>, me: &Member, item: &T) {
    if let Some(set) = held.get_mut(&me.handle.conn) {
        set.remove(item);
        if set.is_empty() {
            held.remove(&me.handle.conn);
        }
    }
}

impl Hub {
    /// `me` lets `peer` route connection `connection` to it again, across users.
    pub(super) fn allow_resume(&self, me: &Member, peer: DeviceId, connection: SessionId) {
        let mut st = self.lock();
        if !hold(&mut st.resumable, me, (peer, connection), MAX_RESUMABLE) {
            drop(st);
            let why = "too many connections held open for resuming: revoke ended ones";
            self.send_error(&me.handle, None, None, ErrorCode::RateLimited, why);
        }
    }

    /// `me` withdraws an [`Hub::allow_resume`]: the connection ended.
    pub(super) fn revoke_resume(&self, me: &Member, peer: DeviceId, connection: SessionId) {
        release(&mut self.lock().resumable, me, &(peer, connection));
    }

    /// `me` lets devices of any user connect to it through `door`.
    pub(super) fn open_door(&self, me: &Member, door: Door) {
        let mut st = self.lock();
        if !hold(&mut st.doors, me, door, MAX_DOORS) {
            drop(st);
            let why = "too many doors open on this connection: close one first";
            self.send_error(&me.handle, None, None, ErrorCode::RateLimited, why);
        }
    }

    /// `me` closes `door`.
    pub(super) fn close_door(&self, me: &Member, door: Door) {
        release(&mut self.lock().doors, me, &door);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn connect(
        self: &Arc<Self>,
        me: &Member,
        req: u64,
        to: DeviceId,
        resume: Option<SessionId>,
        service: Option<String>,
        door: Option<Door>,
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
        // these two connections: no other device of either user), or a
        // connection the target lets this device route again, or any device
        // through a door the target opened.
        let target = st
            .presence
            .get(&to)
            .filter(|t| {
                (t.user == me.user && !me.anonymous)
                    || st.code_grant(me.handle.conn, t.handle.conn)
                    || resume.is_some_and(|id| st.resume_allowed(t.handle.conn, me.device, id))
                    || door.is_some_and(|d| st.door_open(t.handle.conn, &d))
            })
            .cloned();
        let Some(target) = target else {
            let known = st.presence.knows(&to, &me.user);
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
        if st.sessions.pending_from(me.handle.conn) >= MAX_PENDING_PER_CONN {
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
        let id = st.sessions.fresh_id(self.cluster.get().map(|c| c.id()));
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
                door,
            },
        );
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

    pub(super) fn accept(&self, me: &Member, req: u64, session: SessionId) {
        let mut st = self.lock();
        let s = st
            .sessions
            .map
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

    /// The target of a pending session refuses it.
    pub(super) fn reject(&self, me: &Member, session: SessionId) {
        let mut st = self.lock();
        let mine = st
            .sessions
            .map
            .get(&session)
            .is_some_and(|s| !s.established && s.target.handle.conn == me.handle.conn);
        if let Some(s) = mine.then(|| st.sessions.remove(session)).flatten() {
            self.send_error(
                &s.initiator.handle,
                Some(s.req),
                Some(session),
                ErrorCode::Rejected,
                "the device rejected the connection",
            );
        }
    }

    /// A party closes a session.
    pub(super) fn close(&self, me: &Member, session: SessionId) {
        let mut st = self.lock();
        let party = st
            .sessions
            .map
            .get(&session)
            .is_some_and(|s| s.is_party(me.handle.conn));
        let Some(s) = party.then(|| st.sessions.remove(session)).flatten() else {
            return;
        };
        // The initiator of a pending session has no session id yet, only
        // its request: a target that closes it refuses it.
        let refused = (ErrorCode::Rejected, "the device rejected the connection");
        self.ended_by(&s, session, me, CloseReason::PeerClosed, refused);
    }

    /// Connection `me` is gone: every session it is a party of ends, and the
    /// other party hears why.
    pub(super) fn end_sessions_of(&self, st: &mut State, me: &Member) {
        for (id, s) in st.sessions.remove_all_of(me.handle.conn) {
            let gone = (
                ErrorCode::PeerOffline,
                "the device went offline before it answered",
            );
            self.ended_by(&s, id, me, CloseReason::PeerDisconnected, gone);
        }
    }

    /// Session `id` ended on `me`'s side: the other party hears `reason` if it
    /// was established (behind the frames relayed to it), that it was
    /// cancelled if `me` asked for it, else `refusal` as the answer to its
    /// request.
    fn ended_by(
        &self,
        s: &Session,
        id: SessionId,
        me: &Member,
        reason: CloseReason,
        refusal: (ErrorCode, &str),
    ) {
        let by_initiator = s.initiator.handle.conn == me.handle.conn;
        match (s.established, by_initiator) {
            (true, true) => self.closed_in_order(&s.target.handle, id, reason, false),
            (true, false) => self.closed_in_order(&s.initiator.handle, id, reason, false),
            (false, true) => self.closed(&s.target.handle, id, CloseReason::Cancelled),
            (false, false) => {
                let (code, message) = refusal;
                self.send_error(&s.initiator.handle, Some(s.req), Some(id), code, message);
            }
        }
    }

    /// The accept time-out of a pending session ran out.
    fn expire(&self, id: SessionId) {
        let mut st = self.lock();
        if st.sessions.map.get(&id).is_none_or(|s| s.established) {
            return;
        }
        if let Some(s) = st.sessions.remove(id) {
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

    /// A frame `from` relayed on `session` did not fit the receiver's queue
    /// (`overflow` says which bound): that session ends, for both parties,
    /// with [`CloseReason::RelayOverflow`]; the receiver's frames of it still
    /// queued are dropped (the devices resend them on a new route). Neither
    /// connection is closed, and no other session is touched.
    pub(crate) fn relay_overflow(&self, from: &Member, session: SessionId, overflow: Overflow) {
        let mut st = self.lock();
        let party = st
            .sessions
            .map
            .get(&session)
            .is_some_and(|s| s.established && s.is_party(from.handle.conn));
        let Some(s) = party.then(|| st.sessions.remove(session)).flatten() else {
            return;
        };
        drop(st);
        let (sender, receiver) = if s.initiator.handle.conn == from.handle.conn {
            (&s.initiator, &s.target)
        } else {
            (&s.target, &s.initiator)
        };
        tracing::info!(
            %session,
            receiver = receiver.handle.conn,
            bound = ?overflow,
            "relay queue overflowed: ending this session only"
        );
        self.metrics.relay_overflow();
        let reason = CloseReason::RelayOverflow;
        self.closed_in_order(&receiver.handle, session, reason, true);
        self.closed_in_order(&sender.handle, session, reason, false);
    }

    /// Relays `frame` of `session` from `from` to the other party, without
    /// waiting; a frame that does not fit the receiver's queue ends the
    /// session. False if `from` is no party of such an established session.
    pub(crate) fn relay(&self, from: &Member, session: SessionId, frame: Bytes) -> bool {
        let Some(to) = self.relay_target(from.handle.conn, session) else {
            return false;
        };
        let len = frame.len();
        match to.push_relay(session, frame) {
            Ok(()) => self.metrics.relayed(len),
            Err(overflow) => self.relay_overflow(from, session, overflow),
        }
        true
    }

    /// The queue of connection `receiver` (of another node) for `session`
    /// overflowed on its node: the session ends as if here.
    pub(crate) fn remote_overflow(&self, receiver: u64, session: SessionId) {
        let sender = {
            let st = self.lock();
            st.sessions.map.get(&session).and_then(|s| {
                if s.target.handle.conn == receiver {
                    Some(s.initiator.clone())
                } else if s.initiator.handle.conn == receiver {
                    Some(s.target.clone())
                } else {
                    None
                }
            })
        };
        if let Some(sender) = sender {
            self.relay_overflow(&sender, session, Overflow::Session);
        }
    }

    /// The connection relayed frames of `session` from connection `conn` go to, if
    /// the session is established and `conn` is a party of it.
    fn relay_target(&self, conn: u64, session: SessionId) -> Option<Handle> {
        let st = self.lock();
        let s = st.sessions.map.get(&session).filter(|s| s.established)?;
        if s.initiator.handle.conn == conn {
            Some(s.target.handle.clone())
        } else if s.target.handle.conn == conn {
            Some(s.initiator.handle.clone())
        } else {
            None
        }
    }
}
