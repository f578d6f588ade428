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
#[cfg(fuzzing)]
pub mod packet;
#[cfg(not(fuzzing))]
mod packet;
mod stream;
mod timer;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

pub use self::choice::MAX_BACKOFF;
use self::choice::{Choice, PathChoice};
use self::flow::{RecvWindow, Rtt};
pub use self::frame::MAX_PATH_SIGNAL;
use self::frame::{Frame, MESSAGE_CONFIRM, MESSAGE_FIN};
use self::handshake::{AwaitHello, AwaitReply, HandshakeError, Keys, Role, Start, TransportParams};
pub use self::packet::MAX_PACKET_LEN;
use self::packet::{DATA_HEADER_LEN, MAX_CIPHERTEXT_LEN, Packet, TAG_LEN, UNRELIABLE_BIT};
use self::stream::StreamState;
pub use self::stream::{OpenError, ReadError, Stream, StreamId, WriteError};
use self::timer::{Timer, TimerTable};
use crate::id::{DeviceId, Identity};
use crate::time::Instant;

/// `CLOSE` code sent when the peer broke the protocol.
pub const CLOSE_PROTOCOL: u32 = 0xffff_fff0;
/// `CLOSE` code sent when a packet failed authentication: the peer learns that
/// its path alters data.
pub const CLOSE_INTEGRITY: u32 = 0xffff_fff1;
/// Acknowledge at once after this many reliable packets.
const ACK_EVERY: u32 = 8;
/// Room in a packet for frames besides one full data frame.
const PACKET_SLACK: usize = 256;
/// The most path signals kept for the shell; older ones are dropped beyond it.
const MAX_PATH_SIGNALS_IN: usize = 32;
/// The most path signals queued to send at once.
const MAX_PATH_SIGNALS_OUT: usize = 16;
/// The most pongs owed at once (further pings are not answered).
const MAX_PONGS: usize = 8;
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
            stream_window: 64 * 1024,
            // Four streams' worth: a few stalled streams cannot take all of it.
            session_window: 256 * 1024,
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
    /// another one (and no longer uses this one: the shell should take it down).
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

/// A packet kept until acknowledged.
struct SentPacket {
    pn: u64,
    /// The packet in its unencrypted `PLAIN` form (header, then frames): a
    /// trusted path sends it as it is, any other gets the frames sealed.
    packet: Bytes,
    sent: Instant,
    /// Stream offsets it completes, for streams in one-chunk mode.
    stream_ends: Vec<(StreamId, u64)>,
}

struct OutMessage {
    id: u64,
    data: Bytes,
    confirm: bool,
}

struct InMessage {
    id: u64,
    confirm: bool,
    data: BytesMut,
}

/// One session between this device and a remote one. See the [module
/// docs](self) for how to drive it.
pub struct Session {
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
    /// Live paths, the current one last.
    paths: Vec<PathId>,
    /// Paths whose carrier encrypts and authenticates end to end with the peer
    /// (see [`Session::trust_path`]): packets on them go unencrypted.
    trusted_paths: Vec<PathId>,
    /// When something authentic last arrived on the current path (or it became
    /// current).
    current_heard: Instant,
    /// When fresh reliable data last arrived on the current path (or it became
    /// current): resends of old packets do not show the peer sends there.
    current_fresh: Instant,
    /// The path the packet being handled came on.
    packet_path: Option<PathId>,
    /// Goodput per path, and when to leave or retry one.
    choice: PathChoice,

    next_pn: u64,
    next_unreliable: u64,
    unacked: VecDeque<SentPacket>,
    unacked_bytes: u64,
    resend_cursor: usize,
    /// Packets from this number on were sent once only (RTT samples are exact).
    first_fresh_pn: u64,
    final_packet: Option<Bytes>,

    rcv_next: u64,
    highest_unreliable: Option<u64>,
    ack_pending: u32,
    ack_now: bool,
    ack_since: Option<Instant>,

    send_max_data: u64,
    sent_data: u64,
    send_buffered: u64,
    recv_window: RecvWindow,
    recv_data: u64,
    recv_buffered: u64,
    max_data_due: bool,
    grants_due: BTreeSet<StreamId>,
    /// The largest receive window a stream grew to: where new streams start.
    stream_window_learnt: u64,

    streams: BTreeMap<StreamId, StreamState>,
    next_local_stream: u64,
    /// `open_stream` was refused for the peer's limit: tell when a stream ends.
    open_blocked: bool,
    next_remote_stream: u64,
    incoming: VecDeque<StreamId>,
    round_robin: u64,

    out_messages: VecDeque<OutMessage>,
    out_message_offset: usize,
    out_message_bytes: u64,
    next_message_id: u64,
    messages_blocked: bool,
    in_message: Option<InMessage>,
    in_messages: VecDeque<(InMessage, usize)>,
    /// Message bytes buffered (partial and complete).
    in_message_bytes: u64,
    /// Message bytes whose credit waits for the application to take them.
    message_credit_deferred: u64,
    next_in_message: u64,

    control: VecDeque<Frame>,
    path_signals_out: usize,
    path_signals_in: VecDeque<Bytes>,
    pongs_due: VecDeque<u64>,
    ping_due: bool,
    ping_out: Option<(u64, Instant)>,
    /// The path the outstanding ping went out on.
    ping_path: Option<PathId>,
    next_ping: u64,
    rtt: Rtt,

    timers: TimerTable,
    last_progress: Instant,
    slow_reported: bool,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
        let (next_local_stream, next_remote_stream) = match role {
            Role::Initiator => (0, 1),
            Role::Responder => (1, 0),
        };
        let mut timers = TimerTable::default();
        timers.set(Timer::Idle, now + config.idle_timeout);
        Ok(Self {
            recv_window: RecvWindow::new(u64::from(config.session_window), config.max_window),
            config,
            remote,
            role,
            state: State::Start(start),
            remote_params: params,
            close_reason: None,
            handshake_packet: None,
            hello_seen: None,
            handshake_due: false,
            paths: Vec::new(),
            trusted_paths: Vec::new(),
            current_heard: now,
            current_fresh: now,
            packet_path: None,
            choice: PathChoice::default(),
            next_pn: 0,
            next_unreliable: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            resend_cursor: 0,
            first_fresh_pn: 0,
            final_packet: None,
            rcv_next: 0,
            highest_unreliable: None,
            ack_pending: 0,
            ack_now: false,
            ack_since: None,
            send_max_data: 0,
            sent_data: 0,
            send_buffered: 0,
            recv_data: 0,
            recv_buffered: 0,
            max_data_due: false,
            grants_due: BTreeSet::new(),
            stream_window_learnt: u64::from(params.stream_window),
            streams: BTreeMap::new(),
            next_local_stream,
            open_blocked: false,
            next_remote_stream,
            incoming: VecDeque::new(),
            round_robin: 0,
            out_messages: VecDeque::new(),
            out_message_offset: 0,
            out_message_bytes: 0,
            next_message_id: 0,
            messages_blocked: false,
            in_message: None,
            in_messages: VecDeque::new(),
            in_message_bytes: 0,
            message_credit_deferred: 0,
            next_in_message: 0,
            control: VecDeque::new(),
            path_signals_out: 0,
            path_signals_in: VecDeque::new(),
            pongs_due: VecDeque::new(),
            ping_due: false,
            ping_out: None,
            ping_path: None,
            next_ping: 0,
            rtt: Rtt::default(),
            timers,
            last_progress: now,
            slow_reported: false,
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
        self.rtt.get()
    }

    /// Bytes held on the send side: written but unsent, queued messages, and sent
    /// packets awaiting acknowledgement.
    pub fn send_buffered(&self) -> u64 {
        self.send_buffered + self.out_message_bytes + self.unacked_bytes
    }

    /// Bytes received but not yet taken by the application.
    pub fn recv_buffered(&self) -> u64 {
        self.recv_buffered
    }

    /// The session receive window now (it grows toward the bandwidth-delay product).
    pub fn recv_window(&self) -> u64 {
        self.recv_window.window()
    }

    /// The path packets go out on.
    pub fn current_path(&self) -> Option<PathId> {
        self.paths.last().copied()
    }

    // ---- Inputs ----

    /// A path came up: it becomes the current one, and everything not yet
    /// acknowledged is resent on it.
    pub fn handle_path_up(&mut self, now: Instant, path: PathId) {
        self.paths.retain(|p| *p != path);
        self.paths.push(path);
        self.switched_path(now);
    }

    /// A path came up as a standby: the current path keeps the traffic, and this
    /// one takes over only when every other path is gone or silent. With no
    /// current path, it becomes current like [`Session::handle_path_up`].
    pub fn handle_path_standby(&mut self, now: Instant, path: PathId) {
        if self.paths.iter().all(|p| *p == path) {
            return self.handle_path_up(now, path);
        }
        self.paths.retain(|p| *p != path);
        self.paths.insert(0, path);
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
        if !self.trusted_paths.contains(&path) {
            self.trusted_paths.push(path);
        }
    }

    /// A path went down with whatever it had in flight. If it was the current one,
    /// the most recent remaining path takes over and gets everything resent.
    pub fn handle_path_down(&mut self, now: Instant, path: PathId) {
        let was_current = self.current_path() == Some(path);
        self.paths.retain(|p| *p != path);
        self.trusted_paths.retain(|p| *p != path);
        self.choice.removed(path);
        if was_current && !self.paths.is_empty() {
            self.switched_path(now);
        } else {
            self.arm_path_check();
            self.arm_path_choice();
        }
    }

    /// Arms the path silence check while there is another path to go to and
    /// the current one owes an answer (unacknowledged packets or a ping).
    fn arm_path_check(&mut self) {
        match self.silent_since() {
            Some(since) if self.paths.len() > 1 && self.close_reason.is_none() => {
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
        let oldest_unacked = self.unacked.front().map(|p| p.sent);
        let ping = self.ping_out.map(|(_, sent)| sent);
        let owed = [oldest_unacked, ping].into_iter().flatten().min()?;
        Some(owed.max(self.current_heard))
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
        self.paths.retain(|p| *p != dead);
        self.choice.removed(dead);
        self.events.push_back(Event::PathFailed(dead));
        if !self.paths.is_empty() {
            self.switched_path(now);
        }
    }

    fn switched_path(&mut self, now: Instant) {
        if let State::Start(_) = self.state {
            self.start_handshake();
        }
        self.current_heard = now;
        self.current_fresh = now;
        // A ping out on another path says nothing of this one: ping here.
        if self.ping_out.take().is_some() {
            self.ping_due = true;
        }
        self.choice.switched(now, self.current_path(), self.next_pn);
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
        self.resend_cursor = 0;
        // Acks of resent packets would measure from the first send: no RTT samples.
        self.first_fresh_pn = self.next_pn;
        if !self.unacked.is_empty() {
            // A resend is progress in the making: give it a full threshold.
            self.last_progress = now;
            self.arm_slow();
        }
    }

    /// The current path's queue is full: the path, not the application, holds
    /// data back now. Its goodput counts for choosing paths.
    pub fn handle_path_full(&mut self) {
        self.choice.note_full();
    }

    fn arm_path_choice(&mut self) {
        let busy = !self.unacked.is_empty();
        match self.choice.next_deadline(self.rtt.get(), busy) {
            Some(at) if self.close_reason.is_none() => {
                self.timers.set(Timer::PathChoice, at);
            }
            _ => self.timers.stop(Timer::PathChoice),
        }
    }

    /// A goodput window ended or a retry is due: leave a much worse path for
    /// a better one, or try a path that was left again.
    fn choose_path(&mut self, now: Instant) {
        let backlog = self.send_buffered + self.out_message_bytes > 0;
        let choice = self.choice.poll(
            now,
            self.rtt.get(),
            &self.paths,
            self.unacked_bytes,
            backlog,
        );
        let to = match choice {
            Some(Choice::Leave { from, to }) => {
                // The worse path stays up as a standby, first to go.
                self.paths.retain(|p| *p != from);
                self.paths.insert(0, from);
                Some(to)
            }
            Some(Choice::Retry(path)) => Some(path),
            None => None,
        };
        match to {
            Some(to) if self.paths.contains(&to) => {
                self.paths.retain(|p| *p != to);
                self.paths.push(to);
                self.switched_path(now);
            }
            _ => self.arm_path_choice(),
        }
    }

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
        self.packet_path = Some(path);
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
            Packet::Plain { pn, frames } if self.trusted_paths.contains(&path) => {
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
        self.send_max_data = u64::from(keys.remote_params.session_window);
        self.state = State::Established(Box::new(keys));
        self.events.push_back(Event::Connected);
        self.ping_due = true;
        self.heard(now);
        self.timers
            .set(Timer::KeepAlive, now + self.config.keepalive_interval);
    }

    /// Something authentic arrived.
    fn heard(&mut self, now: Instant) {
        self.timers.set(Timer::Idle, now + self.config.idle_timeout);
        if self.packet_path.is_some() && self.packet_path == self.current_path() {
            self.current_heard = now;
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
            if pn != self.rcv_next {
                // A duplicate (resend or replay: acknowledge again at once so the
                // sender stops resending) or a leftover from a replaced path.
                self.ack_now |= pn < self.rcv_next;
                return;
            }
            self.rcv_next += 1;
            // Fresh data on another live path while none came on the current
            // one for a while: the peer moved there (its path failed or it
            // prefers the new one). Follow, so answers reach it. A current path
            // that carries fresh traffic is kept: packets the peer sent on its
            // old path just before it moved must not pull this side back, and
            // neither does a path this side left for its poor goodput.
            let quiet =
                now.saturating_duration_since(self.current_fresh) >= self.config.path_timeout / 4;
            if self.packet_path.is_some() && self.packet_path == self.current_path() {
                self.current_fresh = now;
            }
            if let Some(path) = self.packet_path
                && quiet
                && Some(path) != self.current_path()
                && self.paths.contains(&path)
                && !self.choice.is_left(path)
            {
                self.paths.retain(|p| *p != path);
                self.paths.push(path);
                self.switched_path(now);
                self.current_heard = now;
            }
            self.ack_pending += 1;
            if self.ack_pending >= ACK_EVERY {
                self.ack_now = true;
            }
            if self.ack_since.is_none() {
                self.ack_since = Some(now);
                self.timers.set(Timer::Ack, now + self.config.ack_delay);
            }
        } else {
            if self.highest_unreliable.is_some_and(|h| pn <= h) {
                return;
            }
            self.highest_unreliable = Some(pn);
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

    fn on_frame(&mut self, now: Instant, frame: Frame) -> Result<(), ProtocolError> {
        match frame {
            Frame::Ack { next, delay_us } => self.on_ack(now, next, delay_us)?,
            Frame::Ping { id } => {
                if self.pongs_due.len() < MAX_PONGS {
                    self.pongs_due.push_back(id);
                }
            }
            Frame::Pong { id } => {
                if let Some((_, sent)) = self.ping_out.filter(|(ping, _)| *ping == id) {
                    self.rtt.sample(now.saturating_duration_since(sent));
                    self.ping_out = None;
                    // The ping got through on the current path, whichever
                    // path the answer took.
                    if self.ping_path.is_some() && self.ping_path == self.current_path() {
                        self.current_heard = now;
                        self.arm_path_check();
                    }
                }
            }
            Frame::Stream {
                id,
                offset,
                fin,
                data,
            } => self.on_stream(StreamId(id), offset, fin, data)?,
            Frame::MaxData(max) => {
                if max > self.send_max_data {
                    self.send_max_data = max;
                    self.wake_writers();
                }
            }
            Frame::MaxStreamData { id, max } => {
                if let Some(s) = self.remote_stream(StreamId(id))?
                    && max > s.send.max
                {
                    s.send.max = max;
                    self.wake_writers();
                }
            }
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => self.on_reset(StreamId(id), code, final_size)?,
            Frame::StopSending { id, code } => {
                let id = StreamId(id);
                if let Some(s) = self.remote_stream(id)?
                    && s.send.stopped.is_none()
                {
                    s.send.stopped = Some(code);
                    s.send.blocked = true;
                    // The stream ends here: whatever was not sent will never be.
                    let _ = self.reset_send(id, code);
                    self.wake_writers();
                }
            }
            Frame::Message { id, flags, chunk } => self.on_message(id, flags, chunk)?,
            Frame::MessageTaken { id } => {
                if id >= self.next_message_id {
                    return Err(ProtocolError::StreamState);
                }
                self.events
                    .push_back(Event::MessageConfirmed(MessageId(id)));
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
        if next > self.next_pn {
            return Err(ProtocolError::BadAck);
        }
        let mut newest = None;
        let mut acked = 0;
        while let Some(p) = self.unacked.front() {
            if p.pn >= next {
                break;
            }
            let Some(p) = self.unacked.pop_front() else {
                break;
            };
            acked += 1;
            let cost = packet_cost(&p.packet);
            self.unacked_bytes -= cost;
            self.choice.acked(p.pn, cost);
            for (id, end) in &p.stream_ends {
                if let Some(s) = self.streams.get_mut(id) {
                    s.send.acked = s.send.acked.max(*end);
                }
            }
            newest = Some(p);
        }
        if acked == 0 {
            return Ok(());
        }
        self.resend_cursor = self.resend_cursor.saturating_sub(acked);
        if let Some(p) = newest.filter(|p| p.pn + 1 == next && p.pn >= self.first_fresh_pn) {
            let delay = Duration::from_micros(u64::from(delay_us));
            let sample = now.saturating_duration_since(p.sent);
            self.rtt.sample(sample.checked_sub(delay).unwrap_or(sample));
        }
        self.last_progress = now;
        self.slow_reported = false;
        // Progress shows the current path delivers, whichever path the peer
        // acknowledges on (it may not have followed this side yet).
        self.current_heard = now;
        self.arm_slow();
        self.arm_path_check();
        if self.unacked.is_empty() {
            self.arm_path_choice();
        }
        self.wake_writers();
        Ok(())
    }

    fn arm_slow(&mut self) {
        if self.unacked.is_empty() || self.slow_reported {
            self.timers.stop(Timer::Slow);
        } else {
            self.timers
                .set(Timer::Slow, self.last_progress + self.config.slow_after);
        }
    }

    /// The stream `id` as named by the peer: `None` if it is gone, an error if it
    /// is one of ours we never opened.
    fn remote_stream(&mut self, id: StreamId) -> Result<Option<&mut StreamState>, ProtocolError> {
        let ours = (id.0 & 1) == (self.next_local_stream & 1);
        if ours && id.0 >= self.next_local_stream {
            return Err(ProtocolError::StreamState);
        }
        if !ours && id.0 >= self.next_remote_stream {
            let incoming = self
                .streams
                .keys()
                .filter(|s| (s.0 & 1) == (id.0 & 1))
                .count() as u64;
            let new = (id.0 - self.next_remote_stream) / 2 + 1;
            if incoming + new > u64::from(self.config.max_streams) {
                return Err(ProtocolError::StreamLimit);
            }
            while self.next_remote_stream <= id.0 {
                let sid = StreamId(self.next_remote_stream);
                self.new_stream(sid);
                self.incoming.push_back(sid);
                self.events.push_back(Event::StreamOpened(sid));
                self.next_remote_stream += 2;
            }
        }
        Ok(self.streams.get_mut(&id))
    }

    /// A new stream's state. Its receive window starts at the largest window a
    /// stream of this session grew to ([`RecvWindow::granting`]): a grant for
    /// the rest goes out before the stream's first frame, so that every stream
    /// (a share request's, say) does not climb from the small initial window
    /// again, round trip after round trip.
    fn new_stream(&mut self, id: StreamId) {
        let advertised = u64::from(self.config.stream_window);
        let window = RecvWindow::granting(
            advertised,
            self.stream_window_learnt,
            self.config.max_window,
        );
        if window.window() > advertised {
            self.grants_due.insert(id);
        }
        let state = StreamState::new(u64::from(self.remote_params.stream_window), window);
        self.streams.insert(id, state);
    }

    fn on_stream(
        &mut self,
        id: StreamId,
        offset: u64,
        fin: bool,
        data: Bytes,
    ) -> Result<(), ProtocolError> {
        let session_allows = self.recv_window.allows(self.recv_data + data.len() as u64);
        if self.remote_stream(id)?.is_none() {
            return Ok(());
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        let recv = &mut s.recv;
        let end = offset + data.len() as u64;
        if offset != recv.received
            || recv.fin_at.is_some_and(|f| end > f || (fin && end != f))
            || recv.reset.is_some()
        {
            return Err(ProtocolError::StreamState);
        }
        if !recv.window.allows(end) || !session_allows {
            return Err(ProtocolError::FlowControl);
        }
        let n = data.len() as u64;
        recv.received = end;
        if fin {
            recv.fin_at = Some(end);
        }
        self.recv_data += n;
        if recv.stopped {
            recv.read = end;
            self.recv_window.on_read(n);
            self.max_data_due = true;
            return Ok(());
        }
        if !data.is_empty() {
            recv.buf.push_back(data);
        }
        self.recv_buffered += n;
        if !recv.notified {
            recv.notified = true;
            self.events.push_back(Event::StreamReadable(id));
        }
        Ok(())
    }

    fn on_reset(&mut self, id: StreamId, code: u32, final_size: u64) -> Result<(), ProtocolError> {
        let session_max = self.recv_window.max();
        let recv_data = self.recv_data;
        if self.remote_stream(id)?.is_none() {
            return Ok(());
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        let recv = &mut s.recv;
        if final_size < recv.received
            || recv.fin_at.is_some_and(|f| f != final_size)
            || !recv.window.allows(final_size)
            || recv_data + (final_size - recv.received) > session_max
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
        let stopped = recv.stopped;
        let notify = !recv.notified && !stopped;
        recv.notified = true;
        self.recv_data += unseen;
        self.recv_buffered -= unread;
        self.recv_window.on_read(unseen + unread);
        self.max_data_due = true;
        if notify {
            self.events.push_back(Event::StreamReadable(id));
        }
        Ok(())
    }

    fn on_message(&mut self, id: u64, flags: u8, chunk: Bytes) -> Result<(), ProtocolError> {
        if id != self.next_in_message {
            return Err(ProtocolError::MessageOrder);
        }
        let n = chunk.len() as u64;
        if !self.recv_window.allows(self.recv_data + n) {
            return Err(ProtocolError::FlowControl);
        }
        self.recv_data += n;
        // A message is taken only once complete, so its bytes cannot wait for that
        // to be granted back (a message larger than the window would never
        // finish): buffered message bytes up to the maximum message size are
        // granted at once, beyond it only as the application takes messages.
        let buffered_messages = self.in_message_bytes + n;
        if buffered_messages <= u64::from(self.config.max_message_size) {
            self.recv_window.on_read(n);
            self.max_data_due = true;
        } else {
            self.message_credit_deferred += n;
        }
        self.in_message_bytes = buffered_messages;
        self.recv_buffered += n;
        let msg = self.in_message.get_or_insert_with(|| InMessage {
            id,
            confirm: flags & MESSAGE_CONFIRM != 0,
            data: BytesMut::new(),
        });
        let max = self.config.max_message_size;
        if msg.data.len() + chunk.len() > max as usize {
            return Err(ProtocolError::MessageTooLarge { max });
        }
        msg.data.extend_from_slice(&chunk);
        if let Some(msg) = self.in_message.take_if(|_| flags & MESSAGE_FIN != 0) {
            let len = msg.data.len();
            self.in_messages.push_back((msg, len));
            self.next_in_message += 1;
            self.events.push_back(Event::MessageReceived);
        }
        Ok(())
    }

    /// Time passed: handles the timers that expired by `now`. A call before any
    /// deadline does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.expired(now) {
            match timer {
                Timer::Ack => self.ack_now = self.ack_pending > 0,
                Timer::KeepAlive => {
                    self.ping_due = true;
                    self.timers
                        .set(Timer::KeepAlive, now + self.config.keepalive_interval);
                }
                Timer::Idle => return self.close_session(CloseReason::IdleTimeout, false),
                Timer::Slow => {
                    if !self.unacked.is_empty() {
                        self.slow_reported = true;
                        self.events.push_back(Event::Slow);
                    }
                }
                Timer::PathSilence => self.path_silent(now),
                Timer::PathChoice => self.choose_path(now),
            }
        }
    }

    // ---- Application commands ----

    /// Opens a stream towards the peer.
    pub fn open_stream(&mut self) -> Result<StreamId, OpenError> {
        if !self.is_connected() {
            return Err(OpenError::NotConnected);
        }
        let open = self
            .streams
            .keys()
            .filter(|s| (s.0 & 1) == (self.next_local_stream & 1))
            .count() as u64;
        if open >= u64::from(self.remote_params.max_streams) {
            self.open_blocked = true;
            return Err(OpenError::Limit);
        }
        let id = StreamId(self.next_local_stream);
        self.next_local_stream += 2;
        self.new_stream(id);
        Ok(id)
    }

    /// The next stream the peer opened, if any.
    pub fn accept_stream(&mut self) -> Option<StreamId> {
        self.incoming.pop_front()
    }

    /// A handle to drive stream `id` (its methods fail with `UnknownStream` if
    /// there is no such stream).
    pub fn stream(&mut self, id: StreamId) -> Stream<'_> {
        Stream { session: self, id }
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
        let max = self.remote_params.max_message;
        if data.len() > max as usize {
            return Err(SendMessageError::TooLarge { max });
        }
        // Bounded queue: one message of any size, or several up to the limit.
        if !self.out_messages.is_empty()
            && self.out_message_bytes + data.len() as u64 > u64::from(max)
        {
            self.messages_blocked = true;
            return Err(SendMessageError::Blocked);
        }
        let id = self.next_message_id;
        self.next_message_id += 1;
        self.out_message_bytes += data.len() as u64;
        self.out_messages
            .push_back(OutMessage { id, data, confirm });
        Ok(MessageId(id))
    }

    /// Takes the next complete message, granting its bytes back to the peer and
    /// confirming it if the sender asked.
    pub fn recv_message(&mut self) -> Option<ReceivedMessage> {
        let (msg, len) = self.in_messages.pop_front()?;
        let len = len as u64;
        self.recv_buffered -= len;
        self.in_message_bytes -= len;
        let release = self.message_credit_deferred.min(len);
        self.message_credit_deferred -= release;
        self.recv_window.on_read(release);
        self.max_data_due = true;
        if msg.confirm {
            self.control.push_back(Frame::MessageTaken { id: msg.id });
        }
        Some(ReceivedMessage {
            id: MessageId(msg.id),
            data: msg.data.freeze(),
        })
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
            self.final_packet = self.seal(self.next_pn, &plain);
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
        if let Some(p) = self.unacked.get(self.resend_cursor) {
            self.resend_cursor += 1;
            let payload = self.wrap(path, p.pn, &p.packet)?;
            return Some(Transmit { path, payload });
        }
        self.grant_credit(now);
        let (pn, packet) = self.build_packet(now)?;
        let payload = self.wrap(path, pn, &packet)?;
        Some(Transmit { path, payload })
    }

    /// Computes the window grants that reads made due.
    fn grant_credit(&mut self, now: Instant) {
        let rtt = self.rtt.get();
        for id in std::mem::take(&mut self.grants_due) {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            if s.recv.stopped || s.recv.fin_at.is_some() || s.recv.reset.is_some() {
                continue;
            }
            if let Some(max) = s.recv.window.poll_grant(now, rtt) {
                self.control
                    .push_back(Frame::MaxStreamData { id: id.0, max });
                self.stream_window_learnt = self.stream_window_learnt.max(s.recv.window.window());
            }
        }
        if self.max_data_due {
            self.max_data_due = false;
            if let Some(max) = self.recv_window.poll_grant(now, rtt) {
                self.control.push_back(Frame::MaxData(max));
            }
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
            let room = budget.saturating_sub(plain.len() + frame::STREAM_HEADER_LEN);
            if room == 0 {
                break;
            }
            if let Some(f) = self.next_message_chunk(room) {
                f.encode(&mut plain);
                reliable = true;
                continue;
            }
            match self.next_stream_chunk(room) {
                Some((f, end)) => {
                    f.encode(&mut plain);
                    reliable = true;
                    if let Some(end) = end {
                        stream_ends.push(end);
                    }
                }
                None => break,
            }
        }
        let ack_due = self.ack_pending > 0 && (self.ack_now || reliable);
        let ping = self.ping_due;
        if !reliable && !ack_due && self.pongs_due.is_empty() && !ping {
            return None;
        }
        if ack_due {
            let delay = self
                .ack_since
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            Frame::Ack {
                next: self.rcv_next,
                delay_us: u32::try_from(delay.as_micros()).unwrap_or(u32::MAX),
            }
            .encode(&mut plain);
            self.ack_pending = 0;
            self.ack_now = false;
            self.ack_since = None;
            self.timers.stop(Timer::Ack);
        }
        while let Some(id) = self.pongs_due.pop_front() {
            Frame::Pong { id }.encode(&mut plain);
        }
        if ping {
            self.ping_due = false;
            let id = self.next_ping;
            self.next_ping += 1;
            self.ping_out = Some((id, now));
            self.ping_path = self.current_path();
            Frame::Ping { id }.encode(&mut plain);
        }
        let pn = if reliable {
            self.next_pn
        } else {
            self.next_unreliable | UNRELIABLE_BIT
        };
        plain[0] = packet::VERSION;
        plain[1] = packet::T_PLAIN;
        plain[2..DATA_HEADER_LEN].copy_from_slice(&pn.to_be_bytes());
        let packet = Bytes::from(plain);
        if reliable {
            self.next_pn += 1;
            let was_idle = self.unacked.is_empty();
            if was_idle {
                self.last_progress = now;
                self.choice.restart(now);
            }
            self.unacked_bytes += packet_cost(&packet);
            self.unacked.push_back(SentPacket {
                pn,
                packet: packet.clone(),
                sent: now,
                stream_ends,
            });
            self.resend_cursor = self.unacked.len();
            self.arm_slow();
            if was_idle {
                self.arm_path_choice();
            }
        } else {
            self.next_unreliable += 1;
        }
        self.arm_path_check();
        Some((pn, packet))
    }

    /// Packet `pn` (in its `PLAIN` form) as it goes out on `path`: as it is on
    /// a trusted path (no copy), else with its frames encrypted.
    fn wrap(&self, path: PathId, pn: u64, packet: &Bytes) -> Option<Bytes> {
        if self.trusted_paths.contains(&path) {
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

    fn next_message_chunk(&mut self, room: usize) -> Option<Frame> {
        let credit = self.send_max_data.saturating_sub(self.sent_data);
        let msg = self.out_messages.front()?;
        let left = msg.data.len() - self.out_message_offset;
        let n = left
            .min(room)
            .min(self.config.max_frame_payload)
            .min(usize::try_from(credit).unwrap_or(usize::MAX));
        if n == 0 && left > 0 {
            return None;
        }
        let chunk = msg
            .data
            .slice(self.out_message_offset..self.out_message_offset + n);
        let fin = n == left;
        let mut flags = if fin { MESSAGE_FIN } else { 0 };
        if msg.confirm {
            flags |= MESSAGE_CONFIRM;
        }
        let id = msg.id;
        self.sent_data += n as u64;
        self.out_message_bytes -= n as u64;
        if fin {
            self.out_messages.pop_front();
            self.out_message_offset = 0;
            if self.messages_blocked && self.out_messages.is_empty() {
                self.messages_blocked = false;
                self.events.push_back(Event::MessageWritable);
            }
        } else {
            self.out_message_offset += n;
        }
        Some(Frame::Message { id, flags, chunk })
    }

    /// The next stream frame, round-robin over the streams with something to send,
    /// and the stream end it reaches if the stream is in one-chunk mode.
    fn next_stream_chunk(&mut self, room: usize) -> Option<(Frame, Option<(StreamId, u64)>)> {
        let max = self.config.max_frame_payload.min(room);
        let id = self
            .streams
            .range(StreamId(self.round_robin)..)
            .chain(self.streams.range(..StreamId(self.round_robin)))
            .find(|(_, s)| s.send.has_output())
            .map(|(id, _)| *id)?;
        self.round_robin = id.0 + 1;
        let s = self.streams.get_mut(&id)?;
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
        self.send_buffered -= data.len() as u64;
        let fin = send.fin && send.pending.is_empty();
        send.fin_sent |= fin;
        let end = send.one_chunk.then_some((id, send.sent));
        let frame = Frame::Stream {
            id: id.0,
            offset,
            fin,
            data,
        };
        self.forget_if_done(id);
        Some((frame, end))
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

/// The bytes an unacknowledged packet (in its `PLAIN` form) counts for in the
/// send buffer: its encrypted size, whichever path it goes on.
fn packet_cost(packet: &Bytes) -> u64 {
    (packet.len() + TAG_LEN) as u64
}

fn encode_packet(p: &Packet) -> Bytes {
    let mut buf = BytesMut::with_capacity(p.encoded_len());
    p.encode(&mut buf);
    buf.freeze()
}
