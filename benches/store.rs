//! The group-commit store: durable message appends per second at different batch sizes.
//!
//! Each iteration submits `n` appends at once from concurrent tasks (sealing included, as the
//! HTTP handler does) to a writer whose `commit_batch_max` is the batch size, and waits for all
//! of them to be durable. Batch 1 is the naive "one fsync per message" store.
//!
//! Run: `cargo bench --bench store`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use indaba::crypto::{Key, Keyring};
use indaba::model::{MessageBody, Priority};
use indaba::store::records::encode;
use indaba::store::{NewConversation, NewMessage, Store, WriterOptions};

/// The daemon's allocator (see `src/main.rs`), so the figures are the daemon's.
#[cfg(feature = "fast-alloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("store_append_durable");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for batch in [1usize, 10, 100, 1000] {
        // Enough appends per iteration for several full batches, few enough that batch 1
        // (one fsync each) stays quick.
        let n = (batch * 8).max(200);
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = Arc::new(Keyring::new(&Key::generate().expect("key"), &[]).expect("ring"));
        // Fan-out is measured elsewhere: committed messages are reported to nobody here.
        let options = WriterOptions::standalone(batch);
        let (store, writer) = Store::open(dir.path(), keyring, options).expect("open");
        let conversation = runtime
            .block_on(store.writer().create_conversation(NewConversation {
                creator: 1,
                participants: vec![2],
                property: None,
                booking: None,
                subject: None,
            }))
            .expect("conversation")
            .id;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    runtime.block_on(append_many(&store, conversation, n));
                    total += started.elapsed();
                }
                total
            })
        });
        runtime.block_on(writer.finish(store.writer()));
    }
    group.finish();
}

async fn append_many(store: &Store, conversation: u64, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let body = MessageBody {
                    text: format!("{i:0>100}"),
                    metadata_json: "{}".to_owned(),
                };
                let sealed = store.keyring().seal(&encode(&body).expect("encode"));
                let plain = std::sync::Arc::new(body);
                store
                    .writer()
                    .append_message(NewMessage {
                        conversation,
                        sender: 1,
                        receiver: None,
                        message_type: "text".to_owned(),
                        priority: Priority::Normal,
                        client_id: None,
                        body: sealed,
                        plain,
                        origin: None,
                    })
                    .await
                    .expect("append")
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
