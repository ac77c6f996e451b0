//! The rate limiter on the send path (`limits.messages_per_second`, one bucket per user) and
//! the login path (one per client address and per username): the cost of one `take` or
//! `check` with 1,000 and with 100,000 users active, i.e. with a bucket not yet refilled, which
//! no sweep may drop.
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

/// The send limiter's defaults (`limits.messages_per_second`, `limits.messages_burst`).
fn send_limiter(active: u64) -> RateLimiter<u64> {
    let limiter = RateLimiter::sharded(20.0, 100);
    // One send each: every bucket is below its burst, so every user counts as active.
    for user in 0..active {
        let _ = limiter.take(&user);
    }
    limiter
}

fn take(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for (name, active) in [("1k", 1_000u64), ("100k", 100_000)] {
        let limiter = send_limiter(active);
        let mut user = 0u64;
        group.bench_function(format!("take/{name}_active"), |b| {
            b.iter(|| {
                user = (user + 7919) % active;
                black_box(limiter.take(black_box(&user)))
            })
        });
        group.bench_function(format!("check/{name}_active"), |b| {
            b.iter(|| {
                user = (user + 7919) % active;
                black_box(limiter.check(black_box(&user)))
            })
        });
    }
    // Two threads taking for different users at once (the daemon's workers): the cost per
    // `take` when they contend for the limiter.
    let limiter = Arc::new(send_limiter(100_000));
    group.bench_function("take/100k_active_2_threads", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            let workers: Vec<_> = (0..2u64)
                .map(|t| {
                    let limiter = limiter.clone();
                    std::thread::spawn(move || {
                        let mut user = t * 50_000;
                        for _ in 0..iters / 2 {
                            user = (user + 7919) % 100_000;
                            black_box(limiter.take(&user)).ok();
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
