//! The direct-path negotiator of one connection, sans-IO: which attempt runs,
//! of which kind, when the next one starts, and what the peer is told.
//!
//! The side that dialed the connection offers; the other answers. The offering
//! side starts when the session handshake finishes, QUIC first while the node
//! has a QUIC endpoint and QUIC has not failed [`QUIC_TRIES`] times in a row,
//! WebRTC otherwise. An attempt that fails, or whose open path goes silent,
//! is stopped on both sides (the peer gets a `Close`), and the offering side
//! tries again after a backoff that starts at [`RETRY_MIN`] and doubles up to
//! [`RETRY_MAX`]; a path that stayed up for [`STABLE_AFTER`] resets it. A QUIC
//! offer the peer closes unanswered means the peer has no QUIC: WebRTC at once.
//! A peer that takes no direct path at all declines, and the offering side
//! stops offering.
//!
//! The shell runs the attempts (sockets, QUIC or WebRTC stacks) and feeds the
//! negotiator what happens: [`Negotiator::handle_connected`],
//! [`Negotiator::handle_signal`] (a path signal from the peer),
//! [`Negotiator::handle_attempt_signal`] (a signal an attempt wants sent),
//! [`Negotiator::handle_open`], [`Negotiator::handle_failed`],
//! [`Negotiator::handle_silent`] (the session left the path) and
//! [`Negotiator::handle_timeout`]. It carries out what
//! [`Negotiator::poll_action`] returns, and calls `handle_timeout` at
//! [`Negotiator::poll_timeout`]. The clock is the caller's.
//!
//! ```
//! use peerpipe_proto::direct::negotiator::{Action, Kind, Negotiator};
//! use peerpipe_proto::time::Instant;
//!
//! let now = Instant::now();
//! let mut offerer = Negotiator::new(true, true, true);
//! offerer.handle_connected(now);
//! offerer.handle_timeout(now);
//! let Some(Action::Start { path, kind, .. }) = offerer.poll_action() else { panic!() };
//! assert_eq!(kind, Kind::Quic);
//! offerer.handle_open(now, path);
//! assert_eq!(offerer.poll_action(), Some(Action::Up(path)));
//! assert!(offerer.is_up(path));
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use super::{DirectSignal, QuicParams};
use crate::session::PathId;
use crate::time::Instant;

/// Path ids of direct attempts have this bit set; relay path ids never do.
pub const DIRECT_PATH_BIT: u64 = 1 << 62;
/// Direct path ids of QUIC attempts also have this bit set.
pub const QUIC_PATH_BIT: u64 = 1 << 61;
/// QUIC attempts that fail before opening, in a row, before the offering side
/// turns to WebRTC.
pub const QUIC_TRIES: u32 = 2;
/// The first wait before a new attempt; it doubles per failed attempt.
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// The longest wait between attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// A path that stayed up this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// The kind of a direct attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A QUIC connection between two native endpoints.
    Quic,
    /// A WebRTC data channel.
    WebRtc,
}

impl Kind {
    /// The kind of direct path `path` is; `None` for a relay path.
    pub fn of(path: PathId) -> Option<Self> {
        match (path.0 & DIRECT_PATH_BIT != 0, path.0 & QUIC_PATH_BIT != 0) {
            (false, _) => None,
            (true, true) => Some(Self::Quic),
            (true, false) => Some(Self::WebRtc),
        }
    }
}

/// How an attempt begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// This side offers: make the offer and send it ([`Action::Start`]'s
    /// attempt hands its signals back through
    /// [`Negotiator::handle_attempt_signal`]).
    Offer,
    /// This side answers the peer's WebRTC offer (its SDP).
    AnswerSdp(String),
    /// This side answers the peer's QUIC offer.
    AnswerQuic(QuicParams),
}

/// What the negotiator asks of its shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start attempt `attempt` of `kind` on path `path` (any earlier attempt
    /// was stopped before).
    Start {
        /// The attempt's session path.
        path: PathId,
        /// The attempt's number, as signals name it.
        attempt: u32,
        /// QUIC or WebRTC.
        kind: Kind,
        /// Offer, or answer to the peer's offer.
        begin: Begin,
    },
    /// Stop the attempt on `path` and free what it holds.
    Stop(PathId),
    /// Send this signal to the peer, inside the session.
    Signal(DirectSignal),
    /// Hand this signal from the peer to the attempt on `path`.
    Deliver(PathId, DirectSignal),
    /// The direct path opened: the session may move its traffic there.
    Up(PathId),
    /// The direct path is gone: the session falls back to the relay.
    Down(PathId),
}

#[derive(Debug)]
struct Attempt {
    id: u32,
    path: PathId,
    up_since: Option<Instant>,
    /// The peer answered the attempt's offer.
    answered: bool,
}

/// One connection's direct-path negotiator.
#[derive(Debug)]
pub struct Negotiator {
    /// This side offers (the side that dialed); the other answers.
    offerer: bool,
    /// Direct paths are allowed at all (not relay-only).
    allowed: bool,
    /// The node has a QUIC endpoint.
    quic: bool,
    /// The newest attempt id seen or made.
    attempt: u32,
    active: Option<Attempt>,
    retry_at: Option<Instant>,
    failures: u32,
    /// The peer takes no direct path: stop offering.
    declined: bool,
    /// QUIC attempts that failed before opening, in a row.
    quic_failures: u32,
    actions: VecDeque<Action>,
}

impl Negotiator {
    /// A negotiator for the side that dialed (`offerer`) or was dialed;
    /// `allowed` is false for a relay-only node (it declines every offer),
    /// `quic` tells whether the node has a QUIC endpoint.
    pub fn new(offerer: bool, allowed: bool, quic: bool) -> Self {
        Self {
            offerer,
            allowed,
            quic,
            attempt: 0,
            active: None,
            retry_at: None,
            failures: 0,
            declined: false,
            quic_failures: 0,
            actions: VecDeque::new(),
        }
    }

    /// The node gained or lost its QUIC endpoint (for attempts from now on).
    pub fn set_quic(&mut self, quic: bool) {
        self.quic = quic;
    }

    /// The session handshake finished: the offering side starts at once.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.offerer && self.allowed {
            self.retry_at = Some(now);
        }
    }

    /// When [`Negotiator::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The time from [`Negotiator::poll_timeout`] came: the next attempt starts.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.start(None, Begin::Offer);
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether `path` is the open direct path.
    pub fn is_up(&self, path: PathId) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| a.path == path && a.up_since.is_some())
    }

    /// The active attempt's path, open or not.
    pub fn active_path(&self) -> Option<PathId> {
        self.active.as_ref().map(|a| a.path)
    }

    /// Starts an attempt: ours (`attempt` = `None`) or an answer to the peer's
    /// offer of `attempt`.
    fn start(&mut self, attempt: Option<u32>, begin: Begin) {
        self.stop(false);
        let id = attempt.unwrap_or_else(|| self.attempt.wrapping_add(1));
        self.attempt = id;
        let kind = match &begin {
            Begin::Offer if self.quic && self.quic_failures < QUIC_TRIES => Kind::Quic,
            Begin::AnswerQuic(_) => Kind::Quic,
            _ => Kind::WebRtc,
        };
        let bits = match kind {
            Kind::Quic => DIRECT_PATH_BIT | QUIC_PATH_BIT,
            Kind::WebRtc => DIRECT_PATH_BIT,
        };
        let path = PathId(bits | u64::from(id));
        self.actions.push_back(Action::Start {
            path,
            attempt: id,
            kind,
            begin,
        });
        self.active = Some(Attempt {
            id,
            path,
            up_since: None,
            answered: false,
        });
    }

    /// Ends the active attempt; `tell` tells the peer.
    fn stop(&mut self, tell: bool) -> Option<Attempt> {
        let attempt = self.active.take()?;
        if attempt.up_since.is_some() {
            self.actions.push_back(Action::Down(attempt.path));
        }
        self.actions.push_back(Action::Stop(attempt.path));
        if tell {
            self.actions.push_back(Action::Signal(DirectSignal::Close {
                attempt: attempt.id,
            }));
        }
        Some(attempt)
    }

    /// An attempt failed: the offering side tries again after the backoff.
    fn backoff(&mut self, now: Instant) {
        if !self.offerer || !self.allowed || self.declined {
            return;
        }
        let wait = RETRY_MIN
            .saturating_mul(1 << self.failures.min(7))
            .min(RETRY_MAX);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + wait);
    }

    /// Counts how `attempt` ended: a path that stayed up resets the backoff,
    /// a QUIC attempt that never opened counts toward falling back to WebRTC.
    fn ended(&mut self, now: Instant, attempt: &Attempt) {
        let stable = attempt
            .up_since
            .is_some_and(|at| now.saturating_duration_since(at) >= STABLE_AFTER);
        if stable {
            self.failures = 0;
            self.quic_failures = 0;
        } else if attempt.up_since.is_none() && Kind::of(attempt.path) == Some(Kind::Quic) {
            self.quic_failures = self.quic_failures.saturating_add(1);
        }
        self.backoff(now);
    }

    /// The active attempt ended on this side: tell the peer, back off.
    fn lost(&mut self, now: Instant) {
        if let Some(attempt) = self.stop(true) {
            self.ended(now, &attempt);
        }
    }

    /// Leaves the current direct path (if any) and negotiates a new one at once.
    pub fn restart(&mut self, now: Instant) {
        self.stop(true);
        if self.offerer && self.allowed && !self.declined {
            self.retry_at = Some(now);
        }
    }

    /// The attempt on `path` opened.
    pub fn handle_open(&mut self, now: Instant, path: PathId) {
        if let Some(a) = self.active.as_mut().filter(|a| a.path == path) {
            a.up_since = Some(now);
            self.actions.push_back(Action::Up(path));
        }
    }

    /// The attempt on `path` failed (it could not open, or its carrier ended).
    pub fn handle_failed(&mut self, now: Instant, path: PathId) {
        if self.active_path() == Some(path) {
            self.lost(now);
        }
    }

    /// The session found `path` silent and left it.
    pub fn handle_silent(&mut self, now: Instant, path: PathId) {
        self.handle_failed(now, path);
    }

    /// The attempt on `path` wants `signal` sent to the peer: forwarded while
    /// it is the active attempt.
    pub fn handle_attempt_signal(&mut self, path: PathId, signal: DirectSignal) {
        if self.active_path() == Some(path) {
            self.actions.push_back(Action::Signal(signal));
        }
    }

    /// A path signal from the peer.
    pub fn handle_signal(&mut self, now: Instant, signal: DirectSignal) {
        let fresh = signal.attempt() > self.attempt || self.active.is_none();
        let current = self
            .active
            .as_ref()
            .is_some_and(|a| a.id == signal.attempt());
        match signal {
            DirectSignal::Offer { attempt, .. } | DirectSignal::QuicOffer { attempt, .. }
                if !self.allowed =>
            {
                self.actions
                    .push_back(Action::Signal(DirectSignal::Decline { attempt }));
            }
            // Offers cross only if both sides offer, which they never do: the
            // offering side ignores any, and stale ones are ignored too.
            DirectSignal::Offer { .. } | DirectSignal::QuicOffer { .. }
                if self.offerer || !fresh => {}
            DirectSignal::Offer { attempt, sdp } => {
                self.start(Some(attempt), Begin::AnswerSdp(sdp));
            }
            DirectSignal::QuicOffer { attempt, .. } if !self.quic => {
                // No QUIC here: the offering side turns to WebRTC.
                self.stop(false);
                self.attempt = attempt;
                self.actions
                    .push_back(Action::Signal(DirectSignal::Close { attempt }));
            }
            DirectSignal::QuicOffer { attempt, quic } => {
                self.start(Some(attempt), Begin::AnswerQuic(quic));
            }
            DirectSignal::Answer { .. }
            | DirectSignal::Candidate { .. }
            | DirectSignal::QuicAnswer { .. } => {
                let answer = !matches!(signal, DirectSignal::Candidate { .. });
                if let Some(a) = self.active.as_mut().filter(|_| current) {
                    a.answered |= answer;
                    self.actions.push_back(Action::Deliver(a.path, signal));
                }
            }
            DirectSignal::Close { .. } => {
                if current && let Some(a) = self.stop(false) {
                    if self.offerer && Kind::of(a.path) == Some(Kind::Quic) && !a.answered {
                        // Refused unanswered: the peer has no QUIC. WebRTC, now.
                        self.quic_failures = QUIC_TRIES;
                        self.retry_at = Some(now);
                    } else {
                        self.ended(now, &a);
                    }
                }
            }
            DirectSignal::Decline { .. } => {
                self.declined = true;
                self.retry_at = None;
                self.stop(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(n: &mut Negotiator) -> Vec<Action> {
        std::iter::from_fn(|| n.poll_action()).collect()
    }

    #[test]
    fn path_kinds_follow_the_id() {
        assert_eq!(Kind::of(PathId(3)), None);
        assert_eq!(Kind::of(PathId(DIRECT_PATH_BIT | 3)), Some(Kind::WebRtc));
        let quic = PathId(DIRECT_PATH_BIT | QUIC_PATH_BIT | 3);
        assert_eq!(Kind::of(quic), Some(Kind::Quic));
    }

    #[test]
    fn a_relay_only_side_declines_and_the_offerer_stops_offering() {
        let now = Instant::now();
        let mut answerer = Negotiator::new(false, false, true);
        let offer = DirectSignal::Offer {
            attempt: 1,
            sdp: "v=0".into(),
        };
        answerer.handle_signal(now, offer);
        assert_eq!(
            actions(&mut answerer),
            [Action::Signal(DirectSignal::Decline { attempt: 1 })]
        );
        let mut offerer = Negotiator::new(true, true, false);
        offerer.handle_connected(now);
        offerer.handle_timeout(now);
        actions(&mut offerer);
        offerer.handle_signal(now, DirectSignal::Decline { attempt: 1 });
        assert_eq!(offerer.poll_timeout(), None);
        offerer.handle_timeout(now + RETRY_MAX);
        assert!(
            actions(&mut offerer)
                .iter()
                .all(|a| !matches!(a, Action::Start { .. }))
        );
    }
}
