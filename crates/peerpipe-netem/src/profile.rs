//! The link profiles the WAN tests and benchmark run on.

use std::time::Duration;

use crate::link::{LinkConfig, Loss};

/// A named link, applied to each direction of every pair of hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Its name on the command line and in reports.
    pub name: &'static str,
    /// What it says, for reports.
    pub about: &'static str,
    /// Each direction's settings.
    pub link: LinkConfig,
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A 1,000-packet drop-tail queue, as the links were measured with.
const QUEUE: usize = 1000;

impl Profile {
    /// 20 ms each way, 0.5 % random loss, 200 Mbit/s.
    pub fn lossy() -> Self {
        Self {
            name: "lossy",
            about: "20 ms each way, 0.5 % loss, 200 Mbit/s",
            link: LinkConfig {
                delay: ms(20),
                jitter: Duration::ZERO,
                loss: Loss::Bernoulli(0.005),
                rate_bps: Some(200_000_000),
                queue: QUEUE,
            },
        }
    }

    /// 50 ms each way, 1 % random loss, 50 Mbit/s.
    pub fn distant() -> Self {
        Self {
            name: "distant",
            about: "50 ms each way, 1 % loss, 50 Mbit/s",
            link: LinkConfig {
                delay: ms(50),
                jitter: Duration::ZERO,
                loss: Loss::Bernoulli(0.01),
                rate_bps: Some(50_000_000),
                queue: QUEUE,
            },
        }
    }

    /// A long fat link: 100 ms each way, no loss, 100 Mbit/s.
    pub fn long_fat() -> Self {
        Self {
            name: "long-fat",
            about: "100 ms each way, no loss, 100 Mbit/s",
            link: LinkConfig {
                delay: ms(100),
                jitter: Duration::ZERO,
                loss: Loss::None,
                rate_bps: Some(100_000_000),
                queue: QUEUE,
            },
        }
    }

    /// Wi-Fi-like: 15 ms each way with up to 2 ms of jitter, 1 % of packets
    /// lost in bursts of 4 on average, 100 Mbit/s.
    pub fn bursty() -> Self {
        Self {
            name: "bursty",
            about: "15 ms each way, 2 ms jitter, 1 % loss in bursts of 4, 100 Mbit/s",
            link: LinkConfig {
                delay: ms(15),
                jitter: ms(2),
                loss: Loss::Bursty {
                    mean: 0.01,
                    burst: 4.0,
                },
                rate_bps: Some(100_000_000),
                queue: QUEUE,
            },
        }
    }

    /// Every profile, in report order.
    pub fn all() -> Vec<Self> {
        vec![
            Self::lossy(),
            Self::distant(),
            Self::long_fat(),
            Self::bursty(),
        ]
    }

    /// The profile called `name`.
    pub fn named(name: &str) -> Option<Self> {
        Self::all().into_iter().find(|p| p.name == name)
    }

    /// The link's rate in bytes per second (`None`: unlimited).
    pub fn bytes_per_second(&self) -> Option<f64> {
        self.link.rate_bps.map(|r| r as f64 / 8.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_have_distinct_names() {
        let all = Profile::all();
        for p in &all {
            assert_eq!(Profile::named(p.name).as_ref(), Some(p));
        }
        assert_eq!(Profile::named("none"), None);
    }
}
