//! The session: one encrypted, reliable connection between two devices over paths
//! that come and go.
//!
//! A *path* is any reliable, ordered, message-oriented carrier (the relay
//! WebSocket, a data channel, a QUIC stream) that may die at any time, losing what
//! it had in flight. The shell tells the [`Session`] when paths come up
//! ([`Session::handle_path_up`]) and go down ([`Session::handle_path_down`]), feeds
//! it what arrives ([`Session::handle_packet`]) and sends what
//! [`Session::poll_transmit`] returns on the path it names.
//!
//! - **Security**: a Noise KK handshake between the two device keys
//!   ([`handshake`]); then every packet is ChaCha20-Poly1305 encrypted with its
//!   packet number as the nonce (module `packet`). A packet that does not authenticate
//!   ends the session with [`CloseReason::Integrity`]; nothing of it is delivered.
//! - **Reliability**: packets with anything but acks and pings are numbered in the
//!   reliable space and kept until acknowledged (cumulatively, coalesced). When
//!   the path changes, all unacknowledged packets are resent, byte for byte, on the
//!   new one; the receiver drops duplicates and replays. Paths are reliable and
//!   ordered, so a packet beyond the next expected one can only be left over from
//!   a path that was replaced: it is dropped and comes again with the next resend.
//!   There is no congestion control: each path's carrier has its own.
//! - **Path choice**: a path that comes up takes the traffic, but one that
//!   delivers less than half the goodput another live path delivered is left
//!   for that one and tried again later (module `choice`); the shell reports when a
//!   path's queue is full ([`Session::handle_path_full`]).
//! - **Streams and messages** ([`Session::stream`], [`Session::send_message`]) share the
//!   session's credit (module `flow`): a writer gets only what the reader granted, and
//!   grants follow the application's reads, growing toward the bandwidth-delay
//!   product.
//! - **Liveness**: keepalive pings measure the RTT; [`Event::Slow`] when
//!   outstanding data sees no progress; [`CloseReason::IdleTimeout`] when nothing
//!   arrives for the idle time-out.
//!
//! # Driving a session
//!
//! Methods come in four kinds: getters (`&self`), inputs (`handle_*(now, ..)`),
//! application commands (`open_stream`, [`Session::stream`], `send_message`,
//! `close`, ...) and outputs. After any input or command, drain the outputs in
//! this order: [`Session::poll_transmit`] until `None` (send each on its path),
//! then [`Session::poll_event`] until `None` (act on each, which may queue more to
//! transmit: loop), then [`Session::poll_timeout`] to know when to call
//! [`Session::handle_timeout`] next.

mod choice;
mod flow;
// The wire decoders are open to the fuzz targets (`--cfg fuzzing`), as
// quinn-proto opens its own; otherwise they are the session's business.
#[cfg(fuzzing)]
pub mod frame;
#[cfg(not(fuzzing))]
mod frame;
pub mod handshake;
mod messages;
#[cfg(fuzzing)]
pub mod packet;
#[cfg(not(fuzzing))]
mod packet;
mod paths;
mod reliability;
mod stream;
mod timer;

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

pub use self::choice::MAX_BACKOFF;
use self::flow::Credit;
use self::frame::Frame;
pub use self::frame::MAX_PATH_SIGNAL;
use self::handshake::{AwaitHello, AwaitReply, HandshakeError, Keys, Role, Start, TransportParams};
use self::messages::Messages;
pub use self::packet::MAX_PACKET_LEN;
use self::packet::{DATA_HEADER_LEN, MAX_CIPHERTEXT_LEN, Packet, TAG_LEN, UNRELIABLE_BIT};
use self::paths::Paths;
use self::reliability::{Arrival, MAX_PONGS, Reliability};
pub use self::stream::{OpenError, ReadError, Stream, WriteError};
use self::stream::{StreamState, Streams};
use self::timer::{Timer, TimerTable};
use crate::id::{DeviceId, Identity};
use crate::time::Instant;

/// `CLOSE` code sent when the peer broke the protocol.
pub const CLOSE_PROTOCOL: u32 = 0xffff_fff0;
/// `CLOSE` code sent when a packet failed authentication: the peer learns that
/// its path alters data.
pub const CLOSE_INTEGRITY: u32 = 0xffff_fff1;
/// Room in a packet for frames besides one full data frame.
const PACKET_SLACK: usize = 256;
/// The most path signals kept for the shell; older ones are dropped beyond it.
const MAX_PATH_SIGNALS_IN: usize = 32;
/// The most path signals queued to send at once.
const MAX_PATH_SIGNALS_OUT: usize = 16;
/// The most bytes an acknowledgement, owed pongs and a ping add to a full packet.
const PACKET_TRAILER: usize = 13 + MAX_PONGS * 9 + 9;

/// The largest [`Config::max_frame_payload`] whose packets fit in `max_packet`
/// bytes (for a carrier with a message size limit); 0 if none fits.
pub fn frame_payload_for(max_packet: usize) -> usize {
    max_packet
        .saturating_sub(DATA_HEADER_LEN + PACKET_SLACK + PACKET_TRAILER + TAG_LEN)
        .min(frame::MAX_FRAME_PAYLOAD)
}

/// A path's id, chosen by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathId(pub u64);

/// A stream's id. The handshake initiator's streams are even, the responder's odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// An outgoing message's id, reported back in [`Event::MessageConfirmed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// Session settings. Both sides announce their windows and limits in the
/// handshake, so they need not agree.
#[derive(Debug, Clone)]
pub struct Config {
    /// Initial receive window of each stream, in bytes.
    pub stream_window: u32,
    /// Initial receive window of the session (all streams and messages), in bytes.
    /// Keep it several stream windows large: data a stalled reader leaves unread
    /// holds session credit (up to its stream window each).
    pub session_window: u32,
    /// The largest either window may grow to.
    pub max_window: u64,
    /// The most data bytes per frame (at most 60 KiB).
    pub max_frame_payload: usize,
    /// The largest message accepted from the peer.
    pub max_message_size: u32,
    /// The most streams the peer may have open at once.
    pub max_streams: u32,
    /// How long an acknowledgement may be held back to coalesce it.
    pub ack_delay: Duration,
    /// How often to ping.
    pub keepalive_interval: Duration,
    /// Report [`Event::Slow`] after outstanding data saw no progress this long.
    pub slow_after: Duration,
    /// Close after nothing arrived this long.
    pub idle_timeout: Duration,
    /// Leave the current path for another live one after it answered nothing
    /// this long while data or a ping was outstanding (a path that died without
    /// the shell noticing).
    pub path_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // Large enough to start a transfer over a long round trip (a relay
            // of two 100 ms links) without waiting for many doublings; the
            // windows still grow only while the reader keeps up.
            stream_window: 1024 * 1024,
            // Four streams' worth: a few stalled streams cannot take all of it.
            session_window: 4 * 1024 * 1024,
            max_window: 16 * 1024 * 1024,
            max_frame_payload: 16 * 1024,
            max_message_size: 16 * 1024 * 1024,
            max_streams: 128,
            ack_delay: Duration::from_millis(10),
            keepalive_interval: Duration::from_secs(5),
            slow_after: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            path_timeout: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// The largest packet a session with this config sends.
    pub fn max_packet_len(&self) -> usize {
        let payload = self.max_frame_payload.clamp(1, frame::MAX_FRAME_PAYLOAD);
        let budget = (payload + PACKET_SLACK).min(MAX_CIPHERTEXT_LEN - TAG_LEN);
        DATA_HEADER_LEN + budget + PACKET_TRAILER + TAG_LEN
    }
}

/// A packet to send on a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The path to send it on.
    pub path: PathId,
    /// The packet.
    pub payload: Bytes,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake finished: streams and messages may flow.
    Connected,
    /// The peer opened a stream; take it with [`Session::accept_stream`].
    StreamOpened(StreamId),
    /// The stream has data, its end, or a reset to read.
    StreamReadable(StreamId),
    /// A write refused with `Blocked` may now succeed (or the peer stopped it).
    StreamWritable(StreamId),
    /// An `open_stream` refused with [`OpenError::Limit`] may now succeed: one of
    /// this side's streams ended.
    StreamOpenable,
    /// A message arrived; take it with [`Session::recv_message`].
    MessageReceived,
    /// A `send_message` refused with `Blocked` may now succeed.
    MessageWritable,
    /// The remote application took this message.
    MessageConfirmed(MessageId),
    /// A path signal from the peer's shell arrived; take it with
    /// [`Session::recv_path_signal`].
    PathSignal,
    /// Outstanding data made no progress for [`Config::slow_after`].
    Slow,
    /// The path went silent for [`Config::path_timeout`] and the session moved to
    /// another one. It keeps the path as a standby, last in line: the shell should
    /// take a path down that it can build again (a direct one).
    PathFailed(PathId),
    /// Packets go out on this path now (a path came up, one failed or went down,
    /// or the peer moved to this one).
    PathChanged(PathId),
    /// The session is over; the last event.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The local application closed it.
    #[error("closed locally with code {code}: {reason}")]
    Local {
        /// Application code.
        code: u32,
        /// Explanation.
        reason: String,
    },
    /// The peer closed it.
    #[error("closed by the peer with code {code}: {reason}")]
    Remote {
        /// Application code ([`CLOSE_PROTOCOL`]: we broke the protocol).
        code: u32,
        /// Explanation.
        reason: String,
    },
    /// Nothing arrived for the idle time-out.
    #[error("idle time-out")]
    IdleTimeout,
    /// A packet failed authentication: altered, forged or misrouted.
    #[error("a packet failed authentication")]
    Integrity,
    /// The handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
}

/// How the peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An authenticated packet held undecodable frames.
    #[error("bad frame: {0}")]
    Frame(#[from] frame::DecodeError),
    /// A frame that needs delivery came in an unreliable packet.
    #[error("reliable frame in an unreliable packet")]
    UnreliableFrame,
    /// The peer acknowledged a packet never sent.
    #[error("acknowledgement of an unsent packet")]
    BadAck,
    /// The peer sent beyond its credit.
    #[error("flow control violated")]
    FlowControl,
    /// The peer opened more streams than allowed.
    #[error("stream limit exceeded")]
    StreamLimit,
    /// A stream frame that does not fit the stream's state.
    #[error("stream state violated")]
    StreamState,
    /// A message larger than the limit.
    #[error("message exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// The limit.
        max: u32,
    },
    /// A message chunk out of sequence.
    #[error("message out of sequence")]
    MessageOrder,
}

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendMessageError {
    /// Larger than the peer accepts.
    #[error("message exceeds the peer's maximum of {max} bytes")]
    TooLarge {
        /// The peer's limit.
        max: u32,
    },
    /// Queued messages fill the send buffer; [`Event::MessageWritable`] tells when
    /// to try again.
    #[error("message queue full")]
    Blocked,
    /// The handshake has not finished or the session is closed.
    #[error("the session is not connected")]
    NotConnected,
}

/// A message taken by [`Session::recv_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The sender's id for it.
    pub id: MessageId,
    /// Its content.
    pub data: Bytes,
}

enum State {
    Start(Start),
    AwaitReply(AwaitReply),
    AwaitHello(AwaitHello),
    Established(Box<Keys>),
    Closed,
}

/// One session between this device and a remote one. See the [module
/// docs](self) for how to drive it.
pub struct Session {
    // The state is in parts, each in its module: `paths` (which carrier is
    // current, which are trusted), `reliability` (packet numbers, what awaits
    // acknowledgement, acks owed, RTT), `flow` (credit both ways), `stream`
    // and `messages`. The session holds the handshake, the timers, and the
    // queues of control frames and events that the parts add to.
    config: Config,
    remote: DeviceId,
    role: Role,
    state: State,
    remote_params: TransportParams,
    close_reason: Option<CloseReason>,
    /// The last handshake packet sent, resent on a new path until the peer proves
    /// it finished the handshake; with the hello it answers (responder).
    handshake_packet: Option<Bytes>,
    hello_seen: Option<Bytes>,
    handshake_due: bool,
    /// The sealed `CLOSE` packet, once the session closed with word to the peer.
    final_packet: Option<Bytes>,

    paths: Paths,
    reliability: Reliability,
    credit: Credit,
    streams: Streams,
    messages: Messages,

    /// Frames to send reliably besides stream and message data.
    control: VecDeque<Frame>,
    /// Path signals among `control`.
    path_signals_out: usize,
    path_signals_in: VecDeque<Bytes>,
    timers: TimerTable,
    events: VecDeque<Event>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("remote", &self.remote)
            .field("role", &self.role)
            .field("connected", &self.is_connected())
            .field("close_reason", &self.close_reason)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session from `identity` to `remote`. `seed` is 32 random bytes from the
    /// caller (for the ephemeral handshake key); `now` starts the idle timer.
    pub fn new(
        now: Instant,
        config: Config,
        identity: &Identity,
        remote: DeviceId,
        seed: [u8; 32],
    ) -> Result<Self, HandshakeError> {
        Self::with_psk(now, config, identity, remote, seed, None)
    }

    /// Like [`Session::new`], with a pre-shared key (from a one-time code) that
    /// the peer's handshake must prove too; see [`handshake`].
    pub fn with_psk(
        now: Instant,
        config: Config,
        identity: &Identity,
        remote: DeviceId,
        seed: [u8; 32],
        psk: Option<&handshake::Psk>,
    ) -> Result<Self, HandshakeError> {
        let mut config = config;
        config.max_frame_payload = config.max_frame_payload.clamp(1, frame::MAX_FRAME_PAYLOAD);
        let params = TransportParams {
            stream_window: config.stream_window,
            session_window: config.session_window,
            max_streams: config.max_streams,
            max_message: config.max_message_size,
        };
        let start = handshake::start_with_psk(identity, &remote, params, seed, psk)?;
        let role = Role::of(&identity.device_id(), &remote)?;
        let mut timers = TimerTable::default();
        timers.set(Timer::Idle, now + config.idle_timeout);
        Ok(Self {
            credit: Credit::new(&config),
            config,
            remote,
            role,
            state: State::Start(start),
            remote_params: params,
            close_reason: None,
            handshake_packet: None,
            hello_seen: None,
            handshake_due: false,
            final_packet: None,
            paths: Paths::new(now),
            reliability: Reliability::new(now),
            streams: Streams::new(role),
            messages: Messages::default(),
            control: VecDeque::new(),
            path_signals_out: 0,
            path_signals_in: VecDeque::new(),
            timers,
            events: VecDeque::new(),
        })
    }

    // ---- Getters ----

    /// The remote device.
    pub fn remote(&self) -> DeviceId {
        self.remote
    }

    /// Which side of the handshake this device plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the handshake finished and the session is not closed.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// The smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.reliability.rtt()
    }

    /// Bytes held on the send side: written but unsent, queued messages, and sent
    /// packets awaiting acknowledgement.
    pub fn send_buffered(&self) -> u64 {
        self.credit.send_buffered() + self.messages.out_bytes() + self.reliability.unacked_bytes()
    }

    /// Bytes received but not yet taken by the application.
    pub fn recv_buffered(&self) -> u64 {
        self.credit.recv_buffered()
    }

    /// The session receive window now (it grows toward the bandwidth-delay product).
    pub fn recv_window(&self) -> u64 {
        self.credit.recv_window()
    }

    /// The path packets go out on.
    pub fn current_path(&self) -> Option<PathId> {
        self.paths.current()
    }

    // ---- Inputs: paths ----

    /// A path came up: it becomes the current one, and everything not yet
    /// acknowledged is resent on it.
    pub fn handle_path_up(&mut self, now: Instant, path: PathId) {
        self.paths.make_current(path);
        self.switched_path(now);
    }

    /// A path came up as a standby: the current path keeps the traffic, and this
    /// one takes over only when every other path is gone or silent. With no
    /// current path, it becomes current like [`Session::handle_path_up`].
    pub fn handle_path_standby(&mut self, now: Instant, path: PathId) {
        if self.paths.is_only(path) {
            return self.handle_path_up(now, path);
        }
        self.paths.make_standby(path);
        self.arm_path_check();
        self.arm_path_choice();
    }

    /// Trusts `path`: its carrier already encrypts and authenticates every byte
    /// end to end, pinned to the peer this session's handshake authenticated
    /// (a QUIC connection whose certificate fingerprint travelled inside the
    /// session). Packets on it then go unencrypted, and unencrypted packets are
    /// accepted on it; on any other path they end the session as tampering.
    /// Both sides must trust the path before either sends on it.
    pub fn trust_path(&mut self, path: PathId) {
        self.paths.trust(path);
    }

    /// A path went down with whatever it had in flight. If it was the current one,
    /// the most recent remaining path takes over and gets everything resent.
    pub fn handle_path_down(&mut self, now: Instant, path: PathId) {
        let was_current = self.current_path() == Some(path);
        self.paths.remove(path);
        if was_current && !self.paths.is_empty() {
            self.switched_path(now);
        } else {
            self.arm_path_check();
            self.arm_path_choice();
        }
    }

    /// The current path's queue is full: the path, not the application, holds
    /// data back now. Its goodput counts for choosing paths.
    pub fn handle_path_full(&mut self) {
        self.paths.choice.note_full();
    }

    /// Arms the path silence check while there is another path to go to and
    /// the current one owes an answer (unacknowledged packets or a ping).
    fn arm_path_check(&mut self) {
        match self.silent_since() {
            Some(since) if self.paths.has_alternative() && self.close_reason.is_none() => {
                self.timers
                    .set(Timer::PathSilence, since + self.config.path_timeout);
            }
            _ => self.timers.stop(Timer::PathSilence),
        }
    }

    /// Since when the current path owes an answer and gave none: from the
    /// later of what it last delivered and the oldest thing outstanding
    /// (unacknowledged packets or a ping). `None` when nothing is owed.
    fn silent_since(&self) -> Option<Instant> {
        let owed = self.reliability.oldest_outstanding()?;
        Some(owed.max(self.paths.current_heard))
    }

    /// The current path answered nothing for the path time-out: move to the
    /// most recent other path and report the silent one failed.
    fn path_silent(&mut self, now: Instant) {
        let Some(dead) = self.current_path() else {
            return;
        };
        let quiet_for = self
            .silent_since()
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        if quiet_for < self.config.path_timeout {
            return self.arm_path_check();
        }
        // It stays as a standby, the first to go: a direct path's shell takes it
        // down, but the relay stays up, and a queue on the way is not death. The
        // session goes back to it when the peer sends there or the other paths go.
        self.paths.demote(dead);
        self.events.push_back(Event::PathFailed(dead));
        if !self.paths.is_empty() {
            self.switched_path(now);
        }
    }

    fn switched_path(&mut self, now: Instant) {
        if let State::Start(_) = self.state {
            self.start_handshake();
        }
        self.paths.current_heard = now;
        self.paths.current_fresh = now;
        self.note_writer_blocked();
        self.paths
            .choice
            .switched(now, self.paths.current(), self.reliability.next_pn());
        self.arm_path_choice();
        // A closed session moves nothing any more: paths that go down as the
        // two sides let go are no news.
        if let Some(path) = self.current_path()
            && self.close_reason.is_none()
        {
            self.events.push_back(Event::PathChanged(path));
        }
        self.arm_path_check();
        self.handshake_due = self.handshake_packet.is_some();
        // A ping out on another path says nothing of this one: it goes again,
        // with everything unacknowledged.
        if self.reliability.rewind(now) {
            self.arm_slow();
        }
    }

    /// Hands a writer's lack of credit to the path choice, before the choice
    /// starts or judges a window.
    fn note_writer_blocked(&mut self) {
        if self.credit.take_writer_blocked() {
            self.paths.choice.note_blocked();
        }
    }

    fn arm_path_choice(&mut self) {
        let busy = self.reliability.has_unacked();
        match self.paths.choice.next_deadline(self.rtt(), busy) {
            Some(at) if self.close_reason.is_none() => {
                self.timers.set(Timer::PathChoice, at);
            }
            _ => self.timers.stop(Timer::PathChoice),
        }
    }

    /// A goodput window ended or a retry is due: leave a much worse path for
    /// a better one, or try a path that was left again.
    fn choose_path(&mut self, now: Instant) {
        self.note_writer_blocked();
        let backlog = self.credit.send_buffered() + self.messages.out_bytes() > 0;
        let rtt = self.rtt();
        let unacked = self.reliability.unacked_bytes();
        let to = self.paths.choose(now, rtt, unacked, backlog);
        match to {
            Some(to) if self.paths.contains(to) => {
                self.paths.make_current(to);
                self.switched_path(now);
            }
            _ => self.arm_path_choice(),
        }
    }

    // ---- Inputs: packets ----

    fn start_handshake(&mut self) {
        let State::Start(start) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        match start {
            Start::Initiator(i) => match i.write_hello() {
                Ok((next, hello)) => {
                    self.handshake_packet = Some(encode_packet(&Packet::Hello(hello.into())));
                    self.state = State::AwaitReply(next);
                }
                Err(e) => self.close_session(CloseReason::Handshake(e), false),
            },
            Start::Responder(r) => self.state = State::AwaitHello(r),
        }
    }

    /// A packet arrived on `path`.
    ///
    /// Packets are accepted from any path; replies go out on the current one.
    pub fn handle_packet(&mut self, now: Instant, path: PathId, mut payload: Bytes) {
        self.paths.packet_path = Some(path);
        if self.close_reason.is_some() {
            return;
        }
        if let State::Start(_) = self.state {
            self.start_handshake();
        }
        let packet = match Packet::decode(&mut payload) {
            Ok(p) => p,
            // Once keys exist every packet is authenticated: damage is tampering.
            Err(_) if self.is_connected() => {
                return self.close_session(CloseReason::Integrity, true);
            }
            Err(_) => return,
        };
        match packet {
            Packet::Hello(msg) => self.on_hello(now, msg),
            Packet::Reply(msg) => self.on_reply(now, msg),
            Packet::Data { pn, ciphertext } => self.on_data(now, pn, &ciphertext),
            // Before the keys exist nothing is trusted: dropped.
            Packet::Plain { .. } if !self.is_connected() => {}
            Packet::Plain { pn, frames } if self.paths.is_trusted(path) => {
                self.on_frames(now, pn, frames);
            }
            Packet::Plain { .. } => self.close_session(CloseReason::Integrity, true),
        }
    }

    fn on_hello(&mut self, now: Instant, msg: Bytes) {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::AwaitHello(r) => match r.read_hello(&msg) {
                Ok((keys, reply)) => {
                    self.handshake_packet = Some(encode_packet(&Packet::Reply(reply.into())));
                    self.handshake_due = true;
                    self.hello_seen = Some(msg);
                    self.established(now, keys);
                }
                Err(e) => self.close_session(CloseReason::Handshake(e), false),
            },
            // Only the smaller id sends hello: a peer that does is not the device
            // we expect.
            State::AwaitReply(_) => {
                self.close_session(
                    CloseReason::Handshake(HandshakeError::Authentication),
                    false,
                );
            }
            other => {
                // The initiator resends its hello on a new path until our reply
                // gets through: answer the same hello again.
                if self.hello_seen.as_ref() == Some(&msg) && self.handshake_packet.is_some() {
                    self.handshake_due = true;
                }
                self.state = other;
            }
        }
    }

    fn on_reply(&mut self, now: Instant, msg: Bytes) {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::AwaitReply(i) => match i.read_reply(&msg) {
                Ok(keys) => {
                    self.handshake_packet = None;
                    self.handshake_due = false;
                    self.established(now, keys);
                }
                Err(e) => self.close_session(CloseReason::Handshake(e), false),
            },
            other => self.state = other,
        }
    }

    fn established(&mut self, now: Instant, keys: Keys) {
        self.remote_params = keys.remote_params;
        self.credit
            .raise(u64::from(keys.remote_params.session_window));
        self.state = State::Established(Box::new(keys));
        self.events.push_back(Event::Connected);
        self.reliability.ping_soon();
        self.heard(now);
        self.timers
            .set(Timer::KeepAlive, now + self.config.keepalive_interval);
    }

    /// Something authentic arrived.
    fn heard(&mut self, now: Instant) {
        self.timers.set(Timer::Idle, now + self.config.idle_timeout);
        if self.paths.packet_on_current() {
            self.paths.current_heard = now;
            self.arm_path_check();
        }
    }

    fn on_data(&mut self, now: Instant, pn: u64, ciphertext: &[u8]) {
        let State::Established(keys) = &self.state else {
            // No keys yet: a data packet overtook the reply on another path. The
            // peer resends it after the handshake completes on a new path.
            return;
        };
        let mut plain = vec![0; ciphertext.len()];
        let Ok(len) = keys.transport.read_message(pn, ciphertext, &mut plain) else {
            return self.close_session(CloseReason::Integrity, true);
        };
        plain.truncate(len);
        self.on_frames(now, pn, plain.into());
    }

    /// The frames of authentic packet `pn`.
    fn on_frames(&mut self, now: Instant, pn: u64, plain: Bytes) {
        self.heard(now);
        // Our reply got through: no need to resend it any more.
        if self.role == Role::Responder {
            self.handshake_packet = None;
            self.handshake_due = false;
        }
        let reliable = pn & UNRELIABLE_BIT == 0;
        if reliable {
            let Arrival::Fresh { first_unacked } = self.reliability.on_reliable(now, pn) else {
                return;
            };
            if first_unacked {
                self.timers.set(Timer::Ack, now + self.config.ack_delay);
            }
            self.follow_peer(now);
        } else if !self.reliability.on_unreliable(pn) {
            return;
        }
        let frames = match Frame::decode_all(plain) {
            Ok(f) => f,
            Err(e) => return self.protocol_error(e.into()),
        };
        for frame in frames {
            if !reliable && frame.is_reliable() {
                return self.protocol_error(ProtocolError::UnreliableFrame);
            }
            if let Err(e) = self.on_frame(now, frame) {
                return self.protocol_error(e);
            }
            if self.close_reason.is_some() {
                return;
            }
        }
    }

    /// Fresh data came in. On another live path while none came on the current
    /// one for a while: the peer moved there (its path failed or it prefers
    /// the new one). Follow, so answers reach it. A current path that carries
    /// fresh traffic is kept: packets the peer sent on its old path just before
    /// it moved must not pull this side back, and neither does a path this
    /// side left for its poor goodput.
    fn follow_peer(&mut self, now: Instant) {
        let paths = &mut self.paths;
        let quiet =
            now.saturating_duration_since(paths.current_fresh) >= self.config.path_timeout / 4;
        if paths.packet_on_current() {
            paths.current_fresh = now;
        }
        if let Some(path) = paths.packet_path
            && quiet
            && Some(path) != paths.current()
            && paths.contains(path)
            && !paths.choice.is_left(path)
        {
            paths.make_current(path);
            self.switched_path(now);
            self.paths.current_heard = now;
        }
    }

    fn on_frame(&mut self, now: Instant, frame: Frame) -> Result<(), ProtocolError> {
        match frame {
            Frame::Ack { next, delay_us } => self.on_ack(now, next, delay_us)?,
            Frame::Ping { id } => self.reliability.on_ping(id),
            Frame::Pong { id } => {
                // The ping got through on the current path, whichever path
                // the answer took.
                if let Some(ping_path) = self.reliability.on_pong(now, id)
                    && ping_path.is_some()
                    && ping_path == self.current_path()
                {
                    self.paths.current_heard = now;
                    self.arm_path_check();
                }
            }
            Frame::Stream {
                id,
                offset,
                fin,
                data,
            } => {
                let id = StreamId(id);
                if self.remote_stream(id)?.is_some() {
                    self.streams.on_data(
                        id,
                        offset,
                        fin,
                        data,
                        &mut self.credit,
                        &mut self.events,
                    )?;
                }
            }
            Frame::MaxData(max) => {
                if self.credit.raise(max) {
                    self.streams.wake_writers(&self.credit, &mut self.events);
                }
            }
            Frame::MaxStreamData { id, max } => {
                if let Some(s) = self.remote_stream(StreamId(id))?
                    && s.send.window.raise(max)
                {
                    self.streams.wake_writers(&self.credit, &mut self.events);
                }
            }
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => {
                let id = StreamId(id);
                if self.remote_stream(id)?.is_some() {
                    self.streams.on_reset(
                        id,
                        code,
                        final_size,
                        &mut self.credit,
                        &mut self.events,
                    )?;
                }
            }
            Frame::StopSending { id, code } => {
                let id = StreamId(id);
                if self.remote_stream(id)?.is_some() {
                    self.streams.on_stop_sending(
                        id,
                        code,
                        &mut self.credit,
                        &mut self.control,
                        &mut self.events,
                    );
                }
            }
            Frame::Message { id, flags, chunk } => self.messages.on_chunk(
                id,
                flags,
                chunk,
                self.config.max_message_size,
                &mut self.credit,
                &mut self.events,
            )?,
            Frame::MessageTaken { id } => {
                let id = self.messages.on_taken(id)?;
                self.events.push_back(Event::MessageConfirmed(id));
            }
            Frame::PathSignal(data) => {
                if self.path_signals_in.len() == MAX_PATH_SIGNALS_IN {
                    // The shell does not read them: the oldest is stale anyway.
                    self.path_signals_in.pop_front();
                }
                self.path_signals_in.push_back(data);
                self.events.push_back(Event::PathSignal);
            }
            Frame::Close { code, reason } => {
                self.close_session(CloseReason::Remote { code, reason }, false);
            }
        }
        Ok(())
    }

    fn on_ack(&mut self, now: Instant, next: u64, delay_us: u32) -> Result<(), ProtocolError> {
        let choice = &mut self.paths.choice;
        let streams = &mut self.streams;
        let acked = self.reliability.on_ack(now, next, delay_us, |p| {
            choice.acked(p.pn, p.cost());
            for (id, end) in &p.stream_ends {
                streams.acked_to(*id, *end);
            }
        })?;
        if acked == 0 {
            return Ok(());
        }
        // Progress shows the current path delivers, whichever path the peer
        // acknowledges on (it may not have followed this side yet).
        self.paths.current_heard = now;
        self.arm_slow();
        self.arm_path_check();
        if !self.reliability.has_unacked() {
            self.arm_path_choice();
        }
        self.streams.wake_writers(&self.credit, &mut self.events);
        Ok(())
    }

    fn arm_slow(&mut self) {
        if !self.reliability.has_unacked() || self.reliability.slow_reported {
            self.timers.stop(Timer::Slow);
        } else {
            self.timers.set(
                Timer::Slow,
                self.reliability.last_progress + self.config.slow_after,
            );
        }
    }

    /// The stream `id` as named by the peer: `None` if it is gone, an error if it
    /// is one of ours we never opened. Streams of the peer's it opens are
    /// created and announced.
    fn remote_stream(&mut self, id: StreamId) -> Result<Option<&mut StreamState>, ProtocolError> {
        for sid in self.streams.opened_by_peer(id, self.config.max_streams)? {
            self.new_stream(sid);
            self.streams.push_incoming(sid);
            self.events.push_back(Event::StreamOpened(sid));
        }
        Ok(self.streams.get_mut(id))
    }

    fn new_stream(&mut self, id: StreamId) {
        let window = self.credit.stream_window(id, &self.config);
        let state = StreamState::new(u64::from(self.remote_params.stream_window), window);
        self.streams.insert(id, state);
    }

    /// Time passed: handles the timers that expired by `now`. A call before any
    /// deadline does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.expired(now) {
            match timer {
                Timer::Ack => self.reliability.ack_delay_passed(),
                Timer::KeepAlive => {
                    self.reliability.ping_soon();
                    self.timers
                        .set(Timer::KeepAlive, now + self.config.keepalive_interval);
                }
                Timer::Idle => return self.close_session(CloseReason::IdleTimeout, false),
                Timer::Slow => {
                    if self.reliability.has_unacked() {
                        self.reliability.slow_reported = true;
                        self.events.push_back(Event::Slow);
                    }
                }
                Timer::PathSilence => self.path_silent(now),
                Timer::PathChoice => self.choose_path(now),
            }
        }
    }

    // ---- Application commands ----

    /// Opens a stream towards the peer. At the peer's limit of open streams it
    /// fails with [`OpenError::Limit`], and [`Event::StreamOpenable`] follows
    /// once one of this side's streams ends.
    pub fn open_stream(&mut self) -> Result<StreamId, OpenError> {
        if !self.is_connected() {
            return Err(OpenError::NotConnected);
        }
        let id = self.streams.next_local(self.remote_params.max_streams)?;
        self.new_stream(id);
        Ok(id)
    }

    /// The next stream the peer opened, if any.
    pub fn accept_stream(&mut self) -> Option<StreamId> {
        self.streams.accept()
    }

    /// A handle to drive stream `id` (its methods fail with `UnknownStream` if
    /// there is no such stream).
    pub fn stream(&mut self, id: StreamId) -> Stream<'_> {
        Stream {
            id,
            max_chunk: self.config.max_frame_payload,
            streams: &mut self.streams,
            credit: &mut self.credit,
            control: &mut self.control,
            events: &mut self.events,
        }
    }

    /// Queues a message. With `confirm`, [`Event::MessageConfirmed`] follows once
    /// the remote application took it with [`Session::recv_message`].
    pub fn send_message(
        &mut self,
        data: Bytes,
        confirm: bool,
    ) -> Result<MessageId, SendMessageError> {
        if !self.is_connected() {
            return Err(SendMessageError::NotConnected);
        }
        self.messages
            .queue(data, confirm, self.remote_params.max_message)
    }

    /// Takes the next complete message, granting its bytes back to the peer and
    /// confirming it if the sender asked.
    pub fn recv_message(&mut self) -> Option<ReceivedMessage> {
        self.messages.take(&mut self.credit, &mut self.control)
    }

    /// Queues a path signal for the peer's shell (path negotiation: offers,
    /// answers, candidates). It travels encrypted and reliably, in order with
    /// other path signals. At most [`frame::MAX_PATH_SIGNAL`] bytes (and no more
    /// than one frame's payload).
    pub fn send_path_signal(&mut self, data: Bytes) -> Result<(), SendMessageError> {
        if !self.is_connected() {
            return Err(SendMessageError::NotConnected);
        }
        let max = frame::MAX_PATH_SIGNAL.min(self.config.max_frame_payload);
        if data.len() > max {
            return Err(SendMessageError::TooLarge {
                max: u32::try_from(max).unwrap_or(u32::MAX),
            });
        }
        // Bounded: signals leave the queue as packets go out, so retry after
        // the next transmit.
        if self.path_signals_out >= MAX_PATH_SIGNALS_OUT {
            return Err(SendMessageError::Blocked);
        }
        self.path_signals_out += 1;
        self.control.push_back(Frame::PathSignal(data));
        Ok(())
    }

    /// Takes the next path signal from the peer's shell.
    pub fn recv_path_signal(&mut self) -> Option<Bytes> {
        self.path_signals_in.pop_front()
    }

    /// Closes the session: an encrypted `CLOSE` goes out on the current path (or
    /// the next one to come up), then the session is over.
    pub fn close(&mut self, code: u32, reason: &str) {
        self.close_session(
            CloseReason::Local {
                code,
                reason: frame::truncated_reason(reason).to_owned(),
            },
            true,
        );
    }

    fn protocol_error(&mut self, e: ProtocolError) {
        self.close_session(CloseReason::Protocol(e), true);
    }

    fn close_session(&mut self, reason: CloseReason, tell_peer: bool) {
        if self.close_reason.is_some() {
            return;
        }
        if tell_peer {
            let (code, text) = match &reason {
                CloseReason::Local { code, reason } => (*code, reason.clone()),
                CloseReason::Integrity => (CLOSE_INTEGRITY, reason.to_string()),
                other => (CLOSE_PROTOCOL, other.to_string()),
            };
            let frame = Frame::Close { code, reason: text };
            let mut plain = Vec::with_capacity(frame.encoded_len());
            frame.encode(&mut plain);
            // Sealed now, while the keys exist, and valid on every path (the
            // shell may copy it to each): trusted paths take encrypted packets too.
            self.final_packet = self.seal(self.reliability.next_pn(), &plain);
        }
        self.state = State::Closed;
        self.timers.clear();
        self.close_reason = Some(reason.clone());
        self.events.push_back(Event::Closed { reason });
    }

    // ---- Outputs ----

    /// The next packet to send, and the path to send it on.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let path = self.current_path()?;
        if let State::Start(_) = self.state {
            self.start_handshake();
        }
        if let State::Closed = self.state {
            let payload = self.final_packet.take()?;
            return Some(Transmit { path, payload });
        }
        if self.handshake_due {
            self.handshake_due = false;
            if let Some(payload) = self.handshake_packet.clone() {
                return Some(Transmit { path, payload });
            }
        }
        if !self.is_connected() {
            return None;
        }
        if let Some(p) = self.reliability.next_resend() {
            let (pn, packet) = (p.pn, p.packet.clone());
            let payload = self.wrap(path, pn, &packet)?;
            return Some(Transmit { path, payload });
        }
        self.grant_credit(now);
        let (pn, packet) = self.build_packet(now)?;
        let payload = self.wrap(path, pn, &packet)?;
        Some(Transmit { path, payload })
    }

    /// Queues the window grants that reads made due.
    fn grant_credit(&mut self, now: Instant) {
        let rtt = self.rtt();
        for id in self.credit.take_grants_due() {
            if let Some(window) = self.streams.grantable(id)
                && let Some(max) = window.poll_grant(now, rtt)
            {
                self.control
                    .push_back(Frame::MaxStreamData { id: id.0, max });
                self.credit.learnt(window.window());
            }
        }
        if let Some(max) = self.credit.poll_grant(now, rtt) {
            self.control.push_back(Frame::MaxData(max));
        }
    }

    /// The next packet's number, and the packet in its `PLAIN` form.
    fn build_packet(&mut self, now: Instant) -> Option<(u64, Bytes)> {
        if !self.is_connected() {
            return None;
        }
        // The header goes first and is filled in once the number is known;
        // the budget counts it.
        let budget = DATA_HEADER_LEN
            + (self.config.max_frame_payload + PACKET_SLACK).min(MAX_CIPHERTEXT_LEN - TAG_LEN);
        let mut plain = Vec::with_capacity(budget);
        plain.resize(DATA_HEADER_LEN, 0);
        let mut reliable = false;
        let mut stream_ends = Vec::new();
        while let Some(f) = self.control.front() {
            if plain.len() + f.encoded_len() > budget {
                break;
            }
            if let Some(f) = self.control.pop_front() {
                if let Frame::PathSignal(_) = f {
                    self.path_signals_out -= 1;
                }
                f.encode(&mut plain);
                reliable = true;
            }
        }
        // Messages first, then streams in turn, while there is room for data.
        loop {
            let room = budget
                .saturating_sub(plain.len() + frame::STREAM_HEADER_LEN)
                .min(self.config.max_frame_payload);
            if room == 0 {
                break;
            }
            if let Some(f) = self
                .messages
                .next_chunk(room, &mut self.credit, &mut self.events)
            {
                f.encode(&mut plain);
                reliable = true;
                continue;
            }
            match self
                .streams
                .next_chunk(room, &mut self.credit, &mut self.events)
            {
                Some((f, end)) => {
                    f.encode(&mut plain);
                    reliable = true;
                    stream_ends.extend(end);
                }
                None => break,
            }
        }
        let ack = self.reliability.take_ack(now, reliable);
        if !reliable && ack.is_none() && !self.reliability.has_pings() {
            return None;
        }
        if let Some(ack) = ack {
            ack.encode(&mut plain);
            self.timers.stop(Timer::Ack);
        }
        self.reliability
            .write_pings(now, self.paths.current(), &mut plain);
        let pn = self.reliability.packet_number(reliable);
        plain[0] = packet::VERSION;
        plain[1] = packet::T_PLAIN;
        plain[2..DATA_HEADER_LEN].copy_from_slice(&pn.to_be_bytes());
        let packet = Bytes::from(plain);
        let was_idle = self.reliability.sent(now, pn, &packet, stream_ends);
        if was_idle {
            self.note_writer_blocked();
            self.paths.choice.restart(now);
        }
        if reliable {
            self.arm_slow();
            if was_idle {
                self.arm_path_choice();
            }
        }
        self.arm_path_check();
        Some((pn, packet))
    }

    /// Packet `pn` (in its `PLAIN` form) as it goes out on `path`: as it is on
    /// a trusted path (no copy), else with its frames encrypted.
    fn wrap(&self, path: PathId, pn: u64, packet: &Bytes) -> Option<Bytes> {
        if self.paths.is_trusted(path) {
            Some(packet.clone())
        } else {
            self.seal(pn, packet.get(DATA_HEADER_LEN..)?)
        }
    }

    /// Encrypts `plain` as packet `pn`.
    fn seal(&self, pn: u64, plain: &[u8]) -> Option<Bytes> {
        let State::Established(keys) = &self.state else {
            return None;
        };
        let mut out = BytesMut::with_capacity(DATA_HEADER_LEN + plain.len() + TAG_LEN);
        out.put_u8(packet::VERSION);
        out.put_u8(packet::T_DATA);
        out.put_u64(pn);
        out.resize(DATA_HEADER_LEN + plain.len() + TAG_LEN, 0);
        let len = keys
            .transport
            .write_message(pn, plain, &mut out[DATA_HEADER_LEN..])
            .ok()?;
        out.truncate(DATA_HEADER_LEN + len);
        Some(out.freeze())
    }

    /// When [`Session::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

fn encode_packet(p: &Packet) -> Bytes {
    let mut buf = BytesMut::with_capacity(p.encoded_len());
    p.encode(&mut buf);
    buf.freeze()
}
