//! The rate limiter on the login and send paths: the cost of one `take` or `check` with 1,000
//! and with 100,000 keys active. Active means a bucket not yet refilled, which no sweep may
//! drop: the limiter here refills as slowly as the per-username login limit (10, one back per
//! 30 s), so 100,000 keys stay active through the run, as after a credential-stuffing run
//! against 100,000 usernames. (With the send limit's 20/s a bucket refills within 50 ms of its
//! user's last send, so 100,000 active senders would take two million sends a second.)
//!
//! Run: `cargo bench --bench limits` (add a filter, e.g. `-- 100k`, for one case).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use indaba::limits::RateLimiter;

/// The daemon's allocator (see `src/main.rs`), so the figures are the daemon's.
#[cfg(feature = "fast-alloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A limiter like the per-username login limit, with `active` keys that have taken a token.
fn limiter(active: u64) -> RateLimiter<u64> {
    let limiter = RateLimiter::sharded(1.0 / 30.0, 10);
    for key in 0..active {
        let _ = limiter.take(&key);
    }
    limiter
}

fn take(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for (name, active) in [("1k", 1_000u64), ("100k", 100_000)] {
        let limiter = limiter(active);
        let mut key = 0u64;
        group.bench_function(format!("take/{name}_active"), |b| {
            b.iter(|| {
                key = (key + 7919) % active;
                black_box(limiter.take(black_box(&key)))
            })
        });
        group.bench_function(format!("check/{name}_active"), |b| {
            b.iter(|| {
                key = (key + 7919) % active;
                black_box(limiter.check(black_box(&key)))
            })
        });
    }
    // Two threads taking for different keys at once (the daemon's workers): the cost per
    // `take` when they contend for the limiter.
    let limiter = Arc::new(limiter(100_000));
    group.bench_function("take/100k_active_2_threads", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            let workers: Vec<_> = (0..2u64)
                .map(|t| {
                    let limiter = limiter.clone();
                    std::thread::spawn(move || {
                        let mut key = t * 50_000;
                        for _ in 0..iters / 2 {
                            key = (key + 7919) % 100_000;
                            black_box(limiter.take(&key)).ok();
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("worker");
            }
            started.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, take);
criterion_main!(benches);
