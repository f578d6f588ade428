//! One direction of an emulated link, sans-IO: packets go in with the time they
//! were sent and come out at the time they arrive, or never.
//!
//! The model, in the order a packet meets it:
//!
//! 1. **Queue**: the packet waits for the line behind the packets sent before
//!    it. A queue already holding [`LinkConfig::queue`] packets drops it
//!    (drop-tail).
//! 2. **Rate**: the line sends one packet at a time, `len × 8 / rate` seconds
//!    each ([`LinkConfig::rate_bps`]; `None` is an infinitely fast line).
//! 3. **Loss**: on the line, the packet is lost at random ([`Loss`]): it took
//!    its share of the line all the same, as a frame lost on the air does.
//! 4. **Delay**: it arrives [`LinkConfig::delay`] after it left the line, plus
//!    up to [`LinkConfig::jitter`] more, never before a packet sent earlier
//!    (the link does not reorder).
//!
//! Every random choice comes from a seeded generator, so a seed and the same
//! sequence of packets give the same fates.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How packets are lost on the line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Never.
    None,
    /// Each packet on its own with this probability (0..=1).
    Bernoulli(f64),
    /// In bursts, as on Wi-Fi: a two-state (Gilbert–Elliott) chain that loses
    /// every packet in its bad state and none in its good one, with `mean` the
    /// long-run share of packets lost and `burst` the mean length of a run of
    /// losses, in packets (at least 1).
    Bursty {
        /// Long-run loss rate (0..1).
        mean: f64,
        /// Mean packets per burst of losses.
        burst: f64,
    },
}

impl Loss {
    /// The long-run share of packets lost.
    pub fn mean(&self) -> f64 {
        match *self {
            Self::None => 0.0,
            Self::Bernoulli(p) => p,
            Self::Bursty { mean, .. } => mean,
        }
    }
}

/// One direction of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay of each packet, uniform in `0..=jitter`.
    pub jitter: Duration,
    /// Random loss on the line.
    pub loss: Loss,
    /// Line rate in bits per second; `None`: no limit.
    pub rate_bps: Option<u64>,
    /// Packets the queue before the line holds (the one on the line included).
    pub queue: usize,
}

impl LinkConfig {
    /// A link that only delays.
    pub fn delay(delay: Duration) -> Self {
        Self {
            delay,
            jitter: Duration::ZERO,
            loss: Loss::None,
            rate_bps: None,
            queue: usize::MAX,
        }
    }

    /// A link that drops everything (a cut cable).
    pub fn cut() -> Self {
        Self {
            loss: Loss::Bernoulli(1.0),
            ..Self::delay(Duration::ZERO)
        }
    }
}

/// What a link counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets handed to the link.
    pub sent: u64,
    /// Packets that arrived (or will: they are on their way).
    pub delivered: u64,
    /// Bytes of those packets.
    pub delivered_bytes: u64,
    /// Packets dropped because the queue was full.
    pub queue_drops: u64,
    /// Packets lost on the line.
    pub lost: u64,
}

/// A small seeded generator (SplitMix64): fates must repeat for a seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction of an emulated link (see the [crate docs](crate)).
#[derive(Debug)]
pub struct Link<T> {
    config: LinkConfig,
    rng: Rng,
    /// The Gilbert–Elliott chain is in its bad state.
    bad: bool,
    /// When the line finishes the last packet given to it.
    line_free: Option<Instant>,
    /// When each queued packet leaves the line, oldest first.
    departures: VecDeque<Instant>,
    /// Packets on their way, with their arrival times (in order).
    flying: VecDeque<(Instant, T)>,
    stats: LinkStats,
}

impl<T> Link<T> {
    /// A link with its own random sequence from `seed`.
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            config,
            rng: Rng::new(seed),
            bad: false,
            line_free: None,
            departures: VecDeque::new(),
            flying: VecDeque::new(),
            stats: LinkStats::default(),
        }
    }

    /// The link's settings.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// New settings for packets sent from now on (packets on their way keep
    /// their fate).
    pub fn set_config(&mut self, config: LinkConfig) {
        self.config = config;
    }

    /// What the link counted so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Packets waiting for the line at `now` (the one on it included).
    pub fn queued(&mut self, now: Instant) -> usize {
        while self.departures.front().is_some_and(|&d| d <= now) {
            self.departures.pop_front();
        }
        self.departures.len()
    }

    /// Sends a packet of `len` bytes at `now`; returns when it will arrive, or
    /// `None` when it is dropped or lost.
    pub fn send(&mut self, now: Instant, len: usize, packet: T) -> Option<Instant> {
        self.stats.sent += 1;
        if self.queued(now) >= self.config.queue {
            self.stats.queue_drops += 1;
            return None;
        }
        let start = self.line_free.map_or(now, |free| free.max(now));
        let on_line = match self.config.rate_bps {
            Some(rate) if rate > 0 => {
                Duration::from_nanos((len as u64 * 8).saturating_mul(1_000_000_000) / rate)
            }
            _ => Duration::ZERO,
        };
        let left = start + on_line;
        self.line_free = Some(left);
        self.departures.push_back(left);
        if self.lose() {
            self.stats.lost += 1;
            return None;
        }
        let jitter = self.config.jitter.mul_f64(self.rng.unit());
        let mut arrives = left + self.config.delay + jitter;
        if let Some(&(last, _)) = self.flying.back() {
            arrives = arrives.max(last);
        }
        self.flying.push_back((arrives, packet));
        self.stats.delivered += 1;
        self.stats.delivered_bytes += len as u64;
        Some(arrives)
    }

    fn lose(&mut self) -> bool {
        match self.config.loss {
            Loss::None => false,
            Loss::Bernoulli(p) => self.rng.unit() < p,
            Loss::Bursty { mean, burst } => {
                let mean = mean.clamp(0.0, 0.999);
                // Leave the bad state after `burst` packets on average; enter
                // it so that the bad state holds `mean` of the time.
                let to_good = 1.0 / burst.max(1.0);
                let to_bad = mean * to_good / (1.0 - mean);
                let flip = if self.bad { to_good } else { to_bad };
                if self.rng.unit() < flip {
                    self.bad = !self.bad;
                }
                self.bad
            }
        }
    }

    /// When the next packet arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.flying.front().map(|(at, _)| *at)
    }

    /// The next packet that has arrived by `now`.
    pub fn poll_arrival(&mut self, now: Instant) -> Option<T> {
        if self.next_arrival()? <= now {
            self.flying.pop_front().map(|(_, p)| p)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_delay_only_link_delivers_everything_late_and_in_order() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::delay(20 * MS), 1);
        for i in 0..10u32 {
            assert_eq!(link.send(t0 + MS * i, 1500, i), Some(t0 + MS * i + 20 * MS));
        }
        assert_eq!(link.poll_arrival(t0 + 19 * MS), None);
        assert_eq!(link.poll_arrival(t0 + 20 * MS), Some(0));
        let rest: Vec<u32> = std::iter::from_fn(|| link.poll_arrival(t0 + 100 * MS)).collect();
        assert_eq!(rest, (1..10).collect::<Vec<_>>());
        assert_eq!(link.stats().delivered, 10);
    }

    #[test]
    fn the_rate_spaces_packets_and_the_full_queue_drops_the_tail() {
        let t0 = Instant::now();
        // 12 Mbit/s: a 1500-byte packet takes 1 ms on the line.
        let config = LinkConfig {
            rate_bps: Some(12_000_000),
            queue: 5,
            ..LinkConfig::delay(10 * MS)
        };
        let mut link = Link::new(config, 1);
        let fates: Vec<Option<Instant>> = (0..8).map(|i| link.send(t0, 1500, i)).collect();
        for (i, fate) in fates.iter().take(5).enumerate() {
            assert_eq!(
                *fate,
                Some(t0 + MS * (i as u32 + 1) + 10 * MS),
                "packet {i}"
            );
        }
        assert!(fates[5..].iter().all(Option::is_none), "{fates:?}");
        assert_eq!(link.stats().queue_drops, 3);
        // Once the line sent two, two more fit.
        assert_eq!(link.queued(t0 + 2 * MS), 3);
        assert!(link.send(t0 + 2 * MS, 1500, 8).is_some());
        assert!(link.send(t0 + 2 * MS, 1500, 9).is_some());
        assert!(link.send(t0 + 2 * MS, 1500, 10).is_none());
    }

    #[test]
    fn bernoulli_loss_loses_its_share() {
        let t0 = Instant::now();
        let config = LinkConfig {
            loss: Loss::Bernoulli(0.01),
            ..LinkConfig::delay(MS)
        };
        let mut link = Link::new(config, 7);
        for i in 0..200_000u32 {
            link.send(t0, 100, i);
        }
        let lost = link.stats().lost as f64 / 200_000.0;
        assert!((0.009..0.011).contains(&lost), "lost {lost}");
    }

    #[test]
    fn bursty_loss_loses_its_share_in_runs() {
        let t0 = Instant::now();
        let config = LinkConfig {
            loss: Loss::Bursty {
                mean: 0.01,
                burst: 5.0,
            },
            ..LinkConfig::delay(MS)
        };
        let mut link = Link::new(config, 7);
        let fates: Vec<bool> = (0..400_000u32)
            .map(|i| link.send(t0, 100, i).is_none())
            .collect();
        let lost = fates.iter().filter(|&&l| l).count();
        let share = lost as f64 / fates.len() as f64;
        assert!((0.008..0.012).contains(&share), "lost {share}");
        let bursts = fates.windows(2).filter(|w| !w[0] && w[1]).count();
        let mean_burst = lost as f64 / bursts as f64;
        assert!((4.0..6.0).contains(&mean_burst), "mean burst {mean_burst}");
    }

    #[test]
    fn jitter_never_reorders() {
        let t0 = Instant::now();
        let config = LinkConfig {
            jitter: 5 * MS,
            ..LinkConfig::delay(10 * MS)
        };
        let mut link = Link::new(config, 3);
        let mut last = t0;
        let mut spread = false;
        for i in 0..1000u32 {
            let sent = t0 + Duration::from_micros(100) * i;
            let at = link.send(sent, 100, i).unwrap();
            assert!(at >= last && at >= sent + 10 * MS && at <= sent + 15 * MS + 5 * MS);
            spread |= at > sent + 12 * MS;
            last = at;
        }
        assert!(spread, "the jitter added nothing");
    }

    #[test]
    fn a_seed_repeats_its_fates() {
        let t0 = Instant::now();
        let config = LinkConfig {
            loss: Loss::Bernoulli(0.3),
            jitter: 3 * MS,
            ..LinkConfig::delay(MS)
        };
        let run = |seed| {
            let mut link = Link::new(config.clone(), seed);
            (0..100u32)
                .map(|i| link.send(t0, 100, i))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
