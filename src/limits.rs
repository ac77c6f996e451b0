//! Rate limits and the client's address, for limits enforced at the edge.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Shards of a daemon-wide limiter ([`RateLimiter::sharded`]): a key's hash picks its shard, so
/// workers serving different users rarely wait for one another.
const SHARDS: usize = 64;
/// A shard holding fewer buckets than this is never swept.
const MIN_SWEEP: usize = 256;

/// A token bucket per key: `burst` tokens, refilled at `per_second`.
///
/// Buckets that have refilled completely are worth nothing (a new bucket starts full) and are
/// swept out, a shard at a time, when the shard has doubled since its last sweep: each sweep is
/// paid for by as many inserts as it scans, so a call costs O(1) amortized however many users
/// are active, and a shard holds at most twice the keys active in the last refill window.
/// The design before swept the whole map under one global lock on every call once it held
/// 10,000 keys, so with 100,000 keys active every call scanned 100,000 buckets:
/// `cargo bench --bench limits` measured a `take` at 400–490 µs with 100,000 keys active, and
/// 300–350 ns now (2026-12-07, 2-core VM, busy: back-to-back runs alternated). Shards cost
/// 20–30 ns a call at 1,000 keys (the shard's hash); what they save under contention did not
/// show on two shared cores, and is for machines with many.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: Rate,
    /// Picks a key's shard; one hasher for the limiter's life, so a key stays in its shard.
    hasher: RandomState,
    shards: Box<[Mutex<Shard<K>>]>,
}

#[derive(Debug)]
struct Shard<K> {
    buckets: HashMap<K, Bucket>,
    /// Sweep when `buckets` reaches this size.
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// How fast buckets refill and how many tokens they hold at most.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
        }
    }

    /// A bucket as full as it may be, at `now`.
    fn full(&self, now: Instant) -> Bucket {
        Bucket {
            tokens: self.burst,
            updated: now,
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    fn wait_for(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens) / self.per_second).max(0.0))
    }

    /// Takes a token from `bucket`; if none is left, says how long until one is.
    fn take(&self, bucket: &mut Bucket, now: Instant) -> Result<(), Duration> {
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

/// One token bucket, for a single caller's own budget (a socket's frames other than
/// messages): no key, no map and no shard, as every idle socket carries one. A one-shard
/// [`RateLimiter`] cost 112 bytes and an allocation more per socket.
#[derive(Debug)]
pub struct TokenBucket {
    rate: Rate,
    bucket: Mutex<Bucket>,
}

impl TokenBucket {
    /// A full bucket: `burst` tokens, refilled at `per_second`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let rate = Rate::new(per_second, burst);
        Self {
            rate,
            bucket: Mutex::new(rate.full(Instant::now())),
        }
    }

    /// Takes a token; if none is left, says how long until one is.
    pub fn take(&self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another thread panicked mid-update of plain numbers.
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        self.rate.take(&mut bucket, now)
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter with one shard, so that tests see one map and its sweeps.
    #[cfg(test)]
    fn new(per_second: f64, burst: u32) -> Self {
        Self::with_shards(per_second, burst, 1)
    }

    /// A limiter shared by every connection, keyed by user or address.
    pub fn sharded(per_second: f64, burst: u32) -> Self {
        Self::with_shards(per_second, burst, SHARDS)
    }

    fn with_shards(per_second: f64, burst: u32, shards: usize) -> Self {
        Self {
            rate: Rate::new(per_second, burst),
            hasher: RandomState::new(),
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        sweep_at: MIN_SWEEP,
                    })
                })
                .collect(),
        }
    }

    /// Takes a token for `key`; if none is left, says how long until one is.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    /// Whether `key` has a token left, without taking one.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        match self.shard(key).buckets.get(key) {
            Some(bucket) if self.rate.refilled(bucket, now) < 1.0 => {
                Err(self.rate.wait_for(self.rate.refilled(bucket, now)))
            }
            _ => Ok(()),
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K>> {
        let index = if self.shards.len() == 1 {
            0
        } else {
            (self.hasher.hash_one(key) % self.shards.len() as u64) as usize
        };
        // A poisoned lock only means another thread panicked mid-update of plain numbers.
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut shard = self.shard(key);
        let rate = self.rate;
        if shard.buckets.len() >= shard.sweep_at {
            shard
                .buckets
                .retain(|_, bucket| rate.refilled(bucket, now) < rate.burst);
            let left = shard.buckets.len();
            if left < shard.buckets.capacity() / 4 {
                shard.buckets.shrink_to(left * 2);
            }
            shard.sweep_at = (left * 2).max(MIN_SWEEP);
        }
        let bucket = shard
            .buckets
            .entry(key.clone())
            .or_insert_with(|| rate.full(now));
        rate.take(bucket, now)
    }

    /// Buckets held, over all shards.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).buckets.len())
            .sum()
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
    fn token_bucket_allows_burst_then_refills() {
        let bucket = TokenBucket::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(bucket.take_at(t0).is_ok());
        }
        let wait = bucket.take_at(t0).expect_err("over burst");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(bucket.take_at(t0 + Duration::from_millis(600)).is_ok());
        assert!(bucket.take_at(t0 + Duration::from_millis(600)).is_err());
    }

    #[test]
    fn sharded_keys_are_independent_and_check_takes_nothing() {
        let limiter = RateLimiter::sharded(1.0, 2);
        for user in 0..1000u64 {
            assert!(limiter.check(&user).is_ok());
            assert!(limiter.take(&user).is_ok());
            assert!(limiter.take(&user).is_ok());
            assert!(
                limiter.check(&user).is_err(),
                "user {user} has no token left"
            );
            assert!(limiter.take(&user).is_err());
        }
    }

    #[test]
    fn refilled_buckets_are_swept_and_active_ones_kept() {
        let limiter = RateLimiter::new(10.0, 1);
        let t0 = Instant::now();
        // 10,000 users active at t0: none may be swept.
        for user in 0..10_000u64 {
            assert!(limiter.take_at(&user, t0).is_ok());
        }
        assert_eq!(limiter.len(), 10_000);
        for user in 0..10_000u64 {
            assert!(limiter.take_at(&user, t0).is_err(), "user {user} kept");
        }
        // A second later all have refilled; new users push the map over its sweep mark.
        let t1 = t0 + Duration::from_secs(1);
        for user in 10_000..30_000u64 {
            assert!(limiter.take_at(&user, t1).is_ok());
        }
        assert!(
            limiter.len() < 30_000,
            "refilled buckets were swept: {}",
            limiter.len()
        );
        assert!(limiter.len() >= 20_000, "active buckets kept");
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
