//! The session's timers: an enum and a table of deadlines.

use crate::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Send the acknowledgement held back to coalesce it with later ones.
    Ack = 0,
    /// Send a keepalive ping (which also samples the RTT).
    KeepAlive = 1,
    /// Nothing arrived for the idle time-out: close.
    Idle = 2,
    /// Outstanding data made no progress for the slow threshold: report `Slow`.
    Slow = 3,
    /// The current path heard nothing back for the path time-out while another
    /// path is up: move to that one.
    PathSilence = 4,
    /// A goodput measurement window ends or a path that was left for being
    /// worse is due to be tried again.
    PathChoice = 5,
}

impl Timer {
    const ALL: [Self; 6] = [
        Self::Ack,
        Self::KeepAlive,
        Self::Idle,
        Self::Slow,
        Self::PathSilence,
        Self::PathChoice,
    ];
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Default, Clone)]
pub struct TimerTable([Option<Instant>; 6]);

impl TimerTable {
    /// Arms `timer` for `at`, replacing its deadline.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer as usize] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// Disarms and returns a timer that expired at `now`, if any.
    pub fn expired(&mut self, now: Instant) -> Option<Timer> {
        let timer = Timer::ALL
            .into_iter()
            .find(|t| self.0[*t as usize].is_some_and(|at| at <= now))?;
        self.stop(timer);
        Some(timer)
    }

    /// Disarms all timers.
    pub fn clear(&mut self) {
        self.0 = [None; 6];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expires_in_order_and_only_once() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(Timer::Idle, t0 + Duration::from_secs(2));
        t.set(Timer::Ack, t0 + Duration::from_secs(1));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.expired(t0), None);
        assert_eq!(t.expired(t0 + Duration::from_secs(5)), Some(Timer::Ack));
        assert_eq!(t.expired(t0 + Duration::from_secs(5)), Some(Timer::Idle));
        assert_eq!(t.expired(t0 + Duration::from_secs(5)), None);
        assert_eq!(t.next(), None);
    }
}
