//! Token buckets for the rate limits, and the key an address is limited under.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// The key an address is limited under: itself for IPv4, its /64 for IPv6
/// (one household, one budget).
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// A bucket of `per_minute` tokens a minute, at most `burst` saved up.
    pub(crate) fn per_minute(per_minute: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(per_minute.max(1)) / 60.0,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Whether the bucket has refilled completely by `now` (forgetting it loses
    /// nothing).
    pub(crate) fn is_idle(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Policing: takes a token if one is there.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full again (the caller has behaved for a while).
    pub(crate) fn is_full(&self) -> bool {
        self.tokens >= self.burst - 1.0
    }

    /// Shaping: takes a token, going into debt if need be, and returns how long the
    /// caller must wait before the frame may go.
    pub(crate) fn take_shaped(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            None
        } else {
            Some(Duration::from_secs_f64(-self.tokens / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_slash_64_is_one_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn policing_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn shaping_delays_instead_of_refusing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 1, t0);
        assert_eq!(b.take_shaped(t0), None);
        let wait = b.take_shaped(t0).unwrap();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9);
        let wait = b.take_shaped(t0).unwrap();
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-9);
    }

    #[test]
    fn per_minute_buckets_refill_slowly() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(6, 2, t0);
        assert!(b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_secs(9)));
        assert!(b.try_take(t0 + Duration::from_secs(10)));
        assert!(!b.is_idle(t0 + Duration::from_secs(11)));
        assert!(b.is_idle(t0 + Duration::from_secs(40)));
    }

    #[test]
    fn huge_rates_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(u32::MAX, u32::MAX, t0);
        assert!((0..1000).all(|_| b.take_shaped(t0).is_none()));
    }
}
