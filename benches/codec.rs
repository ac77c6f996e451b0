//! The per-message costs outside the store: JSON decode and encode of the wire events, the
//! at-rest AEAD, and access-token verification (once per connection and per REST request).
//!
//! Run: `cargo bench --bench codec` (add a filter, e.g. `-- json`, for one group).

use std::hint::black_box;
use std::time::Duration;

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use indaba::auth::jwt::{TokenMinter, TokenType, TokenVerifier, VerifyKey};
use indaba::crypto::{Key, Keyring};
use indaba::events::ChatEvent;
use indaba::model::{MessageBody, MessageRecord, Priority};
use indaba::ws::protocol::{self, ChatIn};

/// The daemon's allocator (see `src/main.rs`), so the figures are the daemon's.
#[cfg(feature = "fast-alloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A 100-byte text, the load generator's default.
fn text() -> String {
    "Hello, is the flat on Long Street still available for the first week of March? Thanks!!"
        .chars()
        .cycle()
        .take(100)
        .collect()
}

fn record(sealed: Vec<u8>) -> MessageRecord {
    MessageRecord {
        conversation: 12,
        sender: 1,
        receiver: Some(2),
        message_type: "text".into(),
        priority: Priority::Normal,
        client_id: Some("c-000123".into()),
        created_at_ms: 1_764_590_400_123,
        body: sealed,
    }
}

fn json(c: &mut Criterion) {
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Elements(1));
    let inbound = serde_json::json!({
        "type": "chat_message",
        "conversation_id": 12,
        "receiver_id": 2,
        "text": text(),
        "client_id": "c-000123",
    })
    .to_string();
    group.bench_function("decode chat_message", |b| {
        b.iter(|| protocol::parse::<ChatIn>(black_box(&inbound)).expect("parses"))
    });
    let body = MessageBody {
        text: text(),
        metadata_json: "{}".into(),
    };
    let stored = record(Vec::new());
    group.bench_function("encode new_message", |b| {
        b.iter(|| {
            ChatEvent::new_message(black_box(345), black_box(&stored), black_box(&body)).to_bytes()
        })
    });
    group.bench_function("encode message_sent", |b| {
        b.iter(|| ChatEvent::message_sent(black_box(345), black_box(&stored)).to_bytes())
    });
    group.finish();
}

fn aead(c: &mut Criterion) {
    let mut group = c.benchmark_group("aead");
    group.throughput(Throughput::Elements(1));
    let key = Key::generate().expect("key");
    let ring = Keyring::new(&key, &[]).expect("ring");
    let plain = indaba::store::records::encode(&MessageBody {
        text: text(),
        metadata_json: "{}".into(),
    })
    .expect("encode");
    group.bench_function("seal 100 B body", |b| {
        b.iter(|| ring.seal(black_box(&plain)))
    });
    let sealed = ring.seal(&plain);
    group.bench_function("open 100 B body", |b| {
        b.iter(|| ring.open(black_box(&sealed)).expect("opens"))
    });
    // The sizes a message body has (~100-200 bytes sealed), and 4 KiB for contrast; beside
    // them the `chacha20poly1305` crate that sealed these values before (src/crypto.rs), same
    // bytes. Its Poly1305 picks an AVX2 backend at run time (set up per value) unless built
    // with `RUSTFLAGS='--cfg poly1305_backend="soft"'`.
    let reference = XChaCha20Poly1305::new(&key_bytes(&key).into());
    for len in [100usize, 150, 200, 4096] {
        let value = vec![0x61u8; len];
        group.bench_function(format!("seal {len} B"), |b| {
            b.iter(|| ring.seal(black_box(&value)))
        });
        let sealed = ring.seal(&value);
        group.bench_function(format!("open {len} B"), |b| {
            b.iter(|| ring.open(black_box(&sealed)).expect("opens"))
        });
        let nonce = [7u8; 24];
        let mut buffer = value.clone();
        group.bench_function(format!("reference chacha20poly1305 seal {len} B"), |b| {
            b.iter(|| {
                reference
                    .encrypt_inout_detached(
                        &black_box(nonce).into(),
                        &sealed[..5],
                        (&mut buffer[..]).into(),
                    )
                    .expect("seals")
            })
        });
    }
    group.finish();
}

/// The key's 32 bytes, as `indaba keygen` prints them.
fn key_bytes(key: &Key) -> [u8; 32] {
    hex::decode(key.to_hex())
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

fn jwt(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt");
    group.throughput(Throughput::Elements(1));
    let secret = b"a-secret-of-the-host-app-signing-key".to_vec();
    let minter = TokenMinter::new(&secret, "user_id");
    let token = minter
        .mint(
            42,
            Some("thandi"),
            TokenType::Access,
            Duration::from_secs(3600),
        )
        .expect("mint");
    let verifier =
        TokenVerifier::new(&VerifyKey::Secret(secret), "user_id", None, None).expect("verifier");
    group.bench_function("verify HS256", |b| {
        b.iter(|| verifier.verify(black_box(&token)).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, json, aead, jwt);
criterion_main!(benches);
