//! Byte streams inside a connection, as tokio `AsyncRead` + `AsyncWrite`.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use peerpipe_proto::session::{ReadError, StreamId, WriteError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Handle, State};
use crate::StreamError;

/// Tasks waiting to read or write a stream.
#[derive(Default)]
pub(crate) struct StreamWakers {
    readers: HashMap<StreamId, Waker>,
    writers: HashMap<StreamId, Waker>,
}

impl StreamWakers {
    pub(crate) fn wake_reader(&mut self, id: StreamId) {
        if let Some(w) = self.readers.remove(&id) {
            w.wake();
        }
    }

    pub(crate) fn wake_writer(&mut self, id: StreamId) {
        if let Some(w) = self.writers.remove(&id) {
            w.wake();
        }
    }

    fn set_reader(&mut self, id: StreamId, waker: &Waker) {
        set(&mut self.readers, id, waker);
    }

    fn set_writer(&mut self, id: StreamId, waker: &Waker) {
        set(&mut self.writers, id, waker);
    }

    pub(crate) fn wake_all(&mut self) {
        for (_, w) in self.readers.drain().chain(self.writers.drain()) {
            w.wake();
        }
    }
}

/// A byte stream inside a [`Connection`](crate::Connection), from
/// [`Connection::open_stream`](crate::Connection::open_stream) or
/// [`Connection::accept_stream`](crate::Connection::accept_stream).
///
/// Both directions are independent: write, then [`Stream::finish`] (or
/// `shutdown()`) to end the sending side; read until end of stream (`Ok(0)`).
/// Writes take only what the peer granted: a slow reader on the other device
/// slows the writer here, with bounded memory on both sides. Errors are
/// [`io::Error`]s carrying a [`StreamError`] ([`StreamError::of`]).
///
/// Dropping a stream finishes its sending side and stops its receiving side.
/// Written bytes sit in the connection until acknowledged; call
/// [`Connection::close`](crate::Connection::close) to wait until the peer has them.
pub struct Stream {
    conn: Arc<Handle>,
    id: StreamId,
    /// The end of the receiving side was read (or the side was stopped).
    read_done: bool,
    /// The sending side was finished or reset.
    write_done: bool,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id.0)
            .field("session", &self.conn.0.id)
            .finish_non_exhaustive()
    }
}

fn closed_error(st: &State) -> Option<io::Error> {
    st.closed
        .as_ref()
        .map(|reason| StreamError::Closed(reason.clone()).into())
}

impl Stream {
    pub(crate) fn new(conn: Arc<Handle>, id: StreamId) -> Self {
        Self {
            conn,
            id,
            read_done: false,
            write_done: false,
        }
    }

    /// The stream's number within its connection.
    pub fn id(&self) -> u64 {
        self.id.0
    }

    /// Ends the sending side after what was written; the peer reads to the end,
    /// then sees end of stream. Same as `AsyncWriteExt::shutdown`.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.write_done = true;
        let inner = &self.conn.0;
        let result = {
            let mut st = inner.lock();
            match st.session.stream(self.id).finish() {
                Ok(()) => Ok(()),
                Err(WriteError::Stopped(code)) => Err(StreamError::Stopped(code)),
                Err(_) => Err(StreamError::Finished),
            }
        };
        inner.wake_driver();
        result
    }

    /// Abandons the sending side with an application `code`: unsent data is
    /// dropped and the peer's reads fail with [`StreamError::Reset`].
    pub fn reset(&mut self, code: u32) -> Result<(), StreamError> {
        self.write_done = true;
        let inner = &self.conn.0;
        let result = inner
            .lock()
            .session
            .stream(self.id)
            .reset(code)
            .map_err(|_| StreamError::Finished);
        inner.wake_driver();
        result
    }

    /// Stops reading with an application `code`: buffered data is dropped and
    /// the peer's writes fail with [`StreamError::Stopped`].
    pub fn stop(&mut self, code: u32) {
        self.read_done = true;
        let inner = &self.conn.0;
        let _ = inner.lock().session.stream(self.id).stop(code);
        inner.wake_driver();
    }

    /// With `on`, at most one chunk (one frame) of this stream is unacknowledged
    /// at a time: each write takes at most a chunk and waits until the previous
    /// one arrived. For callers that want the least data in flight.
    pub fn set_one_chunk_in_flight(&mut self, on: bool) -> Result<(), StreamError> {
        self.conn
            .0
            .lock()
            .session
            .stream(self.id)
            .set_one_chunk_in_flight(on)
            .map_err(|_| StreamError::Finished)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_done || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let inner = &this.conn.0;
        let mut st = inner.lock();
        match st.session.stream(this.id).read(buf.remaining()) {
            Ok(Some(data)) => {
                buf.put_slice(&data);
                // Fill the buffer with what else is there: fewer, larger reads.
                while buf.remaining() > 0 {
                    match st.session.stream(this.id).read(buf.remaining()) {
                        Ok(Some(more)) => buf.put_slice(&more),
                        _ => break,
                    }
                }
                drop(st);
                // Reading grants the peer credit.
                inner.wake_driver();
                Poll::Ready(Ok(()))
            }
            Ok(None) | Err(ReadError::Stopped | ReadError::UnknownStream) => {
                this.read_done = true;
                Poll::Ready(Ok(()))
            }
            Err(ReadError::Reset(code)) => {
                this.read_done = true;
                Poll::Ready(Err(StreamError::Reset(code).into()))
            }
            Err(_) => {
                if let Some(e) = closed_error(&st) {
                    return Poll::Ready(Err(e));
                }
                st.wakers.set_reader(this.id, cx.waker());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let inner = &this.conn.0;
        let mut st = inner.lock();
        if let Some(e) = closed_error(&st) {
            return Poll::Ready(Err(e));
        }
        match st.session.stream(this.id).write(buf) {
            Ok(n) => {
                drop(st);
                inner.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) => {
                st.wakers.set_writer(this.id, cx.waker());
                Poll::Pending
            }
            Err(WriteError::Stopped(code)) => Poll::Ready(Err(StreamError::Stopped(code).into())),
            Err(_) => Poll::Ready(Err(StreamError::Finished.into())),
        }
    }

    /// Written data is already queued in the connection: nothing to flush.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_done {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(match this.finish() {
            Ok(()) | Err(StreamError::Finished) => Ok(()),
            Err(e) => Err(e.into()),
        })
    }
}

fn set(map: &mut HashMap<StreamId, Waker>, id: StreamId, waker: &Waker) {
    match map.get_mut(&id) {
        Some(w) if w.will_wake(waker) => {}
        Some(w) => w.clone_from(waker),
        None => {
            map.insert(id, waker.clone());
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let inner = &self.conn.0;
        {
            let mut st = inner.lock();
            let mut stream = st.session.stream(self.id);
            if !self.write_done {
                let _ = stream.finish();
            }
            if !self.read_done {
                let _ = stream.stop(0);
            }
        }
        inner.wake_driver();
    }
}
