//! Rate limits and the client's address, for limits enforced at the edge.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before idle (full) ones are swept out.
const SWEEP_AT: usize = 10_000;

/// A token bucket per key: `burst` tokens, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`; if none is left, says how long until one is.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    /// Whether `key` has a token left, without taking one.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(key) {
            Some(bucket) if self.refilled(bucket, now) < 1.0 => {
                Err(self.wait_for(self.refilled(bucket, now)))
            }
            _ => Ok(()),
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    fn wait_for(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens) / self.per_second).max(0.0))
    }

    fn take_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another thread panicked mid-update of plain numbers.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT {
            let burst = self.burst;
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * self.per_second
                    < burst
            });
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let tokens = self.refilled(bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                updated: now,
            };
            Ok(())
        } else {
            *bucket = Bucket {
                tokens,
                updated: now,
            };
            Err(self.wait_for(tokens))
        }
    }
}

/// Whole seconds for a `Retry-After` header (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the nearest
/// untrusted address in `X-Forwarded-For`.
pub fn client_ip(peer: SocketAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    let peer_ip = peer.ip();
    if !trusted.contains(&peer_ip) {
        return peer_ip;
    }
    let Some(header) = forwarded_for else {
        return peer_ip;
    };
    let mut hops: Vec<IpAddr> = Vec::new();
    for part in header.split(',') {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) => hops.push(ip),
            // A garbled header cannot be trusted past this point.
            Err(_) => return peer_ip,
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at(&1u64, t0).is_ok());
        }
        let wait = limiter.take_at(&1, t0).expect_err("over burst");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(limiter.take_at(&2, t0).is_ok(), "keys are independent");
        assert!(limiter.take_at(&1, t0 + Duration::from_millis(600)).is_ok());
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = ["127.0.0.1".parse().expect("ip")];
        let proxy: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let stranger: SocketAddr = "10.1.1.1:5000".parse().expect("addr");
        let xff = Some("203.0.113.9, 127.0.0.1");
        assert_eq!(client_ip(proxy, xff, &trusted).to_string(), "203.0.113.9");
        assert_eq!(client_ip(stranger, xff, &trusted).to_string(), "10.1.1.1");
        assert_eq!(
            client_ip(proxy, Some("junk"), &trusted).to_string(),
            "127.0.0.1"
        );
        assert_eq!(client_ip(proxy, None, &trusted).to_string(), "127.0.0.1");
    }
}
