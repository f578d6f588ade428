//! Flow control: receive windows that grow toward the bandwidth-delay product, and
//! the RTT estimator that tells them how fast that is.

use std::time::Duration;

use crate::time::Instant;

/// The RTT assumed before the first sample.
pub const INITIAL_RTT: Duration = Duration::from_millis(100);

/// Smoothed round-trip time (RFC 6298 weights).
#[derive(Debug, Clone, Copy)]
pub struct Rtt {
    smoothed: Option<Duration>,
    var: Duration,
    latest: Duration,
}

impl Default for Rtt {
    fn default() -> Self {
        Self {
            smoothed: None,
            var: INITIAL_RTT / 2,
            latest: INITIAL_RTT,
        }
    }
}

impl Rtt {
    /// Adds a sample.
    pub fn sample(&mut self, rtt: Duration) {
        self.latest = rtt;
        match self.smoothed {
            None => {
                self.smoothed = Some(rtt);
                self.var = rtt / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(rtt);
                self.var = (self.var * 3 + diff) / 4;
                self.smoothed = Some((s * 7 + rtt) / 8);
            }
        }
    }

    /// The smoothed RTT ([`INITIAL_RTT`] before any sample).
    pub fn get(&self) -> Duration {
        self.smoothed.unwrap_or(INITIAL_RTT)
    }
}

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
    fn rtt_smooths() {
        let mut r = Rtt::default();
        assert_eq!(r.get(), INITIAL_RTT);
        r.sample(Duration::from_millis(80));
        assert_eq!(r.get(), Duration::from_millis(80));
        r.sample(Duration::from_millis(160));
        assert_eq!(r.get(), Duration::from_millis(90));
    }
}
