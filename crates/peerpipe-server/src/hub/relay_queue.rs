//! Relayed frames waiting for one connection's writer, queued per session.
//!
//! A sender's reader never waits for the receiver: it puts the frame in the
//! receiving connection's queue for that session and goes on reading (the
//! sender's keepalives, control messages and other sessions' frames). What
//! keeps the queue small is the sessions' own end-to-end flow control: a
//! sender may only have the credit its peer's application granted in flight
//! (see [`Config::relay_session_queue`](crate::Config::relay_session_queue)
//! for how the bound follows from the windows). A session that overflows its
//! bound anyway sent past its credit; the hub ends that session alone.
//! A second bound over all sessions of the receiving connection keeps its
//! memory bounded however many sessions it has.
//!
//! The writer takes one frame per session in turn, so a session with a deep
//! queue does not hold back the others to the same device. An empty queue
//! holds no allocation.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use peerpipe_proto::signal::SessionId;
use tokio::sync::Notify;

use super::Data;

/// Bytes charged per queued item beyond its length: the slot, the `Bytes`
/// handle and the allocator's rounding, so that a flood of tiny frames is
/// bounded in memory, not only in payload.
const ITEM_OVERHEAD: usize = 64;

/// Which bound a frame did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// The session's own queue.
    Session,
    /// The receiving connection's queue over all its sessions.
    Connection,
}

/// Relayed frames (and the ends of sessions behind them) for one connection.
#[derive(Debug)]
pub(crate) struct RelayQueue {
    inner: Mutex<Inner>,
    ready: Notify,
    session_cap: usize,
    connection_cap: usize,
}

#[derive(Debug, Default)]
struct Inner {
    queues: HashMap<SessionId, SessionQueue>,
    /// Sessions with something queued, in the order the writer serves them.
    turns: VecDeque<SessionId>,
    /// Bytes charged over all sessions.
    bytes: usize,
    /// The writer is gone: nothing is queued any more.
    closed: bool,
}

#[derive(Debug, Default)]
struct SessionQueue {
    items: VecDeque<Data>,
    bytes: usize,
}

fn cost(item: &Data) -> usize {
    ITEM_OVERHEAD
        + match item {
            Data::Relay(frame) => frame.len(),
            Data::Closed(text) => text.len(),
        }
}

impl Inner {
    fn append(&mut self, session: SessionId, item: Data) {
        let n = cost(&item);
        let q = self.queues.entry(session).or_default();
        if q.items.is_empty() {
            self.turns.push_back(session);
        }
        q.items.push_back(item);
        q.bytes += n;
        self.bytes += n;
    }
}

impl RelayQueue {
    /// A queue holding at most `session_cap` bytes per session and
    /// `connection_cap` bytes in all.
    pub(crate) fn new(session_cap: usize, connection_cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            session_cap: session_cap.max(1),
            connection_cap: connection_cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a relayed frame of `session`, unless it does not fit a bound.
    /// (Once the writer is gone the frame is dropped: `Ok`.)
    pub(crate) fn push(&self, session: SessionId, frame: Bytes) -> Result<(), Overflow> {
        let item = Data::Relay(frame);
        let n = cost(&item);
        let mut inner = self.lock();
        if inner.closed {
            return Ok(());
        }
        let queued = inner.queues.get(&session).map_or(0, |q| q.bytes);
        if queued + n > self.session_cap {
            return Err(Overflow::Session);
        }
        if inner.bytes + n > self.connection_cap {
            return Err(Overflow::Connection);
        }
        inner.append(session, item);
        drop(inner);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues the encoded end of `session` behind its frames; with `discard`,
    /// its frames still queued are dropped first (a route that overflowed:
    /// they would only be resent on a new one). Never refused: a session ends
    /// once, and a connection that stops reading is closed by its writer.
    pub(crate) fn push_closed(&self, session: SessionId, text: String, discard: bool) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        if discard && let Some(q) = inner.queues.remove(&session) {
            inner.bytes -= q.bytes;
            inner.turns.retain(|s| *s != session);
        }
        inner.append(session, Data::Closed(text));
        drop(inner);
        self.ready.notify_one();
    }

    /// The next item, taking sessions in turn. More left wakes the writer again.
    pub(crate) fn take(&self) -> Option<Data> {
        let mut inner = self.lock();
        let session = inner.turns.pop_front()?;
        let q = inner.queues.get_mut(&session)?;
        let item = q.items.pop_front()?;
        let n = cost(&item);
        q.bytes -= n;
        if q.items.is_empty() {
            inner.queues.remove(&session);
        } else {
            inner.turns.push_back(session);
        }
        inner.bytes -= n;
        if inner.turns.is_empty() {
            // Give back what a burst grew: an idle connection holds nothing.
            inner.turns = VecDeque::new();
            inner.queues = HashMap::new();
        } else {
            self.ready.notify_one();
        }
        Some(item)
    }

    /// Completes when an item may be waiting.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// The writer is gone: drops everything queued and whatever comes later.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.queues = HashMap::new();
        inner.turns = VecDeque::new();
        inner.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n])
    }

    fn relay(item: Option<Data>) -> Option<u8> {
        match item? {
            Data::Relay(f) => f.first().copied(),
            Data::Closed(_) => None,
        }
    }

    #[test]
    fn sessions_are_served_in_turn_and_each_in_order() {
        let q = RelayQueue::new(1 << 20, 1 << 20);
        for fill in [1, 2, 3] {
            q.push(SessionId(1), frame(10, fill)).unwrap();
        }
        q.push(SessionId(2), frame(10, 9)).unwrap();
        let order: Vec<Option<u8>> = (0..4).map(|_| relay(q.take())).collect();
        assert_eq!(order, [Some(1), Some(9), Some(2), Some(3)]);
        assert!(q.take().is_none());
    }

    #[test]
    fn a_full_session_overflows_alone_and_the_connection_bound_holds() {
        let q = RelayQueue::new(3 * (100 + ITEM_OVERHEAD), 5 * (100 + ITEM_OVERHEAD));
        for _ in 0..3 {
            q.push(SessionId(1), frame(100, 1)).unwrap();
        }
        assert_eq!(q.push(SessionId(1), frame(100, 1)), Err(Overflow::Session));
        q.push(SessionId(2), frame(100, 2)).unwrap();
        q.push(SessionId(2), frame(100, 2)).unwrap();
        assert_eq!(
            q.push(SessionId(3), frame(100, 3)),
            Err(Overflow::Connection)
        );
        // Taking one frame makes room again.
        assert!(q.take().is_some());
        q.push(SessionId(3), frame(100, 3)).unwrap();
    }

    #[test]
    fn closed_comes_behind_the_frames_or_instead_of_them() {
        let q = RelayQueue::new(1 << 20, 1 << 20);
        q.push(SessionId(1), frame(10, 1)).unwrap();
        q.push_closed(SessionId(1), "end".into(), false);
        q.push(SessionId(2), frame(10, 2)).unwrap();
        q.push_closed(SessionId(2), "gone".into(), true);
        assert_eq!(relay(q.take()), Some(1));
        assert!(matches!(q.take(), Some(Data::Closed(t)) if t == "gone"));
        assert!(matches!(q.take(), Some(Data::Closed(t)) if t == "end"));
        assert!(q.take().is_none());
        assert_eq!(q.lock().bytes, 0);
    }

    #[test]
    fn a_closed_queue_keeps_nothing() {
        let q = RelayQueue::new(1 << 20, 1 << 20);
        q.push(SessionId(1), frame(10, 1)).unwrap();
        q.close();
        q.push(SessionId(1), frame(10, 1)).unwrap();
        assert!(q.take().is_none());
    }
}
