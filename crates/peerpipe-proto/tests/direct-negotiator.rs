//! The direct-path negotiator of both sides, on a virtual clock: QUIC that fails
//! falls back to WebRTC, failures back off, a peer without QUIC turns the
//! offerer to WebRTC at once, crossing and stale signals do not break the
//! attempt that runs, and a path that opens then goes silent is left and
//! tried again.

use std::collections::VecDeque;
use std::time::Duration;

use peerpipe_proto::direct::negotiator::{
    Action, Begin, Kind, Negotiator, QUIC_TRIES, RETRY_MAX, RETRY_MIN, STABLE_AFTER,
};
use peerpipe_proto::direct::{DirectSignal, QuicParams};
use peerpipe_proto::session::PathId;
use peerpipe_proto::time::Instant;

/// One way of the session between the two sides.
const SIGNAL_DELAY: Duration = Duration::from_millis(20);
/// An attempt that opens does so this long after both sides run it.
const OPEN_DELAY: Duration = Duration::from_millis(30);
/// An attempt that does not open fails this long after it started.
const FAIL_AFTER: Duration = Duration::from_secs(10);

fn quic_params() -> QuicParams {
    QuicParams {
        pin: [1; 32],
        token: [2; 16],
        candidates: vec!["192.0.2.1:4433".parse().unwrap()],
    }
}

/// What one side's shell runs.
#[derive(Default)]
struct Shell {
    /// The running attempt: path, kind, start, whether it has the peer's part.
    running: Option<(PathId, Kind, Instant, bool)>,
    up: Option<PathId>,
    /// Every attempt started: (when, attempt, kind, offered).
    started: Vec<(Instant, u32, Kind, bool)>,
    downs: u32,
}

struct World {
    now: Instant,
    sides: [Negotiator; 2],
    shells: [Shell; 2],
    /// Signals on the way: (arrives, to side, signal).
    wire: VecDeque<(Instant, usize, DirectSignal)>,
    /// Whether attempts of a kind open.
    opens: fn(Kind) -> bool,
}

impl World {
    fn new(quic: [bool; 2], opens: fn(Kind) -> bool) -> Self {
        let now = Instant::now();
        let mut sides = [
            Negotiator::new(true, true, quic[0]),
            Negotiator::new(false, true, quic[1]),
        ];
        for side in &mut sides {
            side.handle_connected(now);
        }
        Self {
            now,
            sides,
            shells: [Shell::default(), Shell::default()],
            wire: VecDeque::new(),
            opens,
        }
    }

    /// Carries out side `i`'s actions.
    fn carry_out(&mut self, i: usize) {
        while let Some(action) = self.sides[i].poll_action() {
            let now = self.now;
            let shell = &mut self.shells[i];
            match action {
                Action::Start {
                    path,
                    attempt,
                    kind,
                    begin,
                } => {
                    assert!(shell.running.is_none(), "stopped before a new start");
                    let offered = begin == Begin::Offer;
                    shell.started.push((now, attempt, kind, offered));
                    shell.running = Some((path, kind, now, !offered));
                    // The attempt's own part goes to the peer.
                    let part = match (kind, offered) {
                        (Kind::Quic, true) => DirectSignal::QuicOffer {
                            attempt,
                            quic: quic_params(),
                        },
                        (Kind::Quic, false) => DirectSignal::QuicAnswer {
                            attempt,
                            quic: quic_params(),
                        },
                        (Kind::WebRtc, true) => DirectSignal::Offer {
                            attempt,
                            sdp: "offer".into(),
                        },
                        (Kind::WebRtc, false) => DirectSignal::Answer {
                            attempt,
                            sdp: "answer".into(),
                        },
                    };
                    self.sides[i].handle_attempt_signal(path, part);
                }
                Action::Stop(path) => {
                    if shell.running.is_some_and(|r| r.0 == path) {
                        shell.running = None;
                    }
                }
                Action::Signal(signal) => {
                    self.wire.push_back((now + SIGNAL_DELAY, 1 - i, signal));
                }
                Action::Deliver(path, _) => {
                    if let Some(r) = shell.running.as_mut().filter(|r| r.0 == path) {
                        r.3 = true;
                    }
                }
                Action::Up(path) => shell.up = Some(path),
                Action::Down(path) => {
                    assert_eq!(shell.up, Some(path), "down only what is up");
                    shell.up = None;
                    shell.downs += 1;
                }
            }
        }
    }

    /// The next instant something happens.
    fn next_event(&self) -> Option<Instant> {
        let mut at: Vec<Instant> = self.wire.iter().map(|w| w.0).collect();
        at.extend(self.sides.iter().filter_map(Negotiator::poll_timeout));
        for (i, shell) in self.shells.iter().enumerate() {
            if let Some((path, kind, started, complete)) = shell.running
                && !self.sides[i].is_up(path)
            {
                let other = self.shells[1 - i].running;
                let both = complete && other.is_some_and(|o| o.0 == path && o.3);
                if both && (self.opens)(kind) {
                    at.push(started.max(self.now) + OPEN_DELAY);
                } else {
                    at.push(started + FAIL_AFTER);
                }
            }
        }
        at.into_iter().min()
    }

    /// Runs until `until` (virtual), at most 10,000 steps.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..10_000 {
            for i in 0..2 {
                self.carry_out(i);
            }
            let Some(next) = self.next_event().filter(|&t| t <= until) else {
                self.now = until;
                return;
            };
            self.now = self.now.max(next);
            let now = self.now;
            while let Some(w) = self.wire.front().filter(|w| w.0 <= now) {
                let (_, to, signal) = w.clone();
                self.wire.pop_front();
                self.sides[to].handle_signal(now, signal);
                self.carry_out(to);
            }
            for i in 0..2 {
                self.sides[i].handle_timeout(now);
                self.carry_out(i);
                if let Some((path, kind, started, complete)) = self.shells[i].running
                    && !self.sides[i].is_up(path)
                {
                    let other = self.shells[1 - i].running;
                    let both = complete && other.is_some_and(|o| o.0 == path && o.3);
                    if both && (self.opens)(kind) {
                        self.sides[i].handle_open(now, path);
                    } else if now >= started + FAIL_AFTER {
                        self.sides[i].handle_failed(now, path);
                    }
                    self.carry_out(i);
                }
            }
        }
        panic!("the simulation did not settle");
    }

    fn kinds(&self, side: usize) -> Vec<Kind> {
        self.shells[side].started.iter().map(|s| s.2).collect()
    }
}

#[test]
fn quic_that_never_opens_falls_back_to_webrtc() {
    let mut world = World::new([true, true], |kind| kind == Kind::WebRtc);
    let t0 = world.now;
    world.run_until(t0 + Duration::from_secs(60));
    let offered: Vec<Kind> = world.kinds(0);
    assert_eq!(offered.len(), QUIC_TRIES as usize + 1, "{offered:?}");
    assert!(
        offered[..QUIC_TRIES as usize]
            .iter()
            .all(|&k| k == Kind::Quic)
    );
    assert_eq!(offered[QUIC_TRIES as usize], Kind::WebRtc);
    let path = world.shells[0].up.expect("the WebRTC path is up");
    assert_eq!(Kind::of(path), Some(Kind::WebRtc));
    assert_eq!(world.shells[1].up, Some(path), "both sides on it");
}

#[test]
fn failures_back_off_doubling_up_to_the_cap() {
    let mut world = World::new([false, false], |_| false);
    let t0 = world.now;
    world.run_until(t0 + Duration::from_secs(400));
    let starts: Vec<Instant> = world.shells[0].started.iter().map(|s| s.0).collect();
    assert!(starts.len() >= 9, "{} attempts", starts.len());
    // Each attempt fails FAIL_AFTER after it started; the wait after that
    // doubles from RETRY_MIN and stops growing at RETRY_MAX.
    let waits: Vec<Duration> = starts
        .windows(2)
        .map(|w| w[1] - w[0] - FAIL_AFTER)
        .collect();
    let mut expected = RETRY_MIN;
    for wait in waits {
        assert_eq!(wait, expected);
        expected = (expected * 2).min(RETRY_MAX);
    }
    assert!(world.shells[0].up.is_none());
}

#[test]
fn a_peer_without_quic_turns_the_offerer_to_webrtc_at_once() {
    let mut world = World::new([true, false], |_| true);
    let t0 = world.now;
    world.run_until(t0 + Duration::from_secs(5));
    assert_eq!(world.kinds(0), [Kind::Quic, Kind::WebRtc]);
    let second = world.shells[0].started[1].0;
    assert!(
        second - t0 <= 2 * SIGNAL_DELAY + Duration::from_millis(1),
        "WebRTC after {:?}, not after a backoff",
        second - t0
    );
    let path = world.shells[1].up.expect("up on the answering side");
    assert_eq!(Kind::of(path), Some(Kind::WebRtc));
    assert_eq!(world.kinds(1), [Kind::WebRtc], "it never ran QUIC");
}

#[test]
fn an_open_path_that_goes_silent_is_left_and_tried_again() {
    let mut world = World::new([true, true], |_| true);
    let t0 = world.now;
    world.run_until(t0 + Duration::from_secs(1));
    let first = world.shells[0].up.expect("QUIC up");
    assert_eq!(Kind::of(first), Some(Kind::Quic));
    // The session finds it silent on the offering side.
    let silent_at = world.now;
    world.sides[0].handle_silent(silent_at, first);
    world.carry_out(0);
    assert_eq!(world.shells[0].downs, 1);
    assert!(world.shells[0].running.is_none(), "its task is stopped");
    world.run_until(silent_at + Duration::from_secs(2));
    // The peer was told and dropped it too; a new attempt is up on both.
    assert_eq!(world.shells[1].downs, 1);
    let second = world.shells[0].up.expect("a new path");
    assert_ne!(second, first);
    assert_eq!(world.shells[1].up, Some(second));
    let retried = world.shells[0].started[1].0;
    assert_eq!(
        retried - silent_at,
        RETRY_MIN,
        "first failure: shortest wait"
    );
    // A path that stayed up long enough resets the backoff: after a second
    // short-lived one the wait would double, after a stable one it does not.
    world.run_until(world.now + STABLE_AFTER);
    let silent_again = world.now;
    world.sides[0].handle_silent(silent_again, second);
    world.run_until(silent_again + Duration::from_secs(2));
    let third = world.shells[0].started[2].0;
    assert_eq!(third - silent_again, RETRY_MIN);
}

#[test]
fn stale_and_crossing_signals_leave_the_running_attempt_alone() {
    let mut world = World::new([false, false], |_| true);
    let t0 = world.now;
    world.run_until(t0 + Duration::from_secs(1));
    let first = world.shells[1].up.expect("up");
    // The offerer restarts: its Close of attempt 1 and its offer of attempt 2
    // cross the answerer's late candidate for attempt 1.
    world.sides[0].restart(world.now);
    world.sides[1].handle_attempt_signal(
        first,
        DirectSignal::Candidate {
            attempt: 1,
            candidate: "late".into(),
        },
    );
    let restarted = world.now;
    world.run_until(restarted + Duration::from_secs(1));
    let second = world.shells[0].up.expect("attempt 2 up");
    assert_ne!(second, first);
    assert_eq!(world.shells[1].up, Some(second));
    // An offer of the old attempt, delivered late, changes nothing.
    world.sides[1].handle_signal(
        world.now,
        DirectSignal::Offer {
            attempt: 1,
            sdp: "old".into(),
        },
    );
    world.carry_out(1);
    assert_eq!(world.shells[1].up, Some(second));
    assert_eq!(world.shells[1].started.len(), 2);
    // The answering side never offers, whatever it hears.
    assert!(world.shells[1].started.iter().all(|s| !s.3));
}
