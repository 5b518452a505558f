//! Per-client rate limiting for an endpoint anyone may post to: a token bucket per
//! client address, in bounded memory.
//!
//! The map holds at most [`MAX_CLIENTS`] buckets. When it is full, buckets that have
//! refilled (their client has been quiet) are dropped; if none has, new clients share
//! one overflow bucket, so a flood from many addresses is limited as one client and
//! never grows the map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Most clients tracked one by one.
pub const MAX_CLIENTS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: i64,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_ms: f64,
    burst: f64,
    /// Taken for the few arithmetic steps of one check, never across an await.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    clients: HashMap<IpAddr, Bucket>,
    overflow: Option<Bucket>,
    /// When the full map was last swept; a flood of new addresses sweeps once a
    /// second at most instead of on every request.
    swept_ms: Option<i64>,
}

impl RateLimiter {
    /// `per_minute` requests a minute on average, up to `burst` at once.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_ms: f64::from(per_minute) / 60_000.0,
            burst: f64::from(burst.max(1)),
            state: Mutex::new(State {
                clients: HashMap::new(),
                overflow: None,
                swept_ms: None,
            }),
        }
    }

    /// Takes one token for `client` at `now_ms`; `Err(seconds)` to wait when there is
    /// none. `None` (the server does not know the address) shares one bucket.
    pub fn check(&self, client: Option<IpAddr>, now_ms: i64) -> Result<(), u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = Bucket {
            tokens: self.burst,
            updated_ms: now_ms,
        };
        let bucket = match client.map(group) {
            None => state.overflow.get_or_insert(fresh),
            Some(address) => {
                let full = state.clients.len() >= MAX_CLIENTS;
                let may_sweep = state.swept_ms.is_none_or(|at| now_ms - at >= 1000);
                if full && may_sweep && !state.clients.contains_key(&address) {
                    state.swept_ms = Some(now_ms);
                    let (per_ms, burst) = (self.per_ms, self.burst);
                    state
                        .clients
                        .retain(|_, b| refilled(b, now_ms, per_ms) < burst);
                }
                if state.clients.len() < MAX_CLIENTS || state.clients.contains_key(&address) {
                    state.clients.entry(address).or_insert(fresh)
                } else {
                    state.overflow.get_or_insert(fresh)
                }
            }
        };
        bucket.tokens = refilled(bucket, now_ms, self.per_ms).min(self.burst);
        bucket.updated_ms = bucket.updated_ms.max(now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        if self.per_ms <= 0.0 {
            return Err(60);
        }
        let wait_ms = (1.0 - bucket.tokens) / self.per_ms;
        Err(((wait_ms / 1000.0).ceil() as u64).max(1))
    }

    /// Clients tracked one by one now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state.lock().unwrap().clients.len()
    }
}

fn refilled(bucket: &Bucket, now_ms: i64, per_ms: f64) -> f64 {
    let elapsed = now_ms.saturating_sub(bucket.updated_ms).max(0) as f64;
    bucket.tokens + elapsed * per_ms
}

/// The unit one bucket covers: an IPv4 address, or an IPv6 /64 (one subscriber usually
/// holds a whole /64, so single addresses would let one client take many buckets).
fn group(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(60, 3);
        for _ in 0..3 {
            assert_eq!(limiter.check(ip("192.0.2.1"), 0), Ok(()));
        }
        assert_eq!(limiter.check(ip("192.0.2.1"), 0), Err(1));
        // Another client has its own bucket.
        assert_eq!(limiter.check(ip("192.0.2.2"), 0), Ok(()));
        // One a second comes back.
        assert_eq!(limiter.check(ip("192.0.2.1"), 1000), Ok(()));
        assert_eq!(limiter.check(ip("192.0.2.1"), 1000), Err(1));
    }

    #[test]
    fn retry_after_is_the_time_to_the_next_token() {
        let limiter = RateLimiter::new(6, 1);
        assert_eq!(limiter.check(ip("192.0.2.1"), 0), Ok(()));
        assert_eq!(limiter.check(ip("192.0.2.1"), 0), Err(10));
        assert_eq!(limiter.check(ip("192.0.2.1"), 4000), Err(6));
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let limiter = RateLimiter::new(60, 1);
        assert_eq!(limiter.check(ip("2001:db8:1:2::1"), 0), Ok(()));
        assert!(limiter.check(ip("2001:db8:1:2::ffff"), 0).is_err());
        assert_eq!(limiter.check(ip("2001:db8:1:3::1"), 0), Ok(()));
        assert_eq!(limiter.check(ip("::ffff:192.0.2.9"), 0), Ok(()));
        assert!(limiter.check(ip("192.0.2.9"), 0).is_err());
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let limiter = RateLimiter::new(60, 1);
        for n in 0..(MAX_CLIENTS as u32 + 500) {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            let _ = limiter.check(Some(address), 0);
        }
        assert_eq!(limiter.tracked(), MAX_CLIENTS);
        // The map is full of clients that just sent: newcomers share the overflow
        // bucket, whose one token the first newcomer took.
        assert!(limiter.check(ip("198.51.100.1"), 0).is_err());
        // Once the tracked clients have refilled, their buckets make room again.
        assert_eq!(limiter.check(ip("198.51.100.1"), 60_000), Ok(()));
        assert_eq!(limiter.tracked(), 1);
    }
}
