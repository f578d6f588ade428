//! Streams: ordered byte streams multiplexed in a session, and the borrowed
//! [`Stream`] handle the application drives them with.

use std::collections::VecDeque;
use std::fmt;

use bytes::Bytes;

use super::flow::RecvWindow;
use super::frame::Frame;
use super::{Event, Session};

/// A stream's id. The handshake initiator's streams are even, the responder's odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// Why a write did not take any bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// No credit now; [`Event::StreamWritable`] tells when to try again.
    #[error("blocked by flow control")]
    Blocked,
    /// The peer asked to stop with this code; the stream was reset.
    #[error("the peer stopped the stream with code {0}")]
    Stopped(u32),
    /// The stream was finished or reset locally.
    #[error("the stream's send side is closed")]
    Finished,
    /// No such stream (never opened, or done and forgotten).
    #[error("unknown stream")]
    UnknownStream,
}

/// Why a read returned no data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Nothing buffered yet; [`Event::StreamReadable`] tells when to try again.
    #[error("no data buffered")]
    Blocked,
    /// The peer reset the stream with this code.
    #[error("the peer reset the stream with code {0}")]
    Reset(u32),
    /// The stream was stopped locally.
    #[error("the stream's receive side was stopped")]
    Stopped,
    /// No such stream (never opened, or done and forgotten).
    #[error("unknown stream")]
    UnknownStream,
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The handshake has not finished or the session is closed.
    #[error("the session is not connected")]
    NotConnected,
    /// The peer's limit of concurrent streams is reached.
    #[error("too many open streams")]
    Limit,
}

/// The sending half of a stream.
#[derive(Debug)]
pub(super) struct SendHalf {
    /// Bytes the application wrote (and committed credit for).
    pub written: u64,
    /// Bytes put into packets.
    pub sent: u64,
    /// Bytes the peer acknowledged (tracked for one-chunk mode).
    pub acked: u64,
    /// Written but not yet in a packet.
    pub pending: VecDeque<Bytes>,
    /// The peer's credit: an absolute offset.
    pub max: u64,
    /// `finish()` was called.
    pub fin: bool,
    /// The FIN went out.
    pub fin_sent: bool,
    /// Reset locally (or because the peer stopped the stream).
    pub reset: bool,
    /// The peer's stop code.
    pub stopped: Option<u32>,
    /// A write was refused; owe a `StreamWritable`.
    pub blocked: bool,
    /// At most one chunk unacknowledged.
    pub one_chunk: bool,
}

impl SendHalf {
    fn new(max: u64) -> Self {
        Self {
            written: 0,
            sent: 0,
            acked: 0,
            pending: VecDeque::new(),
            max,
            fin: false,
            fin_sent: false,
            reset: false,
            stopped: None,
            blocked: false,
            one_chunk: false,
        }
    }

    /// Whether there is something to put in a packet.
    pub fn has_output(&self) -> bool {
        !self.reset && (!self.pending.is_empty() || (self.fin && !self.fin_sent))
    }

    fn done(&self) -> bool {
        self.reset || self.fin_sent
    }
}

/// The receiving half of a stream.
#[derive(Debug)]
pub(super) struct RecvHalf {
    /// Credit granted to the peer.
    pub window: RecvWindow,
    /// Bytes received (the next expected offset).
    pub received: u64,
    /// Bytes the application read (or that were discarded).
    pub read: u64,
    /// Received, not yet read.
    pub buf: VecDeque<Bytes>,
    /// The stream ends at this offset.
    pub fin_at: Option<u64>,
    /// The peer reset the stream.
    pub reset: Option<u32>,
    /// The application stopped reading.
    pub stopped: bool,
    /// The application saw the end (FIN, reset or stop).
    pub done: bool,
    /// A `StreamReadable` is outstanding.
    pub notified: bool,
}

impl RecvHalf {
    fn new(window: RecvWindow) -> Self {
        Self {
            window,
            received: 0,
            read: 0,
            buf: VecDeque::new(),
            fin_at: None,
            reset: None,
            stopped: false,
            done: false,
            notified: false,
        }
    }

    /// Bytes buffered for the application.
    pub fn buffered(&self) -> u64 {
        self.received - self.read
    }
}

/// Both halves of a stream.
#[derive(Debug)]
pub(super) struct StreamState {
    pub send: SendHalf,
    pub recv: RecvHalf,
}

impl StreamState {
    pub fn new(send_max: u64, recv_window: RecvWindow) -> Self {
        Self {
            send: SendHalf::new(send_max),
            recv: RecvHalf::new(recv_window),
        }
    }

    /// Both directions are over and the application knows it: the state can go.
    pub fn is_done(&self) -> bool {
        self.send.done() && self.recv.done
    }
}

/// A borrowed handle on one stream: `session.stream(id)`.
#[derive(Debug)]
pub struct Stream<'a> {
    pub(super) session: &'a mut Session,
    pub(super) id: StreamId,
}

impl Stream<'_> {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Queues as much of `data` as credit allows and returns how much that was.
    /// Never returns `Ok(0)` for non-empty `data`: no credit is `Err(Blocked)`.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        let max_chunk = self.session.config.max_frame_payload as u64;
        let session_credit = self
            .session
            .send_max_data
            .saturating_sub(self.session.sent_data);
        let s = self
            .session
            .streams
            .get_mut(&self.id)
            .ok_or(WriteError::UnknownStream)?;
        let send = &mut s.send;
        if let Some(code) = send.stopped {
            return Err(WriteError::Stopped(code));
        }
        if send.fin || send.reset {
            return Err(WriteError::Finished);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let mut credit = (send.max - send.written).min(session_credit);
        if send.one_chunk {
            credit = if send.acked < send.written {
                0
            } else {
                credit.min(max_chunk)
            };
        }
        let n = (data.len() as u64).min(credit) as usize;
        if n < data.len() {
            // The writer has more than the peer's credit allows: the path
            // may be what holds it back (see `choice`).
            self.session.choice.note_blocked();
        }
        if n == 0 {
            send.blocked = true;
            return Err(WriteError::Blocked);
        }
        send.pending.push_back(Bytes::copy_from_slice(&data[..n]));
        send.written += n as u64;
        self.session.sent_data += n as u64;
        self.session.send_buffered += n as u64;
        Ok(n)
    }

    /// Reads up to `max` bytes: `Ok(None)` once the stream finished.
    pub fn read(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        let s = self
            .session
            .streams
            .get_mut(&self.id)
            .ok_or(ReadError::UnknownStream)?;
        let recv = &mut s.recv;
        if let Some(code) = recv.reset {
            recv.done = true;
            self.session.forget_if_done(self.id);
            return Err(ReadError::Reset(code));
        }
        if recv.stopped {
            return Err(ReadError::Stopped);
        }
        let Some(front) = recv.buf.front_mut() else {
            recv.notified = false;
            if recv.fin_at == Some(recv.read) {
                recv.done = true;
                self.session.forget_if_done(self.id);
                return Ok(None);
            }
            return Err(ReadError::Blocked);
        };
        let chunk = if front.len() <= max {
            recv.buf.pop_front().unwrap_or_default()
        } else {
            front.split_to(max)
        };
        let n = chunk.len() as u64;
        recv.read += n;
        recv.window.on_read(n);
        self.session.consumed(self.id, n);
        Ok(Some(chunk))
    }

    /// Ends the send side after what was written (half-close).
    pub fn finish(&mut self) -> Result<(), WriteError> {
        let s = self
            .session
            .streams
            .get_mut(&self.id)
            .ok_or(WriteError::UnknownStream)?;
        if let Some(code) = s.send.stopped {
            return Err(WriteError::Stopped(code));
        }
        if s.send.fin || s.send.reset {
            return Err(WriteError::Finished);
        }
        s.send.fin = true;
        Ok(())
    }

    /// Abandons the send side; the peer's reads fail with `ReadError::Reset(code)`.
    pub fn reset(&mut self, code: u32) -> Result<(), WriteError> {
        self.session.reset_send(self.id, code)
    }

    /// Stops the receive side; the peer's writes fail with `WriteError::Stopped(code)`.
    pub fn stop(&mut self, code: u32) -> Result<(), ReadError> {
        let s = self
            .session
            .streams
            .get_mut(&self.id)
            .ok_or(ReadError::UnknownStream)?;
        let recv = &mut s.recv;
        if recv.stopped || recv.done {
            return Ok(());
        }
        recv.stopped = true;
        recv.done = true;
        let discarded = recv.buffered();
        recv.buf.clear();
        recv.read = recv.received;
        if recv.fin_at.is_none() && recv.reset.is_none() {
            self.session.control.push_back(Frame::StopSending {
                id: self.id.0,
                code,
            });
        }
        self.session.consumed(self.id, discarded);
        self.session.forget_if_done(self.id);
        Ok(())
    }

    /// Keeps at most one chunk unacknowledged on this stream: each write takes at
    /// most one frame's worth and is refused until the previous one was acknowledged.
    pub fn set_one_chunk_in_flight(&mut self, on: bool) -> Result<(), WriteError> {
        let s = self
            .session
            .streams
            .get_mut(&self.id)
            .ok_or(WriteError::UnknownStream)?;
        s.send.one_chunk = on;
        Ok(())
    }
}

impl Session {
    /// Resets the send side of `id`, queueing `RESET_STREAM`.
    pub(super) fn reset_send(&mut self, id: StreamId, code: u32) -> Result<(), WriteError> {
        let s = self.streams.get_mut(&id).ok_or(WriteError::UnknownStream)?;
        if s.send.reset || s.send.fin_sent {
            return Err(WriteError::Finished);
        }
        s.send.reset = true;
        let unsent: u64 = s.send.pending.drain(..).map(|b| b.len() as u64).sum();
        self.send_buffered -= unsent;
        self.control.push_back(Frame::ResetStream {
            id: id.0,
            code,
            final_size: s.send.written,
        });
        self.forget_if_done(id);
        Ok(())
    }

    /// The application consumed `n` bytes of stream `id` (read or discarded):
    /// credit may be due on the stream and the session.
    pub(super) fn consumed(&mut self, id: StreamId, n: u64) {
        self.recv_buffered -= n;
        self.recv_window.on_read(n);
        self.grants_due.insert(id);
        self.max_data_due = true;
    }

    /// Drops a stream whose both directions are over.
    pub(super) fn forget_if_done(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(StreamState::is_done) {
            self.streams.remove(&id);
            self.grants_due.remove(&id);
            if self.open_blocked && (id.0 & 1) == (self.next_local_stream & 1) {
                self.open_blocked = false;
                self.events.push_back(Event::StreamOpenable);
            }
        }
    }

    /// Emits `StreamWritable` for blocked streams that have credit again.
    pub(super) fn wake_writers(&mut self) {
        let session_credit = self.send_max_data > self.sent_data;
        for (id, s) in &mut self.streams {
            let send = &mut s.send;
            let stream_credit = if send.one_chunk {
                send.acked >= send.written
            } else {
                send.max > send.written
            };
            let stopped = send.stopped.is_some();
            if send.blocked && ((session_credit && stream_credit) || stopped) {
                send.blocked = false;
                self.events.push_back(Event::StreamWritable(*id));
            }
        }
    }
}
