//! Streams: ordered byte streams multiplexed in a session ([`Streams`], the
//! session's part for them), and the borrowed [`Stream`] handle the application
//! drives one with. Flow control is `flow`'s: a stream's send side holds a
//! [`SendWindow`], its receive side a [`RecvWindow`].

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};

use super::flow::{Credit, RecvWindow, SendWindow};
use super::frame::Frame;
use super::handshake::Role;
use super::{Event, ProtocolError, StreamId};

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
    /// The peer's credit and what was written against it.
    pub window: SendWindow,
    /// Bytes put into packets.
    pub sent: u64,
    /// Written but not yet in a packet.
    pub pending: VecDeque<Bytes>,
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
}

impl SendHalf {
    fn new(max: u64) -> Self {
        Self {
            window: SendWindow::new(max),
            sent: 0,
            pending: VecDeque::new(),
            fin: false,
            fin_sent: false,
            reset: false,
            stopped: None,
            blocked: false,
        }
    }

    /// Whether there is something to put in a packet.
    fn has_output(&self) -> bool {
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
    fn buffered(&self) -> u64 {
        self.received - self.read
    }

    /// Whether the peer may still be granted more.
    fn wants_credit(&self) -> bool {
        !self.stopped && self.fin_at.is_none() && self.reset.is_none()
    }
}

/// Both halves of a stream.
#[derive(Debug)]
pub(super) struct StreamState {
    pub send: SendHalf,
    pub recv: RecvHalf,
}

impl StreamState {
    /// A stream the peer lets this side send `send_max` bytes on, receiving
    /// within `recv_window`.
    pub fn new(send_max: u64, recv_window: RecvWindow) -> Self {
        Self {
            send: SendHalf::new(send_max),
            recv: RecvHalf::new(recv_window),
        }
    }

    /// Both directions are over and the application knows it: the state can go.
    fn is_done(&self) -> bool {
        self.send.done() && self.recv.done
    }
}

/// The session's streams: their state, the ids each side opens next, the
/// streams the peer opened that the application has not accepted, and whose
/// turn it is to send.
#[derive(Debug)]
pub(super) struct Streams {
    map: BTreeMap<StreamId, StreamState>,
    next_local: u64,
    next_remote: u64,
    /// `open` was refused for the peer's limit: tell when a stream ends.
    open_blocked: bool,
    incoming: VecDeque<StreamId>,
    round_robin: u64,
}

impl Streams {
    /// The handshake initiator's streams are even, the responder's odd.
    pub fn new(role: Role) -> Self {
        let (next_local, next_remote) = match role {
            Role::Initiator => (0, 1),
            Role::Responder => (1, 0),
        };
        Self {
            map: BTreeMap::new(),
            next_local,
            next_remote,
            open_blocked: false,
            incoming: VecDeque::new(),
            round_robin: 0,
        }
    }

    /// Stream `id`'s state, if it exists.
    pub fn get_mut(&mut self, id: StreamId) -> Option<&mut StreamState> {
        self.map.get_mut(&id)
    }

    /// Adds a new stream's state.
    pub fn insert(&mut self, id: StreamId, state: StreamState) {
        self.map.insert(id, state);
    }

    fn is_local(&self, id: StreamId) -> bool {
        (id.0 & 1) == (self.next_local & 1)
    }

    fn open_count(&self, local: bool) -> u64 {
        self.map
            .keys()
            .filter(|s| self.is_local(**s) == local)
            .count() as u64
    }

    /// The id of a new local stream, unless the peer's `limit` of open streams
    /// is reached ([`Event::StreamOpenable`] follows once one ends).
    pub fn next_local(&mut self, limit: u32) -> Result<StreamId, OpenError> {
        if self.open_count(true) >= u64::from(limit) {
            self.open_blocked = true;
            return Err(OpenError::Limit);
        }
        let id = StreamId(self.next_local);
        self.next_local += 2;
        Ok(id)
    }

    /// The peer named stream `id`: the ids of its streams this opens (every one
    /// of the peer's not yet seen, up to `id`), within our `limit`. An id of
    /// ours never opened is an error.
    pub fn opened_by_peer(
        &mut self,
        id: StreamId,
        limit: u32,
    ) -> Result<impl Iterator<Item = StreamId> + use<>, ProtocolError> {
        let first = self.next_remote;
        let mut count = 0;
        if self.is_local(id) {
            if id.0 >= self.next_local {
                return Err(ProtocolError::StreamState);
            }
        } else if id.0 >= first {
            count = (id.0 - first) / 2 + 1;
            if self.open_count(false) + count > u64::from(limit) {
                return Err(ProtocolError::StreamLimit);
            }
            self.next_remote = id.0 + 2;
        }
        Ok((0..count).map(move |i| StreamId(first + 2 * i)))
    }

    /// A stream the peer opened waits to be accepted.
    pub fn push_incoming(&mut self, id: StreamId) {
        self.incoming.push_back(id);
    }

    /// The next stream the peer opened.
    pub fn accept(&mut self) -> Option<StreamId> {
        self.incoming.pop_front()
    }

    /// The receive window of `id` if the peer may still be granted more on it.
    pub fn grantable(&mut self, id: StreamId) -> Option<&mut RecvWindow> {
        let s = self.map.get_mut(&id)?;
        s.recv.wants_credit().then_some(&mut s.recv.window)
    }

    /// The peer acknowledged stream `id` up to `end`.
    pub fn acked_to(&mut self, id: StreamId, end: u64) {
        if let Some(s) = self.map.get_mut(&id) {
            s.send.window.acked_to(end);
        }
    }

    /// Drops a stream whose both directions are over.
    pub fn forget_if_done(
        &mut self,
        id: StreamId,
        credit: &mut Credit,
        events: &mut VecDeque<Event>,
    ) {
        if !self.map.get(&id).is_some_and(StreamState::is_done) {
            return;
        }
        self.map.remove(&id);
        credit.forget(id);
        if self.open_blocked && self.is_local(id) {
            self.open_blocked = false;
            events.push_back(Event::StreamOpenable);
        }
    }

    /// Resets the send side of `id`, queueing `RESET_STREAM`.
    pub fn reset_send(
        &mut self,
        id: StreamId,
        code: u32,
        credit: &mut Credit,
        control: &mut VecDeque<Frame>,
        events: &mut VecDeque<Event>,
    ) -> Result<(), WriteError> {
        let s = self.map.get_mut(&id).ok_or(WriteError::UnknownStream)?;
        if s.send.reset || s.send.fin_sent {
            return Err(WriteError::Finished);
        }
        s.send.reset = true;
        let unsent: u64 = s.send.pending.drain(..).map(|b| b.len() as u64).sum();
        credit.unbuffered(unsent);
        control.push_back(Frame::ResetStream {
            id: id.0,
            code,
            final_size: s.send.window.written(),
        });
        self.forget_if_done(id, credit, events);
        Ok(())
    }

    /// Emits `StreamWritable` for blocked streams that have credit again (or
    /// were stopped by the peer).
    pub fn wake_writers(&mut self, credit: &Credit, events: &mut VecDeque<Event>) {
        let session_credit = credit.available() > 0;
        for (id, s) in &mut self.map {
            let send = &mut s.send;
            let stopped = send.stopped.is_some();
            if send.blocked && ((session_credit && send.window.has_credit()) || stopped) {
                send.blocked = false;
                events.push_back(Event::StreamWritable(*id));
            }
        }
    }

    /// Stream data from the peer, on a stream that exists.
    pub fn on_data(
        &mut self,
        id: StreamId,
        offset: u64,
        fin: bool,
        data: Bytes,
        credit: &mut Credit,
        events: &mut VecDeque<Event>,
    ) -> Result<(), ProtocolError> {
        let Some(s) = self.map.get_mut(&id) else {
            return Ok(());
        };
        let recv = &mut s.recv;
        let n = data.len() as u64;
        let end = offset + n;
        if offset != recv.received
            || recv.fin_at.is_some_and(|f| end > f || (fin && end != f))
            || recv.reset.is_some()
        {
            return Err(ProtocolError::StreamState);
        }
        if !recv.window.allows(end) || !credit.recv_allows(n) {
            return Err(ProtocolError::FlowControl);
        }
        recv.received = end;
        if fin {
            recv.fin_at = Some(end);
        }
        credit.received(n);
        if recv.stopped {
            recv.read = end;
            credit.release(n);
            return Ok(());
        }
        if !data.is_empty() {
            recv.buf.push_back(data);
        }
        credit.buffered(n);
        if !recv.notified {
            recv.notified = true;
            events.push_back(Event::StreamReadable(id));
        }
        Ok(())
    }

    /// The peer reset stream `id` (which exists) at `final_size`.
    pub fn on_reset(
        &mut self,
        id: StreamId,
        code: u32,
        final_size: u64,
        credit: &mut Credit,
        events: &mut VecDeque<Event>,
    ) -> Result<(), ProtocolError> {
        let Some(s) = self.map.get_mut(&id) else {
            return Ok(());
        };
        let recv = &mut s.recv;
        if final_size < recv.received
            || recv.fin_at.is_some_and(|f| f != final_size)
            || !recv.window.allows(final_size)
            || !credit.recv_allows(final_size - recv.received)
        {
            return Err(ProtocolError::FlowControl);
        }
        if recv.reset.is_some() {
            return Ok(());
        }
        let unseen = final_size - recv.received;
        let unread = recv.buffered();
        recv.received = final_size;
        recv.read = final_size;
        recv.buf.clear();
        recv.reset = Some(code);
        let notify = !recv.notified && !recv.stopped;
        recv.notified = true;
        credit.received(unseen);
        credit.taken(unread);
        credit.release(unseen + unread);
        if notify {
            events.push_back(Event::StreamReadable(id));
        }
        Ok(())
    }

    /// The peer asked to stop sending on stream `id`: the send side is reset
    /// with its code.
    pub fn on_stop_sending(
        &mut self,
        id: StreamId,
        code: u32,
        credit: &mut Credit,
        control: &mut VecDeque<Frame>,
        events: &mut VecDeque<Event>,
    ) {
        let Some(s) = self.map.get_mut(&id) else {
            return;
        };
        if s.send.stopped.is_some() {
            return;
        }
        s.send.stopped = Some(code);
        s.send.blocked = true;
        // The stream ends here: whatever was not sent will never be.
        let _ = self.reset_send(id, code, credit, control, events);
        self.wake_writers(credit, events);
    }

    /// The next stream frame, round-robin over the streams with something to
    /// send, at most `max` data bytes; and the stream end it reaches if the
    /// stream is in one-chunk mode.
    pub fn next_chunk(
        &mut self,
        max: usize,
        credit: &mut Credit,
        events: &mut VecDeque<Event>,
    ) -> Option<(Frame, Option<(StreamId, u64)>)> {
        let id = self
            .map
            .range(StreamId(self.round_robin)..)
            .chain(self.map.range(..StreamId(self.round_robin)))
            .find(|(_, s)| s.send.has_output())
            .map(|(id, _)| *id)?;
        self.round_robin = id.0 + 1;
        let s = self.map.get_mut(&id)?;
        let send = &mut s.send;
        let alone = send.pending.len() == 1;
        let data = match send.pending.front_mut() {
            // The first buffered write fills the frame (or is all there is):
            // a slice of it, no copy.
            Some(front) if front.len() >= max || alone => {
                let data = front.split_to(max.min(front.len()));
                if front.is_empty() {
                    send.pending.pop_front();
                }
                data
            }
            _ => {
                let mut data = BytesMut::new();
                while data.len() < max {
                    let Some(front) = send.pending.front_mut() else {
                        break;
                    };
                    let take = (max - data.len()).min(front.len());
                    data.extend_from_slice(&front.split_to(take));
                    if front.is_empty() {
                        send.pending.pop_front();
                    }
                }
                data.freeze()
            }
        };
        let offset = send.sent;
        send.sent += data.len() as u64;
        credit.unbuffered(data.len() as u64);
        let fin = send.fin && send.pending.is_empty();
        send.fin_sent |= fin;
        let end = send.window.one_chunk().then_some((id, send.sent));
        let frame = Frame::Stream {
            id: id.0,
            offset,
            fin,
            data,
        };
        self.forget_if_done(id, credit, events);
        Some((frame, end))
    }
}

/// A borrowed handle on one stream: `session.stream(id)`. It holds the
/// session's streams and credit, and the queues a stream adds frames and
/// events to, nothing else of it.
#[derive(Debug)]
pub struct Stream<'a> {
    pub(super) id: StreamId,
    /// The most data bytes per frame (one chunk in one-chunk mode).
    pub(super) max_chunk: usize,
    pub(super) streams: &'a mut Streams,
    pub(super) credit: &'a mut Credit,
    pub(super) control: &'a mut VecDeque<Frame>,
    pub(super) events: &'a mut VecDeque<Event>,
}

impl Stream<'_> {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Queues as much of `data` as credit allows and returns how much that was.
    /// Never returns `Ok(0)` for non-empty `data`: no credit is `Err(Blocked)`.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        let s = self
            .streams
            .get_mut(self.id)
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
        let credit = send
            .window
            .available(self.credit.available(), self.max_chunk as u64);
        let n = (data.len() as u64).min(credit) as usize;
        if n < data.len() {
            // The writer has more than the peer's credit allows: the path
            // may be what holds it back (see `choice`).
            self.credit.note_writer_blocked();
        }
        if n == 0 {
            send.blocked = true;
            return Err(WriteError::Blocked);
        }
        send.pending.push_back(Bytes::copy_from_slice(&data[..n]));
        send.window.wrote(n as u64);
        self.credit.wrote(n as u64);
        Ok(n)
    }

    /// Reads up to `max` bytes: `Ok(None)` once the stream finished.
    pub fn read(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        let s = self
            .streams
            .get_mut(self.id)
            .ok_or(ReadError::UnknownStream)?;
        let recv = &mut s.recv;
        if let Some(code) = recv.reset {
            recv.done = true;
            self.forget_if_done();
            return Err(ReadError::Reset(code));
        }
        if recv.stopped {
            return Err(ReadError::Stopped);
        }
        let Some(front) = recv.buf.front_mut() else {
            recv.notified = false;
            if recv.fin_at == Some(recv.read) {
                recv.done = true;
                self.forget_if_done();
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
        self.credit.consumed(self.id, n);
        Ok(Some(chunk))
    }

    /// Ends the send side after what was written (half-close).
    pub fn finish(&mut self) -> Result<(), WriteError> {
        let s = self
            .streams
            .get_mut(self.id)
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
        self.streams
            .reset_send(self.id, code, self.credit, self.control, self.events)
    }

    /// Stops the receive side; the peer's writes fail with `WriteError::Stopped(code)`.
    pub fn stop(&mut self, code: u32) -> Result<(), ReadError> {
        let s = self
            .streams
            .get_mut(self.id)
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
            self.control.push_back(Frame::StopSending {
                id: self.id.0,
                code,
            });
        }
        self.credit.consumed(self.id, discarded);
        self.forget_if_done();
        Ok(())
    }

    /// Keeps at most one chunk unacknowledged on this stream: each write takes at
    /// most one frame's worth and is refused until the previous one was acknowledged.
    pub fn set_one_chunk_in_flight(&mut self, on: bool) -> Result<(), WriteError> {
        let s = self
            .streams
            .get_mut(self.id)
            .ok_or(WriteError::UnknownStream)?;
        s.send.window.set_one_chunk(on);
        Ok(())
    }

    fn forget_if_done(&mut self) {
        self.streams
            .forget_if_done(self.id, self.credit, self.events);
    }
}
