//! One connection's queue of encoded control frames.
//!
//! A bounded queue like a channel, but one that holds no memory while empty: a
//! server keeps one per idle device, and a channel allocates its first block of
//! slots when it is made.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

/// Encoded control frames waiting for one connection's writer.
#[derive(Debug)]
pub(crate) struct ControlQueue {
    inner: Mutex<Inner>,
    ready: Notify,
    cap: usize,
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<String>,
    closed: bool,
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue holds its capacity: the connection does not read.
    Full,
    /// The writer is gone.
    Closed,
}

impl ControlQueue {
    /// A queue of at most `cap` frames.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame` behind the others.
    pub(crate) fn push(&self, frame: String) -> Result<(), Refused> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(Refused::Closed);
        }
        if inner.frames.len() >= self.cap {
            return Err(Refused::Full);
        }
        inner.frames.push_back(frame);
        drop(inner);
        self.ready.notify_one();
        Ok(())
    }

    /// The oldest frame, if any. Taking the last one gives its memory back.
    pub(crate) fn take(&self) -> Option<String> {
        let mut inner = self.lock();
        let frame = inner.frames.pop_front()?;
        if inner.frames.is_empty() {
            inner.frames = VecDeque::new();
        } else {
            self.ready.notify_one();
        }
        Some(frame)
    }

    /// Completes when a frame may be waiting.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Refuses every later frame and drops those queued: the writer is gone.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.frames = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_in_order_up_to_the_capacity() {
        let q = ControlQueue::new(2);
        assert_eq!(q.push("a".into()), Ok(()));
        assert_eq!(q.push("b".into()), Ok(()));
        assert_eq!(q.push("c".into()), Err(Refused::Full));
        assert_eq!(q.take().as_deref(), Some("a"));
        assert_eq!(q.push("c".into()), Ok(()));
        assert_eq!(q.take().as_deref(), Some("b"));
        assert_eq!(q.take().as_deref(), Some("c"));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn an_empty_queue_holds_no_memory() {
        let q = ControlQueue::new(32);
        for n in 0..32 {
            assert_eq!(q.push(format!("frame {n}")), Ok(()));
        }
        while q.take().is_some() {}
        assert_eq!(q.lock().frames.capacity(), 0);
    }

    #[test]
    fn a_closed_queue_refuses_and_forgets() {
        let q = ControlQueue::new(4);
        assert_eq!(q.push("a".into()), Ok(()));
        q.close();
        assert_eq!(q.take(), None);
        assert_eq!(q.push("b".into()), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_reader() {
        let q = std::sync::Arc::new(ControlQueue::new(4));
        let reader = {
            let q = q.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(f) = q.take() {
                        return f;
                    }
                    q.ready().await;
                }
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(q.push("hello".into()), Ok(()));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        assert_eq!(got.ok().and_then(Result::ok).as_deref(), Some("hello"));
    }
}
