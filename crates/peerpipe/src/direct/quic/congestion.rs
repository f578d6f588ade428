//! The QUIC path's congestion controller: a window sized from the measured
//! bandwidth-delay product, which random loss does not shrink.
//!
//! Loss-based controllers (quinn's NewReno and CUBIC) halve or cut their window
//! at every lost packet: on a link that loses 0.5 % of packets at random over
//! 40 ms they fall to a few Mbit/s, whatever the link's rate (the Mathis limit),
//! while the kernel's TCP with BBR fills most of it. quinn's experimental BBR
//! never leaves its start-up on such links and overflows their queues (20 % of
//! packets lost in our measurements). This controller follows BBR's model
//! instead, in a form small enough to reason about:
//!
//! - **Rounds**: a round trip ends when a packet sent after it began is
//!   acknowledged. Each round gives one delivery-rate sample: bytes
//!   acknowledged in it over its length. The bandwidth estimate is the largest
//!   sample of the last [`BW_ROUNDS`] rounds (samples of rounds the sender was
//!   short of data count only when they raise it).
//! - **Minimum RTT**: the least time between a packet's send and its
//!   acknowledgement, over the connection's life (a new path is a new
//!   connection); the window is sized with at least [`RTT_FLOOR`].
//! - **Start-up**: the window grows by what is acknowledged (it doubles every
//!   round) until the bandwidth estimate stops growing by a quarter for three
//!   rounds, or a round loses heavily.
//! - **Steady**: the window is [`CWND_GAIN`] times the bandwidth-delay
//!   product, enough to keep the bottleneck busy between acknowledgements.
//! - **Loss**: a round that loses more than [`LOSS_THRESHOLD`] of what it
//!   carried (and at least [`LOSS_MIN_PACKETS`] packets) means a queue
//!   overflowed, not noise: the window is capped at [`LOSS_BETA`] of what it
//!   was (never below one bandwidth-delay product), and the cap rises again by a sixty-fourth each round that does
//!   not lose heavily. Lighter loss changes nothing: quinn resends what was
//!   lost, and the model still measures what gets through.
//! - **Persistent congestion** (everything sent for several RTTs lost) starts
//!   over from the minimum window.
//!
//! quinn paces sends at 5/4 of the window per smoothed RTT, so the window
//! also sets the pace.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};

/// Rounds the bandwidth estimate remembers its largest sample for.
pub(crate) const BW_ROUNDS: usize = 10;
/// The window in steady state, in bandwidth-delay products.
pub(crate) const CWND_GAIN: f64 = 2.0;
/// Start-up ends when three rounds in a row raise the bandwidth less than this.
const STARTUP_GROWTH: f64 = 1.25;
const STARTUP_FLAT_ROUNDS: u32 = 3;
/// A round that loses more than this share of its bytes saw congestion.
pub(crate) const LOSS_THRESHOLD: f64 = 0.03;
/// ... and at least this many packets' worth.
pub(crate) const LOSS_MIN_PACKETS: u64 = 8;
/// The cap after a heavy loss, as a share of the window then.
pub(crate) const LOSS_BETA: f64 = 0.85;
/// A round held back by the cap without heavy loss raises it by this share.
const CAP_GROWTH: u64 = 64;
/// The smallest window, in packets.
const MIN_WINDOW_PACKETS: u64 = 4;
/// The least round trip the bandwidth-delay product is sized with. On a path
/// of a fraction of a millisecond (loopback, a LAN) acknowledgements come in
/// batches as the processes on both ends get the CPU: a window sized from a
/// 60 µs minimum starves the path whenever one of them waits a millisecond
/// (seen: loopback stuck at the 4-packet floor, 170 MB/s where 500 MB/s go).
pub(crate) const RTT_FLOOR: Duration = Duration::from_millis(2);
/// The first window, in packets (RFC 9002's ten, at the 1200-byte minimum MTU).
const INITIAL_WINDOW_PACKETS: u64 = 10;

/// Builds a [`RateModel`] for each QUIC connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RateModelConfig;

impl ControllerFactory for RateModelConfig {
    fn build(self: Arc<Self>, _now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(RateModel::new(current_mtu))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Startup,
    Steady,
}

/// One round's delivery-rate sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    round: u64,
    bytes_per_second: f64,
}

/// A congestion controller that sizes the window from the measured
/// bandwidth-delay product. See the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct RateModel {
    mtu: u64,
    mode: Mode,
    window: u64,
    min_rtt: Option<Duration>,
    /// The last [`BW_ROUNDS`] rounds' samples.
    samples: Vec<Sample>,
    round: u64,
    round_start: Option<Instant>,
    /// The round ends once this packet is acknowledged.
    round_end_packet: u64,
    last_sent_packet: u64,
    delivered_in_round: u64,
    lost_in_round: u64,
    app_limited_in_round: bool,
    /// Start-up: the bandwidth to beat, and rounds that did not beat it.
    full_bw: f64,
    flat_rounds: u32,
    /// The window's cap after heavy loss.
    cap: Option<u64>,
}

impl RateModel {
    pub(crate) fn new(mtu: u16) -> Self {
        let mtu = u64::from(mtu);
        Self {
            mtu,
            mode: Mode::Startup,
            window: INITIAL_WINDOW_PACKETS * mtu,
            min_rtt: None,
            samples: Vec::with_capacity(BW_ROUNDS),
            round: 0,
            round_start: None,
            round_end_packet: 0,
            last_sent_packet: 0,
            delivered_in_round: 0,
            lost_in_round: 0,
            app_limited_in_round: false,
            full_bw: 0.0,
            flat_rounds: 0,
            cap: None,
        }
    }

    fn min_window(&self) -> u64 {
        MIN_WINDOW_PACKETS * self.mtu
    }

    /// The bandwidth estimate, bytes per second.
    pub(crate) fn bandwidth(&self) -> f64 {
        self.samples
            .iter()
            .map(|s| s.bytes_per_second)
            .fold(0.0, f64::max)
    }

    /// The bandwidth-delay product, once both are known (with the round trip
    /// at least [`RTT_FLOOR`]).
    fn bdp(&self) -> Option<u64> {
        let rtt = self.min_rtt?.max(RTT_FLOOR);
        let bw = self.bandwidth();
        (bw > 0.0).then_some((bw * rtt.as_secs_f64()) as u64)
    }

    /// Whether the model left start-up.
    #[cfg(test)]
    fn is_steady(&self) -> bool {
        self.mode == Mode::Steady
    }

    pub(crate) fn sent(&mut self, now: Instant, packet: u64) {
        self.last_sent_packet = packet;
        if self.round_start.is_none() {
            self.round_start = Some(now);
            self.round_end_packet = packet;
        }
    }

    pub(crate) fn acked(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool) {
        let rtt = now.saturating_duration_since(sent);
        if !rtt.is_zero() && self.min_rtt.is_none_or(|m| rtt < m) {
            self.min_rtt = Some(rtt);
        }
        self.delivered_in_round += bytes;
        self.app_limited_in_round |= app_limited;
        match self.mode {
            // Slow start: a window's worth acknowledged doubles it. Not while
            // the sender is short of data: the window was not what limited it.
            Mode::Startup if !app_limited => self.window += bytes,
            Mode::Startup => {}
            Mode::Steady => {
                let target = self.target();
                // Grow toward the target as acknowledgements come; shrink at once.
                self.window = if self.window < target {
                    (self.window + bytes).min(target)
                } else {
                    target
                };
            }
        }
        self.apply_cap();
    }

    /// The steady-state window: the gain times the bandwidth-delay product.
    fn target(&self) -> u64 {
        match self.bdp() {
            Some(bdp) => ((bdp as f64 * CWND_GAIN) as u64).max(self.min_window()),
            None => self.window,
        }
    }

    fn apply_cap(&mut self) {
        if let Some(cap) = self.cap {
            self.window = self.window.min(cap);
        }
        self.window = self.window.max(self.min_window());
    }

    pub(crate) fn end_acks(&mut self, now: Instant, largest_acked: Option<u64>) {
        if largest_acked.is_some_and(|pn| pn >= self.round_end_packet) && self.round_start.is_some()
        {
            self.end_round(now);
        }
    }

    fn end_round(&mut self, now: Instant) {
        let Some(start) = self.round_start else {
            return;
        };
        let length = now.saturating_duration_since(start);
        if !length.is_zero() && self.delivered_in_round > 0 {
            let rate = self.delivered_in_round as f64 / length.as_secs_f64();
            if !self.app_limited_in_round || rate > self.bandwidth() {
                if self.samples.len() == BW_ROUNDS {
                    self.samples.remove(0);
                }
                self.samples.push(Sample {
                    round: self.round,
                    bytes_per_second: rate,
                });
            }
        }
        self.samples
            .retain(|s| s.round + BW_ROUNDS as u64 > self.round);
        let carried = self.delivered_in_round + self.lost_in_round;
        let heavy = self.lost_in_round >= LOSS_MIN_PACKETS * self.mtu
            && self.lost_in_round as f64 > LOSS_THRESHOLD * carried as f64;
        if heavy {
            let was = self.cap.map_or(self.window, |c| c.min(self.window));
            // Never below one bandwidth-delay product: that much the path
            // carries without a queue, and bursts of random loss that pass
            // the threshold must not starve it.
            let floor = self.bdp().unwrap_or(0).max(self.min_window());
            self.cap = Some(((was as f64 * LOSS_BETA) as u64).max(floor));
            self.mode = Mode::Steady;
        } else if let Some(cap) = self.cap
            && self.window >= cap
        {
            // The cap held the window back this round without heavy loss:
            // try a little more.
            self.cap = Some(cap + (cap / CAP_GROWTH).max(self.mtu));
        }
        if self.mode == Mode::Startup && !self.app_limited_in_round {
            let bw = self.bandwidth();
            if bw >= self.full_bw * STARTUP_GROWTH {
                self.full_bw = bw;
                self.flat_rounds = 0;
            } else {
                self.flat_rounds += 1;
                if self.flat_rounds >= STARTUP_FLAT_ROUNDS {
                    self.mode = Mode::Steady;
                }
            }
        }
        if self.mode == Mode::Steady {
            // Leaving start-up drops the window to the target at once; the
            // excess in flight drains as acknowledgements come.
            self.window = self.window.min(self.target());
        }
        self.apply_cap();
        self.round += 1;
        self.round_start = Some(now);
        self.round_end_packet = self.last_sent_packet;
        self.delivered_in_round = 0;
        self.lost_in_round = 0;
        self.app_limited_in_round = false;
    }

    pub(crate) fn lost(&mut self, bytes: u64, persistent: bool) {
        self.lost_in_round += bytes;
        if persistent {
            // Everything for several RTTs was lost: the path changed or
            // collapsed; measure it from scratch.
            *self = Self {
                min_rtt: self.min_rtt,
                last_sent_packet: self.last_sent_packet,
                ..Self::new(u16::try_from(self.mtu).unwrap_or(u16::MAX))
            };
            self.window = self.min_window();
        }
    }
}

impl Controller for RateModel {
    fn on_sent(&mut self, now: Instant, _bytes: u64, last_packet_number: u64) {
        self.sent(now, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        _rtt: &quinn_proto::RttEstimator,
    ) {
        self.acked(now, sent, bytes, app_limited);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        _in_flight: u64,
        _app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.end_acks(now, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        _now: Instant,
        _sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.lost(lost_bytes, is_persistent_congestion);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
        self.apply_cap();
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = ControllerMetrics::default();
        metrics.congestion_window = self.window;
        metrics.pacing_rate = Some((self.bandwidth() * 8.0) as u64);
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        INITIAL_WINDOW_PACKETS * self.mtu
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A sender driven by the model over one bottleneck: `rate` bytes/s, a
    /// one-way `delay`, a drop-tail queue of `queue` packets and a loss
    /// pattern on the line; acknowledgements come back after `delay`, and a
    /// lost packet is found lost when its acknowledgement would have come.
    /// Sends are paced as quinn paces them: 5/4 of the window per smoothed RTT.
    struct Sim {
        model: RateModel,
        now: Instant,
        mtu: u64,
        rate: f64,
        delay: Duration,
        queue: usize,
        lose: Box<dyn FnMut(u64) -> bool>,
        next_pn: u64,
        in_flight: u64,
        srtt: Duration,
        line_free: Instant,
        /// When each queued packet leaves the line.
        departures: VecDeque<Instant>,
        /// Packets that crossed the line (or were lost on it), in order:
        /// (packet, sent, when its fate is known, delivered).
        line: VecDeque<(u64, Instant, Instant, bool)>,
        /// Packets the full queue dropped: (sent, when the loss is found).
        dropped: VecDeque<(Instant, Instant)>,
        delivered: u64,
        queue_drops: u64,
        /// Drops and packets sent by half time.
        half: (u64, u64),
    }

    impl Sim {
        fn new(
            rate_mbit: f64,
            delay_ms: u64,
            queue: usize,
            lose: Box<dyn FnMut(u64) -> bool>,
        ) -> Self {
            let now = Instant::now();
            Self {
                model: RateModel::new(1400),
                now,
                mtu: 1400,
                rate: rate_mbit * 1e6 / 8.0,
                delay: Duration::from_millis(delay_ms),
                queue,
                lose,
                next_pn: 0,
                in_flight: 0,
                srtt: Duration::from_millis(2 * delay_ms),
                line_free: now,
                departures: VecDeque::new(),
                line: VecDeque::new(),
                dropped: VecDeque::new(),
                delivered: 0,
                queue_drops: 0,
                half: (0, 0),
            }
        }

        fn send_one(&mut self) {
            let pn = self.next_pn;
            self.next_pn += 1;
            self.in_flight += self.mtu;
            self.model.sent(self.now, pn);
            while self.departures.front().is_some_and(|&d| d <= self.now) {
                self.departures.pop_front();
            }
            if self.departures.len() >= self.queue {
                self.queue_drops += 1;
                self.dropped
                    .push_back((self.now, self.now + self.delay * 2));
                return;
            }
            let start = self.line_free.max(self.now);
            self.line_free = start + Duration::from_secs_f64(self.mtu as f64 / self.rate);
            self.departures.push_back(self.line_free);
            let ok = !(self.lose)(pn);
            self.line
                .push_back((pn, self.now, self.line_free + self.delay * 2, ok));
        }

        /// Runs for `secs` of virtual time in 100 µs steps; returns the goodput
        /// in bytes per second over the second half.
        fn run(&mut self, secs: f64) -> f64 {
            let step = Duration::from_micros(100);
            let steps = (secs / step.as_secs_f64()) as u64;
            let mut half_delivered = 0;
            let mut tokens = 0.0f64;
            for i in 0..steps {
                if i == steps / 2 {
                    half_delivered = self.delivered;
                    self.half = (self.queue_drops, self.next_pn);
                }
                let window = self.model.window() as f64;
                tokens = (tokens + window * 1.25 * step.as_secs_f64() / self.srtt.as_secs_f64())
                    .min(window / 8.0);
                while self.in_flight + self.mtu <= self.model.window() && tokens >= self.mtu as f64
                {
                    tokens -= self.mtu as f64;
                    self.send_one();
                }
                self.now += step;
                let mut largest = None;
                while self.line.front().is_some_and(|p| p.2 <= self.now) {
                    let Some((pn, sent, _, ok)) = self.line.pop_front() else {
                        break;
                    };
                    self.in_flight -= self.mtu;
                    if ok {
                        self.delivered += self.mtu;
                        let rtt = self.now - sent;
                        self.srtt = (self.srtt * 7 + rtt) / 8;
                        self.model.acked(self.now, sent, self.mtu, false);
                        largest = Some(pn);
                    } else {
                        self.model.lost(self.mtu, false);
                    }
                }
                while self.dropped.front().is_some_and(|d| d.1 <= self.now) {
                    self.dropped.pop_front();
                    self.in_flight -= self.mtu;
                    self.model.lost(self.mtu, false);
                }
                self.model.end_acks(self.now, largest);
            }
            (self.delivered - half_delivered) as f64 / (secs / 2.0)
        }
    }

    fn every(n: u64) -> Box<dyn FnMut(u64) -> bool> {
        Box::new(move |pn| pn % n == n - 1)
    }

    #[test]
    fn fills_a_clean_link() {
        let mut sim = Sim::new(100.0, 20, 1000, Box::new(|_| false));
        let goodput = sim.run(10.0);
        assert!(goodput > 0.9 * sim.rate, "{:.1} Mbit/s", goodput * 8e-6);
        assert!(sim.model.is_steady());
    }

    #[test]
    fn random_loss_does_not_shrink_the_window() {
        // 1 % loss, 20 ms each way: a loss-based controller falls to a few Mbit/s.
        let mut sim = Sim::new(100.0, 20, 1000, every(100));
        let goodput = sim.run(10.0);
        assert!(goodput > 0.85 * sim.rate, "{:.1} Mbit/s", goodput * 8e-6);
        // The window stays at twice the bandwidth-delay product (357 packets).
        let bdp = (sim.rate * 0.04) as u64;
        assert!(
            sim.model.window() >= bdp * 3 / 2,
            "{} < {bdp}",
            sim.model.window()
        );
    }

    #[test]
    fn bursts_of_loss_do_not_shrink_it_either() {
        // 1 % lost in bursts of four: rounds that lose twice the threshold
        // come often, and the window must stay near the pipe's size.
        let mut sim = Sim::new(100.0, 15, 1000, Box::new(|pn| pn % 400 >= 396));
        let goodput = sim.run(10.0);
        assert!(goodput > 0.85 * sim.rate, "{:.1} Mbit/s", goodput * 8e-6);
    }

    #[test]
    fn a_queue_smaller_than_the_window_caps_it() {
        // 100 ms each way at 100 Mbit/s: the BDP is 1.8k packets, the queue 1k,
        // so twice the BDP overflows the queue: the cap must hold it back.
        let mut sim = Sim::new(100.0, 100, 1000, Box::new(|_| false));
        let goodput = sim.run(30.0);
        assert!(goodput > 0.8 * sim.rate, "{:.1} Mbit/s", goodput * 8e-6);
        assert!(sim.model.cap.is_some(), "overflow went unnoticed");
        let drops_share = (sim.queue_drops - sim.half.0) as f64 / (sim.next_pn - sim.half.1) as f64;
        eprintln!("all {} of {}", sim.queue_drops, sim.next_pn);
        eprintln!(
            "{:.1} Mbit/s, {:.2} % dropped",
            goodput * 8e-6,
            drops_share * 100.0
        );
        assert!(drops_share < 0.01, "{:.1} % dropped", drops_share * 100.0);
    }

    #[test]
    fn a_sub_millisecond_path_gets_room_for_scheduling_delays() {
        let mut model = RateModel::new(6500);
        let t0 = Instant::now();
        model.sent(t0, 0);
        model.acked(t0 + Duration::from_micros(60), t0, 6500, false);
        model.mode = Mode::Steady;
        model.samples.push(Sample {
            round: model.round,
            bytes_per_second: 200e6,
        });
        // 2 × 200 MB/s × 2 ms, not 2 × 200 MB/s × 60 µs (24 kB, the floor).
        assert_eq!(model.target(), 800_000);
    }

    #[test]
    fn persistent_congestion_starts_over() {
        let mut model = RateModel::new(1200);
        let t0 = Instant::now();
        model.sent(t0, 0);
        model.acked(t0 + Duration::from_millis(10), t0, 1200, false);
        model.window = 1 << 20;
        model.lost(1 << 20, true);
        assert_eq!(model.window(), model.min_window());
        assert_eq!(model.min_rtt, Some(Duration::from_millis(10)), "kept");
        assert!(!model.is_steady());
    }
}
