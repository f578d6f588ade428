//! Flow control, both ways: the one place that decides how much may be sent and
//! granted.
//!
//! - Receive side: [`RecvWindow`], a window that the application's reads move and
//!   that grows toward the bandwidth-delay product; each stream has one, and so
//!   has the session as a whole (all streams and messages).
//! - Send side: [`SendWindow`], what the peer granted a stream and what was
//!   written against it (with the one-chunk mode); the session-wide grant is in
//!   [`Credit`].
//! - [`Credit`]: the session's books of both: the peer's grant and what was
//!   committed against it, bytes received, buffered and given back, and which
//!   grants are due.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Config, StreamId};
use crate::time::Instant;

/// A receive window: how far the peer may send, granted as the application reads.
///
/// The peer may send up to `max` (an absolute offset). Once the application has
/// read half a window past the last grant, a new grant `read + window` is due. If
/// the previous grant was used up within two RTTs, the window was the bottleneck:
/// it doubles, up to the cap (QUIC/quinn auto-tuning).
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u64,
    cap: u64,
    max: u64,
    read: u64,
    last_grant: Option<Instant>,
}

impl RecvWindow {
    /// A window of `initial` bytes that may grow to `cap`.
    pub fn new(initial: u64, cap: u64) -> Self {
        Self {
            window: initial,
            cap: cap.max(initial),
            max: initial,
            read: 0,
            last_grant: None,
        }
    }

    /// A window of `window` bytes (at most `cap`) whose peer was told only of
    /// `advertised` so far: the first grant, due at once, tells it the rest.
    /// New streams start so with the window earlier streams grew to, instead of
    /// growing from the small initial one each time.
    pub fn granting(advertised: u64, window: u64, cap: u64) -> Self {
        let cap = cap.max(advertised);
        Self {
            window: window.clamp(advertised, cap),
            cap,
            max: advertised,
            read: 0,
            last_grant: None,
        }
    }

    /// The offset the peer may send up to.
    #[cfg(test)]
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The current window size.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Whether receiving up to `end` stays within the grant.
    pub fn allows(&self, end: u64) -> bool {
        end <= self.max
    }

    /// The application consumed `n` more bytes.
    pub fn on_read(&mut self, n: u64) {
        self.read += n;
    }

    /// A new grant, if one is due: half a window read since the last one.
    pub fn poll_grant(&mut self, now: Instant, rtt: Duration) -> Option<u64> {
        if self.max - self.read > self.window / 2 {
            return None;
        }
        if self
            .last_grant
            .is_some_and(|last| now.saturating_duration_since(last) < rtt * 2)
        {
            self.window = (self.window * 2).min(self.cap);
        }
        self.last_grant = Some(now);
        self.max = self.read + self.window;
        Some(self.max)
    }
}

/// A stream's send credit: the peer's grant, and what the application wrote
/// against it.
#[derive(Debug)]
pub(super) struct SendWindow {
    /// The peer's grant: an absolute offset.
    max: u64,
    /// Bytes the application wrote (and committed credit for).
    written: u64,
    /// Bytes the peer acknowledged (tracked for one-chunk mode).
    acked: u64,
    /// At most one chunk unacknowledged.
    one_chunk: bool,
}

impl SendWindow {
    /// A window the peer granted `max` bytes of.
    pub fn new(max: u64) -> Self {
        Self {
            max,
            written: 0,
            acked: 0,
            one_chunk: false,
        }
    }

    /// How many bytes a write may take now, with `session` bytes of session
    /// credit left: the lesser of both grants; in one-chunk mode at most
    /// `max_chunk`, and nothing while the previous chunk is unacknowledged.
    pub fn available(&self, session: u64, max_chunk: u64) -> u64 {
        let credit = (self.max - self.written).min(session);
        match self.one_chunk {
            false => credit,
            true if self.acked < self.written => 0,
            true => credit.min(max_chunk),
        }
    }

    /// Whether the stream's own grant would let a write through now.
    pub fn has_credit(&self) -> bool {
        if self.one_chunk {
            self.acked >= self.written
        } else {
            self.max > self.written
        }
    }

    /// The peer raised its grant to `max`; whether that is news.
    pub fn raise(&mut self, max: u64) -> bool {
        let raised = max > self.max;
        self.max = self.max.max(max);
        raised
    }

    /// The application wrote `n` bytes.
    pub fn wrote(&mut self, n: u64) {
        self.written += n;
    }

    /// Bytes written so far: the final size of a reset.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The peer acknowledged the stream up to `end`.
    pub fn acked_to(&mut self, end: u64) {
        self.acked = self.acked.max(end);
    }

    /// Whether the stream keeps at most one chunk unacknowledged.
    pub fn one_chunk(&self) -> bool {
        self.one_chunk
    }

    /// Turns one-chunk mode on or off.
    pub fn set_one_chunk(&mut self, on: bool) {
        self.one_chunk = on;
    }
}

/// The session's credit books, both ways.
#[derive(Debug)]
pub(super) struct Credit {
    /// The peer's session grant: an absolute offset over streams and messages.
    send_max: u64,
    /// Data bytes committed against it (written to streams, taken from messages).
    sent: u64,
    /// Written to streams, not yet put in a packet.
    send_buffered: u64,
    /// A writer had more than its credit took since this was last taken.
    writer_blocked: bool,
    /// The session receive window.
    recv_window: RecvWindow,
    /// Data bytes received (or accounted for by a reset).
    received: u64,
    /// Received, not yet taken by the application.
    recv_buffered: u64,
    /// Reads since the last session grant: one may be due.
    max_data_due: bool,
    /// Streams that were read from since their last grant.
    grants_due: BTreeSet<StreamId>,
    /// The largest receive window a stream grew to: where new streams start.
    stream_window_learnt: u64,
}

impl Credit {
    /// Books for a session with `config`; the peer grants nothing until its
    /// handshake announces its window.
    pub fn new(config: &Config) -> Self {
        Self {
            send_max: 0,
            sent: 0,
            send_buffered: 0,
            writer_blocked: false,
            recv_window: RecvWindow::new(u64::from(config.session_window), config.max_window),
            received: 0,
            recv_buffered: 0,
            max_data_due: false,
            grants_due: BTreeSet::new(),
            stream_window_learnt: u64::from(config.stream_window),
        }
    }

    // ---- Send side ----

    /// Session credit left to send.
    pub fn available(&self) -> u64 {
        self.send_max.saturating_sub(self.sent)
    }

    /// The peer raised its session grant to `max`; whether that is news.
    pub fn raise(&mut self, max: u64) -> bool {
        let raised = max > self.send_max;
        self.send_max = self.send_max.max(max);
        raised
    }

    /// A stream write took `n` bytes of credit; they wait to be put in a packet.
    pub fn wrote(&mut self, n: u64) {
        self.sent += n;
        self.send_buffered += n;
    }

    /// `n` bytes of a message went into a packet.
    pub fn spent(&mut self, n: u64) {
        self.sent += n;
    }

    /// `n` written bytes left the buffer: put in a packet, or dropped by a reset.
    pub fn unbuffered(&mut self, n: u64) {
        self.send_buffered -= n;
    }

    /// Stream bytes written but not yet in a packet.
    pub fn send_buffered(&self) -> u64 {
        self.send_buffered
    }

    /// A writer had more than its credit allowed.
    pub fn note_writer_blocked(&mut self) {
        self.writer_blocked = true;
    }

    /// Whether a writer was held back since the last call.
    pub fn take_writer_blocked(&mut self) -> bool {
        std::mem::take(&mut self.writer_blocked)
    }

    // ---- Receive side ----

    /// Whether `n` more bytes from the peer stay within the session's grant.
    pub fn recv_allows(&self, n: u64) -> bool {
        self.recv_window.allows(self.received + n)
    }

    /// `n` bytes arrived (or a reset accounted for them).
    pub fn received(&mut self, n: u64) {
        self.received += n;
    }

    /// `n` received bytes wait for the application.
    pub fn buffered(&mut self, n: u64) {
        self.recv_buffered += n;
    }

    /// The application took (or a reset dropped) `n` buffered bytes.
    pub fn taken(&mut self, n: u64) {
        self.recv_buffered -= n;
    }

    /// `n` received bytes are done with: the peer may have them back.
    pub fn release(&mut self, n: u64) {
        self.recv_window.on_read(n);
        self.max_data_due = true;
    }

    /// The application consumed `n` buffered bytes of stream `id` (read or
    /// discarded): a grant may be due on the stream and on the session.
    pub fn consumed(&mut self, id: StreamId, n: u64) {
        self.taken(n);
        self.release(n);
        self.grants_due.insert(id);
    }

    /// Bytes received, not yet taken by the application.
    pub fn recv_buffered(&self) -> u64 {
        self.recv_buffered
    }

    /// The session receive window now.
    pub fn recv_window(&self) -> u64 {
        self.recv_window.window()
    }

    /// The receive window of new stream `id`. It starts at the largest window a
    /// stream of this session grew to ([`RecvWindow::granting`]): a grant for
    /// the rest goes out before the stream's first frame, so that every stream
    /// (a share request's, say) does not climb from the small initial window
    /// again, round trip after round trip.
    pub fn stream_window(&mut self, id: StreamId, config: &Config) -> RecvWindow {
        let advertised = u64::from(config.stream_window);
        let window = RecvWindow::granting(advertised, self.stream_window_learnt, config.max_window);
        if window.window() > advertised {
            self.grants_due.insert(id);
        }
        window
    }

    /// Stream `id` is gone: no grant for it any more.
    pub fn forget(&mut self, id: StreamId) {
        self.grants_due.remove(&id);
    }

    /// The streams whose grant may be due; the caller polls their windows and
    /// reports each window's size with [`Credit::learnt`].
    pub fn take_grants_due(&mut self) -> BTreeSet<StreamId> {
        std::mem::take(&mut self.grants_due)
    }

    /// A stream's window grew to `window`: new streams start there.
    pub fn learnt(&mut self, window: u64) {
        self.stream_window_learnt = self.stream_window_learnt.max(window);
    }

    /// A new session grant, if reads made one due.
    pub fn poll_grant(&mut self, now: Instant, rtt: Duration) -> Option<u64> {
        if !std::mem::take(&mut self.max_data_due) {
            return None;
        }
        self.recv_window.poll_grant(now, rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_after_half_a_window_and_grows_when_fast() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut w = RecvWindow::new(100, 1000);
        w.on_read(40);
        assert_eq!(w.poll_grant(t0, rtt), None);
        w.on_read(10);
        assert_eq!(w.poll_grant(t0, rtt), Some(150));
        w.on_read(100);
        // Used up within two RTTs: the window doubles.
        assert_eq!(w.poll_grant(t0 + rtt, rtt), Some(350));
        w.on_read(200);
        // Slow: the window stays.
        assert_eq!(w.poll_grant(t0 + rtt * 10, rtt), Some(550));
        assert_eq!(w.window(), 200);
    }

    #[test]
    fn a_granting_window_grants_what_it_learnt_at_once() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut w = RecvWindow::granting(100, 800, 1000);
        assert_eq!(w.max(), 100, "the peer knows of 100 only");
        assert_eq!(w.poll_grant(t0, rtt), Some(800));
        assert_eq!(w.poll_grant(t0, rtt), None);
        // Never more than the cap, never less than what the peer was told.
        assert_eq!(RecvWindow::granting(100, 5000, 1000).window(), 1000);
        let mut small = RecvWindow::granting(100, 10, 1000);
        assert_eq!(small.window(), 100);
        assert_eq!(small.poll_grant(t0, rtt), None);
    }

    #[test]
    fn window_stops_at_the_cap() {
        let t0 = Instant::now();
        let mut w = RecvWindow::new(100, 300);
        let mut read = 0;
        for _ in 0..10 {
            w.on_read(w.max() - read);
            read = w.max();
            let _ = w.poll_grant(t0, Duration::from_millis(1));
        }
        assert_eq!(w.window(), 300);
    }

    #[test]
    fn a_send_window_in_one_chunk_mode_waits_for_the_ack() {
        let mut w = SendWindow::new(1000);
        assert_eq!(w.available(500, 100), 500, "the session's credit is less");
        w.set_one_chunk(true);
        assert_eq!(w.available(500, 100), 100);
        w.wrote(100);
        assert_eq!(w.available(500, 100), 0);
        assert!(!w.has_credit());
        w.acked_to(100);
        assert!(w.has_credit());
        assert!(!w.raise(900), "a lower grant is no news");
        assert!(w.raise(2000));
        assert_eq!(w.written(), 100);
    }

    #[test]
    fn credit_grants_only_after_reads_and_remembers_grown_windows() {
        let config = Config {
            stream_window: 100,
            session_window: 200,
            max_window: 1000,
            ..Config::default()
        };
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut c = Credit::new(&config);
        assert_eq!(c.available(), 0);
        assert!(c.raise(300));
        c.wrote(120);
        assert_eq!((c.available(), c.send_buffered()), (180, 120));
        c.unbuffered(120);
        assert!(c.recv_allows(200) && !c.recv_allows(201));
        c.received(150);
        c.buffered(150);
        assert_eq!(c.poll_grant(t0, rtt), None, "nothing was read");
        c.consumed(StreamId(1), 150);
        assert_eq!(c.recv_buffered(), 0);
        assert_eq!(c.poll_grant(t0, rtt), Some(350));
        assert_eq!(
            c.take_grants_due().into_iter().collect::<Vec<_>>(),
            [StreamId(1)]
        );
        c.learnt(400);
        let w = c.stream_window(StreamId(3), &config);
        assert_eq!((w.max(), w.window()), (100, 400));
        assert!(
            c.take_grants_due().contains(&StreamId(3)),
            "the rest is granted at once"
        );
    }
}
