//! Path choice by measured goodput.
//!
//! A newer path takes the traffic when it comes up (a direct path after the
//! relay), but newer is not always better: a UDP path whose congestion control
//! cannot shed random loss may carry a tenth of what the relay's TCP carries
//! over the same link. [`PathChoice`] measures each path's goodput — bytes
//! the peer acknowledged per second while it was the current path and the
//! sender kept it busy — and tells the session to leave a path that delivers
//! less than half of what another live path delivered. The path it left is
//! tried again later (after 10 s, then twice as long each time it disappoints
//! again, up to [`MAX_BACKOFF`]), since links change.
//!
//! Only windows in which the path, not the application or the reader, held
//! the data back count: the shell says when the path's queue was full
//! ([`PathChoice::note_full`]), and a window that ends with much in flight,
//! or with some in flight while data waited to be sent or a writer was out of
//! credit ([`PathChoice::note_blocked`]), counts too. An idle or app-limited connection never changes path for its
//! goodput.

use std::collections::HashMap;
use std::time::Duration;

use super::PathId;
use crate::time::Instant;

/// The shortest measurement window.
const MIN_WINDOW: Duration = Duration::from_millis(250);
/// The longest measurement window: a path that queues deeply has a long RTT,
/// and must not take long to judge for it.
const MAX_WINDOW: Duration = Duration::from_secs(1);
/// Windows are this many RTTs long, within the bounds.
const WINDOW_RTTS: u32 = 2;
/// Samples a path keeps (its goodput is their maximum).
const SAMPLES: usize = 4;
/// Samples the current path needs before it may be left.
const DECIDE_AFTER: usize = 3;
/// The current path is left when it delivers less than another path's
/// goodput divided by this.
const WORSE_BY: f64 = 2.0;
/// A path whose newest sample is this many times its oldest kept one is still
/// ramping up (a congestion controller in slow start over a long RTT doubles
/// every round trip): it is not left for being slower than another yet.
const RAMPING: f64 = 1.5;
/// Unacknowledged bytes at the end of a window that show the path, not the
/// sender, was the limit.
const BUSY_IN_FLIGHT: u64 = 256 * 1024;
/// Unacknowledged bytes that show the path was the limit when data also
/// waited to be sent (for want of credit that the bytes in flight hold, as
/// while the windows are still small: a slow reader's credit is not held in
/// flight, the peer acknowledges what it buffers).
const BACKLOG_IN_FLIGHT: u64 = 16 * 1024;
/// The current path goes to measure another, seen only briefly (the relay in
/// its first moments, in slow start, before a direct path came up), when it
/// delivers less than this many times that glimpse.
const GLIMPSE_RAMP: f64 = 4.0;
/// Goodput (bytes per second) under which a path-limited current path goes
/// to measure another path never measured (8 Mbit/s: a fast path never pays
/// for the visit, a collapsing one learns whether the other does better).
const SLOW_PATH: f64 = 1_000_000.0;
/// How long a path that was left waits before it is tried again, at first.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest wait before a path that was left is tried again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(160);

/// What a path delivered.
#[derive(Debug, Default, Clone)]
struct Meter {
    /// Goodput samples in bytes per second, newest last.
    samples: Vec<f64>,
    /// When the path was left for being worse; it is tried again then.
    retry_at: Option<Instant>,
    /// How long the next wait is.
    backoff: Option<Duration>,
}

impl Meter {
    fn goodput(&self) -> Option<f64> {
        self.samples.iter().copied().reduce(f64::max)
    }
}

/// What the session should do about its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Move the traffic from the current path to this better one.
    Leave {
        /// The path that delivers too little.
        from: PathId,
        /// The path to send on instead.
        to: PathId,
    },
    /// Try this path again (its wait is over): make it current.
    Retry(PathId),
}

/// Goodput per path and the decisions drawn from it. Sans-IO: every input
/// carries its instant.
#[derive(Debug, Default)]
pub struct PathChoice {
    meters: HashMap<PathId, Meter>,
    current: Option<PathId>,
    window_start: Option<Instant>,
    window_acked: u64,
    window_full: bool,
    window_blocked: bool,
    /// The path the current one is being measured for: it goes back there
    /// unless the current path proves much better.
    probe_from: Option<PathId>,
    /// The first packet number sent on the current path.
    fresh_from: u64,
    /// Paths that were gone to for measuring (each once).
    probed: Vec<PathId>,
}

impl PathChoice {
    /// `path` became the current path, the next packet number being
    /// `next_pn`: a new measurement starts, of packets sent from now on.
    pub fn switched(&mut self, now: Instant, path: Option<PathId>, next_pn: u64) {
        self.fresh_from = next_pn;
        if self.current != path {
            if let Some(p) = path {
                // A path measures afresh each time it is chosen; the others
                // keep their figures for comparison.
                let meter = self.meters.entry(p).or_default();
                meter.retry_at = None;
                meter.samples.clear();
            }
            self.current = path;
        }
        self.window_start = Some(now);
        self.window_acked = 0;
        self.window_full = false;
        self.window_blocked = false;
    }

    /// Data is outstanding again after none was: a window starts now (the idle
    /// time before says nothing about the path).
    pub fn restart(&mut self, now: Instant) {
        if self.current.is_some() {
            self.window_start = Some(now);
            self.window_acked = 0;
            self.window_full = false;
            self.window_blocked = false;
        }
    }

    /// `path` is gone: its figures go with it.
    pub fn removed(&mut self, path: PathId) {
        self.meters.remove(&path);
        self.probed.retain(|p| *p != path);
    }

    /// Whether `path` was left for its goodput and waits to be tried again.
    pub fn is_left(&self, path: PathId) -> bool {
        self.meters.get(&path).is_some_and(|m| m.retry_at.is_some())
    }

    /// The peer acknowledged packet `pn` of `bytes`. Packets sent before
    /// the current path became current may have crossed another path: they
    /// do not count.
    pub fn acked(&mut self, pn: u64, bytes: u64) {
        if pn >= self.fresh_from {
            self.window_acked += bytes;
        }
    }

    /// The current path's queue was full: the path is the limit now.
    pub fn note_full(&mut self) {
        self.window_full = true;
    }

    /// A writer had more than the peer's credit let it send: with credit
    /// held by bytes in flight, the path is the limit.
    pub fn note_blocked(&mut self) {
        self.window_blocked = true;
    }

    /// When [`PathChoice::poll`] has something to do: the end of the current
    /// window while data is outstanding (`busy`), or the next retry.
    pub fn next_deadline(&self, rtt: Duration, busy: bool) -> Option<Instant> {
        let window_end = self.window_start.filter(|_| busy).map(|s| s + window(rtt));
        let retry = self.meters.values().filter_map(|m| m.retry_at).min();
        [window_end, retry].into_iter().flatten().min()
    }

    /// Closes the window if it is over and decides. `live` are the session's
    /// live paths, `in_flight` its unacknowledged bytes, `backlog` whether
    /// data waits to be sent.
    pub fn poll(
        &mut self,
        now: Instant,
        rtt: Duration,
        live: &[PathId],
        in_flight: u64,
        backlog: bool,
    ) -> Option<Choice> {
        let current = self.current?;
        if let Some(retry) = self
            .meters
            .iter()
            .filter(|(p, _)| **p != current && live.contains(p))
            .filter(|(_, m)| m.retry_at.is_some_and(|t| t <= now))
            .map(|(p, _)| *p)
            .min()
        {
            return Some(Choice::Retry(retry));
        }
        let start = self.window_start?;
        let elapsed = now.saturating_duration_since(start);
        if elapsed < window(rtt) {
            return None;
        }
        let busy = self.window_full
            || in_flight >= BUSY_IN_FLIGHT
            || ((backlog || self.window_blocked) && in_flight >= BACKLOG_IN_FLIGHT);
        let rate = self.window_acked as f64 / elapsed.as_secs_f64();
        self.window_start = Some(now);
        self.window_acked = 0;
        self.window_full = false;
        self.window_blocked = false;
        if !busy {
            return None;
        }
        let meter = self.meters.entry(current).or_default();
        if meter.samples.len() >= SAMPLES {
            meter.samples.remove(0);
        }
        meter.samples.push(rate);
        if meter.samples.len() < DECIDE_AFTER {
            return None;
        }
        let mine = meter.goodput().unwrap_or(0.0);
        // A window that delivered nothing is a path going silent: that is
        // for the path time-out to judge, not for goodput.
        let delivering = meter.samples.iter().all(|r| *r > 0.0);
        // Still growing window over window: judged once it levels off.
        if let (Some(first), Some(last)) = (meter.samples.first(), meter.samples.last())
            && *last > *first * RAMPING
        {
            return None;
        }
        if let Some(origin) = self.probe_from.take()
            && live.contains(&origin)
        {
            let theirs = self.meters.get(&origin).and_then(Meter::goodput);
            return match theirs {
                Some(theirs) if mine >= theirs * WORSE_BY => None,
                _ => Some(Choice::Retry(origin)),
            };
        }
        // Much worse than a measured path: leave. Not much better than what
        // another showed in too short a time to know it, or slow while another
        // was never measured: go and measure it (once), and come back unless
        // it proves much better.
        let best = self
            .meters
            .iter()
            .filter(|(p, _)| **p != current && live.contains(p))
            .filter_map(|(p, m)| m.goodput().map(|g| (*p, g)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let to = match best {
            Some((to, theirs)) if mine * WORSE_BY < theirs => to,
            _ => {
                let unknown = live.iter().copied().find(|p| {
                    let meter = self.meters.get(p);
                    let glimpse = meter.and_then(Meter::goodput);
                    let worth_it = glimpse.is_some_and(|g| mine < g * GLIMPSE_RAMP)
                        || (delivering && mine < SLOW_PATH);
                    *p != current
                        && !self.probed.contains(p)
                        && meter.is_none_or(|m| m.samples.len() < DECIDE_AFTER)
                        && worth_it
                })?;
                self.probed.push(unknown);
                self.probe_from = Some(current);
                unknown
            }
        };
        let meter = self.meters.entry(current).or_default();
        let backoff = meter
            .backoff
            .map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
        meter.backoff = Some(backoff);
        meter.retry_at = Some(now + backoff);
        Some(Choice::Leave { from: current, to })
    }
}

fn window(rtt: Duration) -> Duration {
    (rtt * WINDOW_RTTS).clamp(MIN_WINDOW, MAX_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PathId = PathId(1);
    const B: PathId = PathId(2);
    const MS: Duration = Duration::from_millis(1);

    /// Runs `choice` on the current path for `windows` windows of 250 ms,
    /// each acknowledging `per_window` bytes with the path full.
    fn run(
        choice: &mut PathChoice,
        t: &mut Instant,
        windows: usize,
        per_window: u64,
    ) -> Option<Choice> {
        for _ in 0..windows {
            choice.acked(u64::MAX, per_window);
            choice.note_full();
            *t += 250 * MS;
            // The live paths: those that came up (were current once) and are
            // not gone.
            let live: Vec<PathId> = choice.meters.keys().copied().collect();
            if let Some(c) = choice.poll(*t, 10 * MS, &live, 0, false) {
                return Some(c);
            }
        }
        None
    }

    #[test]
    fn a_much_worse_path_is_left_and_retried_later() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        assert_eq!(run(&mut choice, &mut t, 4, 10_000_000), None);
        choice.switched(t, Some(B), 0);
        let left = run(&mut choice, &mut t, 8, 1_000_000);
        assert_eq!(left, Some(Choice::Leave { from: B, to: A }));
        // Three windows to be sure, not one.
        assert_eq!(t, t0 + 7 * 250 * MS);
        choice.switched(t, Some(A), 0);
        assert_eq!(run(&mut choice, &mut t, 36, 10_000_000), None);
        t += FIRST_BACKOFF;
        assert_eq!(
            choice.poll(t, 10 * MS, &[A, B], 0, false),
            Some(Choice::Retry(B))
        );
        choice.switched(t, Some(B), 0);
        let retried = t;
        assert_eq!(
            run(&mut choice, &mut t, 8, 1_000_000),
            Some(Choice::Leave { from: B, to: A })
        );
        assert_eq!(t, retried + 3 * 250 * MS);
        assert_eq!(choice.meters[&B].backoff, Some(FIRST_BACKOFF * 2));
    }

    #[test]
    fn a_path_worse_than_a_glimpse_of_another_goes_to_measure_it() {
        let mut t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        // One window on A before B came up.
        assert_eq!(run(&mut choice, &mut t, 1, 1_000_000), None);
        choice.switched(t, Some(B), 0);
        assert_eq!(
            run(&mut choice, &mut t, 8, 3_000_000),
            Some(Choice::Leave { from: B, to: A })
        );
        // Measured properly, A is no better: back to B.
        choice.switched(t, Some(A), 0);
        assert_eq!(
            run(&mut choice, &mut t, 8, 4_000_000),
            Some(Choice::Retry(B))
        );
        // A is known now: B keeps the traffic.
        choice.switched(t, Some(B), 0);
        assert_eq!(run(&mut choice, &mut t, 20, 3_000_000), None);
    }

    #[test]
    fn a_path_measured_for_proves_much_better_and_keeps_the_traffic() {
        let mut t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        assert_eq!(run(&mut choice, &mut t, 1, 1_000_000), None);
        choice.switched(t, Some(B), 0);
        assert_eq!(
            run(&mut choice, &mut t, 8, 2_000_000),
            Some(Choice::Leave { from: B, to: A })
        );
        choice.switched(t, Some(A), 0);
        assert_eq!(run(&mut choice, &mut t, 8, 30_000_000), None);
        assert!(choice.is_left(B));
    }

    #[test]
    fn a_path_still_ramping_up_is_judged_once_it_levels_off() {
        let mut t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        run(&mut choice, &mut t, 4, 40_000_000);
        // B in slow start over a long RTT: doubling every window, far below A
        // for eight windows.
        choice.switched(t, Some(B), 0);
        for n in 0..8 {
            assert_eq!(
                run(&mut choice, &mut t, 1, 100_000 << n),
                None,
                "window {n}"
            );
        }
        // Levelled off at 12.8 MB a window, under half of A's 40: left.
        assert_eq!(
            run(&mut choice, &mut t, 8, 12_800_000),
            Some(Choice::Leave { from: B, to: A })
        );
    }

    #[test]
    fn a_path_somewhat_worse_keeps_the_traffic() {
        let mut t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        run(&mut choice, &mut t, 4, 10_000_000);
        choice.switched(t, Some(B), 0);
        assert_eq!(run(&mut choice, &mut t, 40, 6_000_000), None);
    }

    #[test]
    fn an_app_limited_path_is_never_judged() {
        let mut t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        run(&mut choice, &mut t, 4, 10_000_000);
        choice.switched(t, Some(B), 0);
        for _ in 0..40 {
            choice.acked(u64::MAX, 1000);
            t += 250 * MS;
            assert_eq!(choice.poll(t, 10 * MS, &[A, B], 1000, true), None);
        }
    }

    #[test]
    fn much_in_flight_counts_as_busy() {
        let mut t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        run(&mut choice, &mut t, 4, 10_000_000);
        choice.switched(t, Some(B), 0);
        let mut left = None;
        for _ in 0..10 {
            choice.acked(u64::MAX, 1000);
            t += 250 * MS;
            left = left.or(choice.poll(t, 10 * MS, &[A, B], BUSY_IN_FLIGHT, false));
        }
        assert_eq!(left, Some(Choice::Leave { from: B, to: A }));
    }

    #[test]
    fn waiting_data_with_some_in_flight_counts_as_busy() {
        let mut t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        for _ in 0..4 {
            choice.acked(u64::MAX, 10_000_000);
            t += 250 * MS;
            assert_eq!(
                choice.poll(t, 10 * MS, &[A, B], BACKLOG_IN_FLIGHT, true),
                None
            );
        }
        assert_eq!(choice.meters[&A].samples.len(), 4);
        // Waiting data with nothing in flight: a slow reader, not the path.
        choice.acked(u64::MAX, 1000);
        t += 250 * MS;
        assert_eq!(choice.poll(t, 10 * MS, &[A, B], 0, true), None);
        assert_eq!(choice.meters[&A].samples.len(), 4);
        assert_eq!(choice.meters[&A].goodput(), Some(40_000_000.0));
    }

    #[test]
    fn packets_sent_before_the_switch_do_not_count() {
        let t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 100);
        choice.acked(99, 1_000_000);
        choice.acked(100, 1000);
        assert_eq!(choice.window_acked, 1000);
    }

    #[test]
    fn a_slow_path_measures_one_never_measured_once() {
        let mut t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        choice.switched(t, Some(B), 0);
        assert_eq!(
            run(&mut choice, &mut t, 8, 100_000),
            Some(Choice::Leave { from: B, to: A })
        );
        choice.switched(t, Some(A), 0);
        assert_eq!(run(&mut choice, &mut t, 8, 100_000), Some(Choice::Retry(B)));
        choice.switched(t, Some(B), 0);
        assert_eq!(run(&mut choice, &mut t, 30, 100_000), None);
    }

    #[test]
    fn a_fast_path_does_not_visit_one_never_measured() {
        let mut t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        choice.switched(t, Some(B), 0);
        assert_eq!(run(&mut choice, &mut t, 30, 10_000_000), None);
    }

    #[test]
    fn a_path_that_is_gone_is_no_alternative() {
        let mut t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        run(&mut choice, &mut t, 4, 10_000_000);
        choice.switched(t, Some(B), 0);
        choice.removed(A);
        assert_eq!(run(&mut choice, &mut t, 10, 1_000), None);
    }

    #[test]
    fn the_window_is_two_rtts_within_bounds() {
        let t = Instant::now();
        let mut choice = PathChoice::default();
        choice.switched(t, Some(A), 0);
        assert_eq!(choice.next_deadline(MS, true), Some(t + MIN_WINDOW));
        assert_eq!(choice.next_deadline(300 * MS, true), Some(t + 600 * MS));
        assert_eq!(
            choice.next_deadline(Duration::from_secs(5), true),
            Some(t + MAX_WINDOW)
        );
    }
}
